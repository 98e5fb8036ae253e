//! Conversions between the generated messages ([`crate::pb`]) and `longshot_core::api`'s domain
//! types, one file per service family.
//!
//! Domain → pb is infallible (`From`). pb → domain is fallible (`TryFrom<_, Error = ApiError>` or a
//! `*_from_pb` function where the orphan rule or extra context requires one): anything that arrives
//! from the network can be malformed, and a malformed message becomes
//! [`ApiError::InvalidArgument`] naming the field and what is allowed, never a panic further in.
//!
//! Field names in errors are the proto field names, dotted for nested messages
//! (`schedule.sigma_bits`, `models[1].window_frames`); a `JobSpec`'s fields keep their bare names
//! (`duration`, `width`) so they match `JobSpec::validate`'s.
//!
//! - [`job`]: `JobService` messages (spec, status, events, outputs).
//! - [`cluster`]: `RegistryService` messages (workers, models, registration).
//! - [`shard`]: `WorkerService` messages (assignment with exact-bit schedule, shard events).
//! - [`conditioning`]: prompts and their text embeddings (in assignments and `EncodeText`).
//! - [`exchange`]: `ExchangeService` overlap frames.
//! - `stream`: received gRPC streams as domain streams that end after their first error.

pub mod cluster;
pub mod conditioning;
pub mod exchange;
pub mod job;
pub mod shard;
pub(crate) mod stream;

pub use cluster::{models_from_pb, register_refusal_to_pb, worker_state_from_pb, workers_from_pb};
pub use conditioning::{embeddings_from_pb, embeddings_to_pb};
pub use job::{job_event_to_pb, job_state_filter_from_pb, job_state_from_pb, output_kind_from_pb};
pub use shard::{nccl_unique_id_from_pb, read_resume};

use longshot_core::api::ApiError;
use longshot_core::job::FieldError;
use std::time::Duration;

/// An `InvalidArgument` error for one field.
pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::InvalidArgument(vec![FieldError::new(field, message)])
}

/// Prefixes the field names of an `InvalidArgument` error with `prefix` (the field of the
/// enclosing message), so a nested error names its full path; other errors pass unchanged.
pub(crate) fn nest(prefix: &str, err: ApiError) -> ApiError {
    match err {
        ApiError::InvalidArgument(errors) => ApiError::InvalidArgument(
            errors
                .into_iter()
                .map(|e| {
                    let field = if e.field.is_empty() {
                        prefix.to_string()
                    } else {
                        format!("{prefix}.{}", e.field)
                    };
                    FieldError::new(field, e.message)
                })
                .collect(),
        ),
        other => other,
    }
}

/// A required sub-message: proto3 makes every message field optional on the wire.
pub(crate) fn required<T>(value: Option<T>, field: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| invalid(field, "is required"))
}

/// A `u32` count to `usize` (lossless on every platform Longshot runs on, but checked anyway).
pub(crate) fn to_usize(value: u32, field: &str) -> Result<usize, ApiError> {
    usize::try_from(value).map_err(|_| invalid(field, format!("{value} does not fit in usize")))
}

/// A `usize` to the `u32` of the wire, saturating: the values sent (frame counts, steps, window
/// indices) are far below `u32::MAX` whenever they passed validation.
pub(crate) fn to_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// A duration as whole milliseconds, rounded up so that a sub-millisecond timeout never becomes 0,
/// and saturating at `u32::MAX` (49 days).
pub(crate) fn duration_to_ms(d: Duration) -> u32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

pub(crate) fn ms_to_duration(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

/// Empty strings are proto3's "unset".
pub(crate) fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}
