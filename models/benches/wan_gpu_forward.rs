//! One Wan2.1-1.3B-shaped transformer forward on the GPU (`wan::gpu`, feature `cuda`): random bf16
//! weights drawn on the device with a fixed seed (no checkpoint, ~2.8 GB of device memory), a
//! 480×832×81 clip (latent 16×21×60×104, 32 760 tokens), 512 text tokens. Prints the time of one
//! forward (`forward_device` + synchronize; the text context is prepared once, outside the timed
//! region, as the denoising loop does) and the achieved TFLOP/s by `wan::forward_flops`, then one
//! per-phase breakdown.
//!
//! Device-only (harness = false; `cargo bench` runs it, and so does the binary directly). Fails
//! loudly without a GPU. Environment:
//! - `LONGSHOT_WAN_BENCH_ITERS` (default 2): timed forwards after one warm-up (0: the warm-up only);
//! - `LONGSHOT_WAN_BENCH_LAYERS` (default 30): fewer blocks for a quick check (FLOPs are counted
//!   for the layers run);
//! - `LONGSHOT_WAN_BENCH_MODEL` = `1.3b` (default) or `14b`.
//!
//! - `LONGSHOT_WAN_BENCH_PHASES=0`: skip the per-phase forward;
//! - `LONGSHOT_WAN_BENCH_BUDGET_S` (default: none): wall seconds for the forwards (warm-up
//!   included). A timed forward, or the per-phase one, is started only when the last forward's
//!   time says it will end within the budget, so a harness step under `timeout` always gets its
//!   RESULT line (`timed=0`: only the warm-up fitted, and its time is reported).
//!
//! The attention kernel is still the correctness-first one (one query row per thread, f32, no
//! tensor cores), so self-attention dominates and one full 1.3B forward may take of the order of
//! a minute: try `LONGSHOT_WAN_BENCH_LAYERS=2` first. FLOPs are `wan::forward_flops` for the
//! layers run; they include the text MLP and cross K/V (≈0.05 % of the total), which
//! `encode_text` does outside the timed region.
//!
//! The last line is machine-readable:
//! `RESULT wan_gpu_forward model=1.3b layers=30 tokens=32760 warmup_ms=… timed=N ms=… median_ms=… tflops=…`
//! (`ms` the best timed forward, `median_ms` their median; both the warm-up when `timed=0`).

use longshot_kernels::cuda::CudaBackend;
use longshot_models::wan::gpu::{ForwardTimings, GpuWanTransformer};
use longshot_models::wan::{forward_flops, forward_flops_breakdown, TransformerConfig};
use std::sync::Arc;
use std::time::Instant;

const SEED: u64 = 20250611;
/// 480×832×81 video → latent 21×60×104 (VAE: 4× in time with the first frame kept, 8× in space).
const LATENT: [usize; 3] = [21, 60, 104];
const TEXT_TOKENS: usize = 512;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// Deterministic values in [-scale, scale).
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    longshot_kernels::cuda::parity::Rng::seeded(seed).vec(n, scale)
}

