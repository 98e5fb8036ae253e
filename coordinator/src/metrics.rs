//! The coordinator's Prometheus metrics. Labels stay low-cardinality: `model`, `outcome`,
//! `state`; never a job id or a prompt. The binary serves them on `/metrics`.

use crate::lifecycle::Transition;
use longshot_core::api::{JobState, JobStatus};
use prometheus::{exponential_buckets, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts};
use prometheus::{IntGaugeVec, Registry};

/// Job latency buckets, 1 s to ~8 h: vLLM's end-to-end request-latency layout, extended for renders
/// that take hours.
pub const JOB_SECONDS_BUCKETS: [f64; 20] = [
    1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 7200.0,
    14400.0, 21600.0, 28800.0,
];

/// Every coordinator metric, registered in one registry.
#[derive(Clone)]
pub struct CoordinatorMetrics {
    submitted: IntCounterVec,
    finished: IntCounterVec,
    jobs: IntGaugeVec,
    queue_wait: HistogramVec,
    duration: HistogramVec,
    frames: IntCounterVec,
    video_seconds: prometheus::CounterVec,
    realtime_factor: HistogramVec,
    workers: GaugeVec,
    gang_size: Histogram,
    requeues: IntCounterVec,
    resumes: IntCounterVec,
    uploads: IntCounterVec,
    upload_bytes: prometheus::IntCounter,
    device_seconds: prometheus::CounterVec,
}

impl CoordinatorMetrics {
    /// Creates the metrics and registers them (and `longshot_build_info`) in `registry`.
    pub fn register(registry: &Registry, version: &str) -> Result<Self, prometheus::Error> {
        let hist = |name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]| {
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        };
        let m = CoordinatorMetrics {
            submitted: IntCounterVec::new(
                Opts::new("longshot_jobs_submitted_total", "Jobs accepted by the coordinator."),
                &["model"],
            )?,
            finished: IntCounterVec::new(
                Opts::new(
                    "longshot_jobs_finished_total",
                    "Jobs that ended, by outcome (done, failed, cancelled).",
                ),
                &["model", "outcome"],
            )?,
            jobs: IntGaugeVec::new(
                Opts::new(
                    "longshot_jobs",
                    "Jobs in the job table that have not ended, by state (queued, running).",
                ),
                &["state"],
            )?,
            queue_wait: hist(
                "longshot_job_queue_wait_seconds",
                "From submission to the start of the job's (last) plan.",
                JOB_SECONDS_BUCKETS.to_vec(),
                &["model"],
            )?,
            duration: hist(
                "longshot_job_duration_seconds",
                "From submission to the end of the job, by outcome.",
                JOB_SECONDS_BUCKETS.to_vec(),
                &["model", "outcome"],
            )?,
            frames: IntCounterVec::new(
                Opts::new("longshot_frames_rendered_total", "Output frames of finished jobs."),
                &["model"],
            )?,
            video_seconds: prometheus::CounterVec::new(
                Opts::new(
                    "longshot_video_seconds_rendered_total",
                    "Seconds of video of finished jobs.",
                ),
                &["model"],
            )?,
            realtime_factor: hist(
                "longshot_job_realtime_factor",
                "Wall seconds from submission to done per second of video.",
                exponential_buckets(0.25, 2.0, 18)?,
                &["model"],
            )?,
            workers: GaugeVec::new(
                Opts::new("longshot_workers", "Registered workers by state (idle, busy)."),
                &["state"],
            )?,
            gang_size: Histogram::with_opts(
                HistogramOpts::new("longshot_gang_size", "Workers per started plan.")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            )?,
            requeues: IntCounterVec::new(
                Opts::new(
                    "longshot_plan_requeues_total",
                    "Plans given up because a worker refused its shard.",
                ),
                &["model"],
            )?,
            resumes: IntCounterVec::new(
                Opts::new(
                    "longshot_job_resumes_total",
                    "Runs interrupted (a lost worker, a coordinator restart) whose job went back to the queue to resume from its last checkpoint",
                ),
                &["model"],
            )?,
            uploads: IntCounterVec::new(
                Opts::new(
                    "longshot_inputs_uploaded_total",
                    "Uploads of job inputs (reference images), by outcome (stored, refused).",
                ),
                &["outcome"],
            )?,
            upload_bytes: prometheus::IntCounter::with_opts(Opts::new(
                "longshot_input_bytes_stored_total",
                "Bytes of job inputs stored.",
            ))?,
            device_seconds: prometheus::CounterVec::new(
                Opts::new(
                    "longshot_job_device_seconds_total",
                    "Device time jobs used, summed over their workers (each from accepting a shard to its end), by device kind (cuda, cpu).",
                ),
                &["model", "device"],
            )?,
        };
        let build = Gauge::with_opts(
            Opts::new("longshot_build_info", "Always 1; the build's version in a label.")
                .const_label("version", version)
                .const_label("component", "coordinator"),
        )?;
        build.set(1.0);
        registry.register(Box::new(build))?;
        for c in [
            &m.submitted,
            &m.finished,
            &m.frames,
            &m.requeues,
            &m.resumes,
            &m.uploads,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(m.upload_bytes.clone()))?;
        registry.register(Box::new(m.jobs.clone()))?;
        registry.register(Box::new(m.video_seconds.clone()))?;
        registry.register(Box::new(m.device_seconds.clone()))?;
        for h in [&m.queue_wait, &m.duration, &m.realtime_factor] {
            registry.register(Box::new(h.clone()))?;
        }
        registry.register(Box::new(m.workers.clone()))?;
        registry.register(Box::new(m.gang_size.clone()))?;
        for state in ["queued", "running"] {
            m.jobs.with_label_values(&[state]).set(0);
        }
        for state in ["idle", "busy"] {
            m.workers.with_label_values(&[state]).set(0.0);
        }
        Ok(m)
    }

    /// Metrics that are not exported anywhere (tests, embedded coordinators).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new(), "unregistered").expect("fresh registry")
    }

    /// An upload ended: stored (`Some(bytes)`) or refused.
    pub(crate) fn uploaded(&self, stored: Option<u64>) {
        let outcome = if stored.is_some() { "stored" } else { "refused" };
        self.uploads.with_label_values(&[outcome]).inc();
        self.upload_bytes.inc_by(stored.unwrap_or(0));
    }

    pub(crate) fn submitted(&self, model: &str) {
        self.submitted.with_label_values(&[model]).inc();
        // Series that may stay at zero exist from a model's first job, so rates and ratios over
        // them have data (a failure ratio of 0 rather than nothing).
        self.requeues.with_label_values(&[model]).inc_by(0);
        self.resumes.with_label_values(&[model]).inc_by(0);
        for outcome in [JobState::Done, JobState::Failed, JobState::Cancelled] {
            self.finished.with_label_values(&[model, outcome.as_str()]).inc_by(0);
        }
    }

    /// Records what a state change means; `status` is the job after it, `now_ms` the wall clock.
    pub(crate) fn transition(&self, status: &JobStatus, model: &str, t: &Transition, now_ms: u64) {
        let since_submit = now_ms.saturating_sub(status.submitted_unix_ms) as f64 / 1e3;
        match t {
            Transition::Start(plan) => {
                self.queue_wait.with_label_values(&[model]).observe(since_submit);
                self.gang_size.observe(f64::from(plan.workers));
            }
            Transition::Requeue(_) => self.requeues.with_label_values(&[model]).inc(),
            Transition::Interrupt(_) => self.resumes.with_label_values(&[model]).inc(),
            Transition::Decode => {}
            Transition::Finish(_) | Transition::Fail(_) | Transition::Cancel => {
                let outcome = status.state.as_str();
                let wall = status.wall_seconds().unwrap_or(since_submit);
                self.finished.with_label_values(&[model, outcome]).inc();
                self.duration.with_label_values(&[model, outcome]).observe(wall);
                if status.state == JobState::Done {
                    let frames = status.plan.map_or(0, |p| p.output_frames);
                    self.frames.with_label_values(&[model]).inc_by(u64::from(frames));
                    self.video_seconds
                        .with_label_values(&[model])
                        .inc_by(status.video_seconds());
                    if let Some(factor) = status.realtime_factor() {
                        self.realtime_factor.with_label_values(&[model]).observe(factor);
                    }
                }
            }
        }
    }

    /// A worker with device kind `device` held a shard of a `model` job for `seconds`.
    pub(crate) fn device_time(&self, model: &str, device: &str, seconds: f64) {
        self.device_seconds.with_label_values(&[model, device]).inc_by(seconds);
    }

    /// Sets the workers-by-state gauges.
    pub(crate) fn worker_counts(&self, idle: usize, busy: usize) {
        self.workers.with_label_values(&["idle"]).set(idle as f64);
        self.workers.with_label_values(&["busy"]).set(busy as f64);
    }

    /// Sets the queued/running gauges from the table's counts.
    pub(crate) fn job_counts(&self, queued: usize, running: usize) {
        self.jobs.with_label_values(&["queued"]).set(queued as i64);
        self.jobs.with_label_values(&["running"]).set(running as i64);
    }
}

