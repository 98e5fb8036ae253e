//! The σ / timestep schedule of a job, computed exactly as diffusers' `set_timesteps` does.
//!
//! Both schedules evaluate the shift in f64 (numpy) and round σ to f32 once; Euler additionally
//! derives its endpoints in f32 (torch) at construction. Every operation below is written in the
//! order numpy/torch evaluate it, because a one-ulp change in σ changes every later step.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// diffusers' `num_train_timesteps` for both schedulers.
const TRAIN_STEPS: f64 = 1000.0;
/// Inclusive bounds on the number of denoising steps.
const MAX_STEPS: usize = 1000;

/// The sampler that advances latents between σ levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    /// `FlowMatchEulerDiscreteScheduler`.
    Euler,
    /// `UniPCMultistepScheduler` (flow prediction, order 2, bh2): what Wan2.1 ships with.
    UniPc,
}

impl Solver {
    fn name(self) -> &'static str {
        match self {
            Solver::Euler => "euler",
            Solver::UniPc => "unipc",
        }
    }
}

impl fmt::Display for Solver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Solver {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "euler" => Ok(Solver::Euler),
            "unipc" => Ok(Solver::UniPc),
            _ => Err(ScheduleError::UnknownSolver(s.to_string())),
        }
    }
}

/// Why a schedule was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ScheduleError {
    #[error("solver {0:?} is not one of: unipc, euler")]
    UnknownSolver(String),
    #[error("steps {0} is not in 1..={MAX_STEPS}")]
    Steps(usize),
    #[error("shift {0} is not a finite number greater than 0")]
    Shift(f64),
    #[error("sigmas has {got} values, expected steps + 1 = {expected}")]
    SigmasLen { got: usize, expected: usize },
    #[error("timesteps has {got} values, expected one per step ({expected})")]
    TimestepsLen { got: usize, expected: usize },
    #[error("{field}[{index}] is not finite")]
    NotFinite { field: &'static str, index: usize },
    #[error("sigmas[{index}] = {value} is not in {allowed} for {solver}")]
    SigmaRange {
        index: usize,
        value: f32,
        allowed: &'static str,
        solver: Solver,
    },
    #[error("sigmas[{index}] = {value} is not below sigmas[{}] = {previous}", index - 1)]
    NotDecreasing { index: usize, value: f32, previous: f32 },
    #[error("the last sigma is {0}, expected 0")]
    LastSigma(f32),
    #[error("strength {0} is not in (0, 1]")]
    Strength(f64),
    #[error("strength {strength} runs no step of {steps} (⌊steps·strength⌋ = 0): raise the strength or the steps")]
    NoStepAtStrength { strength: f64, steps: usize },
}

/// σ levels (`steps + 1`, ending in 0) and the timestep the model receives at each step.
///
/// Deserialisation goes through [`Schedule::from_parts`], so a schedule that arrives over the
/// network is validated like one built locally.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSchedule")]
pub struct Schedule {
    solver: Solver,
    sigmas: Vec<f32>,
    timesteps: Vec<f32>,
}

#[derive(Deserialize)]
struct RawSchedule {
    solver: Solver,
    sigmas: Vec<f32>,
    timesteps: Vec<f32>,
}

impl TryFrom<RawSchedule> for Schedule {
    type Error = ScheduleError;
    fn try_from(raw: RawSchedule) -> Result<Self, Self::Error> {
        Schedule::from_parts(raw.solver, raw.sigmas, raw.timesteps)
    }
}

impl Schedule {
    /// The schedule diffusers computes for `steps` steps at flow `shift`.
    pub fn new(solver: Solver, steps: usize, shift: f64) -> Result<Schedule, ScheduleError> {
        check_steps(steps)?;
        if !(shift.is_finite() && shift > 0.0) {
            return Err(ScheduleError::Shift(shift));
        }
        let (sigmas, timesteps) = match solver {
            Solver::Euler => euler_schedule(steps, shift),
            Solver::UniPc => unipc_schedule(steps, shift),
        };
        Schedule::from_parts(solver, sigmas, timesteps)
    }

