//! GPU parity against core's own code, called rather than restated: the Philox noise
//! (`core::noise::NoiseStream::latents`) and whole scheduler runs (`UniPcState::step`,
//! `EulerState::step`) against the same runs built from the CUDA kernels. The UniPC scalars come
//! from `core::scheduler::UniPcStepPlan`, the plan `UniPcState::step` itself applies; only the
//! elementwise part runs on the GPU. The overlap blend and CFG combine that core's codenoise loop
//! calls are `longshot_kernels::cpu::{blend_overlap, cfg_combine}`, checked in
//! `kernels/tests/gpu_denoise.rs`.
//!
//! Needs a GPU (feature `cuda`): without one every test FAILS with the probe's reason. Never run
//! by CI; `scripts/gpu/pack.sh` builds it for the device machine.

use longshot_core::noise::NoiseStream;
use longshot_core::scheduler::{EulerState, Schedule, SchedulerState, Solver, UniPcState, UniPcStepPlan, UniPcUpdate};
use longshot_core::tensor::{LatentShape, Latents};
use longshot_kernels::cuda::parity::{assert_bits, down, gpu, poisoned, up, Rng};
use longshot_kernels::cuda::UniPcCoefficients;

#[test]
fn philox_gaussian_matches_core_noise_within_one_ulp() {
    let mut rng = Rng::new("philox_gaussian");
    for shape in [[3, 16, 30, 54], [2, 4, 7, 9], [1, 16, 60, 104]] {
        // width 54, 9: not a multiple of 4, the tail block is cut.
        let (seed, step, first) = (
            rng.next_u64(),
            (rng.next_u64() % 50) as u32,
            (rng.next_u64() % 100) as usize,
        );
        let [f, c, h, w] = shape;
        let want = NoiseStream::new(seed, step)
            .unwrap()
            .latents(first, LatentShape::new(f, c, h, w))
            .unwrap()
            .into_vec();
        let mut out = poisoned(want.len());
        gpu().philox_gaussian(&mut out, seed, step, first, shape).unwrap();
        let got = down(&out);
        // Bits match except where CUDA's double log/sin/cos land on the other side of a float
        // rounding boundary (see noise_philox.cu): allow one ulp, and report how many differ.
        let mut differ = 0;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let ulps = (g.to_bits() as i64 - w.to_bits() as i64).abs();
            assert!(
                ulps <= 1,
                "noise {shape:?} element {i}: gpu {g} vs core {w} ({ulps} ulps)"
            );
            differ += usize::from(ulps != 0);
        }
        eprintln!(
            "philox_gaussian {shape:?}: {} values, {differ} differ by one ulp",
            got.len()
        );
    }
}

fn coefficients(u: UniPcUpdate) -> UniPcCoefficients {
    UniPcCoefficients {
        cx: u.cx,
        cm: u.cm,
        cr: u.cr,
        hist: u.hist,
        cur: u.cur,
    }
}

/// A fresh "model output" per step, so the multistep history matters.
fn velocities(rng: &mut Rng, steps: usize, len: usize) -> Vec<Vec<f32>> {
    (0..steps).map(|_| rng.vec(len, 2.0)).collect()
}

#[test]
fn unipc_whole_schedule_is_bit_identical_to_core() {
    let mut rng = Rng::new("unipc_schedule");
    let shape = LatentShape::new(3, 16, 6, 10);
    for (steps, shift) in [(10, 3.0), (4, 5.0), (1, 1.0), (2, 3.0)] {
        let schedule = Schedule::new(Solver::UniPc, steps, shift).unwrap();
        let x0 = rng.vec(shape.len(), 1.0);
        let vs = velocities(&mut rng, steps, shape.len());

        // The real scheduler.
        let mut state = UniPcState::default();
        let mut x = Latents::from_vec(shape, x0.clone()).unwrap();
        let mut want_per_step = Vec::new();
        for (i, v) in vs.iter().enumerate() {
            let v = Latents::from_vec(shape, v.clone()).unwrap();
            state.step(&schedule, i, &v, &mut x);
            want_per_step.push(x.as_slice().to_vec());
        }

        // The same steps from the kernels, with core's per-step scalars.
        let n = shape.len();
        let mut x = up(&x0);
        let (mut m_prev, mut m_prev2): (Option<_>, Option<_>) = (None, None);
        let mut last_sample = poisoned(n);
        for (i, v) in vs.iter().enumerate() {
            let plan = UniPcStepPlan::new(&schedule, i);
            let mut m = poisoned(n);
            gpu()
                .lincomb(&mut m, &[(1.0, &x), (-schedule.sigma(i), &up(v))])
                .unwrap();
            if let Some(c) = plan.corrector {
                let mut out = poisoned(n);
                let m0 = m_prev.as_ref().expect("m_{i-1}");
                gpu()
                    .unipc_update(&mut out, &last_sample, m0, m_prev2.as_ref(), Some(&m), coefficients(c))
                    .unwrap();
                x = out;
            }
            m_prev2 = m_prev.take();
            m_prev = Some(m);
            last_sample = x.clone();
            let m0 = m_prev.as_ref().unwrap();
            x = match plan.predictor {
                Some(p) => {
                    let mut out = poisoned(n);
                    gpu()
                        .unipc_update(&mut out, &last_sample, m0, m_prev2.as_ref(), None, coefficients(p))
                        .unwrap();
                    out
                }
                // σ_{i+1} = 0: core writes m + 0.0; 1·m is the same bits for every m but −0,
                // which random inputs do not produce.
                None => {
                    let mut out = poisoned(n);
                    gpu().lincomb(&mut out, &[(1.0, m0)]).unwrap();
                    out
                }
            };
            let op = format!(
                "unipc {steps} steps (shift {shift}), after step {i} (order {})",
                plan.order
            );
            assert_bits(&op, &down(&x), &want_per_step[i]);
        }
    }
}

#[test]
fn euler_whole_schedule_is_bit_identical_to_core() {
    let mut rng = Rng::new("euler_schedule");
    let shape = LatentShape::new(2, 16, 5, 9);
    let (steps, shift) = (8, 3.0);
    let schedule = Schedule::new(Solver::Euler, steps, shift).unwrap();
    let x0 = rng.vec(shape.len(), 1.0);
    let vs = velocities(&mut rng, steps, shape.len());
    let mut state = EulerState::default();
    let mut want = Latents::from_vec(shape, x0.clone()).unwrap();
    let mut x = up(&x0);
    for (i, v) in vs.iter().enumerate() {
        state.step(&schedule, i, &Latents::from_vec(shape, v.clone()).unwrap(), &mut want);
        // dt is the one scalar of an Euler step: σ_{i+1} − σ_i in f32 (euler.rs).
        let dt = schedule.sigma(i + 1) - schedule.sigma(i);
        let mut out = poisoned(shape.len());
        gpu().lincomb(&mut out, &[(1.0, &x), (dt, &up(v))]).unwrap();
        x = out;
        assert_bits(&format!("euler after step {i}"), &down(&x), want.as_slice());
    }
}
