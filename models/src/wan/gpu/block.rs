//! One `WanTransformerBlock` on the GPU, the op sequence of `wan::transformer::block::WanBlock::forward`:
//! AdaLN-modulated self-attention (q/k RMSNorm across heads, interleaved 3D RoPE) with a gate,
//! ungated cross-attention behind the affine `norm2`, and a gated tanh-GELU FFN.
//!
//! The fused bf16 path (see the module doc of `wan::gpu`): LayerNorm + modulation → bf16; one QKV
//! GEMM (bias in the epilogue, f32 out); RMSNorm + RoPE → bf16 q, k, v in the attention kernel's
//! head layout; attention bf16 → bf16; out-projection (f32 out) and the gated residual into the
//! f32 residual stream; the FFN's first GEMM with tanh-GELU + bias in the epilogue, bf16 out. The
//! block neither allocates nor touches the host, so a forward of the block stack can be captured
//! into a CUDA graph.

use super::error::GpuWanError;
use super::linear::{Gpu, GpuLinear};
use super::source::{Role, WeightSource};
use super::timing::{Laps, Phase};
use crate::wan::transformer::config::TransformerConfig;
use cudarc::driver::{CudaSlice, CudaView};
use longshot_kernels::cpu::nn_attention::AttentionShape;
use longshot_kernels::cuda::{LnAffine, QkvLayout};
use std::ops::Range;

/// Rows of a block's modulation `scale_shift_table + timestep_proj`, in the table's order.
pub const SHIFT_MSA: usize = 0;
pub const SCALE_MSA: usize = 1;
pub const GATE_MSA: usize = 2;
pub const C_SHIFT: usize = 3;
pub const C_SCALE: usize = 4;
pub const C_GATE: usize = 5;

/// Where row `row` (one of the six above) of block `block`'s modulation lies in the stack's
/// `[L, 6, D]` modulation buffer.
pub fn modulation_row(block: usize, row: usize, d: usize) -> Range<usize> {
    let start = (block * 6 + row) * d;
    start..start + d
}

fn load_norm(src: &mut dyn WeightSource, gpu: &Gpu, name: &str, d: usize) -> Result<CudaSlice<f32>, GpuWanError> {
    gpu.upload(&src.host(&format!("{name}.weight"), &[d], Role::NormWeight)?)
}

/// Self-attention on the device: the fused QKV projection (`[3D, D]`: to_q, to_k, to_v), the
/// out-projection and the q/k RMSNorm weights (width D).
pub struct GpuSelfAttention {
    pub qkv: GpuLinear,
    pub to_out: GpuLinear,
    pub norm_q: CudaSlice<f32>,
    pub norm_k: CudaSlice<f32>,
}

impl GpuSelfAttention {
    fn load(src: &mut dyn WeightSource, gpu: &Gpu, prefix: &str, d: usize) -> Result<Self, GpuWanError> {
        let parts = ["to_q", "to_k", "to_v"].map(|p| format!("{prefix}.{p}"));
        let parts = parts.each_ref().map(String::as_str);
        Ok(Self {
            qkv: GpuLinear::load_concat(src, gpu, &parts, d, d)?,
            to_out: GpuLinear::load(src, gpu, &format!("{prefix}.to_out.0"), d, d)?,
            norm_q: load_norm(src, gpu, &format!("{prefix}.norm_q"), d)?,
            norm_k: load_norm(src, gpu, &format!("{prefix}.norm_k"), d)?,
        })
    }

    fn device_bytes(&self) -> usize {
        self.qkv.device_bytes() + self.to_out.device_bytes() + (self.norm_q.len() + self.norm_k.len()) * 4
    }
}

/// Cross-attention on the device: to_q of the latent tokens, the fused text K/V projection
/// (`[2D, D]`: to_k, to_v; run once per prompt), the out-projection and the RMSNorm weights.
pub struct GpuCrossAttention {
    pub to_q: GpuLinear,
    pub kv: GpuLinear,
    pub to_out: GpuLinear,
    pub norm_q: CudaSlice<f32>,
    pub norm_k: CudaSlice<f32>,
}

