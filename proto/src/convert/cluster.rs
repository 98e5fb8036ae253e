//! `RegistryService` messages (also the answers of `JobService.ListWorkers` / `ListModels`):
//! worker state and info, model info, registration acknowledgement.

use super::{invalid, nest, non_empty, to_u32, to_usize};
use crate::pb;
use longshot_core::api::{ApiError, RegisterAck, WorkerInfo, WorkerState};
use longshot_core::denoiser::ModelInfo;
use longshot_core::job::FieldError;
use std::time::Duration;

// ---- WorkerState ----------------------------------------------------------------------------

impl From<WorkerState> for pb::WorkerState {
    fn from(s: WorkerState) -> Self {
        match s {
            WorkerState::Idle => pb::WorkerState::Idle,
            WorkerState::Busy => pb::WorkerState::Busy,
            WorkerState::Draining => pb::WorkerState::Draining,
            WorkerState::Offline => pb::WorkerState::Offline,
        }
    }
}

/// A worker state from its wire value; `WORKER_STATE_UNSPECIFIED` and unknown values are errors
/// (every Longshot worker reports its state, so a zero means a broken or foreign client).
pub fn worker_state_from_pb(value: i32, field: &str) -> Result<WorkerState, ApiError> {
    const ALLOWED: &str = "allowed: 1 (idle), 2 (busy), 3 (draining), 4 (offline)";
    match pb::WorkerState::try_from(value) {
        Ok(pb::WorkerState::Idle) => Ok(WorkerState::Idle),
        Ok(pb::WorkerState::Busy) => Ok(WorkerState::Busy),
        Ok(pb::WorkerState::Draining) => Ok(WorkerState::Draining),
        Ok(pb::WorkerState::Offline) => Ok(WorkerState::Offline),
        Ok(pb::WorkerState::Unspecified) => Err(invalid(field, format!("is unspecified; {ALLOWED}"))),
        Err(_) => Err(invalid(field, format!("{value} is not a worker state; {ALLOWED}"))),
    }
}

// ---- ModelInfo ------------------------------------------------------------------------------

impl From<ModelInfo> for pb::ModelInfo {
    fn from(m: ModelInfo) -> Self {
        pb::ModelInfo {
            name: m.name,
            window_frames: to_u32(m.window_frames),
            latent_channels: to_u32(m.latent_channels),
            temporal_compression: to_u32(m.temporal_compression),
            spatial_compression: to_u32(m.spatial_compression),
            default_overlap: to_u32(m.default_overlap),
            weights: m.weights,
            reference_images: m.reference_images,
            video_warmup: m.video_warmup,
        }
    }
}

/// Checks what planning divides by or slices with: a model announced with a zero compression or
/// a one-frame window would otherwise make the coordinator divide by zero when it plans a job.
impl TryFrom<pb::ModelInfo> for ModelInfo {
    type Error = ApiError;

    fn try_from(m: pb::ModelInfo) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        if m.name.trim().is_empty() {
            errors.push(FieldError::new("name", "must not be empty"));
        }
        if m.window_frames < 2 {
            errors.push(FieldError::new(
                "window_frames",
                format!("{} is less than 2", m.window_frames),
            ));
        }
        for (field, v) in [
            ("latent_channels", m.latent_channels),
            ("temporal_compression", m.temporal_compression),
            ("spatial_compression", m.spatial_compression),
        ] {
            if v == 0 {
                errors.push(FieldError::new(field, "must be at least 1"));
            }
        }
        if m.window_frames >= 2 && m.default_overlap > m.window_frames / 2 {
            errors.push(FieldError::new(
                "default_overlap",
                format!(
                    "{} is not in 0..={} (half of the {}-frame window)",
                    m.default_overlap,
                    m.window_frames / 2,
                    m.window_frames
                ),
            ));
        }
        if m.reference_images > 2 {
            errors.push(FieldError::new(
                "reference_images",
                format!("{} is not 0, 1 or 2", m.reference_images),
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::InvalidArgument(errors));
        }
        Ok(ModelInfo {
            video_warmup: m.video_warmup,
            name: m.name,
            window_frames: to_usize(m.window_frames, "window_frames")?,
            latent_channels: to_usize(m.latent_channels, "latent_channels")?,
            temporal_compression: to_usize(m.temporal_compression, "temporal_compression")?,
            spatial_compression: to_usize(m.spatial_compression, "spatial_compression")?,
            default_overlap: to_usize(m.default_overlap, "default_overlap")?,
            weights: m.weights,
            reference_images: m.reference_images,
        })
    }
}

