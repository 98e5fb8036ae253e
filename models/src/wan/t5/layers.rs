//! One umT5 encoder block (`UMT5Block` in transformers' `modeling_umt5.py`, spec §3) and the
//! relative-position bucketing its attention bias uses.
//!
//! Per block, on `h: [L, d_model]`:
//! 1. `n = rms(h)·ln0`; `q, k, v = n·Wqᵀ, n·Wkᵀ, n·Wvᵀ` (no biases);
//!    `h += o(softmax(q·kᵀ + bias_layer)·v)` — **unscaled** scores (`scaling = 1.0`), and every layer
//!    has its own bias table (T5 only has one, in layer 0);
//! 2. `n = rms(h)·ln1`; `h += wo(gelu_tanh(wi_0·n) ⊙ wi_1·n)`.
//!
//! `rms(x) = x·rsqrt(mean(x²) + eps)` has no mean subtraction and no bias.

use super::config::UMT5Config;
use crate::wan::error::WanError;
use crate::wan::weights::WeightStore;
use longshot_kernels::cpu::nn_act::gelu_tanh;
use longshot_kernels::cpu::nn_attention::AttentionShape;
use longshot_kernels::cpu::nn_attention_bias::attention_rel_bias;
use longshot_kernels::cpu::nn_linear::linear_new;
use longshot_kernels::cpu::nn_norm::rms_norm_in_place;
use rayon::prelude::*;

/// The bucket of relative position `rel = key_pos − query_pos` in the bidirectional encoder
/// (`UMT5Attention._relative_position_bucket` with `is_decoder = False`).
///
/// Half the buckets are for `rel > 0`. Within each half, offsets below `max_exact = buckets/4` get
/// their own bucket; larger ones are log-spaced up to `max_distance`:
/// `max_exact + trunc(ln(|rel|/max_exact) / ln(max_distance/max_exact) · max_exact)`, capped at
/// the half's last bucket. The log is evaluated as PyTorch does: `ln` of an f32 ratio in f32, the
/// denominator a Python float (f64) rounded to f32, the product in f32, then truncated.
pub fn relative_position_bucket(rel: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = num_buckets / 2;
    let max_exact = half / 2;
    let base = if rel > 0 { half } else { 0 };
    let distance = rel.unsigned_abs() as usize;
    if distance < max_exact {
        return base + distance;
    }
    let denominator = (max_distance as f64 / max_exact as f64).ln() as f32;
    let ratio = (distance as f32 / max_exact as f32).ln() / denominator;
    let large = max_exact + (ratio * (half - max_exact) as f32) as usize;
    base + large.min(half - 1)
}

/// The bucket of every offset `rel = −(tokens−1) ..= tokens−1`, indexed by `rel + tokens − 1` (the
/// relative-offset layout of `nn_attention_bias`). It depends only on the length, so one table
/// serves every layer.
pub fn bucket_table(tokens: usize, cfg: &UMT5Config) -> Vec<usize> {
    let n = tokens as i64;
    (-(n - 1)..n)
        .map(|rel| {
            relative_position_bucket(
                rel,
                cfg.relative_attention_num_buckets,
                cfg.relative_attention_max_distance,
            )
        })
        .collect()
}

/// One encoder block's weights (PyTorch layouts: Linear weights `[out, in]`, the bias table
/// `[buckets, heads]`).
#[derive(Clone, Debug)]
pub struct T5Block {
    attn_norm: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    o: Vec<f32>,
    rel_bias: Vec<f32>,
    ffn_norm: Vec<f32>,
    wi_0: Vec<f32>,
    wi_1: Vec<f32>,
    wo: Vec<f32>,
}

impl T5Block {
    /// `encoder.block.{i}.*` from `store` (key names in spec §3).
    pub fn load(store: &WeightStore, cfg: &UMT5Config, i: usize) -> Result<Self, WanError> {
        let (d, inner, ff) = (cfg.d_model, cfg.inner_dim(), cfg.d_ff);
        let attn = format!("encoder.block.{i}.layer.0");
        let ffn = format!("encoder.block.{i}.layer.1");
        let get = |name: String, shape: &[usize]| store.get(&name, shape);
        Ok(Self {
            attn_norm: get(format!("{attn}.layer_norm.weight"), &[d])?,
            q: get(format!("{attn}.SelfAttention.q.weight"), &[inner, d])?,
            k: get(format!("{attn}.SelfAttention.k.weight"), &[inner, d])?,
            v: get(format!("{attn}.SelfAttention.v.weight"), &[inner, d])?,
            o: get(format!("{attn}.SelfAttention.o.weight"), &[d, inner])?,
            rel_bias: get(
                format!("{attn}.SelfAttention.relative_attention_bias.weight"),
                &[cfg.relative_attention_num_buckets, cfg.num_heads],
            )?,
            ffn_norm: get(format!("{ffn}.layer_norm.weight"), &[d])?,
            wi_0: get(format!("{ffn}.DenseReluDense.wi_0.weight"), &[ff, d])?,
            wi_1: get(format!("{ffn}.DenseReluDense.wi_1.weight"), &[ff, d])?,
            wo: get(format!("{ffn}.DenseReluDense.wo.weight"), &[d, ff])?,
        })
    }

