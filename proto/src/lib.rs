//! gRPC definitions for Longshot. Only this crate knows prost/tonic types; the other crates
//! convert to and from their own domain types at the edge.
//!
//! Layout:
//! - `proto/longshot/v1/*.proto`: the wire contract (package `longshot.v1`):
//!   - `JobService` (client → coordinator): submit, watch, cancel and fetch jobs, list workers and
//!     models;
//!   - `RegistryService` (worker → coordinator): register, heartbeat, deregister;
//!   - `WorkerService` (coordinator → worker): run a shard of windows under a plan id (fencing
//!     token), cancel it, report status;
//!   - `ExchangeService` (worker ↔ worker): the per-step overlap exchange, one bidirectional stream
//!     per window boundary (see `EXCHANGE_TRANSPORT.md` for why gRPC and not raw TCP).
//! - [`pb`]: the generated messages, clients (`pb::job_service_client::JobServiceClient`, …) and
//!   servers (`pb::job_service_server::JobServiceServer`, …), built into `OUT_DIR` by `build.rs`.
//! - [`FILE_DESCRIPTOR_SET`], [`health_service`], [`reflection_service`]: what every binary adds to
//!   its tonic `Server` next to its own services.
//! - [`server_builder`], [`incoming`], [`endpoint`]: tonic servers and channels with the HTTP/2
//!   settings measured for multi-MiB messages ([`transport`]).
//! - [`wire`]: exact-bit helpers for the f32 payloads (`bytes` fields and `fixed32` bit patterns).
//! - [`convert`]: domain types of `longshot_core::api` ↔ [`pb`] messages; every conversion from
//!   the wire is fallible and names the bad field.
//! - [`status`]: `ApiError` ↔ `tonic::Status`, the only place error codes are decided.
//! - [`server`]: tonic adapters over the domain service traits, and [`server::serve_coordinator`]
//!   / [`server::serve_worker`], what the binaries run.
//! - [`client`]: the domain traits over gRPC: [`client::JobClient`], [`client::RegistryClient`],
//!   [`client::GrpcWorkerConnector`], [`client::GrpcExchangeConnector`].
#![forbid(unsafe_code)]

/// Sets both message size limits of a generated client or server to [`MAX_MESSAGE_BYTES`]; a
/// macro because the generated types share no trait for these builder methods.
macro_rules! sized {
    ($service:expr) => {
        $service
            .max_decoding_message_size($crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size($crate::MAX_MESSAGE_BYTES)
    };
}

pub mod auth;
pub mod client;
pub mod connections;
pub mod convert;
pub mod server;
mod services;
pub mod status;
pub mod submit_rate;
pub mod tls;
mod trace_context;
pub mod transport;
pub mod wire;

pub use server::ProtoError;
pub use services::{health_service, reflection_service, reflection_service_v1alpha};
pub use transport::{endpoint, incoming, server_builder};

/// Generated protobuf messages and tonic clients/servers of package `longshot.v1`.
pub mod pb {
    /// The package as generated; everything is also re-exported one level up, as `pb::JobSpec`.
    // Generated code: its lints and docs are prost's and tonic's business, not ours.
    #[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/longshot.v1.rs"));
    }
    pub use v1::*;
}

/// Encoded `google.protobuf.FileDescriptorSet` of every `longshot.v1` file, for server
/// reflection (and for tools that want to decode the messages dynamically).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/longshot_descriptor.bin"));

/// Largest message Longshot's clients and servers accept, encoded or decoded.
///
/// tonic's default decode limit is 4 MiB; one overlap payload is 1.9 MiB for Wan2.1 at 480×832
/// and 4.6 MiB at 720×1280, and a latents or frame message is larger, so every endpoint raises
/// the limit to this value (`max_decoding_message_size` / `max_encoding_message_size`).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Largest request the coordinator's clients may send (a job spec, a worker registration): far
/// above any legitimate one (a spec's prompts are at most `MAX_PROMPT_CHARS` characters each) and
/// far below [`MAX_MESSAGE_BYTES`]; tonic refuses a larger one from its length prefix, before
/// buffering it.
pub const MAX_CLIENT_REQUEST_BYTES: usize = 4 << 20;
