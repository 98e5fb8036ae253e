//! Squared-exponential kernels and their eigenbases, one per axis.
//!
//! `Σ` is a Kronecker product, so its eigenvectors are products of the per-axis eigenvectors and
//! its eigenvalues products of the per-axis eigenvalues: three small symmetric eigenproblems
//! (21², 60², 104² at 480×832) replace one of size 2·10⁶. They are solved in f64 once per job
//! and axis length, and stored in f32 for the transforms.

use super::detmath;
use nalgebra::{DMatrix, SymmetricEigen};

/// Added to the kernel diagonal (relative to the unit variance) so that the kernels are well
/// conditioned even for long correlation lengths, where their spectrum decays to round-off.
pub const JITTER: f64 = 1e-3;

/// `K[i, j] = exp(−(i − j)² / (2ℓ²)) + JITTER·δ_ij` for `n` points one unit apart.
pub fn se_kernel(n: usize, length: f64) -> DMatrix<f64> {
    let by_distance: Vec<f64> = (0..n)
        .map(|d| detmath::exp(-((d * d) as f64) / (2.0 * length * length)))
        .collect();
    DMatrix::from_fn(n, n, |i, j| {
        by_distance[i.abs_diff(j)] + if i == j { JITTER } else { 0.0 }
    })
}

/// `K = Q·diag(λ)·Qᵀ` for one axis, with `Q` and `Qᵀ` as row-major f32 matrices ready for
/// `apply_along_axis` (`qt` maps to the eigenbasis, `q` maps back).
#[derive(Clone, Debug)]
pub struct AxisBasis {
    pub n: usize,
    pub q: Vec<f32>,
    pub qt: Vec<f32>,
    /// Eigenvalues in the order of `Q`'s columns, clamped at 0 against round-off.
    pub eigenvalues: Vec<f64>,
}

impl AxisBasis {
    /// The eigenbasis of [`se_kernel`]`(n, length)`.
    pub fn new(n: usize, length: f64) -> Self {
        if n == 0 {
            return Self {
                n,
                q: Vec::new(),
                qt: Vec::new(),
                eigenvalues: Vec::new(),
            };
        }
        let eig = SymmetricEigen::new(se_kernel(n, length));
        let mut q = vec![0.0f32; n * n];
        let mut qt = vec![0.0f32; n * n];
        for i in 0..n {
            for k in 0..n {
                let v = eig.eigenvectors[(i, k)] as f32;
                q[i * n + k] = v;
                qt[k * n + i] = v;
            }
        }
        let eigenvalues = eig.eigenvalues.iter().map(|&l| l.max(0.0)).collect();
        Self { n, q, qt, eigenvalues }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basis_reconstructs_the_kernel() {
        for &(n, len) in &[(1, 3.0), (21, 8.0), (21, 1.5), (37, 4.0)] {
            let k = se_kernel(n, len);
            let b = AxisBasis::new(n, len);
            for i in 0..n {
                for j in 0..n {
                    let v: f64 = (0..n)
                        .map(|m| f64::from(b.q[i * n + m]) * b.eigenvalues[m] * f64::from(b.qt[m * n + j]))
                        .sum();
                    assert!(
                        (v - k[(i, j)]).abs() < 1e-5,
                        "n {n} ℓ {len} ({i},{j}): {v} vs {}",
                        k[(i, j)]
                    );
                }
            }
            assert!(b.eigenvalues.iter().all(|&l| l >= JITTER * 0.5));
        }
    }
}
