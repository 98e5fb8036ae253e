//! What the coordinator's tasks share: settings, membership, the worker connector and the job
//! table.

use crate::checkpoints::CheckpointStore;
use crate::config::CoordinatorConfig;
use crate::job_store::JobStore;
use crate::job_table::JobTable;
use crate::registry::Registry;
use longshot_core::api::WorkerConnector;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

pub(crate) struct Inner {
    pub cfg: CoordinatorConfig,
    pub registry: Arc<dyn Registry>,
    pub connector: Arc<dyn WorkerConnector>,
    /// Where job records are kept (the table saves changes there too).
    pub store: Arc<dyn JobStore>,
    /// Checkpoint blobs, in the data dir.
    pub checkpoints: CheckpointStore,
    table: Mutex<JobTable>,
    /// Wakes the scheduling loop: a job was queued or workers were freed or registered.
    pub wake: Notify,
}

impl Inner {
    /// The uploaded inputs.
    pub fn inputs(&self) -> crate::inputs::InputStore {
        crate::inputs::InputStore::new(&self.cfg.data_dir, self.cfg.limits.max_input_bytes)
    }

    pub fn new(
        cfg: CoordinatorConfig,
        registry: Arc<dyn Registry>,
        connector: Arc<dyn WorkerConnector>,
        store: Arc<dyn JobStore>,
        table: JobTable,
    ) -> Self {
        Inner {
            checkpoints: CheckpointStore::new(&cfg.data_dir),
            cfg,
            registry,
            connector,
            store,
            table: Mutex::new(table),
            wake: Notify::new(),
        }
    }

    /// The job table. Hold it briefly and never across an await.
    pub fn lock(&self) -> MutexGuard<'_, JobTable> {
        // Critical sections only mutate plain maps; a poisoned lock still holds a consistent table.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}