fn main() {
    let iters = env_usize("LONGSHOT_WAN_BENCH_ITERS", 2);
    let model = std::env::var("LONGSHOT_WAN_BENCH_MODEL").unwrap_or_else(|_| "1.3b".into());
    let mut cfg = match model.as_str() {
        "1.3b" => TransformerConfig::t2v_1_3b(),
        "14b" => TransformerConfig::t2v_14b(),
        other => panic!("LONGSHOT_WAN_BENCH_MODEL={other}: use 1.3b or 14b"),
    };
    cfg.num_layers = env_usize("LONGSHOT_WAN_BENCH_LAYERS", cfg.num_layers).clamp(1, cfg.num_layers);

    let backend = Arc::new(CudaBackend::open(0).unwrap_or_else(|e| panic!("wan_gpu_forward needs a CUDA GPU: {e}")));
    println!("device: {:?}", backend.info());
    let start = Instant::now();
    let gpu = GpuWanTransformer::random(backend.clone(), cfg.clone(), SEED)
        .unwrap_or_else(|e| panic!("random {model} model: {e}"));
    backend.synchronize().expect("sync");
    println!(
        "weights: {model}, {} layers, {:.2} GB on the device (bf16 linears), built in {:.1} s",
        cfg.num_layers,
        gpu.weight_bytes() as f64 / 1e9,
        start.elapsed().as_secs_f64()
    );

    let [lt, lh, lw] = LATENT;
    let dims = [cfg.in_channels, lt, lh, lw];
    let ctx = values(SEED + 1, TEXT_TOKENS * cfg.text_dim, 0.5);
    let x = values(SEED + 2, dims.iter().product(), 1.0);
    let start = Instant::now();
    let text = gpu.encode_text(&ctx).expect("encode_text");
    backend.synchronize().expect("sync");
    println!("encode_text ({TEXT_TOKENS} tokens, all blocks' cross K/V): {:.1} ms (includes kernel compilation on a cold cache)",
        start.elapsed().as_secs_f64() * 1e3);
    let xd = backend.upload(&x).expect("upload latent");

    let t = 999.0f32;
    let budget = std::env::var("LONGSHOT_WAN_BENCH_BUDGET_S").ok().map(|v| {
        v.parse::<f64>()
            .unwrap_or_else(|_| panic!("LONGSHOT_WAN_BENCH_BUDGET_S={v} is not a number"))
    });
    let forwards = Instant::now();
    // Whether one more forward of `last_ms` fits in the budget.
    let fits = |last_ms: f64| budget.is_none_or(|b| forwards.elapsed().as_secs_f64() + 1.1 * last_ms / 1e3 <= b);
    let start = Instant::now();
    let warm = gpu.forward_device(&xd, dims, t, &text).expect("warm-up forward");
    backend.synchronize().expect("sync");
    let warmup_ms = start.elapsed().as_secs_f64() * 1e3;
    println!("warm-up forward: {warmup_ms:.1} ms");
    let out = backend.download(&warm).expect("download");
    let finite = out.iter().all(|v| v.is_finite());
    let max_abs = out.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!(
        "output: {} values, all finite: {finite}, max |y| = {max_abs:.3}",
        out.len()
    );
    assert!(finite, "non-finite output");
    drop(warm);

    let mut ms = Vec::with_capacity(iters);
    for i in 0..iters {
        if !fits(ms.last().copied().unwrap_or(warmup_ms)) {
            println!(
                "forward {i}: not started, LONGSHOT_WAN_BENCH_BUDGET_S={:?} would be exceeded",
                budget.unwrap_or(0.0)
            );
            break;
        }
        let start = Instant::now();
        let y = gpu.forward_device(&xd, dims, t, &text).expect("forward");
        backend.synchronize().expect("sync");
        let dt = start.elapsed().as_secs_f64() * 1e3;
        drop(y);
        println!("forward {i}: {dt:.1} ms");
        ms.push(dt);
    }
    let timed = ms.len();
    if ms.is_empty() {
        ms.push(warmup_ms);
    }
    ms.sort_by(f64::total_cmp);
    let best = ms[0];
    let median = ms[ms.len() / 2];

    let flops = forward_flops(&cfg, lt, lh, lw, TEXT_TOKENS);
    let br = forward_flops_breakdown(&cfg, lt, lh, lw, TEXT_TOKENS);
    let tf = |f: f64, s: f64| if s > 0.0 { f / s / 1e12 } else { 0.0 };
    if env_usize("LONGSHOT_WAN_BENCH_PHASES", 1) != 0 && fits(median) {
        print_phases(&gpu, &xd, dims, t, &text, &br, tf);
    }
    println!(
        "forward ({model}, {} layers, {} tokens, {TEXT_TOKENS} text): best {best:.1} ms, median {median:.1} ms of {timed} timed{}; {:.3e} FLOP -> {:.1} TFLOP/s (best)",
        cfg.num_layers,
        lt * (lh / 2) * (lw / 2),
        if timed == 0 { " (the warm-up's time)" } else { "" },
        flops,
        tf(flops, best / 1e3)
    );
    println!(
        "RESULT wan_gpu_forward model={model} layers={} tokens={} warmup_ms={warmup_ms:.1} timed={timed} ms={best:.1} median_ms={median:.1} tflops={:.2}",
        cfg.num_layers,
        lt * (lh / 2) * (lw / 2),
        tf(flops, best / 1e3)
    );
}

fn print_phases(
    gpu: &GpuWanTransformer,
    xd: &cudarc::driver::CudaSlice<f32>,
    dims: [usize; 4],
    t: f32,
    text: &longshot_models::wan::gpu::GpuTextContext,
    br: &longshot_models::wan::ForwardFlops,
    tf: impl Fn(f64, f64) -> f64,
) {
    let mut timings = ForwardTimings::default();
    let y = gpu
        .forward_device_timed(xd, dims, t, text, &mut timings)
        .expect("timed forward");
    drop(y);
    println!(
        "per-phase (one forward, synchronised at each phase; {:.1} ms in all):",
        timings.total() * 1e3
    );
    println!(
        "  block linears   {:>9.1} ms  {:>7.1} TFLOP/s",
        timings.block_linears * 1e3,
        tf(br.block_linears, timings.block_linears)
    );
    println!(
        "  self-attention  {:>9.1} ms  {:>7.1} TFLOP/s",
        timings.self_attention * 1e3,
        tf(br.self_attention, timings.self_attention)
    );
    println!(
        "  cross-attention {:>9.1} ms  {:>7.1} TFLOP/s",
        timings.cross_attention * 1e3,
        tf(br.cross_attention, timings.cross_attention)
    );
    println!("  pointwise       {:>9.1} ms", timings.pointwise * 1e3);
    println!("  edges           {:>9.1} ms", timings.edges * 1e3);
}
