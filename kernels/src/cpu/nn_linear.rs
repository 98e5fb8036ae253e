//! `torch.nn.Linear` on the CPU: `y = x·Wᵀ + b` with the weight in PyTorch's `[out, in]` layout.
//!
//! Evaluation order (what a GPU port is checked against, by tolerance): `acc = Σ_k x[r,k]·W[o,k]`
//! by [`gemm`] (matrixmultiply's blocked order), then `y = acc + b[o]` in f32. PyTorch's `addmm`
//! folds the bias into the GEMM instead, so the two differ by rounding only.
//!
//! Parallelism: the output is cut into fixed-size blocks of rows (or, when there are few rows, of
//! output columns), one GEMM per block on rayon. Block sizes depend only on the shape, never on
//! the thread count, and each element's sum is the same wherever it sits, so the result is
//! bit-identical to a single GEMM call on any number of threads.

use super::nn_gemm::{gemm, MatMut, MatRef};
use rayon::prelude::*;

/// Rows per parallel task: big enough that packing the weight panel (≈ in·out values per task)
/// stays small next to the task's 2·rows·in·out FLOPs.
const ROWS_PER_TASK: usize = 128;
/// With fewer rows than this, split the output columns instead (e.g. a 1-row time-embedding MLP).
const FEW_ROWS: usize = 2 * ROWS_PER_TASK;
/// Output columns per task in the column split.
const COLS_PER_TASK: usize = 256;

/// `out[r, o] = Σ_k x[r, k]·weight[o, k] + bias[o]` for `x: [rows, in_f]`, `weight: [out_f, in_f]`,
/// `bias: [out_f]` (or none), `out: [rows, out_f]`, all row-major.
pub fn linear(
    x: &[f32],
    rows: usize,
    in_f: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    out_f: usize,
    out: &mut [f32],
) {
    assert_eq!(x.len(), rows * in_f, "linear: input length");
    assert_eq!(weight.len(), out_f * in_f, "linear: weight length");
    assert_eq!(out.len(), rows * out_f, "linear: output length");
    if let Some(b) = bias {
        assert_eq!(b.len(), out_f, "linear: bias length");
    }
    if rows == 0 || out_f == 0 {
        return;
    }
    if rows >= FEW_ROWS {
        out.par_chunks_mut(ROWS_PER_TASK * out_f)
            .enumerate()
            .for_each(|(t, o)| {
                let r0 = t * ROWS_PER_TASK;
                let n = o.len() / out_f;
                let xs = &x[r0 * in_f..(r0 + n) * in_f];
                gemm(
                    1.0,
                    MatRef::row_major(xs, n, in_f),
                    MatRef::transposed(weight, in_f, out_f),
                    0.0,
                    MatMut::row_major(o, n, out_f),
                );
                add_bias(o, bias, out_f, 0);
            });
    } else {
        // Column blocks write strided windows of `out`; compute each into its own buffer, then
        // copy (cheap: few rows).
        let blocks: Vec<(usize, Vec<f32>)> = (0..out_f.div_ceil(COLS_PER_TASK))
            .into_par_iter()
            .map(|t| {
                let c0 = t * COLS_PER_TASK;
                let n = COLS_PER_TASK.min(out_f - c0);
                let w = &weight[c0 * in_f..(c0 + n) * in_f];
                let mut buf = vec![0.0f32; rows * n];
                gemm(
                    1.0,
                    MatRef::row_major(x, rows, in_f),
                    MatRef::transposed(w, in_f, n),
                    0.0,
                    MatMut::row_major(&mut buf, rows, n),
                );
                add_bias(&mut buf, bias, n, c0);
                (c0, buf)
            })
            .collect();
        for (c0, buf) in blocks {
            let n = buf.len() / rows;
            for r in 0..rows {
                out[r * out_f + c0..r * out_f + c0 + n].copy_from_slice(&buf[r * n..(r + 1) * n]);
            }
        }
    }
}

/// Adds `bias[c0 + j]` to column `j` of the row-major `[_, n]` block `o`.
fn add_bias(o: &mut [f32], bias: Option<&[f32]>, n: usize, c0: usize) {
    if let Some(b) = bias {
        let b = &b[c0..c0 + n];
        for row in o.chunks_exact_mut(n) {
            for (v, &bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        }
    }
}

/// [`linear`] into a new vector.
pub fn linear_new(x: &[f32], rows: usize, in_f: usize, weight: &[f32], bias: Option<&[f32]>, out_f: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * out_f];
    linear(x, rows, in_f, weight, bias, out_f, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| ((i as f32 + 1.0) * 0.618034 * seed).sin()).collect()
    }

    fn naive(x: &[f32], rows: usize, in_f: usize, w: &[f32], b: &[f32], out_f: usize) -> Vec<f64> {
        let mut y = vec![0.0f64; rows * out_f];
        for r in 0..rows {
            for o in 0..out_f {
                let dot: f64 = (0..in_f).map(|k| x[r * in_f + k] as f64 * w[o * in_f + k] as f64).sum();
                y[r * out_f + o] = dot + b[o] as f64;
            }
        }
        y
    }

    #[test]
    fn matches_naive_loops_in_both_splits() {
        for &(rows, in_f, out_f) in &[(1, 7, 600), (3, 64, 5), (300, 33, 17), (513, 20, 300)] {
            let x = values(rows * in_f, 1.7);
            let w = values(out_f * in_f, 0.9);
            let b = values(out_f, 3.1);
            let got = linear_new(&x, rows, in_f, &w, Some(&b), out_f);
            let want = naive(&x, rows, in_f, &w, &b, out_f);
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-4, "{rows}x{in_f}x{out_f}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn blocked_parallel_result_is_bit_identical_to_one_gemm() {
        for &(rows, in_f, out_f) in &[(700, 300, 40), (5, 300, 700)] {
            let x = values(rows * in_f, 1.1);
            let w = values(out_f * in_f, 2.3);
            let got = linear_new(&x, rows, in_f, &w, None, out_f);
            let mut one = vec![0.0f32; rows * out_f];
            gemm(
                1.0,
                MatRef::row_major(&x, rows, in_f),
                MatRef::transposed(&w, in_f, out_f),
                0.0,
                MatMut::row_major(&mut one, rows, out_f),
            );
            assert!(
                got.iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{rows}x{in_f}x{out_f}"
            );
        }
    }

    #[test]
    fn no_bias_and_empty_shapes() {
        let y = linear_new(&[1.0, 2.0], 1, 2, &[3.0, 4.0], None, 1);
        assert_eq!(y, vec![11.0]);
        assert!(linear_new(&[], 0, 3, &[0.0; 6], None, 2).is_empty());
    }
}
