//! UniPC as diffusers' `UniPCMultistepScheduler.step` runs it for Wan (flow prediction,
//! `predict_x0`, order 2, bh2, `lower_order_final`, final σ 0): spec §4.2.
//!
//! Each update is split into per-step scalars ([`Update`], computed in f32 exactly as torch does on
//! 0-dim f32 tensors) and one elementwise loop ([`Update::apply`]) that a CUDA kernel can mirror.
//!
//! Scalar functions, matched to what torch 2.x on x86 CPU calls:
//! - `torch.log` is MKL `vmsLn` (HA). We use the correctly rounded f32 log; MKL agrees except when
//!   ln x lies within ~0.03 ulp of a rounding midpoint (≈0.1% of inputs). Usually the subtraction
//!   in λ = ln(1−σ) − ln σ absorbs that, but for ≈1% of schedules λ moves by one ulp and samples
//!   by ~1e-6 relative: the only known difference from diffusers (tests/scheduler_goldens.rs).
//! - `torch.expm1` is SLEEF `expm1f_u10`, ported bit for bit in [`expm1f`].
//! - `torch.linalg.solve` on the corrector's 2×2 system is MKL `sgesv`, mirrored in [`solve2`].

use super::{Schedule, SchedulerState};
use crate::checkpoint::SolverState;
use crate::tensor::Latents;
use longshot_kernels::cpu::lincomb;
use rayon::prelude::*;

/// UniPC state of one window: converted outputs m_{i−1}, m_{i−2}, the last corrected sample and the
/// previous predictor order. Steps must arrive as i = first, first + 1, …, N−1 (`first` 0 unless
/// the run starts part-way, as video-to-video does).
#[derive(Default)]
pub struct UniPcState {
    /// Newest first.
    history: [Option<Vec<f32>>; 2],
    last_sample: Vec<f32>,
    last_order: usize,
    next_index: usize,
    /// The step the run started at: the solver warms up from there.
    first: usize,
}

impl SchedulerState for UniPcState {
    fn step(&mut self, schedule: &Schedule, index: usize, model_output: &Latents, sample: &mut Latents) {
        let steps = schedule.steps();
        assert!(index < steps, "UniPC step {index} is past the last step {}", steps - 1);
        assert_eq!(index, self.next_index, "UniPC steps must run in order");
        assert_eq!(
            model_output.shape(),
            sample.shape(),
            "UniPC: model output and sample differ in shape"
        );

        // Convert the velocity to a data prediction, m = x − σ_i·v.
        let mut m = vec![0.0; sample.as_slice().len()];
        let sigma = schedule.sigma(index);
        lincomb(&mut m, &[(1.0, sample.as_slice()), (-sigma, model_output.as_slice())]);

        let plan = UniPcStepPlan::starting_at(schedule, self.first, index);
        debug_assert!(index == self.first || plan.last_order == self.last_order);
        if let Some(update) = plan.corrector {
            let (m0, m1) = (stored(&self.history[0]), self.history[1].as_deref());
            update.apply(sample.as_mut_slice(), &self.last_sample, m0, m1, Some(&m));
        }
        self.history.swap(0, 1);
        self.history[0] = Some(m);
        self.last_sample.clear();
        self.last_sample.extend_from_slice(sample.as_slice());

        let (m0, m1) = (stored(&self.history[0]), self.history[1].as_deref());
        match plan.predictor {
            Some(update) => update.apply(sample.as_mut_slice(), &self.last_sample, m0, m1, None),
            None => {
                // σ_{i+1} = 0: λ = +∞, expm1(−∞) = −1 and diffusers' formula collapses to m
                // exactly; `+ 0.0` reproduces its final `x − (−0)`, which turns a −0 into +0.
                for (out, &m) in sample.as_mut_slice().iter_mut().zip(m0) {
                    *out = m + 0.0;
                }
            }
        }
        self.last_order = plan.order;
        self.next_index += 1;
    }

    fn snapshot(&self) -> SolverState {
        SolverState::UniPc {
            history: self.history.clone(),
            last_sample: self.last_sample.clone(),
            last_order: self.last_order,
        }
    }
}

impl UniPcState {
    /// A fresh state for a run that starts at step `first` of its schedule (diffusers'
    /// video-to-video: the scheduler's timesteps stay whole, the loop starts part-way, and the
    /// solver starts over there, at order 1 and without a corrector).
    pub fn starting_at(first: usize) -> Self {
        Self {
            next_index: first,
            first,
            ..Self::default()
        }
    }

