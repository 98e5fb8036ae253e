//! `JobService` messages: job spec (with the defaults for unset fields), job state and status,
//! plan summary, outputs, events, submit result and output chunks.

use super::{invalid, nest, non_empty, required};
use crate::pb::{self, job_event, job_spec, shot};
use longshot_core::api::{
    ApiError, JobCost, JobEstimate, JobEvent, JobRecovery, JobState, JobStatus, OutputChunk, OutputInfo, PlanSummary,
    Prediction, SubmitResult,
};
use longshot_core::codenoise::BlendMode;
use longshot_core::inputs::InputDigest;
use longshot_core::job::{defaults, ClipLength, DraftOf, FieldError, JobInputs, JobSpec, OutputKind, Rerender};
use longshot_core::scheduler::Solver;
use longshot_core::shots::{self, Shot, Transition};

// ---- JobSpec --------------------------------------------------------------------------------

impl From<JobSpec> for pb::JobSpec {
    fn from(s: JobSpec) -> Self {
        pb::JobSpec {
            model: s.model,
            prompt: s.prompt,
            negative_prompt: s.negative_prompt,
            seed: s.seed,
            duration: Some(match s.length {
                ClipLength::Seconds(v) => job_spec::Duration::Seconds(v),
                ClipLength::Frames(v) => job_spec::Duration::Frames(v),
            }),
            fps: Some(s.fps),
            width: Some(s.width),
            height: Some(s.height),
            steps: Some(s.steps),
            guidance: Some(s.guidance),
            shift: Some(s.shift),
            solver: s.solver.to_string(),
            overlap: s.overlap,
            outputs: s.outputs.iter().map(|o| o.as_str().to_string()).collect(),
            priority: s.priority,
            disable_exchange: s.blend == BlendMode::Independent,
            image: s.inputs.image.map(String::from).unwrap_or_default(),
            last_image: s.inputs.last_image.map(String::from).unwrap_or_default(),
            video: s.inputs.video.map(String::from).unwrap_or_default(),
            strength: s.strength,
            shots: s.shots.into_iter().map(Into::into).collect(),
            rerender: s.rerender.map(|r| pb::Rerender {
                source_job: r.source,
                from_frame: r.from_frame,
                to_frame: r.to_frame,
            }),
            split_shots: s.split_shots,
            preview_every: s.preview_every,
            draft: s.draft.map(|d| pb::DraftOf {
                width: d.width,
                height: d.height,
                steps: d.steps,
            }),
        }
    }
}

impl From<Shot> for pb::Shot {
    fn from(s: Shot) -> Self {
        pb::Shot {
            prompt: s.prompt,
            negative_prompt: s.negative_prompt,
            seconds: s.duration,
            frames: s.frames,
            seed: s.seed,
            transition: s.transition.map(|t| match t {
                Transition::Cut => shot::Transition::Cut(true),
                Transition::Blend(d) => shot::Transition::BlendSeconds(d),
            }),
        }
    }
}

impl From<pb::Shot> for Shot {
    fn from(s: pb::Shot) -> Self {
        Shot {
            prompt: s.prompt,
            negative_prompt: s.negative_prompt,
            duration: s.seconds,
            frames: s.frames,
            seed: s.seed,
            transition: s.transition.map(|t| match t {
                shot::Transition::Cut(_) => Transition::Cut,
                shot::Transition::BlendSeconds(d) => Transition::Blend(d),
            }),
            ..Default::default()
        }
    }
}

/// Fills the defaults of `longshot_core::job::defaults` for unset fields and parses the solver
/// and output names. Values are checked by `JobSpec::validate`, where the job enters the
/// coordinator; a message that cannot become a spec (no duration, an unknown solver or output)
/// is refused here, with every other bad field reported too, so a client fixes its request in
/// one round trip.
impl TryFrom<pb::JobSpec> for JobSpec {
    type Error = ApiError;

