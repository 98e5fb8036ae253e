//! Test doubles and fixtures over `longshot_core::api` types only, so the coordinator's, the
//! worker's and the gRPC adapters' tests share them: [`worker_info`], a valid `WorkerInfo` to
//! adjust with struct-update syntax, and [`FakeWorker`], an in-process `WorkerApi` that records
//! its calls, with [`FakeConnector`] handing fakes to a coordinator by address.

mod fake_worker;

pub use fake_worker::{black_frames, Answer, FakeConnector, FakeWorker};

use longshot_core::api::{WorkerInfo, WorkerState};

/// An idle CPU worker `id` at `127.0.0.1:7001`, version `0.1.0`, serving no model. Tests change
/// what matters to them: `WorkerInfo { models, ..worker_info("w1") }`.
pub fn worker_info(id: &str) -> WorkerInfo {
    WorkerInfo {
        id: id.into(),
        address: "127.0.0.1:7001".into(),
        device_kind: "cpu".into(),
        device_name: "test".into(),
        memory_bytes: 1 << 30,
        budget_bytes: 0,
        models: Vec::new(),
        version: "0.1.0".into(),
        state: WorkerState::Idle,
        nccl_gpu: None,
    }
}
