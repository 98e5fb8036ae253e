//! Multi-head scaled-dot-product attention without a mask, memory-bounded: queries are processed
//! in blocks of [`QUERY_BLOCK`] rows, so the only score storage is `QUERY_BLOCK × kv_tokens` per
//! running task (about 8 MB for Wan2.1 at 480×832, versus 4.3 GB per head for the full matrix).
//!
//! Layout: `q: [q_tokens, heads·head_dim]`, `k`, `v: [kv_tokens, heads·head_dim]`, output like `q`
//! — the `[B·S, heads·dim]` rows that the projections produce, so no transposes are needed.
//!
//! Evaluation order for one query row and head:
//! 1. `s_j = scale·Σ_d q_d·k_jd` (a [`gemm`] with `α = scale`, so the scale multiplies the sum);
//! 2. `m = max_j s_j`, `p_j = exp(s_j − m)` in f32, `l = Σ_j p_j` accumulated in f64 in key order
//!    and rounded to f32;
//! 3. `o_d = (Σ_j p_j·v_jd) / l` — the unnormalised `P·V` by [`gemm`], then one division.
//!
//! PyTorch's CPU SDPA (a flash-style kernel with an online softmax) rounds differently; flash
//! kernels on GPUs do too: compare by tolerance.

use super::nn_gemm::{gemm, MatMut, MatRef};
use rayon::prelude::*;

/// Query rows per task.
pub const QUERY_BLOCK: usize = 64;

/// Token counts and head geometry of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub q_tokens: usize,
    pub kv_tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    /// `heads·head_dim`, the row width of q, k, v and the output.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// `out = softmax(scale·q·kᵀ)·v` per head (see the module doc for the order). Panics on
/// inconsistent lengths or `kv_tokens == 0` (a softmax over nothing).
pub fn attention(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape, scale: f32, out: &mut [f32]) {
    blocked_attention("attention", q, k, v, shape, scale, None, out);
}

/// The blocked core shared with [`crate::cpu::nn_attention_bias`]: `out = softmax(scale·q·kᵀ
/// [+ bias])·v` per head, in the order of the module doc. `rel_bias`, when given, is the
/// `[heads, q_tokens + kv_tokens − 1]` relative-offset table of `attention_rel_bias`, added to the
/// scaled scores in f32 before the softmax. `name` prefixes the panic messages.
#[allow(clippy::too_many_arguments)]
pub(crate) fn blocked_attention(
    name: &str,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    scale: f32,
    rel_bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let AttentionShape {
        q_tokens,
        kv_tokens,
        heads,
        head_dim,
    } = shape;
    let width = shape.width();
    assert_eq!(q.len(), q_tokens * width, "{name}: q length");
    assert_eq!(k.len(), kv_tokens * width, "{name}: k length");
    assert_eq!(v.len(), kv_tokens * width, "{name}: v length");
    assert_eq!(out.len(), q.len(), "{name}: output length");
    if q_tokens == 0 || width == 0 {
        return;
    }
    assert!(kv_tokens > 0, "{name}: no keys");
    let offsets = q_tokens + kv_tokens - 1;
    if let Some(bias) = rel_bias {
        assert_eq!(bias.len(), heads * offsets, "{name}: bias length");
    }
    out.par_chunks_mut(QUERY_BLOCK * width)
        .zip(q.par_chunks(QUERY_BLOCK * width))
        .enumerate()
        .for_each(|(block, (o, qb))| {
            let rows = qb.len() / width;
            let first_query = block * QUERY_BLOCK;
            let mut scores = vec![0.0f32; rows * kv_tokens];
            let mut sums = vec![0.0f32; rows];
            for h in 0..heads {
                let off = h * head_dim;
                let q_h = MatRef {
                    data: &qb[off..],
                    rows,
                    cols: head_dim,
                    row_stride: width,
                    col_stride: 1,
                };
                let k_t = MatRef {
                    data: &k[off..],
                    rows: head_dim,
                    cols: kv_tokens,
                    row_stride: 1,
                    col_stride: width,
                };
                gemm(scale, q_h, k_t, 0.0, MatMut::row_major(&mut scores, rows, kv_tokens));
                let bias_h = rel_bias.map(|b| &b[h * offsets..(h + 1) * offsets]);
                for (r, (row, sum)) in scores.chunks_exact_mut(kv_tokens).zip(sums.iter_mut()).enumerate() {
                    if let Some(bias_h) = bias_h {
                        // Query i's offsets j − i + q_tokens − 1 for j = 0.. are one contiguous run.
                        let start = q_tokens - 1 - (first_query + r);
                        for (s, &b) in row.iter_mut().zip(&bias_h[start..start + kv_tokens]) {
                            *s += b;
                        }
                    }
                    *sum = softmax_numerators(row);
                }
                let p = MatRef::row_major(&scores, rows, kv_tokens);
                let v_h = MatRef {
                    data: &v[off..],
                    rows: kv_tokens,
                    cols: head_dim,
                    row_stride: width,
                    col_stride: 1,
                };
                let o_h = MatMut {
                    data: &mut o[off..],
                    rows,
                    cols: head_dim,
                    row_stride: width,
                    col_stride: 1,
                };
                gemm(1.0, p, v_h, 0.0, o_h);
                for (r, &l) in sums.iter().enumerate() {
                    for val in &mut o[r * width + off..r * width + off + head_dim] {
                        *val /= l;
                    }
                }
            }
        });
}

