//! Flow-matching schedulers, matching diffusers bit for bit where possible
//! (docs/wan21.md §4.2).
//!
//! A [`Schedule`] is the exact list of σ (f32) and model timesteps for a job; it is computed once by
//! the coordinator and shipped to workers as bits. A [`SchedulerState`] is per window: it holds the
//! multistep history of that window's frames. Because the loop blends velocities so both copies of a
//! shared frame see the same inputs, per-window histories agree on shared frames.

mod euler;
mod sigmas;
pub mod strength;
mod unipc;

pub use euler::EulerState;
pub use sigmas::{Schedule, ScheduleError, Solver};
pub use unipc::{UniPcState, UniPcStepPlan, Update as UniPcUpdate};

use crate::checkpoint::SolverState;
use crate::tensor::Latents;

/// Per-window solver state; `step` advances `sample` from σ_i to σ_{i+1} in place.
pub trait SchedulerState: Send {
    fn step(&mut self, schedule: &Schedule, index: usize, model_output: &Latents, sample: &mut Latents);
    /// Everything the next step needs, for a checkpoint.
    fn snapshot(&self) -> SolverState;
}

/// A fresh state for `schedule`'s solver.
pub fn new_state(schedule: &Schedule) -> Box<dyn SchedulerState> {
    new_state_at(schedule, 0)
}

/// A fresh state for a run of `schedule` that starts at step `first` (video-to-video skips the
/// first steps; Euler needs nothing for it, UniPC warms up again from there).
pub fn new_state_at(schedule: &Schedule, first: usize) -> Box<dyn SchedulerState> {
    match schedule.solver() {
        Solver::Euler => Box::new(EulerState::default()),
        Solver::UniPc => Box::new(UniPcState::starting_at(first)),
    }
}

/// The state a checkpoint taken after `steps_done` steps of a run that started at step `first`
/// describes (checked by [`crate::checkpoint::check_resume`]); `solver` must be `schedule`'s.
pub fn restore_state(first: usize, steps_done: usize, solver: &SolverState) -> Box<dyn SchedulerState> {
    match solver {
        SolverState::Euler => Box::new(EulerState::default()),
        SolverState::UniPc {
            history,
            last_sample,
            last_order,
        } => Box::new(UniPcState::restore(
            first,
            steps_done,
            history.clone(),
            last_sample.clone(),
            *last_order,
        )),
    }
}