impl GpuCrossAttention {
    fn load(src: &mut dyn WeightSource, gpu: &Gpu, prefix: &str, d: usize) -> Result<Self, GpuWanError> {
        let to_q = GpuLinear::load(src, gpu, &format!("{prefix}.to_q"), d, d)?;
        let parts = [format!("{prefix}.to_k"), format!("{prefix}.to_v")];
        let parts = parts.each_ref().map(String::as_str);
        Ok(Self {
            to_q,
            kv: GpuLinear::load_concat(src, gpu, &parts, d, d)?,
            to_out: GpuLinear::load(src, gpu, &format!("{prefix}.to_out.0"), d, d)?,
            norm_q: load_norm(src, gpu, &format!("{prefix}.norm_q"), d)?,
            norm_k: load_norm(src, gpu, &format!("{prefix}.norm_k"), d)?,
        })
    }

    fn device_bytes(&self) -> usize {
        self.to_q.device_bytes()
            + self.kv.device_bytes()
            + self.to_out.device_bytes()
            + (self.norm_q.len() + self.norm_k.len()) * 4
    }
}

/// One block's cross-attention K (`RMSNorm(to_k(text))`) and V (`to_v(text)`) in bf16, in the
/// attention kernel's head layout (`[N·heads, padded]`, zero padding columns).
pub struct GpuCrossKv {
    pub tokens: usize,
    pub k: CudaSlice<u16>,
    pub v: CudaSlice<u16>,
}

impl GpuCrossKv {
    pub fn zeros(gpu: &Gpu, layout: QkvLayout) -> Result<Self, GpuWanError> {
        Ok(Self {
            tokens: layout.rows,
            k: gpu.zeros_bf16(layout.out_len())?,
            v: gpu.zeros_bf16(layout.out_len())?,
        })
    }
}

/// Scratch buffers of one forward, sized for `S` tokens, shared by every block.
pub struct Work {
    /// LayerNorm output, the bf16 input of the projections `[S, D]`.
    pub nb: CudaSlice<u16>,
    /// Fused QKV projection `[S, 3D]` (f32: RMSNorm's statistics read it).
    pub qkv: CudaSlice<f32>,
    /// Attention inputs `[S·heads, padded]` bf16 (zero head padding, never written).
    pub q: CudaSlice<u16>,
    pub k: CudaSlice<u16>,
    pub v: CudaSlice<u16>,
    /// Attention output `[S, D]` bf16, the out-projection's input.
    pub attn: CudaSlice<u16>,
    /// An f32 `[S, D]` GEMM output: cross-attention's q projection, and each residual branch.
    pub y: CudaSlice<f32>,
    /// FFN hidden `[S, ffn_dim]` after the GELU epilogue, bf16.
    pub hid: CudaSlice<u16>,
    /// All ones `[D]`: the "gate" of the ungated cross-attention residual (`x + y·1 = x + y`).
    pub ones: CudaSlice<f32>,
}

impl Work {
    pub fn new(gpu: &Gpu, tokens: usize, d: usize, ffn: usize, layout: QkvLayout) -> Result<Self, GpuWanError> {
        let sd = tokens * d;
        Ok(Self {
            nb: gpu.zeros_bf16(sd)?,
            qkv: gpu.zeros_f32(3 * sd)?,
            q: gpu.zeros_bf16(layout.out_len())?,
            k: gpu.zeros_bf16(layout.out_len())?,
            v: gpu.zeros_bf16(layout.out_len())?,
            attn: gpu.zeros_bf16(sd)?,
            y: gpu.zeros_f32(sd)?,
            hid: gpu.zeros_bf16(tokens * ffn)?,
            ones: gpu.upload(&vec![1.0f32; d])?,
        })
    }
}

pub struct GpuBlock {
    dim: usize,
    heads: usize,
    eps: f64,
    attn1: GpuSelfAttention,
    attn2: GpuCrossAttention,
    norm2: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
    ffn_in: GpuLinear,
    ffn_out: GpuLinear,
}

