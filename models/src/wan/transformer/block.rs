//! One `WanTransformerBlock` (spec §1.3 step 5): AdaLN-modulated self-attention with RoPE and a
//! gate, ungated cross-attention over the text tokens behind an affine LayerNorm (image-to-video:
//! plus a second attention over the image tokens with their own K/V, the two outputs summed
//! before `to_out`), and a gated tanh-GELU FFN. All in f32 on `[S, D]` token rows of one batch
//! item.

use super::config::TransformerConfig;
use super::layers::{Fetch, Linear};
use crate::wan::error::WanError;
use longshot_kernels::cpu::nn_act::gelu_tanh_in_place;
use longshot_kernels::cpu::nn_attention::{attention, AttentionShape};
use longshot_kernels::cpu::nn_norm::{layer_norm, layer_norm_modulate, rms_norm_in_place};
use longshot_kernels::cpu::nn_rope::rope_interleaved_in_place;
use rayon::prelude::*;

/// Token rows per FFN chunk: bounds the `[rows, ffn_dim]` intermediate (≈ 37 MB for 1.3B)
/// instead of materialising `[S, ffn_dim]` (1.2 GB at 480×832). Rows are independent, so the
/// result does not depend on the chunking.
const FFN_ROWS: usize = 1024;

/// `WanAttention` weights: projections and the q/k RMSNorm weights (over all heads, width D).
#[derive(Clone, Debug)]
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub norm_q: Vec<f32>,
    pub norm_k: Vec<f32>,
}

impl Attention {
    fn load(f: &Fetch<'_>, prefix: &str, d: usize) -> Result<Self, WanError> {
        Ok(Self {
            to_q: f.linear(&format!("{prefix}.to_q"), d, d)?,
            to_k: f.linear(&format!("{prefix}.to_k"), d, d)?,
            to_v: f.linear(&format!("{prefix}.to_v"), d, d)?,
            to_out: f.linear(&format!("{prefix}.to_out.0"), d, d)?,
            norm_q: f.get(&format!("{prefix}.norm_q.weight"), &[d])?,
            norm_k: f.get(&format!("{prefix}.norm_k.weight"), &[d])?,
        })
    }
}

/// The cross-attention keys and values of one block for one prompt: `RMSNorm(to_k(ctx))` and
/// `to_v(ctx)`, each `[N, D]`, and for image-to-video the image tokens' `norm_added_k(add_k_proj)`
/// and `add_v_proj`. They depend only on the conditioning, so they are computed once per job.
#[derive(Clone, Debug)]
pub struct CrossKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub image: Option<(Vec<f32>, Vec<f32>)>,
}

/// `attn2`'s image projections (`add_k_proj`, `add_v_proj`, `norm_added_k`).
#[derive(Clone, Debug)]
struct ImageKv {
    add_k: Linear,
    add_v: Linear,
    norm_added_k: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct WanBlock {
    dim: usize,
    heads: usize,
    eps: f64,
    /// `[6, D]`: shift, scale, gate (self-attention), shift, scale, gate (FFN).
    scale_shift_table: Vec<f32>,
    attn1: Attention,
    attn2: Attention,
    /// Affine `norm2` weight and bias; `None` when `cross_attn_norm` is false (identity).
    norm2: Option<(Vec<f32>, Vec<f32>)>,
    ffn_in: Linear,
    ffn_out: Linear,
    image_kv: Option<ImageKv>,
}

impl WanBlock {
    pub fn load(f: &Fetch<'_>, cfg: &TransformerConfig, index: usize) -> Result<Self, WanError> {
        let d = cfg.inner_dim();
        let p = format!("blocks.{index}");
        let norm2 = if cfg.cross_attn_norm {
            Some((
                f.get(&format!("{p}.norm2.weight"), &[d])?,
                f.get(&format!("{p}.norm2.bias"), &[d])?,
            ))
        } else {
            None
        };
        Ok(Self {
            dim: d,
            heads: cfg.num_attention_heads,
            eps: cfg.eps,
            scale_shift_table: f.get(&format!("{p}.scale_shift_table"), &[1, 6, d])?,
            attn1: Attention::load(f, &format!("{p}.attn1"), d)?,
            attn2: Attention::load(f, &format!("{p}.attn2"), d)?,
            norm2,
            ffn_in: f.linear(&format!("{p}.ffn.net.0.proj"), d, cfg.ffn_dim)?,
            ffn_out: f.linear(&format!("{p}.ffn.net.2"), cfg.ffn_dim, d)?,
            image_kv: match cfg.added_kv_proj_dim {
                Some(a) => Some(ImageKv {
                    add_k: f.linear(&format!("{p}.attn2.add_k_proj"), a, d)?,
                    add_v: f.linear(&format!("{p}.attn2.add_v_proj"), a, d)?,
                    norm_added_k: f.get(&format!("{p}.attn2.norm_added_k.weight"), &[d])?,
                }),
                None => None,
            },
        })
    }

