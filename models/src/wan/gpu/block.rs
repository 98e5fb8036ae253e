//! One `WanTransformerBlock` on the GPU, the op sequence of `wan::transformer::block::WanBlock::forward`:
//! AdaLN-modulated self-attention (q/k RMSNorm across heads, interleaved 3D RoPE) with a gate,
//! ungated cross-attention behind the affine `norm2`, and a gated tanh-GELU FFN.

use super::error::GpuWanError;
use super::linear::{Gpu, GpuLinear};
use super::source::{Role, WeightSource};
use super::timing::{Laps, Phase};
use crate::wan::transformer::config::TransformerConfig;
use cudarc::driver::CudaSlice;
use longshot_kernels::cpu::nn_attention::AttentionShape;

/// `WanAttention` on the device: projections and the q/k RMSNorm weights (width D).
pub struct GpuAttention {
    pub to_q: GpuLinear,
    pub to_k: GpuLinear,
    pub to_v: GpuLinear,
    pub to_out: GpuLinear,
    pub norm_q: CudaSlice<f32>,
    pub norm_k: CudaSlice<f32>,
}

impl GpuAttention {
    fn load(src: &mut dyn WeightSource, gpu: &Gpu, prefix: &str, d: usize) -> Result<Self, GpuWanError> {
        let norm = |src: &mut dyn WeightSource, n: &str| -> Result<CudaSlice<f32>, GpuWanError> {
            gpu.upload(&src.host(&format!("{prefix}.{n}.weight"), &[d], Role::NormWeight)?)
        };
        Ok(Self {
            to_q: GpuLinear::load(src, gpu, &format!("{prefix}.to_q"), d, d)?,
            to_k: GpuLinear::load(src, gpu, &format!("{prefix}.to_k"), d, d)?,
            to_v: GpuLinear::load(src, gpu, &format!("{prefix}.to_v"), d, d)?,
            to_out: GpuLinear::load(src, gpu, &format!("{prefix}.to_out.0"), d, d)?,
            norm_q: norm(src, "norm_q")?,
            norm_k: norm(src, "norm_k")?,
        })
    }

    fn device_bytes(&self) -> usize {
        [&self.to_q, &self.to_k, &self.to_v, &self.to_out]
            .iter()
            .map(|l| l.device_bytes())
            .sum::<usize>()
            + (self.norm_q.len() + self.norm_k.len()) * 4
    }
}

/// One block's cross-attention K (`RMSNorm(to_k(text))`) and V (`to_v(text)`), each `[N, D]`.
pub struct GpuCrossKv {
    pub k: CudaSlice<f32>,
    pub v: CudaSlice<f32>,
}

/// Scratch buffers of one forward, sized for `S` tokens, shared by every block.
pub struct Work {
    /// Normalised input / attention output `[S, D]`.
    pub n: CudaSlice<f32>,
    /// `n` rounded to bf16 for the GEMMs.
    pub nb: CudaSlice<u16>,
    pub q: CudaSlice<f32>,
    pub k: CudaSlice<f32>,
    pub v: CudaSlice<f32>,
    /// FFN hidden `[S, ffn_dim]` and its bf16 copy.
    pub hid: CudaSlice<f32>,
    pub hidb: CudaSlice<u16>,
    /// All ones `[D]`: the "gate" of the ungated cross-attention residual (`x + y·1 = x + y`).
    pub ones: CudaSlice<f32>,
}

impl Work {
    pub fn new(gpu: &Gpu, tokens: usize, d: usize, ffn: usize) -> Result<Self, GpuWanError> {
        let sd = tokens * d;
        Ok(Self {
            n: gpu.zeros_f32(sd)?,
            nb: gpu.zeros_bf16(sd)?,
            q: gpu.zeros_f32(sd)?,
            k: gpu.zeros_f32(sd)?,
            v: gpu.zeros_f32(sd)?,
            hid: gpu.zeros_f32(tokens * ffn)?,
            hidb: gpu.zeros_bf16(tokens * ffn)?,
            ones: gpu.upload(&vec![1.0f32; d])?,
        })
    }
}