    fn try_from(p: pb::JobSpec) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let length = p.duration.map(|d| match d {
            job_spec::Duration::Seconds(v) => ClipLength::Seconds(v),
            job_spec::Duration::Frames(v) => ClipLength::Frames(v),
        });
        let shots: Vec<Shot> = p.shots.into_iter().map(Into::into).collect();
        let fps = p.fps.unwrap_or(defaults::FPS);
        // A shot list gives the length; a length given too must agree (JobSpec::validate).
        let length = match (length, shots.is_empty()) {
            (None, false) => shots::total_frames(&shots, fps).map(ClipLength::Frames),
            (l, _) => l,
        };
        if length.is_none() && shots.is_empty() {
            errors.push(FieldError::new("duration", "is required: set seconds or frames"));
        }
        let solver = if p.solver.is_empty() {
            defaults::SOLVER
        } else {
            p.solver.parse::<Solver>().unwrap_or_else(|e| {
                errors.push(FieldError::new("solver", e.to_string()));
                defaults::SOLVER
            })
        };
        let outputs = if p.outputs.is_empty() {
            vec![defaults::OUTPUT]
        } else {
            p.outputs
                .iter()
                .filter_map(|o| {
                    o.parse::<OutputKind>()
                        .map_err(|m| errors.push(FieldError::new("outputs", m)))
                        .ok()
                })
                .collect()
        };
        let mut digest = |field: &str, s: String| {
            non_empty(s).and_then(|s| {
                InputDigest::try_from(s)
                    .map_err(|m| errors.push(FieldError::new(field, m)))
                    .ok()
            })
        };
        let inputs = JobInputs {
            image: digest("image", p.image),
            last_image: digest("last_image", p.last_image),
            video: digest("video", p.video),
        };
        let spec = JobSpec {
            strength: p.strength,
            model: p.model,
            prompt: p.prompt,
            negative_prompt: p.negative_prompt,
            seed: p.seed,
            // A placeholder that passes validation, only used to report the other errors below.
            length: length.unwrap_or(ClipLength::Frames(1)),
            fps,
            width: p.width.unwrap_or(defaults::WIDTH),
            height: p.height.unwrap_or(defaults::HEIGHT),
            steps: p.steps.unwrap_or(defaults::STEPS),
            guidance: p.guidance.unwrap_or(defaults::GUIDANCE),
            shift: p.shift.unwrap_or(defaults::SHIFT),
            solver,
            overlap: p.overlap,
            outputs,
            priority: p.priority,
            blend: if p.disable_exchange {
                BlendMode::Independent
            } else {
                BlendMode::CoDenoise
            },
            inputs,
            shots,
            rerender: p.rerender.map(|r| Rerender {
                source: r.source_job,
                from_frame: r.from_frame,
                to_frame: r.to_frame,
            }),
            split_shots: p.split_shots,
            preview_every: p.preview_every,
            draft: p.draft.map(|d| DraftOf {
                width: d.width,
                height: d.height,
                steps: d.steps,
            }),
        };
        if errors.is_empty() {
            return Ok(spec);
        }
        // Unknown output names were reported above; an empty list left behind is no news.
        let bad_outputs = errors.iter().any(|e| e.field == "outputs");
        errors.extend(
            spec.validate()
                .into_iter()
                .filter(|e| !(bad_outputs && e.field == "outputs")),
        );
        Err(ApiError::InvalidArgument(errors))
    }
}

// ---- JobState -------------------------------------------------------------------------------

impl From<JobState> for pb::JobState {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Queued => pb::JobState::Queued,
            JobState::Running => pb::JobState::Running,
            JobState::Decoding => pb::JobState::Decoding,
            JobState::Done => pb::JobState::Done,
            JobState::Failed => pb::JobState::Failed,
            JobState::Cancelled => pb::JobState::Cancelled,
        }
    }
}

/// A job state from its wire value; `JOB_STATE_UNSPECIFIED` and unknown values are errors.
pub fn job_state_from_pb(value: i32, field: &str) -> Result<JobState, ApiError> {
    job_state_filter_from_pb(value, field)?.ok_or_else(|| {
        invalid(
            field,
            "is unspecified; allowed: 1 (queued), 2 (running), 3 (decoding), 4 (done), 5 (failed), 6 (cancelled)",
        )
    })
}

