//! CPU reference ops. Each op documents its exact evaluation order, because bit-identity across
//! workers (and parity with a future GPU port) depends on it.

use rayon::prelude::*;

/// Classifier-free guidance combine, in place on `cond`:
/// `out = uncond + g·(cond − uncond)`, evaluated in exactly that order in f32.
pub fn cfg_combine(cond: &mut [f32], uncond: &[f32], guidance: f32) {
    assert_eq!(cond.len(), uncond.len(), "cfg_combine: length mismatch");
    for (c, &u) in cond.iter_mut().zip(uncond) {
        *c = u + guidance * (*c - u);
    }
}

/// The overlap blend of docs/long-clips.md §2.3, written into both copies.
///
/// `left` and `right` each hold `overlap` frames of `frame_len` values: the right-hand overlap of
/// the lower-indexed window and the left-hand overlap of the higher-indexed one. Position `j` gets
/// `v = v_left + w_j·(v_right − v_left)` with `w_j = (j+1)/(overlap+1)`. The formula is the same
/// whichever side evaluates it, which is what keeps the two copies bit-identical.
pub fn blend_overlap(left: &mut [f32], right: &mut [f32], overlap: usize, frame_len: usize) {
    assert_eq!(
        left.len(),
        overlap * frame_len,
        "blend_overlap: left has the wrong length"
    );
    assert_eq!(
        right.len(),
        overlap * frame_len,
        "blend_overlap: right has the wrong length"
    );
    for j in 0..overlap {
        let w = blend_weight(j, overlap);
        let span = j * frame_len..(j + 1) * frame_len;
        for (l, r) in left[span.clone()].iter_mut().zip(&mut right[span]) {
            let v = *l + w * (*r - *l);
            *l = v;
            *r = v;
        }
    }
}

/// Blend weight of the right-hand window at overlap position `j` (f32, computed the same way
/// everywhere).
pub fn blend_weight(j: usize, overlap: usize) -> f32 {
    (j as f32 + 1.0) / (overlap as f32 + 1.0)
}

/// `out[i] = Σ_k coef_k · src_k[i]`, accumulated left to right in f32 starting from the first term.
/// The schedulers express every update as such a combination so that one kernel serves them all.
pub fn lincomb(out: &mut [f32], terms: &[(f32, &[f32])]) {
    assert!(!terms.is_empty(), "lincomb: no terms");
    for (_, src) in terms {
        assert_eq!(src.len(), out.len(), "lincomb: length mismatch");
    }
    out.par_chunks_mut(1 << 14).enumerate().for_each(|(chunk, o)| {
        let base = chunk << 14;
        for (i, v) in o.iter_mut().enumerate() {
            let mut acc = terms[0].0 * terms[0].1[base + i];
            for (c, s) in &terms[1..] {
                acc += *c * s[base + i];
            }
            *v = acc;
        }
    });
}

/// Applies the square matrix `m` (`n×n`, row-major) along one axis of a 3-axis block
/// `[outer, n, inner]`: `out[o, i, k] = Σ_j m[i, j] · x[o, j, k]`, summed over `j` in increasing
/// order. Used for the separable (Kronecker) covariance transforms of the reference model.
pub fn apply_along_axis(x: &[f32], out: &mut [f32], m: &[f32], outer: usize, n: usize, inner: usize) {
    assert_eq!(x.len(), outer * n * inner, "apply_along_axis: input length");
    assert_eq!(out.len(), x.len(), "apply_along_axis: output length");
    assert_eq!(m.len(), n * n, "apply_along_axis: matrix length");
    out.par_chunks_mut(n * inner)
        .zip(x.par_chunks(n * inner))
        .for_each(|(o, xs)| {
            o.fill(0.0);
            for i in 0..n {
                let row = &m[i * n..(i + 1) * n];
                let dst = &mut o[i * inner..(i + 1) * inner];
                for (j, &mij) in row.iter().enumerate() {
                    let src = &xs[j * inner..(j + 1) * inner];
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d += mij * s;
                    }
                }
            }
        });
}

/// [`apply_along_axis`] for the last (contiguous) axis: `x` is `[rows, n]` and
/// `out[r, i] = Σ_j m[i, j] · x[r, j]`, summed over `j` in increasing order starting from 0.0.
///
/// Bit-identical to `apply_along_axis(x, out, m, rows, n, 1)` (the same products added in the same
/// order; f32 multiplication commutes exactly), but evaluated as one contiguous AXPY per `j`
/// (`out[r, ·] += x[r, j] · mᵀ[j, ·]`), which vectorises where the dot-product form cannot.
pub fn apply_along_last_axis(x: &[f32], out: &mut [f32], m: &[f32], rows: usize, n: usize) {
    assert_eq!(x.len(), rows * n, "apply_along_last_axis: input length");
    assert_eq!(out.len(), x.len(), "apply_along_last_axis: output length");
    assert_eq!(m.len(), n * n, "apply_along_last_axis: matrix length");
    if n == 0 {
        return;
    }
    let mut mt = vec![0.0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            mt[j * n + i] = m[i * n + j];
        }
    }
    // Blocks of rows per task keep the scheduling overhead negligible; each row's arithmetic is
    // the same whichever block or thread it lands in.
    let rows_per_task = (4096 / n).max(1);
    let tasks = out
        .par_chunks_mut(rows_per_task * n)
        .zip(x.par_chunks(rows_per_task * n));
    tasks.for_each(|(o, xs)| {
        for (dst, src) in o.chunks_exact_mut(n).zip(xs.chunks_exact(n)) {
            dst.fill(0.0);
            for (j, &xj) in src.iter().enumerate() {
                let mrow = &mt[j * n..(j + 1) * n];
                for (d, &mji) in dst.iter_mut().zip(mrow) {
                    *d += xj * mji;
                }
            }
        }
    });
}

