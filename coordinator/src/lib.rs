//! The coordinator: accepts jobs, plans windows, gang-assigns contiguous window ranges to the
//! workers that serve the job's model, tracks progress, assembles outputs. It never touches a GPU
//! and never sees a gRPC type: it implements the transport-agnostic traits of
//! `longshot_core::api`, which the `proto` crate serves over gRPC.
//!
//! - [`registry`]: worker membership (`Registry` trait, in-memory implementation).
//! - [`etcd_registry`]: membership read from etcd (workers register there under a lease).
//! - [`job_store`]: durable job records (`JobStore` trait, no-op default, etcd), and what a
//!   restarted coordinator does with them.
//! - [`jobs`]: the job table: validation on submit, queue order, events, cancellation.
//! - [`dispatch`]: the scheduling loop and the per-job run (shards, progress, failure handling).
//! - [`nccl_gang`]: whether a gang exchanges its overlap velocities over NCCL or TCP.
//! - [`assembly`]: ordering decoded frames and writing MP4 / ProRes / PNG / latents.
#![forbid(unsafe_code)]

pub mod assembly;
pub mod dispatch;
pub mod etcd_registry;
pub mod job_store;
pub mod jobs;
pub mod nccl_gang;
pub mod registry;

pub use jobs::{Coordinator, CoordinatorConfig};
pub use nccl_gang::OverlapTransport;
pub use registry::{InMemoryRegistry, Registry, RegistryError};
