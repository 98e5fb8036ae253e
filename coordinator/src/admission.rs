//! Admission at submit: a job the cluster cannot hold is refused before it is created, naming
//! the limit. Checked against the workers that serve the job's model now:
//! - a window's state (`longshot_core::admission`) must fit the largest worker budget, and all
//!   the windows must fit the serving workers together (placement then only forms gangs whose
//!   shares fit, and each worker refuses a shard above its budget);
//! - the outputs' estimated bytes must fit the data dir's free space and `--max-output-bytes`;
//! - frames and steps must be within the configured caps.

use crate::disk_space::{estimate, human};
use longshot_core::admission::{budget_of, model_window_bytes, windows_within};
use longshot_core::api::WorkerInfo;
use longshot_core::denoiser::ModelInfo;
use longshot_core::job::{ClipLength, FieldError, ResolvedJob};
use longshot_media::VideoMeta;

/// Per-job caps (`None`: only what the cluster can hold limits the job).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub max_frames: Option<u32>,
    pub max_steps: Option<u32>,
    pub max_output_bytes: Option<u64>,
    /// The largest uploaded input (`--max-input-bytes`).
    pub max_input_bytes: u64,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            max_frames: None,
            max_steps: None,
            max_output_bytes: None,
            max_input_bytes: longshot_core::inputs::DEFAULT_MAX_INPUT_BYTES,
        }
    }
}

/// Bytes a worker holds per window of `job`.
pub fn window_bytes(job: &ResolvedJob, model: &ModelInfo) -> u64 {
    let rerender = job.spec.rerender.is_some();
    model_window_bytes(model, job.plan.window(), job.latent_height, job.latent_width, rerender)
}

/// The estimated bytes of `job`'s outputs with `workers` in its gang.
pub fn output_bytes(job: &ResolvedJob, model: &ModelInfo, workers: usize) -> u64 {
    let meta = VideoMeta {
        width: job.spec.width,
        height: job.spec.height,
        fps: job.spec.fps,
    };
    let shape = [
        job.latent_frames,
        model.latent_channels,
        job.latent_height,
        job.latent_width,
    ];
    estimate(&job.outputs, &meta, job.frames, shape, workers)
}

/// Everything that keeps `job` from being admitted; empty when it may be queued. `serving`: the
/// registered workers that serve its model; `free_bytes`: the data dir's free space, if known.
pub fn check(
    job: &ResolvedJob,
    model: &ModelInfo,
    serving: &[&WorkerInfo],
    limits: &AdmissionLimits,
    free_bytes: Option<u64>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let length_field = match job.spec.length {
        ClipLength::Seconds(_) => "duration",
        ClipLength::Frames(_) => "frames",
    };
    if let Some(cap) = limits.max_frames.filter(|&cap| job.frames > cap) {
        errors.push(FieldError::new(
            length_field,
            format!(
                "{} frames is more than this cluster's limit of {cap} (--max-frames)",
                job.frames
            ),
        ));
    }
    if let Some(cap) = limits.max_steps.filter(|&cap| job.spec.steps > cap) {
        errors.push(FieldError::new(
            "steps",
            format!(
                "{} is more than this cluster's limit of {cap} (--max-steps)",
                job.spec.steps
            ),
        ));
    }
    let per_window = window_bytes(job, model);
    let largest = serving.iter().map(|w| budget_of(w)).max().unwrap_or(u64::MAX);
    let windows = job.windows() as u64;
    // With fewer workers than takes each take runs whole on one worker, in waves.
    let shards = longshot_core::takes::assign(&job.take_plans(), serving.len().max(1)).unwrap_or_default();
    let widest = shards.iter().map(|s| s.windows.len()).max().unwrap_or(0) as u64;
    let waves = !serving.is_empty() && shards.len() > serving.len();
    if per_window > largest {
        errors.push(FieldError::new(
            "width",
            format!(
                "a {}×{} window needs {} of state; the largest budget among the {} workers serving {} is {} (their --memory-budget)",
                job.spec.width,
                job.spec.height,
                human(per_window),
                serving.len(),
                model.name,
                human(largest)
            ),
        ));
    } else if waves && per_window.saturating_mul(widest) > largest {
        errors.push(FieldError::new(
            "shots",
            format!(
                "a take of {widest} windows needs {} of state and runs on one worker when the takes outnumber the {} workers serving {}; the largest budget is {} (their --memory-budget): shorten the take or add workers",
                human(per_window.saturating_mul(widest)),
                serving.len(),
                model.name,
                human(largest)
            ),
        ));
    } else if !waves {
        let capacity = serving
            .iter()
            .fold(0u64, |n, w| n.saturating_add(windows_within(budget_of(w), per_window)));
        if capacity < windows {
            errors.push(FieldError::new(
                length_field,
                format!(
                    "{} frames make {windows} windows needing {} of state; the {} workers serving {} hold at most {capacity} such windows (their --memory-budget)",
                    job.frames,
                    human(per_window.saturating_mul(windows)),
                    serving.len(),
                    model.name,
                ),
            ));
        }
    }
    let gang = serving.len().clamp(1, job.windows().max(1));
    let need = output_bytes(job, model, gang);
    let room = match (free_bytes, limits.max_output_bytes) {
        (Some(free), Some(cap)) if cap < free => Some((cap, "this cluster's limit (--max-output-bytes)")),
        (Some(free), _) => Some((free, "free in the coordinator's data dir")),
        (None, Some(cap)) => Some((cap, "this cluster's limit (--max-output-bytes)")),
        (None, None) => None,
    };
    if let Some((room, what)) = room.filter(|&(room, _)| need > room) {
        errors.push(FieldError::new(
            "outputs",
            format!("need about {}; {} is {what}", human(need), human(room)),
        ));
    }
    errors
}
