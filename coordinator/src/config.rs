//! Coordinator settings.

use crate::admission::AdmissionLimits;
use crate::nccl_gang::OverlapTransport;
use crate::placement::PlacementConfig;
use std::path::PathBuf;
use std::time::Duration;

/// Coordinator settings.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Where job outputs are written (`<data_dir>/jobs/<job id>/`).
    pub data_dir: PathBuf,
    /// How long a worker waits for a neighbour's overlap before failing its shard.
    pub exchange_timeout: Duration,
    /// Overlap hashes are compared every this many steps.
    pub hash_every: usize,
    pub heartbeat_interval: Duration,
    /// At most this many workers per job (0: as many as there are windows).
    pub max_workers_per_job: usize,
    /// How long the worker asked to encode a job's prompts may take (a real umT5-XXL on a CPU,
    /// loaded on first use, takes minutes).
    pub encode_timeout: Duration,
    /// How gangs exchange overlap velocities (NCCL only where the whole gang can).
    pub overlap_transport: OverlapTransport,
    /// Workers stream every window's state to the checkpoint store every this many steps and
    /// after the last: `None` picks [`longshot_core::checkpoint::default_interval`] per job (an
    /// interruption then loses ≤ ~2% of the steps), `Some(0)` turns checkpoints off.
    pub checkpoint_every: Option<usize>,
    /// Where the coordinator's metrics are registered (`None`: kept, not exported).
    pub metrics: Option<prometheus::Registry>,
    /// The build, reported as `longshot_build_info{version}`.
    pub version: String,
    /// Finished jobs (and their outputs) are removed this long after they finished.
    pub retain_finished: Duration,
    /// Per-job caps checked at submit, besides what the cluster can hold.
    pub limits: AdmissionLimits,
}

/// How long finished jobs are kept by default.
pub const DEFAULT_RETAIN_FINISHED: Duration = Duration::from_secs(7 * 24 * 3600);

impl CoordinatorConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            exchange_timeout: Duration::from_secs(120),
            hash_every: 5,
            heartbeat_interval: Duration::from_secs(2),
            max_workers_per_job: 0,
            encode_timeout: Duration::from_secs(1800),
            overlap_transport: OverlapTransport::Tcp,
            checkpoint_every: None,
            metrics: None,
            version: env!("CARGO_PKG_VERSION").into(),
            retain_finished: DEFAULT_RETAIN_FINISHED,
            limits: AdmissionLimits::default(),
        }
    }

    /// The checkpoint interval of a job of `steps` steps (0: none).
    pub fn checkpoint_interval(&self, steps: usize) -> usize {
        self.checkpoint_every
            .unwrap_or_else(|| longshot_core::checkpoint::default_interval(steps))
    }

    pub(crate) fn placement(&self) -> PlacementConfig {
        PlacementConfig {
            max_workers_per_job: self.max_workers_per_job,
        }
    }
}
