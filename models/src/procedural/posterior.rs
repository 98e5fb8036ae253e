//! The exact posterior mean of the Gaussian prior under flow-matching noise, evaluated per axis.
//!
//! With `x_t = (1−σ)·x0 + σ·ε`: `E[x0 | x_t] = μ + (1−σ)Σ((1−σ)²Σ + σ²I)⁻¹(x_t − (1−σ)μ)`.
//! In the Kronecker eigenbasis `Σ` is diagonal, so the matrix function is a per-element gain
//! `g = (1−σ)λ / ((1−σ)²λ + σ²)`, `λ = s_c²·λ_t·λ_y·λ_x`. Each step has a fixed evaluation order
//! (the kernels' sums run over `j` in increasing order, the gain is elementwise), so the result is
//! the same bits whatever the number of threads.

use super::basis::AxisBasis;
use super::colour::CHANNELS;
use longshot_kernels::cpu::{apply_along_axis, apply_along_axis_by_rows, apply_along_last_axis};
use rayon::prelude::*;

/// The eigenbases of one window size: frames, rows, columns.
pub struct WindowBases<'a> {
    pub t: &'a AxisBasis,
    pub y: &'a AxisBasis,
    pub x: &'a AxisBasis,
}

impl WindowBases<'_> {
    fn frame_len(&self) -> usize {
        CHANNELS * self.y.n * self.x.n
    }

    fn len(&self) -> usize {
        self.t.n * self.frame_len()
    }

    /// `a` (clobbered) → eigen coordinates in `b`: `Qᵀ` along x, then y, then t.
    fn grid_to_eigen(&self, a: &mut [f32], b: &mut [f32]) {
        let (t, h, w) = (self.t.n, self.y.n, self.x.n);
        apply_along_last_axis(a, b, &self.x.qt, t * CHANNELS * h, w);
        apply_along_axis(b, a, &self.y.qt, t * CHANNELS, h, w);
        apply_along_axis_by_rows(a, b, &self.t.qt, 1, t, self.frame_len());
    }

    /// Eigen coordinates in `b` (clobbered) → `a`: `Q` along t, then y, then x.
    fn eigen_to_grid(&self, b: &mut [f32], a: &mut [f32]) {
        let (t, h, w) = (self.t.n, self.y.n, self.x.n);
        apply_along_axis_by_rows(b, a, &self.t.q, 1, t, self.frame_len());
        apply_along_axis(a, b, &self.y.q, t * CHANNELS, h, w);
        apply_along_last_axis(b, a, &self.x.q, t * CHANNELS * h, w);
    }

    /// Multiplies every eigen coordinate by `f(s_c²·λ_t·λ_y·λ_x)` (product taken in that order, f64).
    fn scale_by_eigenvalue(&self, b: &mut [f32], variance: &[f64; CHANNELS], f: impl Fn(f64) -> f64 + Sync) {
        let (h, w) = (self.y.n, self.x.n);
        if h * w == 0 {
            return;
        }
        b.par_chunks_mut(self.frame_len()).enumerate().for_each(|(t, frame)| {
            for (c, plane) in frame.chunks_exact_mut(h * w).enumerate() {
                let ct = variance[c] * self.t.eigenvalues[t];
                for (y, row) in plane.chunks_exact_mut(w).enumerate() {
                    let cty = ct * self.y.eigenvalues[y];
                    for (v, &lx) in row.iter_mut().zip(&self.x.eigenvalues) {
                        *v = (f64::from(*v) * f(cty * lx)) as f32;
                    }
                }
            }
        });
    }
}

/// Reusable buffers, so that a forward allocates nothing once warmed up.
#[derive(Default)]
pub struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Scratch {
    fn buffers(&mut self, len: usize) -> (&mut [f32], &mut [f32]) {
        self.a.resize(len, 0.0);
        self.b.resize(len, 0.0);
        (&mut self.a[..], &mut self.b[..])
    }
}

/// Writes `x̂0 = E[x0 | x_t]` into `x0`, for `0 ≤ σ ≤ 1` (at σ = 0 it is `x_t` up to round-off).
pub fn posterior_mean(
    bases: &WindowBases<'_>,
    variance: &[f64; CHANNELS],
    mean: &[f32],
    xt: &[f32],
    sigma: f32,
    scratch: &mut Scratch,
    x0: &mut [f32],
) {
    let len = bases.len();
    assert!(
        mean.len() == len && xt.len() == len && x0.len() == len,
        "posterior_mean: lengths"
    );
    let (a, b) = scratch.buffers(len);
    let keep = 1.0 - sigma;
    a.par_iter_mut()
        .zip(xt.par_iter().zip(mean))
        .for_each(|(r, (&x, &m))| *r = x - keep * m);
    bases.grid_to_eigen(a, b);
    let (keep, s2) = (1.0 - f64::from(sigma), f64::from(sigma) * f64::from(sigma));
    bases.scale_by_eigenvalue(b, variance, |lam| {
        let den = keep * keep * lam + s2;
        // den is 0 only when σ = 0 and λ = 0 (impossible with the jitter): keep the coordinate as is.
        if den > 0.0 {
            keep * lam / den
        } else {
            1.0
        }
    });
    bases.eigen_to_grid(b, a);
    x0.par_iter_mut()
        .zip(mean.par_iter().zip(&*a))
        .for_each(|(o, (&m, &d))| *o = m + d);
}

/// Writes a prior sample `μ + Q·(√λ ⊙ z)` for white noise `z` into `out`. White noise is white
/// in every orthonormal basis, so `z` is used as eigen coordinates directly.
pub fn sample_prior(
    bases: &WindowBases<'_>,
    variance: &[f64; CHANNELS],
    mean: &[f32],
    z: &[f32],
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    let len = bases.len();
    assert!(
        mean.len() == len && z.len() == len && out.len() == len,
        "sample_prior: lengths"
    );
    let (a, b) = scratch.buffers(len);
    b.copy_from_slice(z);
    bases.scale_by_eigenvalue(b, variance, f64::sqrt);
    bases.eigen_to_grid(b, a);
    out.par_iter_mut()
        .zip(mean.par_iter().zip(&*a))
        .for_each(|(o, (&m, &d))| *o = m + d);
}