    /// The state after `steps_done` steps of a run that started at step `first`, from a
    /// [`Self::snapshot`].
    pub fn restore(
        first: usize,
        steps_done: usize,
        history: [Option<Vec<f32>>; 2],
        last_sample: Vec<f32>,
        last_order: usize,
    ) -> Self {
        Self {
            history,
            last_sample,
            last_order,
            next_index: steps_done,
            first,
        }
    }
}

fn stored(m: &Option<Vec<f32>>) -> &[f32] {
    m.as_deref().expect("UniPC history holds the previous model output")
}

/// The scalars of UniPC step `index`, exactly as [`UniPcState::step`] applies them, for backends
/// that run the elementwise part elsewhere (the CUDA kernel `unipc_update` of longshot-kernels).
/// A step is: `m_i = x − σ_i·v`; the corrector (if any) rewrites the sample from the previous
/// corrected sample `x_{i−1}`, `m_{i−1}`, `m_{i−2}` and `m_i`; then the predictor (if any) steps
/// the corrected sample `x` with `m_i` and `m_{i−1}`. No predictor means σ_{i+1} = 0 and the new
/// sample is `m_i + 0.0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UniPcStepPlan {
    /// `Update::apply(out, x_{i−1}, m_{i−1}, m_{i−2}, Some(m_i))`; none at the run's first step.
    pub corrector: Option<Update>,
    /// `Update::apply(out, x, m_i, m_{i−1}, None)`; none when σ_{i+1} = 0.
    pub predictor: Option<Update>,
    /// The predictor order of this step (1 or 2).
    pub order: usize,
    /// The predictor order of step `index − 1` (the corrector's order); 0 at the run's first step.
    pub last_order: usize,
}

impl UniPcStepPlan {
    /// The plan of step `index` of `schedule` (steps run in order, so the previous step's order
    /// follows from the index).
    pub fn new(schedule: &Schedule, index: usize) -> Self {
        Self::starting_at(schedule, 0, index)
    }

    /// The plan of step `index` of a run that started at step `first` (`index ≥ first`): the
    /// order ramps up from `first` (diffusers' `lower_order_nums` counts the steps run) and the
    /// first step has no corrector.
    pub fn starting_at(schedule: &Schedule, first: usize, index: usize) -> Self {
        let steps = schedule.steps();
        assert!(index < steps, "UniPC step {index} is past the last step {}", steps - 1);
        assert!(
            index >= first,
            "UniPC step {index} is before the run's first step {first}"
        );
        let order_of = |i: usize| 2.min(steps - i).min(i - first + 1);
        let order = order_of(index);
        let last_order = if index > first { order_of(index - 1) } else { 0 };
        let corrector = (index > first).then(|| Update::corrector(schedule, index, last_order));
        let predictor = (schedule.sigma(index + 1) != 0.0).then(|| Update::predictor(schedule, index, order));
        Self {
            corrector,
            predictor,
            order,
            last_order,
        }
    }
}

/// `out = (cx·x − cm·m0) − cr·(r0·((m1 − m0)/rk) + r1·(mt − m0))`, with the `r0` term only when
/// `hist` is set (order 2) and the `r1` term only when `cur` is set (corrector).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Update {
    pub cx: f32,
    pub cm: f32,
    pub cr: f32,
    /// (rk, ρ0).
    pub hist: Option<(f32, f32)>,
    /// ρ1.
    pub cur: Option<f32>,
}

/// λ(σ) = ln(1−σ) − ln σ in f32 (diffusers' `lambda_t` with α = 1 − σ).
fn lambda(sigma: f32) -> f32 {
    ln(1.0 - sigma) - ln(sigma)
}

/// Correctly rounded f32 natural log (see the module doc for how this relates to MKL).
fn ln(x: f32) -> f32 {
    (x as f64).ln() as f32
}

impl Update {
    /// Shared part of `multistep_uni_{p,c}_bh_update`: stepping from σ_s0 to σ_t.
    fn base(sigma_t: f32, sigma_s0: f32) -> (Update, f32, f32, f32) {
        let alpha_t = 1.0 - sigma_t;
        let lambda_s0 = lambda(sigma_s0);
        let h = lambda(sigma_t) - lambda_s0;
        let hh = -h;
        // h_phi_1 and B_h (bh2) are both expm1(hh): the same bits.
        let phi = expm1f(hh);
        let update = Update {
            cx: sigma_t / sigma_s0,
            cm: alpha_t * phi,
            cr: alpha_t * phi,
            hist: None,
            cur: None,
        };
        (update, lambda_s0, h, phi)
    }