impl GpuBlock {
    /// Loads block `index`; its `scale_shift_table` (`[6, D]`) is returned to go into the
    /// stack's resident table.
    pub fn load(
        src: &mut dyn WeightSource,
        gpu: &Gpu,
        cfg: &TransformerConfig,
        index: usize,
    ) -> Result<(Self, Vec<f32>), GpuWanError> {
        let d = cfg.inner_dim();
        let p = format!("blocks.{index}");
        let norm2 = if cfg.cross_attn_norm {
            let w = src.host(&format!("{p}.norm2.weight"), &[d], Role::NormWeight)?;
            let b = src.host(&format!("{p}.norm2.bias"), &[d], Role::Bias)?;
            Some((gpu.upload(&w)?, gpu.upload(&b)?))
        } else {
            None
        };
        let table = src.host(&format!("{p}.scale_shift_table"), &[1, 6, d], Role::Table)?;
        let block = Self {
            dim: d,
            heads: cfg.num_attention_heads,
            eps: cfg.eps,
            attn1: GpuSelfAttention::load(src, gpu, &format!("{p}.attn1"), d)?,
            attn2: GpuCrossAttention::load(src, gpu, &format!("{p}.attn2"), d)?,
            norm2,
            ffn_in: GpuLinear::load(src, gpu, &format!("{p}.ffn.net.0.proj"), d, cfg.ffn_dim)?,
            ffn_out: GpuLinear::load(src, gpu, &format!("{p}.ffn.net.2"), cfg.ffn_dim, d)?,
        };
        Ok((block, table))
    }

    pub fn device_bytes(&self) -> usize {
        self.attn1.device_bytes()
            + self.attn2.device_bytes()
            + self.norm2.as_ref().map_or(0, |(w, b)| (w.len() + b.len()) * 4)
            + self.ffn_in.device_bytes()
            + self.ffn_out.device_bytes()
    }

    /// The q/k/v geometry of `rows` tokens.
    pub fn layout(&self, rows: usize, rope_parts: usize) -> QkvLayout {
        QkvLayout {
            rows,
            dim: self.dim,
            head_dim: self.dim / self.heads,
            eps: self.eps,
            rope_parts,
        }
    }

    /// Cross-attention K/V of the embedded text (`text_b`: `[N, D]` in bf16) into `out`, through
    /// `scratch` (`[N, 2D]` f32): one fused K/V GEMM, then RMSNorm on K and bf16 for both.
    pub fn cross_kv(
        &self,
        gpu: &Gpu,
        text_b: &CudaSlice<u16>,
        scratch: &mut CudaSlice<f32>,
        out: &mut GpuCrossKv,
    ) -> Result<(), GpuWanError> {
        let n = out.tokens;
        self.attn2.kv.forward(gpu, text_b, n, scratch)?;
        gpu.backend.qkv_rms_rope_bf16(
            scratch,
            self.layout(n, 0),
            [Some(&self.attn2.norm_k), None],
            None,
            &mut [&mut out.k, &mut out.v],
        )?;
        Ok(())
    }