/// A job state filter (`ListJobsRequest.state`): `JOB_STATE_UNSPECIFIED` means any state.
pub fn job_state_filter_from_pb(value: i32, field: &str) -> Result<Option<JobState>, ApiError> {
    let state = pb::JobState::try_from(value).map_err(|_| {
        invalid(
            field,
            format!("{value} is not a job state; allowed: 0 (any), 1 (queued), 2 (running), 3 (decoding), 4 (done), 5 (failed), 6 (cancelled)"),
        )
    })?;
    Ok(match state {
        pb::JobState::Unspecified => None,
        pb::JobState::Queued => Some(JobState::Queued),
        pb::JobState::Running => Some(JobState::Running),
        pb::JobState::Decoding => Some(JobState::Decoding),
        pb::JobState::Done => Some(JobState::Done),
        pb::JobState::Failed => Some(JobState::Failed),
        pb::JobState::Cancelled => Some(JobState::Cancelled),
    })
}

// ---- PlanSummary, outputs ------------------------------------------------------------------

impl From<PlanSummary> for pb::PlanSummary {
    fn from(p: PlanSummary) -> Self {
        pb::PlanSummary {
            windows: p.windows,
            latent_frames: p.latent_frames,
            output_frames: p.output_frames,
            rendered_frames: p.rendered_frames,
            workers: p.workers,
            overlap: p.overlap,
            window: p.window,
            padded_latent_frames: p.padded_latent_frames,
        }
    }
}

/// Infallible: a summary is informational (all zeros before planning), with nothing to check.
impl From<pb::PlanSummary> for PlanSummary {
    fn from(p: pb::PlanSummary) -> Self {
        PlanSummary {
            windows: p.windows,
            latent_frames: p.latent_frames,
            output_frames: p.output_frames,
            rendered_frames: p.rendered_frames,
            workers: p.workers,
            overlap: p.overlap,
            window: p.window,
            padded_latent_frames: p.padded_latent_frames,
        }
    }
}

/// An output format name, as `OutputKind` spells it.
pub fn output_kind_from_pb(format: &str, field: &str) -> Result<OutputKind, ApiError> {
    format.parse().map_err(|m: String| invalid(field, m))
}

impl From<OutputInfo> for pb::OutputInfo {
    fn from(o: OutputInfo) -> Self {
        pb::OutputInfo {
            name: o.name,
            format: o.format.as_str().to_string(),
            size_bytes: o.size_bytes,
        }
    }
}

impl TryFrom<pb::OutputInfo> for OutputInfo {
    type Error = ApiError;

    fn try_from(o: pb::OutputInfo) -> Result<Self, ApiError> {
        Ok(OutputInfo {
            format: output_kind_from_pb(&o.format, "format")?,
            name: o.name,
            size_bytes: o.size_bytes,
        })
    }
}

fn outputs_from_pb(outputs: Vec<pb::OutputInfo>, field: &str) -> Result<Vec<OutputInfo>, ApiError> {
    outputs
        .into_iter()
        .enumerate()
        .map(|(i, o)| OutputInfo::try_from(o).map_err(|e| nest(&format!("{field}[{i}]"), e)))
        .collect()
}

impl From<JobCost> for pb::JobCost {
    fn from(c: JobCost) -> Self {
        pb::JobCost {
            gpu_seconds: c.gpu_seconds,
            cpu_seconds: c.cpu_seconds,
        }
    }
}

impl From<pb::JobCost> for JobCost {
    fn from(c: pb::JobCost) -> Self {
        JobCost {
            gpu_seconds: c.gpu_seconds,
            cpu_seconds: c.cpu_seconds,
        }
    }
}

// ---- JobEstimate ----------------------------------------------------------------------------