    /// The predictor of step i (σ_i → σ_{i+1}); order 2 uses m_{i−1}. Not for σ_{i+1} = 0.
    fn predictor(schedule: &Schedule, i: usize, order: usize) -> Update {
        let (mut u, lambda_s0, h, _) = Update::base(schedule.sigma(i + 1), schedule.sigma(i));
        if order == 2 {
            // diffusers' order-2 shortcut: rhos_p = [0.5].
            u.hist = Some(((lambda(schedule.sigma(i - 1)) - lambda_s0) / h, 0.5));
        }
        u
    }

    /// The corrector at the start of step i ≥ 1 (re-stepping σ_{i−1} → σ_i with m_i known).
    fn corrector(schedule: &Schedule, i: usize, order: usize) -> Update {
        let (mut u, lambda_s0, h, phi) = Update::base(schedule.sigma(i), schedule.sigma(i - 1));
        if order == 1 {
            u.cur = Some(0.5);
            return u;
        }
        let rk = (lambda(schedule.sigma(i - 2)) - lambda_s0) / h;
        let hh = -h;
        // b_k as diffusers' loop builds them: h_phi_k·k!/B_h, then h_phi_k/hh − 1/(k+1)!.
        let h_phi_k = phi / hh - 1.0;
        let b0 = h_phi_k * 1.0 / phi;
        let h_phi_k = h_phi_k / hh - 0.5;
        let b1 = h_phi_k * 2.0 / phi;
        let (r0, r1) = solve2(rk, b0, b1);
        u.hist = Some((rk, r0));
        u.cur = Some(r1);
        u
    }

    /// Writes the update into `out`, each operation rounded to f32 in torch's order.
    pub fn apply(&self, out: &mut [f32], x: &[f32], m0: &[f32], m1: Option<&[f32]>, mt: Option<&[f32]>) {
        let Update { cx, cm, cr, hist, cur } = *self;
        if hist.is_none() && cur.is_none() {
            lincomb(out, &[(cx, x), (-cm, m0)]);
            return;
        }
        let m1 = if hist.is_some() {
            m1.expect("order 2 needs m_{i-1}")
        } else {
            m0
        };
        let mt = if cur.is_some() {
            mt.expect("the corrector needs m_i")
        } else {
            m0
        };
        for s in [x, m0, m1, mt] {
            assert_eq!(s.len(), out.len(), "UniPC: length mismatch");
        }
        out.par_iter_mut().enumerate().for_each(|(j, o)| {
            let base = cx * x[j] - cm * m0[j];
            let res = match (hist, cur) {
                (Some((rk, r0)), Some(r1)) => r0 * ((m1[j] - m0[j]) / rk) + r1 * (mt[j] - m0[j]),
                (Some((rk, r0)), None) => r0 * ((m1[j] - m0[j]) / rk),
                (None, Some(r1)) => r1 * (mt[j] - m0[j]),
                (None, None) => unreachable!("handled by lincomb above"),
            };
            *o = base - cr * res;
        });
    }
}

/// Solves `[[1, 1], [rk, 1]]·ρ = [b0, b1]` as MKL `sgesv` does (checked bit for bit against
/// `torch.linalg.solve` on 44k systems): partial pivoting (ties keep row 0), the elimination step
/// as one fma, and division by a pivot as multiplication by its reciprocal.
fn solve2(rk: f32, b0: f32, b1: f32) -> (f32, f32) {
    if rk.abs() <= 1.0 {
        let y2 = (-rk).mul_add(b0, b1);
        let x2 = y2 * (1.0 / (1.0 - rk));
        (b0 - x2, x2)
    } else {
        let l = 1.0 / rk;
        let y2 = (-l).mul_add(b1, b0);
        let x2 = y2 * (1.0 / (1.0 - l));
        ((b1 - x2) * (1.0 / rk), x2)
    }
}

/// SLEEF 3.x `xexpm1f` (u10) with FMA, which torch's CPU `expm1` calls: e^a − 1 via a double-float
/// `expk2f`. Ported operation for operation; `mul_add` is the fused multiply-add SLEEF uses.
fn expm1f(a: f32) -> f32 {
    let d = df_add2(expk2f(a), -1.0);
    let x = d.0 + d.1;
    if a > 88.722_83 {
        f32::INFINITY
    } else if a < -16.635_532 {
        -1.0
    } else if a == 0.0 && a.is_sign_negative() {
        -0.0
    } else {
        x
    }
}

/// A double-float: value = .0 + .1.
type Df = (f32, f32);

