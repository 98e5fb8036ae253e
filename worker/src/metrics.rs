//! The worker's Prometheus metrics and the wrappers that record them around the model, the
//! overlap exchange and the decoder of a shard. Labels stay low-cardinality (`model`,
//! `direction`, `transport`, `outcome`); the worker's id and device are labels of its
//! `longshot_build_info`, which dashboards join on `instance`.

use crate::net_exchange::ShardExchange;
use longshot_core::denoiser::{Branch, DenoiseError, Denoiser, ModelInfo, StepPoint, WindowContext};
use longshot_core::exchange::{Exchange, ExchangeError, OverlapMessage, Payload, Side};
use longshot_core::tensor::Latents;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{exponential_buckets, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge};
use prometheus::{IntGaugeVec, Opts, Registry};
use std::collections::HashMap;
use std::time::Instant;

/// Every worker metric.
#[derive(Clone)]
pub struct WorkerMetrics {
    step: HistogramVec,
    forward: HistogramVec,
    exchange_wait: Histogram,
    exchange_bytes: IntCounterVec,
    decode: HistogramVec,
    preview: HistogramVec,
    text_encode: HistogramVec,
    shards: IntCounterVec,
    busy: IntGauge,
    transport: IntGaugeVec,
}

/// 10 ms to ~80 s, doubling: a step or a forward of any model on any device.
fn step_buckets() -> Vec<f64> {
    exponential_buckets(0.01, 2.0, 14).expect("valid buckets")
}

impl WorkerMetrics {
    /// Creates the metrics and registers them in `registry`, with `longshot_build_info` naming the
    /// worker and its device (dashboards join it on `instance` to label the worker's series).
    pub fn register(registry: &Registry, version: &str, worker: &str, device: &str) -> Result<Self, prometheus::Error> {
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["model"])
        };
        let m = WorkerMetrics {
            step: hist(
                "longshot_worker_step_seconds",
                "One denoising step of one window, wall time (forwards, exchange, blend, scheduler).",
                step_buckets(),
            )?,
            forward: hist(
                "longshot_worker_forward_seconds",
                "One model forward (one CFG branch).",
                step_buckets(),
            )?,
            exchange_wait: Histogram::with_opts(
                HistogramOpts::new(
                    "longshot_worker_exchange_wait_seconds",
                    "Waiting for one overlap message from a neighbour.",
                )
                .buckets(exponential_buckets(0.0001, 4.0, 12)?),
            )?,
            exchange_bytes: IntCounterVec::new(
                Opts::new(
                    "longshot_worker_exchange_bytes_total",
                    "Overlap payload bytes, by direction (sent, received).",
                ),
                &["direction"],
            )?,
            decode: hist(
                "longshot_worker_decode_seconds",
                "Decoding one shard's owned frames (with their warm-up).",
                exponential_buckets(0.01, 2.0, 18)?,
            )?,
            preview: hist(
                "longshot_worker_preview_seconds",
                "Projecting one live preview of a shard's owned frames to RGB and queuing it.",
                exponential_buckets(0.0001, 4.0, 12)?,
            )?,
            text_encode: hist(
                "longshot_worker_text_encode_seconds",
                "Encoding one job's prompts.",
                exponential_buckets(0.001, 4.0, 12)?,
            )?,
            shards: IntCounterVec::new(
                Opts::new(
                    "longshot_worker_shards_total",
                    "Shards that ended, by outcome (done, failed).",
                ),
                &["model", "outcome"],
            )?,
            busy: IntGauge::with_opts(Opts::new("longshot_worker_busy", "1 while a shard runs, else 0."))?,
            transport: IntGaugeVec::new(
                Opts::new(
                    "longshot_worker_overlap_transport",
                    "1 for what carries the running (or last) shard's overlap velocities: tcp or nccl.",
                ),
                &["transport"],
            )?,
        };
        let build = Gauge::with_opts(
            Opts::new("longshot_build_info", "Always 1; the build's version in a label.")
                .const_label("version", version)
                .const_label("component", "worker")
                .const_label("worker", worker)
                .const_label("device", device),
        )?;
        build.set(1.0);
        registry.register(Box::new(build))?;
        for h in [&m.step, &m.forward, &m.decode, &m.preview, &m.text_encode] {
            registry.register(Box::new(h.clone()))?;
        }
        registry.register(Box::new(m.exchange_wait.clone()))?;
        registry.register(Box::new(m.exchange_bytes.clone()))?;
        registry.register(Box::new(m.shards.clone()))?;
        registry.register(Box::new(m.busy.clone()))?;
        registry.register(Box::new(m.transport.clone()))?;
        for d in ["sent", "received"] {
            m.exchange_bytes.with_label_values(&[d]).inc_by(0);
        }
        for t in ["tcp", "nccl"] {
            m.transport.with_label_values(&[t]).set(0);
        }
        Ok(m)
    }

    /// Exports `longshot_worker_device_memory_used_bytes`, read from `probe` at every scrape (a
    /// driver query costs microseconds, and nothing on the render path has to update it).
    pub fn watch_device_memory(
        registry: &Registry,
        probe: impl Fn() -> Option<u64> + Send + Sync + 'static,
    ) -> Result<(), prometheus::Error> {
        let gauge = IntGauge::with_opts(Opts::new(
            "longshot_worker_device_memory_used_bytes",
            "Memory in use on the worker's device: the GPU's (all processes, cuMemGetInfo), or this \
             process's resident set on a CPU worker.",
        ))?;
        registry.register(Box::new(DeviceMemory {
            gauge,
            probe: Box::new(probe),
        }))
    }

    /// Metrics kept but not exported (tests, embedded workers).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new(), "unregistered", "unregistered", "none").expect("fresh registry")
    }

    pub fn text_encoded(&self, model: &str, secs: f64) {
        self.text_encode.with_label_values(&[model]).observe(secs);
    }

    /// A shard starts: busy, and which transport its velocities use.
    pub fn shard_started(&self, transport: &str) {
        self.busy.set(1);
        for t in ["tcp", "nccl"] {
            self.transport.with_label_values(&[t]).set(i64::from(t == transport));
        }
    }

    pub fn shard_ended(&self, model: &str, ok: bool) {
        self.busy.set(0);
        self.shards
            .with_label_values(&[model, if ok { "done" } else { "failed" }])
            .inc();
    }

    pub fn decoded(&self, model: &str, secs: f64) {
        self.decode.with_label_values(&[model]).observe(secs);
    }

    pub fn previewed(&self, model: &str, secs: f64) {
        self.preview.with_label_values(&[model]).observe(secs);
    }

    /// Times each window's steps from the progress callback: a step ends when the loop reports it.
    pub fn step_clock(&self, model: &str) -> StepClock {
        StepClock {
            step: self.step.with_label_values(&[model]),
            started: Instant::now(),
            last: HashMap::new(),
        }
    }

    /// `denoiser`, with every forward timed.
    pub fn timed_denoiser(&self, denoiser: Box<dyn Denoiser>) -> Box<dyn Denoiser> {
        let forward = self.forward.with_label_values(&[&denoiser.info().name]);
        Box::new(TimedDenoiser {
            inner: denoiser,
            forward,
        })
    }

    /// `exchange`, with its waits timed and its bytes counted.
    pub fn metered_exchange(&self, exchange: Box<dyn ShardExchange>) -> Box<dyn ShardExchange> {
        Box::new(MeteredExchange {
            inner: exchange,
            wait: self.exchange_wait.clone(),
            sent: self.exchange_bytes.with_label_values(&["sent"]),
            received: self.exchange_bytes.with_label_values(&["received"]),
        })
    }
}