/// A list of models, each error named by its index (`models[2].window_frames`).
pub fn models_from_pb(models: Vec<pb::ModelInfo>, field: &str) -> Result<Vec<ModelInfo>, ApiError> {
    models
        .into_iter()
        .enumerate()
        .map(|(i, m)| ModelInfo::try_from(m).map_err(|e| nest(&format!("{field}[{i}]"), e)))
        .collect()
}

// ---- WorkerInfo -----------------------------------------------------------------------------

impl From<WorkerInfo> for pb::WorkerInfo {
    fn from(w: WorkerInfo) -> Self {
        pb::WorkerInfo {
            id: w.id,
            address: w.address,
            device_kind: w.device_kind,
            device_name: w.device_name,
            memory_bytes: w.memory_bytes,
            budget_bytes: w.budget_bytes,
            models: w.models.into_iter().map(Into::into).collect(),
            version: w.version,
            state: pb::WorkerState::from(w.state) as i32,
            nccl_gpu: w.nccl_gpu.unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::WorkerInfo> for WorkerInfo {
    type Error = ApiError;

    fn try_from(w: pb::WorkerInfo) -> Result<Self, ApiError> {
        Ok(WorkerInfo {
            state: worker_state_from_pb(w.state, "state")?,
            models: models_from_pb(w.models, "models")?,
            id: w.id,
            address: w.address,
            device_kind: w.device_kind,
            device_name: w.device_name,
            memory_bytes: w.memory_bytes,
            budget_bytes: w.budget_bytes,
            version: w.version,
            nccl_gpu: non_empty(w.nccl_gpu),
        })
    }
}

/// A list of workers, each error named by its index (`workers[0].state`).
pub fn workers_from_pb(workers: Vec<pb::WorkerInfo>, field: &str) -> Result<Vec<WorkerInfo>, ApiError> {
    workers
        .into_iter()
        .enumerate()
        .map(|(i, w)| WorkerInfo::try_from(w).map_err(|e| nest(&format!("{field}[{i}]"), e)))
        .collect()
}

// ---- RegisterAck ----------------------------------------------------------------------------

/// An accepted registration (a refusal travels as `ApiError::FailedPrecondition`, see
/// [`register_refusal_to_pb`]).
impl From<RegisterAck> for pb::RegisterResponse {
    fn from(a: RegisterAck) -> Self {
        pb::RegisterResponse {
            worker_id: a.worker_id,
            accepted: true,
            reason: String::new(),
            heartbeat_interval_ms: super::duration_to_ms(a.heartbeat_interval),
        }
    }
}

/// A refused registration: `accepted = false` with the coordinator's reason.
pub fn register_refusal_to_pb(worker_id: String, reason: String) -> pb::RegisterResponse {
    pb::RegisterResponse {
        worker_id,
        accepted: false,
        reason,
        heartbeat_interval_ms: 0,
    }
}

/// `accepted = false` becomes `FailedPrecondition(reason)`; an accepted registration must name a
/// heartbeat interval, since a zero one would make the worker's heartbeat timer panic or spin.
impl TryFrom<pb::RegisterResponse> for RegisterAck {
    type Error = ApiError;

    fn try_from(r: pb::RegisterResponse) -> Result<Self, ApiError> {
        if !r.accepted {
            let reason = if r.reason.is_empty() {
                "the coordinator refused the registration without a reason".to_string()
            } else {
                r.reason
            };
            return Err(ApiError::FailedPrecondition(reason));
        }
        if r.heartbeat_interval_ms == 0 {
            return Err(invalid("heartbeat_interval_ms", "must be at least 1"));
        }
        Ok(RegisterAck {
            worker_id: r.worker_id,
            heartbeat_interval: Duration::from_millis(u64::from(r.heartbeat_interval_ms)),
        })
    }
}
