//! Row-wise normalisations: LayerNorm (with or without affine parameters, optionally fused with
//! the AdaLN modulation `·(1 + scale) + shift`) and RMSNorm, on row-major `[rows, dim]` data.
//!
//! Evaluation order (the reference a GPU port is checked against):
//! - Statistics are accumulated in **f64** over the row in increasing index order, two-pass for
//!   LayerNorm: `mean = Σx / dim`, `var = Σ(x − mean)² / dim` (biased, as PyTorch), and
//!   `rstd = 1 / sqrt(var + eps)`, then `mean` and `rstd` are rounded to f32. RMSNorm:
//!   `r = 1 / sqrt(Σx² / dim + eps)` in f64, rounded to f32. (PyTorch accumulates in f32 with a
//!   cascade sum; f64 here makes the reference at least as accurate as any port.)
//! - Per element, in f32: LayerNorm `n = (x − mean)·rstd`, then affine `n·w + b`, or modulation
//!   `n·(1 + scale) + shift` with `1 + scale` rounded first (the order of
//!   `norm(x) * (1 + scale) + shift` in diffusers). RMSNorm `y = (x·r)·w` (`torch.nn.RMSNorm`).

use rayon::prelude::*;

/// Rows per parallel task; the per-row work is small, so tasks take several rows.
fn rows_per_task(dim: usize) -> usize {
    (16384 / dim.max(1)).max(1)
}

/// `(mean, rstd)` of one row, f64 accumulation rounded to f32.
pub fn layer_norm_stats(row: &[f32], eps: f64) -> (f32, f32) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = row.iter().map(|&v| (v as f64 - mean) * (v as f64 - mean)).sum::<f64>() / n;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

/// LayerNorm over the last axis: `out = (x − mean)·rstd`, then `·weight + bias` when given
/// (`weight` and `bias` are both present or both absent, as `elementwise_affine`).
pub fn layer_norm(x: &[f32], dim: usize, eps: f64, affine: Option<(&[f32], &[f32])>, out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "layer_norm: length mismatch");
    assert!(
        dim > 0 && x.len().is_multiple_of(dim),
        "layer_norm: length is not a multiple of dim"
    );
    if let Some((w, b)) = affine {
        assert!(w.len() == dim && b.len() == dim, "layer_norm: affine parameter length");
    }
    let chunk = rows_per_task(dim) * dim;
    out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(o, xs)| {
        for (orow, xrow) in o.chunks_exact_mut(dim).zip(xs.chunks_exact(dim)) {
            let (mean, rstd) = layer_norm_stats(xrow, eps);
            match affine {
                Some((w, b)) => {
                    for (((ov, &xv), &wv), &bv) in orow.iter_mut().zip(xrow).zip(w).zip(b) {
                        *ov = (xv - mean) * rstd * wv + bv;
                    }
                }
                None => {
                    for (ov, &xv) in orow.iter_mut().zip(xrow) {
                        *ov = (xv - mean) * rstd;
                    }
                }
            }
        }
    });
}

/// LayerNorm without affine parameters fused with AdaLN modulation:
/// `out = ((x − mean)·rstd)·(1 + scale) + shift`, `scale` and `shift` of length `dim` shared by
/// all rows.
pub fn layer_norm_modulate(x: &[f32], dim: usize, eps: f64, scale: &[f32], shift: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "layer_norm_modulate: length mismatch");
    assert!(
        dim > 0 && x.len().is_multiple_of(dim),
        "layer_norm_modulate: length is not a multiple of dim"
    );
    assert!(
        scale.len() == dim && shift.len() == dim,
        "layer_norm_modulate: modulation length"
    );
    let one_plus: Vec<f32> = scale.iter().map(|&s| 1.0 + s).collect();
    let chunk = rows_per_task(dim) * dim;
    out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(o, xs)| {
        for (orow, xrow) in o.chunks_exact_mut(dim).zip(xs.chunks_exact(dim)) {
            let (mean, rstd) = layer_norm_stats(xrow, eps);
            for (((ov, &xv), &sc), &sh) in orow.iter_mut().zip(xrow).zip(&one_plus).zip(shift) {
                *ov = (xv - mean) * rstd * sc + sh;
            }
        }
    });
}