    /// Runs the block in place on `x: [S, D]`. `e` is this block's modulation
    /// `scale_shift_table + timestep_proj` (`[6, D]` on the device, rows [`SHIFT_MSA`]…);
    /// `cos`/`sin` the per-token RoPE tables `[S, head_dim]`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        gpu: &Gpu,
        x: &mut CudaSlice<f32>,
        e: &CudaView<'_, f32>,
        cos: &CudaSlice<f32>,
        sin: &CudaSlice<f32>,
        text: &GpuCrossKv,
        w: &mut Work,
        laps: &mut Laps<'_>,
    ) -> Result<(), GpuWanError> {
        let (d, b) = (self.dim, &gpu.backend);
        let s = x.len() / d;
        let head_dim = d / self.heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let row = |i: usize| e.slice(modulation_row(0, i, d));
        let shape = |kv_tokens: usize| AttentionShape {
            q_tokens: s,
            kv_tokens,
            heads: self.heads,
            head_dim,
        };

        // 1. Self-attention: x += to_out(attn(RoPE(RMS(q)), RoPE(RMS(k)), v)) · gate.
        let a = &self.attn1;
        let (shift, sc) = (row(SHIFT_MSA), row(SCALE_MSA));
        let modulate = LnAffine::Modulate {
            scale: &sc,
            shift: &shift,
        };
        b.layer_norm_bf16(x, d, self.eps, modulate, &mut w.nb)?;
        laps.lap(gpu, Phase::Pointwise)?;
        a.qkv.forward(gpu, &w.nb, s, &mut w.qkv)?;
        laps.lap(gpu, Phase::Linears)?;
        b.qkv_rms_rope_bf16(
            &w.qkv,
            self.layout(s, 2),
            [Some(&a.norm_q), Some(&a.norm_k)],
            Some((cos, sin)),
            &mut [&mut w.q, &mut w.k, &mut w.v],
        )?;
        laps.lap(gpu, Phase::Pointwise)?;
        b.attention_bf16_io(&w.q, &w.k, &w.v, shape(s), scale, &mut w.attn)?;
        laps.lap(gpu, Phase::SelfAttention)?;
        a.to_out.forward(gpu, &w.attn, s, &mut w.y)?;
        laps.lap(gpu, Phase::Linears)?;
        b.gated_residual_rows(x, &w.y, &row(GATE_MSA))?;

        // 2. Cross-attention: x += to_out(attn(RMS(to_q(norm2(x))), K_text, V_text)), no gate.
        let a = &self.attn2;
        match &self.norm2 {
            Some((nw, nb)) => {
                let (nw, nb) = (nw.as_view(), nb.as_view());
                let affine = LnAffine::Affine { weight: &nw, bias: &nb };
                b.layer_norm_bf16(x, d, self.eps, affine, &mut w.nb)?
            }
            None => b.f32_to_bf16(x, &mut w.nb)?,
        }
        laps.lap(gpu, Phase::Pointwise)?;
        a.to_q.forward(gpu, &w.nb, s, &mut w.y)?;
        laps.lap(gpu, Phase::Linears)?;
        b.qkv_rms_rope_bf16(&w.y, self.layout(s, 0), [Some(&a.norm_q), None], None, &mut [&mut w.q])?;
        laps.lap(gpu, Phase::Pointwise)?;
        b.attention_bf16_io(&w.q, &text.k, &text.v, shape(text.tokens), scale, &mut w.attn)?;
        laps.lap(gpu, Phase::CrossAttention)?;
        a.to_out.forward(gpu, &w.attn, s, &mut w.y)?;
        laps.lap(gpu, Phase::Linears)?;
        b.gated_residual_rows(x, &w.y, &w.ones.as_view())?;

        // 3. FFN: x += ffn_out(GELU_tanh(ffn_in(LN(x)·(1 + c_scale) + c_shift))) · c_gate.
        let (shift, sc) = (row(C_SHIFT), row(C_SCALE));
        let modulate = LnAffine::Modulate {
            scale: &sc,
            shift: &shift,
        };
        b.layer_norm_bf16(x, d, self.eps, modulate, &mut w.nb)?;
        laps.lap(gpu, Phase::Pointwise)?;
        self.ffn_in.forward_gelu_bf16(gpu, &w.nb, s, &mut w.hid)?;
        self.ffn_out.forward(gpu, &w.hid, s, &mut w.y)?;
        laps.lap(gpu, Phase::Linears)?;
        b.gated_residual_rows(x, &w.y, &row(C_GATE))?;
        laps.lap(gpu, Phase::Pointwise)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulation_rows_follow_the_table_layout() {
        // [L, 6, D]: block-major, then the table's row order (shift, scale, gate, c_shift,
        // c_scale, c_gate), as `scale_shift_table [1, 6, D] + timestep_proj [6·D]`.
        let d = 24;
        assert_eq!(modulation_row(0, SHIFT_MSA, d), 0..24);
        assert_eq!(modulation_row(0, C_GATE, d), 120..144);
        assert_eq!(modulation_row(1, SHIFT_MSA, d), 144..168);
        assert_eq!(modulation_row(2, GATE_MSA, d), (2 * 6 + 2) * 24..(2 * 6 + 3) * 24);
        assert_eq!(
            [SHIFT_MSA, SCALE_MSA, GATE_MSA, C_SHIFT, C_SCALE, C_GATE],
            [0, 1, 2, 3, 4, 5]
        );
        // The rows of all blocks tile the buffer exactly once.
        let mut covered = vec![0u8; 3 * 6 * d];
        for l in 0..3 {
            for r in 0..6 {
                for i in modulation_row(l, r, d) {
                    covered[i] += 1;
                }
            }
        }
        assert!(covered.iter().all(|&c| c == 1));
    }
}