    /// Validates a schedule received from elsewhere: lengths, finiteness, σ strictly decreasing in
    /// (0, 1] ((0, 1) for UniPC, whose λ = ln(1−σ) − ln σ must be finite) and ending in exactly 0.
    pub fn from_parts(solver: Solver, sigmas: Vec<f32>, timesteps: Vec<f32>) -> Result<Schedule, ScheduleError> {
        let steps = timesteps.len();
        check_steps(steps)?;
        if sigmas.len() != steps + 1 {
            return Err(ScheduleError::SigmasLen {
                got: sigmas.len(),
                expected: steps + 1,
            });
        }
        if let Some(index) = timesteps.iter().position(|t| !t.is_finite()) {
            return Err(ScheduleError::NotFinite {
                field: "timesteps",
                index,
            });
        }
        if let Some(index) = sigmas.iter().position(|s| !s.is_finite()) {
            return Err(ScheduleError::NotFinite { field: "sigmas", index });
        }
        let (allowed, max_ok): (&str, fn(f32) -> bool) = match solver {
            Solver::Euler => ("(0, 1]", |s| s <= 1.0),
            Solver::UniPc => ("(0, 1)", |s| s < 1.0),
        };
        for (index, &value) in sigmas[..steps].iter().enumerate() {
            if !(value > 0.0 && max_ok(value)) {
                return Err(ScheduleError::SigmaRange {
                    index,
                    value,
                    allowed,
                    solver,
                });
            }
            if index > 0 && value >= sigmas[index - 1] {
                let previous = sigmas[index - 1];
                return Err(ScheduleError::NotDecreasing { index, value, previous });
            }
        }
        if sigmas[steps] != 0.0 {
            return Err(ScheduleError::LastSigma(sigmas[steps]));
        }
        Ok(Schedule {
            solver,
            sigmas,
            timesteps,
        })
    }

    pub fn solver(&self) -> Solver {
        self.solver
    }
    /// Number of denoising steps N.
    pub fn steps(&self) -> usize {
        self.timesteps.len()
    }
    /// All N+1 σ levels; the last is 0.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }
    /// σ_i for i in 0..=N.
    pub fn sigma(&self, i: usize) -> f32 {
        self.sigmas[i]
    }
    /// The N values the model receives as its timestep.
    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }
    pub fn timestep(&self, i: usize) -> f32 {
        self.timesteps[i]
    }
}

fn check_steps(steps: usize) -> Result<(), ScheduleError> {
    if (1..=MAX_STEPS).contains(&steps) {
        Ok(())
    } else {
        Err(ScheduleError::Steps(steps))
    }
}

/// `np.linspace(start, stop, num)`: `k·step + start` with `step = (stop − start)/(num − 1)`, the
/// last value replaced by `stop`; a single value is `start`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|k| k as f64 * step + start).collect();
    y[num - 1] = stop;
    y
}

/// `UniPCMultistepScheduler.set_timesteps`, `use_flow_sigmas` branch (spec §4.2).
fn unipc_schedule(steps: usize, shift: f64) -> (Vec<f32>, Vec<f32>) {
    let mut sig: Vec<f64> = linspace(1.0, 1.0 / TRAIN_STEPS, steps + 1);
    sig.truncate(steps);
    for s in &mut sig {
        *s = shift * *s / (1.0 + (shift - 1.0) * *s);
    }
    // diffusers nudges σ0 off 1 so that ln(1 − σ0) stays finite.
    if (sig[0] - 1.0).abs() < 1e-6 {
        sig[0] -= 1e-6;
    }
    // `.astype(np.int64)` truncates toward zero; the model receives the integer.
    let timesteps = sig.iter().map(|&s| (s * TRAIN_STEPS).trunc() as f32).collect();
    let sigmas = sig.iter().map(|&s| s as f32).chain([0.0]).collect();
    (sigmas, timesteps)
}