/// See [`WorkerMetrics::step_clock`].
pub struct StepClock {
    step: Histogram,
    started: Instant,
    last: HashMap<usize, Instant>,
}

impl StepClock {
    pub fn step_done(&mut self, window: usize) {
        let now = Instant::now();
        let since = self.last.insert(window, now).unwrap_or(self.started);
        self.step.observe(now.duration_since(since).as_secs_f64());
    }
}

struct TimedDenoiser {
    inner: Box<dyn Denoiser>,
    forward: Histogram,
}

impl Denoiser for TimedDenoiser {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    fn predict(
        &mut self,
        x: &Latents,
        window: WindowContext,
        step: StepPoint,
        branch: Branch,
        out: &mut Latents,
    ) -> Result<(), DenoiseError> {
        let timer = self.forward.start_timer();
        let result = self.inner.predict(x, window, step, branch, out);
        timer.observe_duration();
        result
    }
}

fn payload_bytes(m: &OverlapMessage) -> u64 {
    match &m.payload {
        Payload::Velocity(v) | Payload::Halo(v) => 4 * v.len() as u64,
        Payload::LatentHash(_) => 8,
    }
}

struct MeteredExchange {
    inner: Box<dyn ShardExchange>,
    wait: Histogram,
    sent: prometheus::IntCounter,
    received: prometheus::IntCounter,
}

impl Exchange for MeteredExchange {
    fn send(&mut self, side: Side, msg: OverlapMessage) -> Result<(), ExchangeError> {
        self.sent.inc_by(payload_bytes(&msg));
        self.inner.send(side, msg)
    }

    fn recv(&mut self, side: Side, step: u32) -> Result<OverlapMessage, ExchangeError> {
        let timer = self.wait.start_timer();
        let msg = self.inner.recv(side, step)?;
        timer.observe_duration();
        self.received.inc_by(payload_bytes(&msg));
        Ok(msg)
    }
}

impl ShardExchange for MeteredExchange {
    fn bytes_sent(&self) -> u64 {
        self.inner.bytes_sent()
    }

    fn transport(&self) -> &'static str {
        self.inner.transport()
    }
}

/// See [`WorkerMetrics::watch_device_memory`]. A scrape that cannot read the device exports
/// nothing for it rather than a stale or zero value.
struct DeviceMemory {
    gauge: IntGauge,
    probe: Box<dyn Fn() -> Option<u64> + Send + Sync>,
}

impl Collector for DeviceMemory {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match (self.probe)() {
            Some(bytes) => {
                self.gauge.set(i64::try_from(bytes).unwrap_or(i64::MAX));
                self.gauge.collect()
            }
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn scrape(r: &Registry) -> String {
        prometheus::TextEncoder::new().encode_to_string(&r.gather()).unwrap()
    }

    #[test]
    fn device_memory_is_read_at_each_scrape_and_absent_when_unreadable() {
        let registry = Registry::new();
        let bytes = Arc::new(AtomicU64::new(3 << 30));
        let b = bytes.clone();
        WorkerMetrics::watch_device_memory(&registry, move || Some(b.load(Ordering::SeqCst)).filter(|&v| v > 0))
            .unwrap();
        assert!(scrape(&registry).contains(&format!("longshot_worker_device_memory_used_bytes {}", 3u64 << 30)));
        bytes.store(5 << 20, Ordering::SeqCst);
        assert!(scrape(&registry).contains(&format!("longshot_worker_device_memory_used_bytes {}", 5u64 << 20)));
        bytes.store(0, Ordering::SeqCst);
        assert!(!scrape(&registry).contains("longshot_worker_device_memory_used_bytes"));
    }
}
