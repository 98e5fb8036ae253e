//! Resumable state of the co-denoising loop (docs/long-clips.md §10).
//!
//! After step `s` a window is fully described by its latents and its solver's state: Euler keeps
//! nothing between steps, UniPC keeps its last two data predictions, the last corrected sample and
//! the previous predictor order. The window grid does not depend on the worker count, so a
//! checkpoint of every window at one step can be resumed on any partition of the windows and the
//! continuation is bit-identical to an undisturbed run.

use crate::scheduler::{Schedule, Solver};
use crate::tensor::LatentShape;
use thiserror::Error;

/// One window after `step` steps.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowState {
    pub window: usize,
    /// Steps done: the loop continues with step index `step`.
    pub step: usize,
    /// The window's latents, frame-major.
    pub latents: Vec<f32>,
    pub solver: SolverState,
}

/// What a solver carries from one step to the next.
#[derive(Clone, Debug, PartialEq)]
pub enum SolverState {
    Euler,
    UniPc {
        /// Data predictions m_{s−1}, m_{s−2} (newest first; the second is absent after one step).
        history: [Option<Vec<f32>>; 2],
        /// The last corrected sample.
        last_sample: Vec<f32>,
        /// The predictor order of step `s − 1`.
        last_order: usize,
    },
}

impl SolverState {
    pub fn solver(&self) -> Solver {
        match self {
            SolverState::Euler => Solver::Euler,
            SolverState::UniPc { .. } => Solver::UniPc,
        }
    }
}

/// What one partition's loop reports of its state besides step progress: checkpoints (and where
/// it resumes from), and live previews.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpointing {
    /// Emit every window's state after every this many steps and after the last step (0: never).
    pub every: usize,
    /// Start from these states (exactly the partition's windows, in order, all at one step)
    /// instead of the initial noise.
    pub resume: Option<Vec<WindowState>>,
    /// Emit the owned frames' x0 prediction every this many steps, never at the last step (whose
    /// frames are decoded for real; 0: never) ([`crate::preview`]).
    pub preview_every: usize,
}

impl Checkpointing {
    /// Whether the states after `steps_done` of `total` steps are emitted.
    pub fn due(&self, steps_done: usize, total: usize) -> bool {
        self.every > 0 && (steps_done.is_multiple_of(self.every) || steps_done == total)
    }

    /// Whether the step that makes `steps_done` of `total` steps emits a preview.
    pub fn preview_due(&self, steps_done: usize, total: usize) -> bool {
        self.preview_every > 0 && steps_done.is_multiple_of(self.preview_every) && steps_done < total
    }
}

/// The default checkpoint interval for a job of `steps` steps: an interruption loses on average
/// half an interval of denoising, so one interval of at most 4% of the steps keeps the expected
/// loss at or below ~2% of the job's steps (plus nothing of its decode, which the checkpoint after
/// the last step covers).
pub fn default_interval(steps: usize) -> usize {
    (steps / 25).max(1)
}

#[derive(Debug, Error, PartialEq)]
pub enum CheckpointError {
    #[error("resume state: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid(msg.into())
}

/// Checks that `states` resume `windows` of a clip with window shape `shape` under `schedule`,
/// in a run that starts at step `first_step` (video-to-video; 0 otherwise): one state per window
/// in order, all at one step the run takes, of the right sizes and solver. Returns the step they
/// are at.
pub fn check_resume(
    states: &[WindowState],
    windows: std::ops::Range<usize>,
    shape: LatentShape,
    schedule: &Schedule,
    first_step: usize,
) -> Result<usize, CheckpointError> {
    let want: Vec<usize> = windows.clone().collect();
    let got: Vec<usize> = states.iter().map(|s| s.window).collect();
    if got != want {
        return Err(invalid(format!("windows {got:?} given, the shard runs {want:?}")));
    }
    let step = states[0].step;
    if step <= first_step || step > schedule.steps() {
        return Err(invalid(format!(
            "step {step} is outside {}..={} (the steps done by a run of {} steps from step {first_step})",
            first_step + 1,
            schedule.steps(),
            schedule.steps()
        )));
    }
    for s in states {
        if s.step != step {
            return Err(invalid(format!(
                "window {} is at step {}, window {} at step {step}: a checkpoint is every window at one step",
                s.window, s.step, states[0].window
            )));
        }
        let len = shape.len();
        if s.latents.len() != len {
            return Err(invalid(format!(
                "window {} has {} latent values, expected {len}",
                s.window,
                s.latents.len()
            )));
        }
        if s.solver.solver() != schedule.solver() {
            return Err(invalid(format!(
                "window {} holds {} state, the schedule uses {}",
                s.window,
                s.solver.solver(),
                schedule.solver()
            )));
        }
        if let SolverState::UniPc {
            history, last_sample, ..
        } = &s.solver
        {
            let sizes_ok = last_sample.len() == len
                && history[0].as_ref().is_some_and(|m| m.len() == len)
                && match &history[1] {
                    Some(m) => m.len() == len,
                    None => step == first_step + 1,
                };
            if !sizes_ok {
                return Err(invalid(format!(
                    "window {}: UniPC history does not match {step} steps of {len} values",
                    s.window
                )));
            }
        }
    }
    Ok(step)
}