/// [`apply_along_axis`] parallelised over output rows `(o, i)` instead of over `outer`, with the
/// `inner` axis walked in tiles that stay in cache. Bit-identical to `apply_along_axis` (each
/// output value is the same sum over `j` in increasing order); use it when `outer` is small, e.g.
/// the frame axis of a whole window (`outer = 1`), where `apply_along_axis` runs on one thread.
pub fn apply_along_axis_by_rows(x: &[f32], out: &mut [f32], m: &[f32], outer: usize, n: usize, inner: usize) {
    const TILE: usize = 2048;
    assert_eq!(x.len(), outer * n * inner, "apply_along_axis_by_rows: input length");
    assert_eq!(out.len(), x.len(), "apply_along_axis_by_rows: output length");
    assert_eq!(m.len(), n * n, "apply_along_axis_by_rows: matrix length");
    if inner == 0 {
        return;
    }
    out.par_chunks_mut(inner).enumerate().for_each(|(row, dst)| {
        let (o, i) = (row / n, row % n);
        let mrow = &m[i * n..(i + 1) * n];
        let block = &x[o * n * inner..(o + 1) * n * inner];
        for start in (0..inner).step_by(TILE) {
            let end = (start + TILE).min(inner);
            let d = &mut dst[start..end];
            d.fill(0.0);
            for (j, &mij) in mrow.iter().enumerate() {
                let src = &block[j * inner + start..j * inner + end];
                for (dv, &s) in d.iter_mut().zip(src) {
                    *dv += mij * s;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random test data (no RNG dependency in this crate).
    fn test_values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 + 1.0) * 0.618_034 * (seed as f32 + 1.3)).sin() * 3.0)
            .collect()
    }

    #[test]
    fn apply_along_last_axis_is_bit_identical_to_apply_along_axis() {
        for &(rows, n) in &[(1, 1), (3, 5), (37, 104), (5000, 3)] {
            let x = test_values(rows * n, 1);
            let m = test_values(n * n, 2);
            let (mut want, mut got) = (vec![0.0; x.len()], vec![1.0; x.len()]);
            apply_along_axis(&x, &mut want, &m, rows, n, 1);
            apply_along_last_axis(&x, &mut got, &m, rows, n);
            let same = want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "rows {rows} n {n}");
        }
    }

    #[test]
    fn apply_along_axis_by_rows_is_bit_identical_to_apply_along_axis() {
        for &(outer, n, inner) in &[(1, 1, 1), (1, 21, 5000), (3, 4, 7), (2, 6, 4099)] {
            let x = test_values(outer * n * inner, 3);
            let m = test_values(n * n, 4);
            let (mut want, mut got) = (vec![0.0; x.len()], vec![1.0; x.len()]);
            apply_along_axis(&x, &mut want, &m, outer, n, inner);
            apply_along_axis_by_rows(&x, &mut got, &m, outer, n, inner);
            let same = want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{outer}x{n}x{inner}");
        }
    }

    #[test]
    fn blend_is_symmetric_in_who_evaluates_it() {
        let frame = 3;
        let o = 4;
        let l0: Vec<f32> = (0..o * frame).map(|i| (i as f32 * 0.37).sin()).collect();
        let r0: Vec<f32> = (0..o * frame).map(|i| (i as f32 * 0.91).cos()).collect();
        let (mut l, mut r) = (l0.clone(), r0.clone());
        blend_overlap(&mut l, &mut r, o, frame);
        assert_eq!(l, r);
        // Edge frames of each window get the smallest weight from that window.
        let w0 = blend_weight(0, o);
        assert!((l[0] - (l0[0] + w0 * (r0[0] - l0[0]))).abs() == 0.0);
        assert!(w0 < 0.5 && blend_weight(o - 1, o) > 0.5);
    }

    #[test]
    fn apply_along_axis_matches_dense_product() {
        let (outer, n, inner) = (2, 3, 4);
        let x: Vec<f32> = (0..outer * n * inner).map(|i| i as f32 - 5.0).collect();
        let m: Vec<f32> = (0..n * n).map(|i| (i as f32 * 0.5) - 1.0).collect();
        let mut out = vec![0.0; x.len()];
        apply_along_axis(&x, &mut out, &m, outer, n, inner);
        for o in 0..outer {
            for i in 0..n {
                for k in 0..inner {
                    let want: f32 = (0..n).map(|j| m[i * n + j] * x[(o * n + j) * inner + k]).sum();
                    assert_eq!(out[(o * n + i) * inner + k], want);
                }
            }
        }
    }

    #[test]
    fn lincomb_and_cfg() {
        let a = vec![1.0f32, 2.0, 3.0];
        let b = vec![0.5f32, -1.0, 4.0];
        let mut out = vec![0.0; 3];
        lincomb(&mut out, &[(2.0, &a), (-1.0, &b)]);
        assert_eq!(out, vec![1.5, 5.0, 2.0]);
        let mut c = a.clone();
        cfg_combine(&mut c, &b, 3.0);
        assert_eq!(c, vec![0.5 + 3.0 * 0.5, -1.0 + 3.0 * 3.0, 4.0 - 3.0 * 1.0]);
    }
}

pub mod nn_act;
pub mod nn_attention;
pub mod nn_attention_bias;
pub mod nn_conv;
pub mod nn_fused;
pub mod nn_gemm;
pub mod nn_linear;
pub mod nn_norm;
pub mod nn_rope;
pub mod nn_vae;