/// `longshot_coordinator_leader`: 1 on the coordinator that schedules and writes job records, 0 on
/// a standby. Registered apart from [`CoordinatorMetrics`], which exists only on the leader.
pub fn leader_gauge(registry: Option<&Registry>) -> prometheus::IntGauge {
    let gauge = prometheus::IntGauge::new(
        "longshot_coordinator_leader",
        "1 on the coordinator that leads (schedules jobs, writes job records), 0 on a standby.",
    )
    .expect("a valid metric name");
    if let Some(r) = registry {
        if let Err(e) = r.register(Box::new(gauge.clone())) {
            tracing::error!("longshot_coordinator_leader is not exported: {e}");
        }
    }
    gauge
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_counted_by_outcome_with_the_bytes_stored() {
        let registry = Registry::new();
        let m = CoordinatorMetrics::register(&registry, "test").unwrap();
        m.uploaded(Some(100));
        m.uploaded(Some(20));
        m.uploaded(None);
        let value = |name: &str, outcome: Option<&str>| -> f64 {
            let families = registry.gather();
            let f = families.iter().find(|f| f.name() == name).expect(name);
            f.get_metric()
                .iter()
                .find(|m| outcome.is_none_or(|o| m.get_label().iter().any(|l| l.value() == o)))
                .map(|m| m.get_counter().get_value())
                .expect("series")
        };
        assert_eq!(value("longshot_inputs_uploaded_total", Some("stored")), 2.0);
        assert_eq!(value("longshot_inputs_uploaded_total", Some("refused")), 1.0);
        assert_eq!(value("longshot_input_bytes_stored_total", None), 120.0);
    }
}
