//! What the worker's metrics cost on the render path, per operation, measured here (no GPU
//! needed): the step clock of every step, the histogram timer around every forward and every
//! overlap receive, the byte counters of every send and receive. benches/metrics_overhead.sh
//! multiplies these by how often a real render does each and divides by its wall time.
//! Prints one `name ns_per_op` line per operation (the fastest of 7 rounds, so a busy machine
//! inflates nothing it can avoid). Run: `cargo bench -p longshot-worker --bench metrics_cost`.

use longshot_worker::metrics::WorkerMetrics;
use prometheus::{exponential_buckets, Histogram, HistogramOpts, IntCounter, Registry};
use std::hint::black_box;
use std::time::Instant;

const OPS: u32 = 200_000;
const ROUNDS: usize = 7;

fn ns_per_op(mut f: impl FnMut(u32)) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for i in 0..OPS {
                f(black_box(i));
            }
            t.elapsed().as_nanos() as f64 / OPS as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let registry = Registry::new();
    let metrics = WorkerMetrics::register(&registry, "bench", "w0", "cpu").expect("fresh registry");
    // A shard of 16 windows: the step clock keeps one entry per window.
    let mut clock = metrics.step_clock("procedural");
    let step = ns_per_op(|i| clock.step_done((i % 16) as usize));
    // The wrappers' own work, with the same metric types and buckets (their fields are private).
    let hist = Histogram::with_opts(
        HistogramOpts::new("bench_forward_seconds", "bench").buckets(exponential_buckets(0.01, 2.0, 14).unwrap()),
    )
    .unwrap();
    let timer = ns_per_op(|_| hist.start_timer().observe_duration());
    let counter = IntCounter::new("bench_bytes_total", "bench").unwrap();
    let count = ns_per_op(|i| counter.inc_by(u64::from(i)));
    println!("step_done {step:.1}");
    println!("forward_timer {timer:.1}");
    println!("exchange_send {count:.1}");
    println!("exchange_recv {:.1}", timer + count);
    assert!(hist.get_sample_count() > 0 && counter.get() > 0);
}
