//! The worker: runs assigned window ranges through the co-denoising loop with a network overlap
//! exchange, decodes the frames it owns, and streams them to the coordinator. It implements the
//! transport-agnostic `WorkerApi` and `ExchangeApi` of `longshot_core::api`; the `proto` crate
//! serves them over gRPC.
//!
//! - [`node`]: `WorkerNode`, the shard lifecycle (fencing by plan id, cancellation, events).
//! - [`net_exchange`]: the `Exchange` implementation over the network, bridging the loop's thread
//!   and the async runtime.
//! - [`nccl`]: NCCL for the overlap velocities on GPU workers (`WorkerService.CreateNcclId`, the
//!   shard's NCCL exchange with the TCP one for hashes and halos).
//! - [`models`]: `ModelSet`, the models this worker serves (the built-in ones, Wan2.1 pipelines
//!   loaded with `--model`), each a `ServedModel`: prompt encoding on request, a denoiser and
//!   decoder per shard.
//! - [`device`]: `--device auto|cpu|cuda`: the GPU when usable, else the CPU with one log line
//!   (or a refusal when `cuda` was demanded).
//! - [`membership`]: registration and heartbeats with the coordinator.
//! - [`metrics`]: the worker's Prometheus metrics and the wrappers that record them.
//! - [`etcd_membership`]: registration in etcd under a lease kept alive on its own thread
//!   (`--etcd`), for clusters with several coordinators.
//! - [`serve()`]: the worker process's life, from loading its models to leaving the cluster;
//!   [`machine`]: what it advertises about the machine; [`transport`]: the wire it is served over,
//!   passed in by the binary.
#![forbid(unsafe_code)]

pub mod device;
pub mod etcd_membership;
pub mod machine;
pub mod membership;
pub mod metrics;
pub mod models;
pub mod nccl;
pub mod net_exchange;
pub mod node;
pub mod serve;
pub mod trace;
pub mod transport;

pub use node::WorkerNode;
pub use serve::{serve, Membership, ServeConfig, ServeError};
pub use transport::WorkerTransport;