    /// Cross-attention K/V for the embedded text `ctx: [N, D]` and, on an image-to-video model,
    /// the embedded image tokens `image: [M, D]` (the caller checks that they are given exactly
    /// when the model has an image path).
    pub fn cross_kv(&self, ctx: &[f32], image: Option<&[f32]>) -> CrossKv {
        let mut k = self.attn2.to_k.forward(ctx);
        rms_norm_in_place(&mut k, self.dim, self.eps, &self.attn2.norm_k);
        let image = match (&self.image_kv, image) {
            (Some(p), Some(img)) => {
                let mut k = p.add_k.forward(img);
                rms_norm_in_place(&mut k, self.dim, self.eps, &p.norm_added_k);
                Some((k, p.add_v.forward(img)))
            }
            _ => None,
        };
        CrossKv {
            k,
            v: self.attn2.to_v.forward(ctx),
            image,
        }
    }

    /// Runs the block in place on `x: [S, D]`. `timestep_proj` is `[6, D]`; `cos`/`sin` are the
    /// per-token RoPE tables `[S, head_dim]`.
    pub fn forward(&self, x: &mut [f32], timestep_proj: &[f32], cos: &[f32], sin: &[f32], text: &CrossKv) {
        let d = self.dim;
        let s = x.len() / d;
        let head_dim = d / self.heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        // e = scale_shift_table + timestep_proj, in f32, split into six [D] rows.
        let e: Vec<f32> = self
            .scale_shift_table
            .iter()
            .zip(timestep_proj)
            .map(|(a, b)| a + b)
            .collect();
        let row = |i: usize| &e[i * d..(i + 1) * d];
        let (shift_msa, scale_msa, gate_msa) = (row(0), row(1), row(2));
        let (c_shift, c_scale, c_gate) = (row(3), row(4), row(5));

        // 1. Self-attention: x += to_out(attn(RoPE(RMS(q)), RoPE(RMS(k)), v)) · gate.
        let mut n = vec![0.0f32; x.len()];
        layer_norm_modulate(x, d, self.eps, scale_msa, shift_msa, &mut n);
        let a = &self.attn1;
        let mut q = a.to_q.forward(&n);
        let mut k = a.to_k.forward(&n);
        let v = a.to_v.forward(&n);
        rms_norm_in_place(&mut q, d, self.eps, &a.norm_q);
        rms_norm_in_place(&mut k, d, self.eps, &a.norm_k);
        rope_interleaved_in_place(&mut q, s, self.heads, head_dim, cos, sin);
        rope_interleaved_in_place(&mut k, s, self.heads, head_dim, cos, sin);
        let shape = AttentionShape {
            q_tokens: s,
            kv_tokens: s,
            heads: self.heads,
            head_dim,
        };
        attention(&q, &k, &v, shape, scale, &mut n);
        drop((q, k, v));
        let o = a.to_out.forward(&n);
        add_gated(x, &o, gate_msa);

        // 2. Cross-attention: x += to_out(attn(RMS(to_q(norm2(x))), K_text, V_text)), no gate.
        match &self.norm2 {
            Some((w, b)) => layer_norm(x, d, self.eps, Some((w, b)), &mut n),
            None => n.copy_from_slice(x),
        }
        let a = &self.attn2;
        let mut q = a.to_q.forward(&n);
        rms_norm_in_place(&mut q, d, self.eps, &a.norm_q);
        let shape = AttentionShape {
            q_tokens: s,
            kv_tokens: text.k.len() / d,
            heads: self.heads,
            head_dim,
        };
        attention(&q, &text.k, &text.v, shape, scale, &mut n);
        if let Some((k, v)) = &text.image {
            // The image attention's output is added to the text attention's, then to_out.
            let shape = AttentionShape {
                kv_tokens: k.len() / d,
                ..shape
            };
            let mut img = vec![0.0f32; n.len()];
            attention(&q, k, v, shape, scale, &mut img);
            n.par_iter_mut().zip(&img).for_each(|(a, b)| *a += b);
        }
        drop(q);
        let o = a.to_out.forward(&n);
        x.par_iter_mut().zip(&o).for_each(|(xv, ov)| *xv += ov);

        // 3. FFN: x += ffn(LN(x)·(1 + c_scale) + c_shift) · c_gate, in row chunks.
        layer_norm_modulate(x, d, self.eps, c_scale, c_shift, &mut n);
        for (xc, nc) in x.chunks_mut(FFN_ROWS * d).zip(n.chunks(FFN_ROWS * d)) {
            let mut h = self.ffn_in.forward(nc);
            gelu_tanh_in_place(&mut h);
            let y = self.ffn_out.forward(&h);
            add_gated(xc, &y, c_gate);
        }
    }
}

/// `x[r, j] += y[r, j] · gate[j]` (the product rounded first, as `x + y * gate`).
fn add_gated(x: &mut [f32], y: &[f32], gate: &[f32]) {
    let d = gate.len();
    x.par_chunks_mut(d).zip(y.par_chunks(d)).for_each(|(xr, yr)| {
        for ((xv, &yv), &g) in xr.iter_mut().zip(yr).zip(gate) {
            *xv += yv * g;
        }
    });
}