impl From<JobEstimate> for pb::JobEstimate {
    fn from(e: JobEstimate) -> Self {
        pb::JobEstimate {
            plan: Some(e.plan.into()),
            device_kind: e.device_kind,
            jobs_ahead: e.jobs_ahead,
            prediction: e.prediction.map(|p| pb::Prediction {
                wall_seconds: p.wall_seconds,
                cost: Some(p.cost.into()),
                jobs: p.jobs,
                window_step_seconds: p.window_step_seconds,
                frame_seconds: p.frame_seconds,
                overhead_seconds: p.overhead_seconds,
            }),
        }
    }
}

impl TryFrom<pb::JobEstimate> for JobEstimate {
    type Error = ApiError;

    fn try_from(e: pb::JobEstimate) -> Result<Self, ApiError> {
        Ok(JobEstimate {
            plan: required(e.plan, "plan")?.into(),
            device_kind: e.device_kind,
            jobs_ahead: e.jobs_ahead,
            prediction: e.prediction.map(|p| Prediction {
                wall_seconds: p.wall_seconds,
                cost: p.cost.map(Into::into).unwrap_or_default(),
                jobs: p.jobs,
                window_step_seconds: p.window_step_seconds,
                frame_seconds: p.frame_seconds,
                overhead_seconds: p.overhead_seconds,
            }),
        })
    }
}

// ---- JobStatus ------------------------------------------------------------------------------

impl From<JobStatus> for pb::JobStatus {
    fn from(s: JobStatus) -> Self {
        pb::JobStatus {
            job_id: s.job_id,
            state: pb::JobState::from(s.state) as i32,
            spec: Some(s.spec.into()),
            seed: s.seed,
            plan: s.plan.map(Into::into),
            queue_position: s.queue_position,
            steps_done: s.steps_done,
            steps_total: s.steps_total,
            outputs: s.outputs.into_iter().map(Into::into).collect(),
            error: s.error.unwrap_or_default(),
            submitted_unix_ms: s.submitted_unix_ms,
            finished_unix_ms: s.finished_unix_ms,
            recovery: Some(pb::JobRecovery {
                resumes: s.recovery.resumes,
                last_interruption: s.recovery.last_interruption.unwrap_or_default(),
                checkpoint_step: s.recovery.checkpoint_step,
                excluded_workers: s.recovery.excluded_workers,
            }),
            owner: s.owner,
            cost: Some(s.cost.into()),
        }
    }
}

impl TryFrom<pb::JobStatus> for JobStatus {
    type Error = ApiError;

    fn try_from(s: pb::JobStatus) -> Result<Self, ApiError> {
        let spec = required(s.spec, "spec")?;
        Ok(JobStatus {
            job_id: s.job_id,
            state: job_state_from_pb(s.state, "state")?,
            spec: JobSpec::try_from(spec).map_err(|e| nest("spec", e))?,
            seed: s.seed,
            plan: s.plan.map(Into::into),
            queue_position: s.queue_position,
            steps_done: s.steps_done,
            steps_total: s.steps_total,
            outputs: outputs_from_pb(s.outputs, "outputs")?,
            error: non_empty(s.error),
            submitted_unix_ms: s.submitted_unix_ms,
            finished_unix_ms: s.finished_unix_ms,
            recovery: s
                .recovery
                .map(|r| JobRecovery {
                    resumes: r.resumes,
                    last_interruption: non_empty(r.last_interruption),
                    checkpoint_step: r.checkpoint_step,
                    excluded_workers: r.excluded_workers,
                })
                .unwrap_or_default(),
            owner: s.owner,
            cost: s.cost.map(Into::into).unwrap_or_default(),
        })
    }
}

// ---- JobEvent -------------------------------------------------------------------------------

