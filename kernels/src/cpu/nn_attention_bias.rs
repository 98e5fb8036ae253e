//! Multi-head attention with an additive relative-position bias, as T5 / umT5 compute it:
//! `s_ij = scale·q_i·k_j + bias[h, j − i]`, softmax over `j`, then `·V`. No mask: callers pass only
//! the tokens that take part (for umT5, running on the real tokens equals the masked padded run,
//! docs/wan21.md §3).
//!
//! The bias is stored per relative offset, not per (query, key) pair: `bias` is
//! `[heads, q_tokens + kv_tokens − 1]` with entry `(h, j − i + q_tokens − 1)`, so a 512-token
//! prompt needs 1023 values per head instead of 262,144.
//!
//! Layout and evaluation order are those of [`crate::cpu::nn_attention`] (rows of
//! `[tokens, heads·head_dim]`, queries in blocks of [`QUERY_BLOCK`](super::nn_attention::QUERY_BLOCK)), with the bias added between
//! the two GEMMs:
//! 1. `s_ij = scale·Σ_d q_d·k_jd` (a [`gemm`](super::nn_gemm::gemm) with `α = scale`), then `s_ij += bias` in f32;
//! 2. `m = max_j s_ij`, `p_ij = exp(s_ij − m)` in f32, `l = Σ_j p_ij` in f64 in key order, rounded
//!    to f32;
//! 3. `o_d = (Σ_j p_ij·v_jd) / l`.
//!
//! The computation itself is `nn_attention`'s blocked core, given the bias table.
//!
//! PyTorch adds `scores + position_bias + mask` before its softmax; it rounds differently (SDPA
//! kernels fuse the steps), so comparisons are by tolerance.

use super::nn_attention::{blocked_attention, AttentionShape};

/// `out = softmax(scale·q·kᵀ + bias)·v` per head (see the module doc for the layout of `bias` and
/// the order). Panics on inconsistent lengths or `kv_tokens == 0`.
pub fn attention_rel_bias(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    scale: f32,
    bias: &[f32],
    out: &mut [f32],
) {
    blocked_attention("attention_rel_bias", q, k, v, shape, scale, Some(bias), out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::nn_attention::attention;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 + 1.0) * 0.618034 * seed).sin() * 1.5)
            .collect()
    }

    /// Naive f64 attention with the full `[heads, q, kv]` bias expanded from the offsets.
    fn naive(q: &[f32], k: &[f32], v: &[f32], s: AttentionShape, scale: f64, bias: &[f32]) -> Vec<f64> {
        let w = s.width();
        let offsets = s.q_tokens + s.kv_tokens - 1;
        let mut out = vec![0.0f64; q.len()];
        for h in 0..s.heads {
            let off = h * s.head_dim;
            for i in 0..s.q_tokens {
                let sc: Vec<f64> = (0..s.kv_tokens)
                    .map(|j| {
                        let dot: f64 = (0..s.head_dim)
                            .map(|d| q[i * w + off + d] as f64 * k[j * w + off + d] as f64)
                            .sum();
                        dot * scale + bias[h * offsets + j + s.q_tokens - 1 - i] as f64
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
    fn matches_naive_attention_across_query_blocks_and_unequal_lengths() {
        for &(q_tokens, kv_tokens, heads, head_dim) in &[(1, 1, 1, 4), (5, 3, 2, 8), (130, 130, 4, 8), (70, 9, 3, 5)] {
            let shape = AttentionShape {
                q_tokens,
                kv_tokens,
                heads,
                head_dim,
            };
            let q = values(q_tokens * shape.width(), 1.1);
            let k = values(kv_tokens * shape.width(), 2.3);
            let v = values(kv_tokens * shape.width(), 0.7);
            let bias = values(heads * (q_tokens + kv_tokens - 1), 3.7);
            let mut out = vec![f32::NAN; q.len()];
            attention_rel_bias(&q, &k, &v, shape, 1.0, &bias, &mut out);
            let want = naive(&q, &k, &v, shape, 1.0, &bias);
            for (g, w) in out.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 2e-6, "{shape:?}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn zero_bias_is_bit_identical_to_plain_attention() {
        let shape = AttentionShape {
            q_tokens: 67,
            kv_tokens: 67,
            heads: 2,
            head_dim: 6,
        };
        let q = values(67 * 12, 0.9);
        let k = values(67 * 12, 1.7);
        let v = values(67 * 12, 2.9);
        let (mut a, mut b) = (vec![0.0; q.len()], vec![0.0; q.len()]);
        attention_rel_bias(&q, &k, &v, shape, 0.5, &vec![0.0; 2 * 133], &mut a);
        attention(&q, &k, &v, shape, 0.5, &mut b);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