    /// Runs the block in place on `h: [tokens, d_model]`; `buckets` is [`bucket_table`] for
    /// `tokens`.
    pub fn forward(&self, h: &mut [f32], tokens: usize, buckets: &[usize], cfg: &UMT5Config) {
        let (d, inner, ff) = (cfg.d_model, cfg.inner_dim(), cfg.d_ff);
        debug_assert_eq!(h.len(), tokens * d);
        debug_assert_eq!(buckets.len(), 2 * tokens - 1);

        let mut n = h.to_vec();
        rms_norm_in_place(&mut n, d, cfg.layer_norm_epsilon, &self.attn_norm);
        let q = linear_new(&n, tokens, d, &self.q, None, inner);
        let k = linear_new(&n, tokens, d, &self.k, None, inner);
        let v = linear_new(&n, tokens, d, &self.v, None, inner);
        let shape = AttentionShape {
            q_tokens: tokens,
            kv_tokens: tokens,
            heads: cfg.num_heads,
            head_dim: cfg.d_kv,
        };
        let mut attn = vec![0.0f32; tokens * inner];
        attention_rel_bias(
            &q,
            &k,
            &v,
            shape,
            1.0,
            &self.offset_bias(buckets, cfg.num_heads),
            &mut attn,
        );
        let attn_out = linear_new(&attn, tokens, inner, &self.o, None, d);
        add_in_place(h, &attn_out);

        n.copy_from_slice(h);
        rms_norm_in_place(&mut n, d, cfg.layer_norm_epsilon, &self.ffn_norm);
        let mut gate = linear_new(&n, tokens, d, &self.wi_0, None, ff);
        let lin = linear_new(&n, tokens, d, &self.wi_1, None, ff);
        // gelu_tanh(wi_0·n) ⊙ wi_1·n, in that order (transformers' `hidden_gelu * hidden_linear`).
        gate.par_chunks_mut(1 << 14)
            .zip(lin.par_chunks(1 << 14))
            .for_each(|(g, l)| {
                for (gv, &lv) in g.iter_mut().zip(l) {
                    *gv = gelu_tanh(*gv) * lv;
                }
            });
        let ffn_out = linear_new(&gate, tokens, ff, &self.wo, None, d);
        add_in_place(h, &ffn_out);
    }

    /// This layer's bias per head and relative offset: `[heads, 2·tokens − 1]`, entry
    /// `(h, r) = table[buckets[r], h]`.
    fn offset_bias(&self, buckets: &[usize], heads: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(heads * buckets.len());
        for h in 0..heads {
            out.extend(buckets.iter().map(|&b| self.rel_bias[b * heads + h]));
        }
        out
    }
}

/// `h += x` (the residual adds; f32, one rounding each).
fn add_in_place(h: &mut [f32], x: &[f32]) {
    for (a, &b) in h.iter_mut().zip(x) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_transformers_at_the_log_boundaries() {
        // (|rel|, bucket for rel > 0, bucket for rel < 0) from transformers 5.23 with 32 buckets and
        // max distance 128; 16, 32, 64 are where an f64 log would land on the other side.
        let want = [
            (0, 0, 0),
            (7, 23, 7),
            (8, 24, 8),
            (11, 24, 8),
            (12, 25, 9),
            (15, 25, 9),
            (16, 26, 10),
            (22, 26, 10),
            (23, 27, 11),
            (31, 27, 11),
            (32, 28, 12),
            (45, 28, 12),
            (46, 29, 13),
            (63, 29, 13),
            (64, 30, 14),
            (90, 30, 14),
            (91, 31, 15),
            (128, 31, 15),
            (511, 31, 15),
        ];
        for (d, pos, neg) in want {
            assert_eq!(relative_position_bucket(d, 32, 128), pos, "+{d}");
            assert_eq!(relative_position_bucket(-d, 32, 128), neg, "-{d}");
        }
    }

    #[test]
    fn bucket_table_is_indexed_by_offset() {
        let cfg = UMT5Config::default();
        let t = bucket_table(3, &cfg);
        assert_eq!(t, vec![2, 1, 0, 17, 18]);
        assert_eq!(bucket_table(1, &cfg), vec![0]);
    }
}