/// Replaces a row of scores by `exp(s − max)` and returns their sum (f64 accumulation).
fn softmax_numerators(row: &mut [f32]) -> f32 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut l = 0.0f64;
    for s in row.iter_mut() {
        *s = (*s - m).exp();
        l += *s as f64;
    }
    l as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 + 1.0) * 0.618034 * seed).sin() * 1.5)
            .collect()
    }

    /// Naive attention in f64 with the full score matrix.
    fn naive(q: &[f32], k: &[f32], v: &[f32], s: AttentionShape, scale: f64) -> Vec<f64> {
        let w = s.width();
        let mut out = vec![0.0f64; q.len()];
        for h in 0..s.heads {
            let off = h * s.head_dim;
            for i in 0..s.q_tokens {
                let sc: Vec<f64> = (0..s.kv_tokens)
                    .map(|j| {
                        (0..s.head_dim)
                            .map(|d| q[i * w + off + d] as f64 * k[j * w + off + d] as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let l: f64 = p.iter().sum();
                for d in 0..s.head_dim {
                    out[i * w + off + d] = (0..s.kv_tokens).map(|j| p[j] * v[j * w + off + d] as f64).sum::<f64>() / l;
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_attention_across_query_blocks() {
        for &shape in &[
            AttentionShape {
                q_tokens: 3,
                kv_tokens: 5,
                heads: 1,
                head_dim: 4,
            },
            AttentionShape {
                q_tokens: 150,
                kv_tokens: 70,
                heads: 3,
                head_dim: 12,
            },
            AttentionShape {
                q_tokens: 65,
                kv_tokens: 512,
                heads: 2,
                head_dim: 8,
            },
        ] {
            let q = values(shape.q_tokens * shape.width(), 1.1);
            let k = values(shape.kv_tokens * shape.width(), 2.3);
            let v = values(shape.kv_tokens * shape.width(), 0.7);
            let scale = 1.0 / (shape.head_dim as f32).sqrt();
            let mut out = vec![f32::NAN; q.len()];
            attention(&q, &k, &v, shape, scale, &mut out);
            let want = naive(&q, &k, &v, shape, scale as f64);
            for (g, w) in out.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 2e-6, "{shape:?}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn large_scores_do_not_overflow_and_identical_keys_average_values() {
        let shape = AttentionShape {
            q_tokens: 1,
            kv_tokens: 3,
            heads: 1,
            head_dim: 2,
        };
        let q = vec![1000.0, 1000.0];
        let k = vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let v = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut out = vec![0.0; 2];
        attention(&q, &k, &v, shape, 1.0, &mut out);
        assert!((out[0] - 3.0).abs() < 1e-6 && (out[1] - 4.0).abs() < 1e-6, "{out:?}");
    }
}