/// RMSNorm over the last axis, in place: `x = (x·r)·weight`, `r = 1/sqrt(mean(x²) + eps)`.
pub fn rms_norm_in_place(x: &mut [f32], dim: usize, eps: f64, weight: &[f32]) {
    assert!(
        dim > 0 && x.len().is_multiple_of(dim),
        "rms_norm: length is not a multiple of dim"
    );
    assert_eq!(weight.len(), dim, "rms_norm: weight length");
    let chunk = rows_per_task(dim) * dim;
    x.par_chunks_mut(chunk).for_each(|xs| {
        for row in xs.chunks_exact_mut(dim) {
            let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64;
            let r = (1.0 / (ms + eps).sqrt()) as f32;
            for (v, &w) in row.iter_mut().zip(weight) {
                *v = *v * r * w;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 + 1.0) * 0.618034 * seed).sin() * 2.0 + 0.3)
            .collect()
    }

    #[test]
    fn layer_norm_matches_naive_with_and_without_affine() {
        let (rows, dim) = (2000, 24);
        let x = values(rows * dim, 1.3);
        let w = values(dim, 0.7);
        let b = values(dim, 2.9);
        let mut plain = vec![0.0; x.len()];
        let mut aff = vec![0.0; x.len()];
        layer_norm(&x, dim, 1e-6, None, &mut plain);
        layer_norm(&x, dim, 1e-6, Some((&w, &b)), &mut aff);
        for r in 0..rows {
            let row = &x[r * dim..(r + 1) * dim];
            let mean: f64 = row.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
            let var: f64 = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
            for j in 0..dim {
                let n = (row[j] as f64 - mean) / (var + 1e-6).sqrt();
                assert!((plain[r * dim + j] as f64 - n).abs() < 1e-5);
                assert!((aff[r * dim + j] as f64 - (n * w[j] as f64 + b[j] as f64)).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn modulation_is_layer_norm_times_one_plus_scale_plus_shift() {
        let (rows, dim) = (5, 16);
        let x = values(rows * dim, 2.2);
        let (scale, shift) = (values(dim, 0.3), values(dim, 1.9));
        let mut n = vec![0.0; x.len()];
        let mut m = vec![0.0; x.len()];
        layer_norm(&x, dim, 1e-6, None, &mut n);
        layer_norm_modulate(&x, dim, 1e-6, &scale, &shift, &mut m);
        for (i, (&nv, &mv)) in n.iter().zip(&m).enumerate() {
            let j = i % dim;
            // Same f32 operations in the same order: bit-identical.
            assert_eq!(mv, nv * (1.0 + scale[j]) + shift[j]);
        }
    }

    #[test]
    fn rms_norm_matches_naive_and_constant_rows_stay_finite() {
        let (rows, dim) = (3, 10);
        let mut x = values(rows * dim, 0.8);
        let x0 = x.clone();
        let w = values(dim, 1.7);
        rms_norm_in_place(&mut x, dim, 1e-6, &w);
        for r in 0..rows {
            let row = &x0[r * dim..(r + 1) * dim];
            let ms: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dim as f64;
            for j in 0..dim {
                let want = row[j] as f64 / (ms + 1e-6).sqrt() * w[j] as f64;
                assert!((x[r * dim + j] as f64 - want).abs() < 1e-5);
            }
        }
        let mut zeros = vec![0.0f32; dim];
        rms_norm_in_place(&mut zeros, dim, 1e-6, &w);
        assert!(zeros.iter().all(|v| *v == 0.0));
        let mut c = vec![0.0f32; dim];
        layer_norm(&[5.0; 10], dim, 1e-6, None, &mut c);
        assert!(c.iter().all(|v| *v == 0.0));
    }
}
