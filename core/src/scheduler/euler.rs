//! Flow-matching Euler, as diffusers' `FlowMatchEulerDiscreteScheduler.step`:
//! `x_{i+1} = x_i + (σ_{i+1} − σ_i)·v` in f32.
//!
//! diffusers then casts the result to the model output's dtype; our velocities are f32, so that
//! cast is the identity here (a bf16 model must round its output before it reaches the scheduler).

use super::{Schedule, SchedulerState};
use crate::checkpoint::SolverState;
use crate::tensor::Latents;
use longshot_kernels::cpu::lincomb;

/// Euler needs no history; it keeps a scratch copy of the sample so the update can go through
/// `lincomb`, which writes to a separate output.
#[derive(Default)]
pub struct EulerState {
    scratch: Vec<f32>,
}

impl SchedulerState for EulerState {
    fn step(&mut self, schedule: &Schedule, index: usize, model_output: &Latents, sample: &mut Latents) {
        assert!(index < schedule.steps(), "Euler step {index} is past the last step");
        assert_eq!(
            model_output.shape(),
            sample.shape(),
            "Euler: model output and sample differ in shape"
        );
        // `dt` is a 0-dim f32 tensor in torch: σ_{i+1} − σ_i rounded once.
        let dt = schedule.sigma(index + 1) - schedule.sigma(index);
        self.scratch.clear();
        self.scratch.extend_from_slice(sample.as_slice());
        // 1·x is exact, so this is torch's `sample + dt * model_output` bit for bit.
        lincomb(
            sample.as_mut_slice(),
            &[(1.0, &self.scratch), (dt, model_output.as_slice())],
        );
    }

    fn snapshot(&self) -> SolverState {
        SolverState::Euler
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Solver;
    use crate::tensor::LatentShape;

    #[test]
    fn straight_line_flow_lands_on_the_data() {
        // With the exact velocity v = noise − data, Euler integrates x_σ = data + σ·(noise − data).
        let schedule = Schedule::new(Solver::Euler, 4, 3.0).unwrap();
        let shape = LatentShape::new(1, 1, 1, 2);
        let (data, noise) = ([0.5f32, -1.0], [1.0f32, 2.0]);
        let v = Latents::from_vec(shape, vec![noise[0] - data[0], noise[1] - data[1]]).unwrap();
        let mut x = Latents::from_vec(shape, noise.to_vec()).unwrap();
        let mut state = EulerState::default();
        for i in 0..schedule.steps() {
            state.step(&schedule, i, &v, &mut x);
        }
        for (got, want) in x.as_slice().iter().zip(data) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