pub struct GpuBlock {
    dim: usize,
    heads: usize,
    eps: f64,
    /// `[6, D]` on the host: shift, scale, gate (self-attention), shift, scale, gate (FFN).
    pub scale_shift_table: Vec<f32>,
    attn1: GpuAttention,
    attn2: GpuAttention,
    norm2: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
    ffn_in: GpuLinear,
    ffn_out: GpuLinear,
}

impl GpuBlock {
    pub fn load(
        src: &mut dyn WeightSource,
        gpu: &Gpu,
        cfg: &TransformerConfig,
        index: usize,
    ) -> Result<Self, GpuWanError> {
        let d = cfg.inner_dim();
        let p = format!("blocks.{index}");
        let norm2 = if cfg.cross_attn_norm {
            let w = src.host(&format!("{p}.norm2.weight"), &[d], Role::NormWeight)?;
            let b = src.host(&format!("{p}.norm2.bias"), &[d], Role::Bias)?;
            Some((gpu.upload(&w)?, gpu.upload(&b)?))
        } else {
            None
        };
        Ok(Self {
            dim: d,
            heads: cfg.num_attention_heads,
            eps: cfg.eps,
            scale_shift_table: src.host(&format!("{p}.scale_shift_table"), &[1, 6, d], Role::Table)?,
            attn1: GpuAttention::load(src, gpu, &format!("{p}.attn1"), d)?,
            attn2: GpuAttention::load(src, gpu, &format!("{p}.attn2"), d)?,
            norm2,
            ffn_in: GpuLinear::load(src, gpu, &format!("{p}.ffn.net.0.proj"), d, cfg.ffn_dim)?,
            ffn_out: GpuLinear::load(src, gpu, &format!("{p}.ffn.net.2"), cfg.ffn_dim, d)?,
        })
    }

    pub fn device_bytes(&self) -> usize {
        self.attn1.device_bytes()
            + self.attn2.device_bytes()
            + self.norm2.as_ref().map_or(0, |(w, b)| (w.len() + b.len()) * 4)
            + self.ffn_in.device_bytes()
            + self.ffn_out.device_bytes()
    }

    /// Cross-attention K/V of the embedded text (`text_b`: `[N, D]` in bf16).
    pub fn cross_kv(&self, gpu: &Gpu, text_b: &CudaSlice<u16>, tokens: usize) -> Result<GpuCrossKv, GpuWanError> {
        let d = self.dim;
        let mut k = gpu.zeros_f32(tokens * d)?;
        let mut v = gpu.zeros_f32(tokens * d)?;
        self.attn2.to_k.forward(gpu, text_b, tokens, &mut k)?;
        gpu.backend.rms_norm(&mut k, d, self.eps, &self.attn2.norm_k)?;
        self.attn2.to_v.forward(gpu, text_b, tokens, &mut v)?;
        Ok(GpuCrossKv { k, v })
    }

    /// Runs the block in place on `x: [S, D]`. `e` is this block's modulation
    /// `scale_shift_table + timestep_proj` (`[6, D]`, computed on the host in f32 like the CPU);
    /// `cos`/`sin` the per-token RoPE tables `[S, head_dim]`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        gpu: &Gpu,
        x: &mut CudaSlice<f32>,
        e: &[f32],
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
        let row = |i: usize| gpu.upload(&e[i * d..(i + 1) * d]);
        let (shift_msa, scale_msa, gate_msa) = (row(0)?, row(1)?, row(2)?);
        let (c_shift, c_scale, c_gate) = (row(3)?, row(4)?, row(5)?);

