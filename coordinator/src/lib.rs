//! The coordinator: accepts jobs, plans windows, gang-assigns contiguous window ranges to the
//! workers that serve the job's model, tracks progress, assembles outputs. It never touches a GPU
//! and never sees a gRPC type: it implements the transport-agnostic traits of
//! `longshot_core::api`, which the `proto` crate serves over gRPC.
//!
//! - [`service`]: the `JobApi` (submit, status, cancel, watch, fetch) and `RegistryApi` the
//!   `proto` crate serves.
//! - `config`: [`CoordinatorConfig`].
//! - `context`: what the coordinator's tasks share (settings, membership, the job table).
//! - [`lifecycle`]: a job's state machine, pure.
//! - `job_table`: every job; the one place a job changes state (persisted, then published).
//! - [`placement`]: which idle workers render which queued job, pure.
//! - `dispatch`: the scheduling loop that places the queue and starts runs.
//! - [`estimate`]: a job's run predicted from how finished runs spent their time, pure.
//! - `job_run`: one job's run on its gang (prompts, shards, progress, failure, cancellation).
//! - [`outputs`]: a finished job's files, streamed to clients.
//! - [`inputs`]: uploaded inputs (reference images) by content address, decoded and checked.
//! - `retention`: removes finished jobs (records and outputs) after `--retain-finished`.
//! - [`leader`]: with etcd, the election among coordinators and what a standby answers.
//! - [`metrics`]: the coordinator's Prometheus metrics (recorded by the job table and the loop).
//! - [`assembly`]: ordering decoded frames and writing MP4 / ProRes / PNG / latents.
//! - [`registry`]: worker membership (`Registry` trait, in-memory implementation).
//! - [`etcd_registry`]: membership read from etcd (workers register there under a lease).
//! - [`job_store`]: durable job records (`JobStore` trait, no-op default, etcd, embedded redb),
//!   and what a restarted coordinator does with them.
//! - [`nccl_gang`]: whether a gang exchanges its overlap velocities over NCCL or TCP.
//!
//! No two modules import each other: `service` → `dispatch` → `job_run` → `job_table` →
//! `lifecycle`, with `placement`, `outputs` and `assembly` as leaves.
#![forbid(unsafe_code)]

pub mod admission;
pub mod assembly;
pub mod checkpoints;
mod config;
mod context;
mod disk_space;
mod dispatch;
pub mod estimate;
pub mod etcd_registry;
pub mod inputs;
mod job_run;
pub mod job_store;
mod job_table;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod nccl_gang;
pub mod outputs;
pub mod placement;
pub mod registry;
mod retention;
pub mod service;
#[cfg(test)]
mod test_spec;

pub use config::{CoordinatorConfig, DEFAULT_RETAIN_FINISHED};
pub use nccl_gang::OverlapTransport;
pub use registry::{InMemoryRegistry, Registry, RegistryError};
pub use service::Coordinator;