/// A job event on the wire; the domain event does not carry its job id, the watch call knows it.
pub fn job_event_to_pb(job_id: String, event: JobEvent) -> pb::JobEvent {
    use job_event::Event;
    let event = match event {
        JobEvent::Queued { position } => Event::Queued(pb::Queued { position }),
        JobEvent::Planned(plan) => Event::Planned(plan.into()),
        JobEvent::StepProgress {
            window,
            step,
            total_steps,
            worker_id,
        } => Event::StepProgress(pb::StepProgress {
            window,
            step,
            total_steps,
            worker_id,
        }),
        JobEvent::Decoding {
            frames_done,
            frames_total,
        } => Event::Decoding(pb::Decoding {
            frames_done,
            frames_total,
        }),
        JobEvent::Done { outputs } => Event::Done(pb::Done {
            outputs: outputs.into_iter().map(Into::into).collect(),
        }),
        JobEvent::Resuming { reason, from_step } => Event::Resuming(pb::Resuming { reason, from_step }),
        JobEvent::Preview {
            total_steps,
            clip_frames,
            frames,
        } => Event::Preview(pb::Preview {
            total_steps,
            clip_frames,
            frames: Some(frames.into()),
        }),
        JobEvent::Failed { reason } => Event::Failed(pb::JobFailed { reason }),
        JobEvent::Cancelled => Event::Cancelled(pb::Cancelled {}),
    };
    pb::JobEvent {
        job_id,
        event: Some(event),
    }
}

impl TryFrom<pb::JobEvent> for JobEvent {
    type Error = ApiError;

    fn try_from(e: pb::JobEvent) -> Result<Self, ApiError> {
        use job_event::Event;
        Ok(match required(e.event, "event")? {
            Event::Queued(q) => JobEvent::Queued { position: q.position },
            Event::Planned(p) => JobEvent::Planned(p.into()),
            Event::StepProgress(p) => JobEvent::StepProgress {
                window: p.window,
                step: p.step,
                total_steps: p.total_steps,
                worker_id: p.worker_id,
            },
            Event::Decoding(d) => JobEvent::Decoding {
                frames_done: d.frames_done,
                frames_total: d.frames_total,
            },
            Event::Done(d) => JobEvent::Done {
                outputs: outputs_from_pb(d.outputs, "done.outputs")?,
            },
            Event::Resuming(r) => JobEvent::Resuming {
                reason: r.reason,
                from_step: r.from_step,
            },
            Event::Preview(p) => JobEvent::Preview {
                total_steps: p.total_steps,
                clip_frames: p.clip_frames,
                frames: required(p.frames, "preview.frames")?
                    .try_into()
                    .map_err(|e| nest("preview.frames", e))?,
            },
            Event::Failed(f) => JobEvent::Failed { reason: f.reason },
            Event::Cancelled(_) => JobEvent::Cancelled,
        })
    }
}

// ---- SubmitResult, OutputChunk --------------------------------------------------------------

impl From<SubmitResult> for pb::SubmitJobResponse {
    fn from(r: SubmitResult) -> Self {
        pb::SubmitJobResponse {
            job_id: r.job_id,
            seed: r.seed,
            plan: Some(r.plan.into()),
        }
    }
}

impl TryFrom<pb::SubmitJobResponse> for SubmitResult {
    type Error = ApiError;

    fn try_from(r: pb::SubmitJobResponse) -> Result<Self, ApiError> {
        Ok(SubmitResult {
            job_id: r.job_id,
            seed: r.seed,
            plan: required(r.plan, "plan")?.into(),
        })
    }
}

impl From<OutputChunk> for pb::OutputChunk {
    fn from(c: OutputChunk) -> Self {
        pb::OutputChunk {
            // Vec → Bytes takes ownership of the buffer without copying.
            data: c.data.into(),
            offset: c.offset,
            total_size: c.total_size,
            name: c.name,
        }
    }
}

impl TryFrom<pb::OutputChunk> for OutputChunk {
    type Error = ApiError;

    /// Rejects a chunk that runs past the output's declared size, which a client writing at
    /// `offset` would otherwise turn into a file of the wrong length.
    fn try_from(c: pb::OutputChunk) -> Result<Self, ApiError> {
        let len = c.data.len() as u64;
        if c.offset.checked_add(len).is_none_or(|end| end > c.total_size) {
            return Err(invalid(
                "data",
                format!(
                    "{len} bytes at offset {} run past the output's total_size {}",
                    c.offset, c.total_size
                ),
            ));
        }
        Ok(OutputChunk {
            name: c.name,
            offset: c.offset,
            total_size: c.total_size,
            data: c.data.into(),
        })
    }
}