fn df_add2(x: Df, y: f32) -> Df {
    let s = x.0 + y;
    let v = s - x.0;
    (s, ((x.0 - (s - v)) + (y - v)) + x.1)
}

fn df_add2_df(x: Df, y: Df) -> Df {
    let s = x.0 + y.0;
    let v = s - x.0;
    (s, ((x.0 - (s - v)) + (y.0 - v)) + (x.1 + y.1))
}

fn df_mul(x: Df, y: f32) -> Df {
    let s = x.0 * y;
    (s, x.1.mul_add(y, x.0.mul_add(y, -s)))
}

fn df_mul_df(x: Df, y: Df) -> Df {
    let s = x.0 * y.0;
    (s, x.0.mul_add(y.1, x.1.mul_add(y.0, x.0.mul_add(y.0, -s))))
}

fn df_squ(x: Df) -> Df {
    let s = x.0 * x.0;
    (s, (x.0 + x.0).mul_add(x.1, x.0.mul_add(x.0, -s)))
}

/// 2^q as f32 for q in the normal exponent range.
fn pow2i(q: i32) -> f32 {
    f32::from_bits(((q + 0x7f) as u32) << 23)
}

fn ldexp2(d: f32, e: i32) -> f32 {
    d * pow2i(e >> 1) * pow2i(e - (e >> 1))
}

fn expk2f(a: f32) -> Df {
    // SLEEF's constants, written as their shortest f32 decimals. ln 2 = L2U + L2L.
    const L2U: f32 = 0.693_145_75;
    const L2L: f32 = 1.428_606_8e-6;
    let q = ((a + 0.0) * std::f32::consts::LOG2_E).round_ties_even() as i32;
    let qf = q as f32;
    let s = df_add2(df_add2((a, 0.0), qf * -L2U), qf * -L2L);
    let mut u = 0.000_198_096_02_f32;
    u = u.mul_add(s.0, 0.001_394_256_5);
    u = u.mul_add(s.0, 0.008_333_457);
    u = u.mul_add(s.0, 0.041_666_374);
    let t = df_add2(df_mul(s, u), 0.166_666_66);
    let t = df_add2(df_mul_df(s, t), 0.5);
    let t = df_add2_df(s, df_mul_df(df_squ(s), t));
    // dfadd_vf2_vf_vf2(1, t)
    let hi = 1.0 + t.0;
    let t = (hi, ((1.0 - hi) + t.0) + t.1);
    if a < -104.0 {
        (0.0, 0.0)
    } else {
        (ldexp2(t.0, q), ldexp2(t.1, q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Solver;

    /// A run from step 2 of 6 (video-to-video at strength 0.7) warms up again: order 1 and no
    /// corrector at step 2, order 2 after, and `lower_order_final` at the end as for a whole run.
    #[test]
    fn a_run_that_starts_part_way_warms_the_solver_up_again() {
        let schedule = Schedule::new(Solver::UniPc, 6, 3.0).unwrap();
        for i in 0..6 {
            assert_eq!(
                UniPcStepPlan::starting_at(&schedule, 0, i),
                UniPcStepPlan::new(&schedule, i)
            );
        }
        let orders: Vec<(usize, usize, bool)> = (2..6)
            .map(|i| {
                let p = UniPcStepPlan::starting_at(&schedule, 2, i);
                (p.order, p.last_order, p.corrector.is_some())
            })
            .collect();
        assert_eq!(orders, [(1, 0, false), (2, 1, true), (2, 2, true), (1, 2, true)]);
    }

    #[test]
    fn expm1f_special_values_and_accuracy() {
        assert_eq!(expm1f(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(expm1f(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(expm1f(f32::NEG_INFINITY), -1.0);
        assert_eq!(expm1f(-20.0), -1.0);
        for k in 1..2000 {
            let a = -(k as f32) * 0.007;
            let exact = (a as f64).exp_m1();
            assert!(
                ((expm1f(a) as f64 - exact) / exact).abs() < 2.0 * f32::EPSILON as f64,
                "{a}"
            );
        }
    }

    #[test]
    fn solve2_solves_both_pivot_cases() {
        for (rk, b0, b1) in [(-0.8f32, 0.3f32, -0.2f32), (-1.7, 0.4, 0.1), (-1.0, 1.0, 2.0)] {
            let (r0, r1) = solve2(rk, b0, b1);
            assert!((r0 + r1 - b0).abs() < 1e-6 && (rk * r0 + r1 - b1).abs() < 1e-6);
        }
    }
}
