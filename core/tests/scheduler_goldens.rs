//! Golden tests: longshot's schedulers against diffusers' own (`UniPCMultistepScheduler`,
//! `FlowMatchEulerDiscreteScheduler`). Fixtures come from `scripts/goldens/schedulers.py`, which
//! records its seed and the torch/diffusers versions in every file; regenerate with
//! `python3 scripts/goldens/schedulers.py`.
//!
//! Sigmas, timesteps and every sample are compared bit for bit. The one exception: fixtures where
//! torch's MKL `log` is not correctly rounded in a way that reaches λ = ln(1−σ) − ln σ
//! (`lambdas_match_correct_log: false`, computed by the script; ~1% of schedules). That one-ulp
//! difference cannot be reproduced without MKL, so those samples get [`TOLERANCE`] instead.

use longshot_core::scheduler::{new_state, Schedule, Solver};
use longshot_core::tensor::{LatentShape, Latents};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::PathBuf;

const UNIPC: &[&str] = &[
    "unipc_shift3_steps1",
    "unipc_shift3_steps2",
    "unipc_shift3_steps3",
    "unipc_shift3_steps10",
    "unipc_shift3_steps50",
    "unipc_shift5_steps1",
    "unipc_shift5_steps2",
    "unipc_shift5_steps3",
    "unipc_shift5_steps10",
    "unipc_shift5_steps50",
    "unipc_shift5.3_steps50",
    "unipc_shift5_steps49",
    "unipc_shift3_steps15",
];

const EULER: &[&str] = &[
    "euler_shift3_steps1",
    "euler_shift3_steps4",
    "euler_shift3_steps10",
    "euler_shift3_steps50",
    "euler_shift7_steps1",
    "euler_shift7_steps4",
    "euler_shift7_steps10",
    "euler_shift7_steps50",
    "euler_shift5.3_steps50",
];

/// Bound on max|ours − diffusers| / max|diffusers| per sample where λ differs by one ulp. Not 1e-6:
/// an ulp of λ ≈ −1.24 is 1.2e-7, about 1e-6 of a 49-step h = λ_t − λ_s ≈ 0.1, and h feeds every
/// coefficient of that step, so unipc_shift5_steps49 reaches 1.17e-6 (and stays there).
const TOLERANCE: f32 = 2e-6;

#[derive(Deserialize)]
struct Fixture {
    solver: Solver,
    shift: f64,
    steps: usize,
    sigmas: Vec<u32>,
    timesteps: Vec<u32>,
    lambdas_match_correct_log: bool,
    trajectory: Option<Trajectory>,
}

#[derive(Deserialize)]
struct Trajectory {
    /// Frame-major [frames, channels, height, width].
    shape: [usize; 4],
    initial: Vec<u32>,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    model_output: Vec<u32>,
    sample: Vec<u32>,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedulers")
}

fn floats(bits: &[u32]) -> Vec<f32> {
    bits.iter().map(|&b| f32::from_bits(b)).collect()
}

fn assert_bits(what: &str, got: &[f32], want: &[u32]) {
    let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        let (g, w) = (f32::from_bits(got[i]), f32::from_bits(want[i]));
        panic!(
            "{what}[{i}]: got {g:e} ({:#010x}), diffusers has {w:e} ({:#010x})",
            got[i], want[i]
        );
    }
}

fn assert_close(what: &str, got: &[f32], want: &[u32]) {
    let want = floats(want);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got.iter().zip(&want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    assert!(
        err <= TOLERANCE * scale,
        "{what}: max error {err:e} exceeds {TOLERANCE:e} × {scale}"
    );
}

/// Rebuilds the fixture's schedule and replays its trajectory through our scheduler.
fn check(name: &str) {
    let path = fixture_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "missing fixture {} ({e}); run python3 scripts/goldens/schedulers.py",
            path.display()
        )
    });
    let fx: Fixture = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));

    let schedule = Schedule::new(fx.solver, fx.steps, fx.shift).unwrap();
    assert_bits(&format!("{name}: sigmas"), schedule.sigmas(), &fx.sigmas);
    assert_bits(&format!("{name}: timesteps"), schedule.timesteps(), &fx.timesteps);
    let received = Schedule::from_parts(fx.solver, floats(&fx.sigmas), floats(&fx.timesteps));
    assert_eq!(
        received.as_ref(),
        Ok(&schedule),
        "{name}: diffusers' schedule fails validation"
    );

    let Some(traj) = fx.trajectory else { return };
    assert_eq!(traj.steps.len(), fx.steps, "{name}: trajectory length");
    let [f, c, h, w] = traj.shape;
    let shape = LatentShape::new(f, c, h, w);
    let mut sample = Latents::from_vec(shape, floats(&traj.initial)).expect("initial sample shape");
    let mut state = new_state(&schedule);
    for (i, step) in traj.steps.iter().enumerate() {
        let v = Latents::from_vec(shape, floats(&step.model_output)).expect("model output shape");
        state.step(&schedule, i, &v, &mut sample);
        let what = format!("{name}: sample after step {i}");
        if fx.lambdas_match_correct_log {
            assert_bits(&what, sample.as_slice(), &step.sample);
        } else {
            assert_close(&what, sample.as_slice(), &step.sample);
        }
    }
}

#[test]
fn unipc_matches_diffusers() {
    UNIPC.iter().for_each(|name| check(name));
}

#[test]
fn euler_matches_diffusers() {
    EULER.iter().for_each(|name| check(name));
}

/// A fixture the script writes but no test lists would go unchecked.
#[test]
fn every_fixture_is_checked() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixture_dir())
        .expect("fixture directory")
        .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = UNIPC.iter().chain(EULER).map(|n| format!("{n}.json")).collect();
    assert_eq!(on_disk, listed);
}
