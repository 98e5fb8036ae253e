//! Element-wise activations, in place, f32.
//!
//! Formulas (evaluated in exactly this order, in f32, with Rust's `tanh`/`exp`):
//! - `gelu_tanh(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, with `x³ = x·x·x` and the
//!   product `0.5·x` taken first — PyTorch's `F.gelu(approximate="tanh")` formula.
//! - `silu(x) = x / (1 + exp(−x))`.
//! - `gelu_erf(x) = x·0.5·(1 + erf(x·√½))`, PyTorch's exact `F.gelu` (CLIP, Wan's image embedder).
//! - `quick_gelu(x) = x·(1 / (1 + exp(−1.702·x)))`, transformers' `QuickGELUActivation` (OpenAI
//!   CLIP checkpoints).
//!
//! PyTorch evaluates `tanh`/`exp` with vectorised (SLEEF) approximations whose last bit can
//! differ from libm's; comparisons are by tolerance.

use rayon::prelude::*;

/// √(2/π) as an f32, the constant PyTorch's tanh-GELU uses (`M_SQRT2 · M_2_SQRTPI · 0.5`).
pub const GELU_TANH_BETA: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh-GELU approximation.
pub const GELU_TANH_KAPPA: f32 = 0.044715;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// One tanh-GELU value.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    let inner = GELU_TANH_BETA * (x + GELU_TANH_KAPPA * (x * x * x));
    0.5 * x * (1.0 + inner.tanh())
}

/// One exact (erf) GELU value.
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    x * 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// [`gelu_erf`] applied to every element.
pub fn gelu_erf_in_place(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v = gelu_erf(*v)));
}

/// [`quick_gelu`] applied to every element.
pub fn quick_gelu_in_place(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v = quick_gelu(*v)));
}

/// One quick-GELU value: `x · sigmoid(1.702 x)`, the sigmoid as transformers writes it.
#[inline]
pub fn quick_gelu(x: f32) -> f32 {
    x * (1.0 / (1.0 + (-1.702 * x).exp()))
}

/// One SiLU value.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// [`gelu_tanh`] applied to every element.
pub fn gelu_tanh_in_place(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v = gelu_tanh(*v)));
}

/// [`silu`] applied to every element.
pub fn silu_in_place(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v = silu(*v)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_tanh_matches_the_formula_in_f64_and_known_values() {
        let mut xs: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.025).collect();
        let x0 = xs.clone();
        gelu_tanh_in_place(&mut xs);
        for (&x, &y) in x0.iter().zip(&xs) {
            let xd = x as f64;
            let want = 0.5 * xd * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            assert!(
                (y as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{x}: {y} vs {want}"
            );
        }
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-6);
        assert!((GELU_TANH_BETA as f64 - (2.0 / std::f64::consts::PI).sqrt()).abs() < 1e-7);
    }

    /// Against values of x·Φ(x) (the standard normal CDF) computed in f64 elsewhere.
    #[test]
    fn gelu_erf_matches_x_times_the_normal_cdf() {
        let known = [
            (-3.0f32, -0.004_049_7),
            (-1.0, -0.158_655_25),
            (0.0, 0.0),
            (0.5, 0.345_731_13),
            (1.0, 0.841_344_8),
            (2.5, 2.484_475_8),
        ];
        let mut xs: Vec<f32> = known.iter().map(|k| k.0).collect();
        gelu_erf_in_place(&mut xs);
        for ((x, want), got) in known.iter().zip(&xs) {
            assert!((got - want).abs() <= 1e-6 * (1.0 + want.abs()), "{x}: {got} vs {want}");
        }
        assert_eq!(gelu_erf(-40.0), -0.0);
        assert_eq!(gelu_erf(40.0), 40.0);
    }

    #[test]
    fn silu_matches_x_sigmoid_x_and_saturates_without_nan() {
        let mut xs: Vec<f32> = vec![-100.0, -3.0, -0.5, 0.0, 0.5, 3.0, 100.0];
        let x0 = xs.clone();
        silu_in_place(&mut xs);
        for (&x, &y) in x0.iter().zip(&xs) {
            let want = x as f64 / (1.0 + (-(x as f64)).exp());
            assert!((y as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()));
            assert!(y.is_finite());
        }
    }
}