/// `FlowMatchEulerDiscreteScheduler(shift)` construction followed by `set_timesteps(steps)`.
fn euler_schedule(steps: usize, shift: f64) -> (Vec<f32>, Vec<f32>) {
    // Construction shifts the f32 training σ grid in torch f32; a Python float operand is rounded
    // to f32 first. Only its two ends are used afterwards.
    let (shift32, shift_m1_32) = (shift as f32, (shift - 1.0) as f32);
    let shift_f32 = |s: f32| shift32 * s / (1.0 + shift_m1_32 * s);
    // diffusers' `timesteps / num_train_timesteps` at its first timestep, kept in its form.
    #[allow(clippy::eq_op)]
    let sigma_max = shift_f32(1000.0 / 1000.0) as f64;
    let sigma_min = shift_f32(1.0 / 1000.0) as f64;
    // set_timesteps: numpy f64, shifted a second time, then rounded to f32.
    let sigmas: Vec<f32> = linspace(sigma_max * TRAIN_STEPS, sigma_min * TRAIN_STEPS, steps)
        .into_iter()
        .map(|t| {
            let s = t / TRAIN_STEPS;
            (shift * s / (1.0 + (shift - 1.0) * s)) as f32
        })
        .collect();
    // `timesteps = sigmas * 1000` in torch f32: the model gets this float, not an integer.
    let timesteps = sigmas.iter().map(|&s| s * 1000.0).collect();
    (sigmas.into_iter().chain([0.0]).collect(), timesteps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solver_names_round_trip() {
        for solver in [Solver::Euler, Solver::UniPc] {
            assert_eq!(solver.to_string().parse::<Solver>(), Ok(solver));
            let json = serde_json::to_string(&solver).unwrap();
            assert_eq!(json, format!("\"{solver}\""));
        }
        assert_eq!("UniPC".parse::<Solver>(), Ok(Solver::UniPc));
        let err = "foo".parse::<Solver>().unwrap_err();
        assert_eq!(err.to_string(), r#"solver "foo" is not one of: unipc, euler"#);
    }

    #[test]
    fn new_rejects_bad_steps_and_shift() {
        for steps in [0, 1001] {
            let err = Schedule::new(Solver::UniPc, steps, 3.0).unwrap_err();
            assert_eq!(err.to_string(), format!("steps {steps} is not in 1..=1000"));
        }
        for (shift, shown) in [(0.0, "0"), (-1.0, "-1"), (f64::NAN, "NaN"), (f64::INFINITY, "inf")] {
            let err = Schedule::new(Solver::Euler, 10, shift).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("shift {shown} is not a finite number greater than 0")
            );
        }
        assert!(Schedule::new(Solver::UniPc, 1000, 0.5).is_ok());
        assert!(Schedule::new(Solver::Euler, 1, 16.0).is_ok());
    }

    #[test]
    fn from_parts_validates() {
        use ScheduleError::*;
        let ok = |s: Vec<f32>, t: Vec<f32>| Schedule::from_parts(Solver::UniPc, s, t);
        assert!(ok(vec![0.9, 0.5, 0.0], vec![900.0, 500.0]).is_ok());
        assert_eq!(ok(vec![0.9, 0.0], vec![]), Err(Steps(0)));
        assert_eq!(
            ok(vec![0.9, 0.0], vec![1.0, 2.0]),
            Err(SigmasLen { got: 2, expected: 3 })
        );
        let err = ok(vec![0.9, 0.5, 0.0], vec![900.0, f32::NAN]).unwrap_err();
        assert_eq!(err.to_string(), "timesteps[1] is not finite");
        let err = ok(vec![1.0, 0.5, 0.0], vec![1.0, 2.0]).unwrap_err();
        assert_eq!(err.to_string(), "sigmas[0] = 1 is not in (0, 1) for unipc");
        let euler = Schedule::from_parts(Solver::Euler, vec![1.0, 0.5, 0.0], vec![1.0, 2.0]);
        assert!(euler.is_ok());
        let err = ok(vec![0.5, 0.5, 0.0], vec![1.0, 2.0]).unwrap_err();
        assert_eq!(err.to_string(), "sigmas[1] = 0.5 is not below sigmas[0] = 0.5");
        let err = ok(vec![0.5, 0.0, 0.0], vec![1.0, 2.0]).unwrap_err();
        assert_eq!(err.to_string(), "sigmas[1] = 0 is not in (0, 1) for unipc");
        assert_eq!(ok(vec![0.9, 0.5, 0.1], vec![1.0, 2.0]), Err(LastSigma(0.1)));
    }

    #[test]
    fn deserialisation_validates() {
        let good = Schedule::new(Solver::UniPc, 4, 3.0).unwrap();
        let json = serde_json::to_string(&good).unwrap();
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), good);
        let bad = r#"{"solver":"euler","sigmas":[0.5,0.7,0.0],"timesteps":[1.0,2.0]}"#;
        let err = serde_json::from_str::<Schedule>(bad).unwrap_err();
        assert!(err.to_string().contains("is not below"), "{err}");
    }

    #[test]
    fn wan_schedule_matches_spec_examples() {
        let s = Schedule::new(Solver::UniPc, 50, 3.0).unwrap();
        assert_eq!(&s.timesteps()[..6], &[999.0, 993.0, 986.0, 979.0, 971.0, 964.0]);
        assert_eq!(&s.timesteps()[44..], &[292.0, 251.0, 208.0, 162.0, 113.0, 60.0]);
        assert_eq!(&s.sigmas()[..3], &[0.999_999, 0.993_250_1, 0.986_315_4]);
        assert_eq!(&s.sigmas()[49..], &[0.06040539, 0.0]);
        let s = Schedule::new(Solver::UniPc, 50, 5.0).unwrap();
        assert_eq!(&s.timesteps()[..3], &[999.0, 995.0, 991.0]);
        assert_eq!(&s.timesteps()[47..], &[244.0, 175.0, 96.0]);
    }
}