        // 1. Self-attention: x += to_out(attn(RoPE(RMS(q)), RoPE(RMS(k)), v)) · gate.
        let a = &self.attn1;
        b.layer_norm_modulate(x, d, self.eps, &scale_msa, &shift_msa, &mut w.n)?;
        laps.lap(gpu, Phase::Pointwise)?;
        b.f32_to_bf16(&w.n, &mut w.nb)?;
        a.to_q.forward(gpu, &w.nb, s, &mut w.q)?;
        a.to_k.forward(gpu, &w.nb, s, &mut w.k)?;
        a.to_v.forward(gpu, &w.nb, s, &mut w.v)?;
        laps.lap(gpu, Phase::Linears)?;
        b.rms_norm(&mut w.q, d, self.eps, &a.norm_q)?;
        b.rms_norm(&mut w.k, d, self.eps, &a.norm_k)?;
        b.rope_interleaved(&mut w.q, s, self.heads, head_dim, cos, sin)?;
        b.rope_interleaved(&mut w.k, s, self.heads, head_dim, cos, sin)?;
        laps.lap(gpu, Phase::Pointwise)?;
        let shape = AttentionShape {
            q_tokens: s,
            kv_tokens: s,
            heads: self.heads,
            head_dim,
        };
        b.attention(&w.q, &w.k, &w.v, None, shape, scale, &mut w.n)?;
        laps.lap(gpu, Phase::SelfAttention)?;
        b.f32_to_bf16(&w.n, &mut w.nb)?;
        a.to_out.forward(gpu, &w.nb, s, &mut w.q)?;
        laps.lap(gpu, Phase::Linears)?;
        b.gated_residual(x, &w.q, &gate_msa)?;

        // 2. Cross-attention: x += to_out(attn(RMS(to_q(norm2(x))), K_text, V_text)), no gate.
        let a = &self.attn2;
        match &self.norm2 {
            Some((nw, nb)) => b.layer_norm(x, d, self.eps, Some((nw, nb)), &mut w.n)?,
            None => b.stream().memcpy_dtod(&*x, &mut w.n)?,
        }
        laps.lap(gpu, Phase::Pointwise)?;
        b.f32_to_bf16(&w.n, &mut w.nb)?;
        a.to_q.forward(gpu, &w.nb, s, &mut w.q)?;
        laps.lap(gpu, Phase::Linears)?;
        b.rms_norm(&mut w.q, d, self.eps, &a.norm_q)?;
        laps.lap(gpu, Phase::Pointwise)?;
        let shape = AttentionShape {
            q_tokens: s,
            kv_tokens: text.k.len() / d,
            heads: self.heads,
            head_dim,
        };
        b.attention(&w.q, &text.k, &text.v, None, shape, scale, &mut w.n)?;
        laps.lap(gpu, Phase::CrossAttention)?;
        b.f32_to_bf16(&w.n, &mut w.nb)?;
        a.to_out.forward(gpu, &w.nb, s, &mut w.k)?;
        laps.lap(gpu, Phase::Linears)?;
        b.gated_residual(x, &w.k, &w.ones)?;

        // 3. FFN: x += ffn_out(GELU_tanh(ffn_in(LN(x)·(1 + c_scale) + c_shift))) · c_gate.
        b.layer_norm_modulate(x, d, self.eps, &c_scale, &c_shift, &mut w.n)?;
        laps.lap(gpu, Phase::Pointwise)?;
        b.f32_to_bf16(&w.n, &mut w.nb)?;
        self.ffn_in.forward(gpu, &w.nb, s, &mut w.hid)?;
        laps.lap(gpu, Phase::Linears)?;
        b.gelu_tanh(&mut w.hid)?;
        laps.lap(gpu, Phase::Pointwise)?;
        b.f32_to_bf16(&w.hid, &mut w.hidb)?;
        self.ffn_out.forward(gpu, &w.hidb, s, &mut w.q)?;
        laps.lap(gpu, Phase::Linears)?;
        b.gated_residual(x, &w.q, &c_gate)?;
        laps.lap(gpu, Phase::Pointwise)?;
        Ok(())
    }
}
