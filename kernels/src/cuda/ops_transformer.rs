//! Launch wrappers for the DiT's ops (`kernels/cuda/transformer_*.cu`, `attention_flash.cu`):
//! LayerNorm (+ AdaLN modulation), RMSNorm, GELU-tanh, SiLU, the gated residual, bias rows,
//! interleaved RoPE, patchify/unpatchify, bf16 conversion and tensor-core flash attention. Argument layouts
//! are those of the CPU references in `cpu::nn_*` and `models::wan`.

use super::backend::{as_u32, pointwise_config, CudaBackend};
use super::error::{check_len, shape_error, CudaError};
use super::sources::{
    ATTENTION_FLASH, ATTENTION_WGMMA, TRANSFORMER_NORM, TRANSFORMER_PATCHIFY, TRANSFORMER_POINTWISE, TRANSFORMER_ROPE,
};
use super::tensor_map;
use crate::cpu::nn_attention::AttentionShape;
use crate::tensor_core::wgmma::{
    wgmma_kernel_name, wgmma_smem_bytes, wgmma_tensor_maps, WgmmaOut, WG_BLOCK_M, WG_THREADS,
};
pub use crate::tensor_core::ATTN_HEAD_DIMS;
use crate::tensor_core::{
    attention_kernel_name, attention_kernel_name_obf16, attention_padded_head_dim, attention_smem_bytes, ATTN_BLOCK_M,
    ATTN_THREADS,
};
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};

/// The attention kernel a call runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// attention_flash.cu: mma.sync + cp.async, sm_80 and newer, with or without the rel bias.
    MmaSync,
    /// attention_wgmma.cu: wgmma + TMA, compute capability 9.0 only, no rel bias.
    Wgmma,
}

/// The environment variable that overrides the choice (A/B runs on a device): `mma` or `wgmma`.
pub const ATTENTION_ENV: &str = "LONGSHOT_ATTENTION";

/// The kernel for a device of compute capability `cc`, with or without the rel bias: wgmma on
/// Hopper (9.0) without bias, else mma.sync; `forced` (the value of [`ATTENTION_ENV`]) picks one,
/// and forcing wgmma where it cannot run is an error rather than a silent fallback.
pub fn choose_attention_kernel(cc: (i32, i32), bias: bool, forced: Option<&str>) -> Result<AttentionKernel, String> {
    let wgmma_runs = cc == (9, 0) && !bias;
    match forced.map(str::trim).filter(|f| !f.is_empty()) {
        None if wgmma_runs => Ok(AttentionKernel::Wgmma),
        None | Some("mma") => Ok(AttentionKernel::MmaSync),
        Some("wgmma") if wgmma_runs => Ok(AttentionKernel::Wgmma),
        Some("wgmma") => Err(format!(
            "{ATTENTION_ENV}=wgmma needs compute capability 9.0 (this device is {}.{}) and no relative bias (bias: {bias})",
            cc.0, cc.1
        )),
        Some(other) => Err(format!("{ATTENTION_ENV}={other:?}: expected \"mma\" or \"wgmma\"")),
    }
}

/// An attention output element: f32, or bf16 bits (`u16`, the `*_obf16` kernels, no bias).
pub(crate) trait AttentionOut: DeviceRepr {
    /// The same output type's wgmma instantiation.
    const WGMMA: WgmmaOut;
    fn kernel(head_dim: usize, bias: bool) -> Option<&'static str>;
}

impl AttentionOut for f32 {
    const WGMMA: WgmmaOut = WgmmaOut::F32;
    fn kernel(head_dim: usize, bias: bool) -> Option<&'static str> {
        attention_kernel_name(head_dim, bias)
    }
}

impl AttentionOut for u16 {
    const WGMMA: WgmmaOut = WgmmaOut::Bf16;
    fn kernel(head_dim: usize, bias: bool) -> Option<&'static str> {
        if bias {
            None
        } else {
            attention_kernel_name_obf16(head_dim)
        }
    }
}

/// Rows (one warp each) per block of the norm kernels (`NORM_WARPS` in transformer_norm.cu).
pub(crate) const NORM_WARPS: u32 = 8;

pub(crate) fn rows_of(op: &'static str, len: usize, dim: usize) -> Result<u32, CudaError> {
    if dim == 0 || !len.is_multiple_of(dim) {
        return Err(shape_error(op, format!("length {len} is not a multiple of dim {dim}")));
    }
    let rows = len / dim;
    if rows > i32::MAX as usize {
        return Err(shape_error(
            op,
            format!("{rows} rows exceed the grid limit of 2^31 − 1"),
        ));
    }
    Ok(rows as u32)
}

/// One warp per row, [`NORM_WARPS`] rows per block, `parts` blocks in y.
pub(crate) fn row_config(rows: u32, parts: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(NORM_WARPS).max(1), parts, 1),
        block_dim: (NORM_WARPS * 32, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaBackend {
    /// LayerNorm over rows of `dim`, with optional `(weight, bias)`, as `cpu::nn_norm::layer_norm`.
    pub fn layer_norm(
        &self,
        x: &CudaSlice<f32>,
        dim: usize,
        eps: f64,
        affine: Option<(&CudaSlice<f32>, &CudaSlice<f32>)>,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "layer_norm";
        check_len(OP, "out", out.len(), x.len())?;
        let rows = rows_of(OP, x.len(), dim)?;
        let d = as_u32(OP, "dim", dim)?;
        let f = self.function(&TRANSFORMER_NORM, "layer_norm_f32")?;
        let null = 0u64;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(out);
        match affine {
            Some((w, bias)) => {
                check_len(OP, "weight", w.len(), dim)?;
                check_len(OP, "bias", bias.len(), dim)?;
                b.arg(w).arg(bias);
            }
            // Null pointers: the kernel then skips the affine step.
            None => {
                b.arg(&null).arg(&null);
            }
        }
        b.arg(&rows).arg(&d).arg(&eps);
        if rows == 0 {
            return Ok(());
        }
        // SAFETY: matches `layer_norm_f32`; x and out hold rows·dim floats, weight and bias dim
        // (or are null, which the kernel tests before reading); one warp per row, rows checked
        // by the kernel against the grid's tail.
        unsafe { b.launch(row_config(rows, 1)) }?;
        Ok(())
    }

    /// `((x − mean)·rstd)·(1 + scale) + shift`, as `cpu::nn_norm::layer_norm_modulate`.
    pub fn layer_norm_modulate(
        &self,
        x: &CudaSlice<f32>,
        dim: usize,
        eps: f64,
        scale: &CudaSlice<f32>,
        shift: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "layer_norm_modulate";
        check_len(OP, "out", out.len(), x.len())?;
        check_len(OP, "scale", scale.len(), dim)?;
        check_len(OP, "shift", shift.len(), dim)?;
        let rows = rows_of(OP, x.len(), dim)?;
        if rows == 0 {
            return Ok(());
        }
        let d = as_u32(OP, "dim", dim)?;
        let f = self.function(&TRANSFORMER_NORM, "layer_norm_modulate_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(out).arg(scale).arg(shift).arg(&rows).arg(&d).arg(&eps);
        // SAFETY: matches `layer_norm_modulate_f32`; lengths checked above.
        unsafe { b.launch(row_config(rows, 1)) }?;
        Ok(())
    }

    /// RMSNorm in place, as `cpu::nn_norm::rms_norm_in_place`.
    pub fn rms_norm(
        &self,
        x: &mut CudaSlice<f32>,
        dim: usize,
        eps: f64,
        weight: &CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "rms_norm";
        check_len(OP, "weight", weight.len(), dim)?;
        let rows = rows_of(OP, x.len(), dim)?;
        if rows == 0 {
            return Ok(());
        }
        let d = as_u32(OP, "dim", dim)?;
        let f = self.function(&TRANSFORMER_NORM, "rms_norm_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(weight).arg(&rows).arg(&d).arg(&eps);
        // SAFETY: matches `rms_norm_f32`; x holds rows·dim floats, weight dim.
        unsafe { b.launch(row_config(rows, 1)) }?;
        Ok(())
    }

    fn unary_in_place(&self, kernel: &str, x: &mut CudaSlice<f32>) -> Result<(), CudaError> {
        let n = x.len() as u64;
        let f = self.function(&TRANSFORMER_POINTWISE, kernel)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(&n);
        // SAFETY: `gelu_tanh_f32` and `silu_f32` both take (float*, u64 n); x holds n floats.
        unsafe { b.launch(pointwise_config(n as usize)) }?;
        Ok(())
    }

    /// tanh-GELU in place, as `cpu::nn_act::gelu_tanh_in_place`.
    pub fn gelu_tanh(&self, x: &mut CudaSlice<f32>) -> Result<(), CudaError> {
        self.unary_in_place("gelu_tanh_f32", x)
    }

    /// SiLU in place, as `cpu::nn_act::silu_in_place`.
    pub fn silu(&self, x: &mut CudaSlice<f32>) -> Result<(), CudaError> {
        self.unary_in_place("silu_f32", x)
    }

    fn row_broadcast(
        &self,
        op: &'static str,
        kernel: &str,
        x: &mut CudaSlice<f32>,
        y: Option<&CudaSlice<f32>>,
        v: &CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let dim = v.len();
        rows_of(op, x.len(), dim)?;
        if let Some(y) = y {
            check_len(op, "y", y.len(), x.len())?;
        }
        let (d, n) = (as_u32(op, "dim", dim)?, x.len() as u64);
        let f = self.function(&TRANSFORMER_POINTWISE, kernel)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x);
        if let Some(y) = y {
            b.arg(y);
        }
        b.arg(v).arg(&d).arg(&n);
        // SAFETY: matches `add_bias_rows_f32` (x, bias, dim, n) when y is None, or
        // `gated_residual_f32` (x, y, gate, dim, n); x (and y) hold n floats, the row vector dim,
        // n a multiple of dim.
        unsafe { b.launch(pointwise_config(n as usize)) }?;
        Ok(())
    }

    /// `x[r, j] += y[r, j]·gate[j]`, the gated residual of a Wan block.
    pub fn gated_residual(
        &self,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        gate: &CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        self.gated_residual_rows(x, y, &gate.as_view())
    }

    /// `x[r, j] += bias[j]`.
    pub fn add_bias_rows(&self, x: &mut CudaSlice<f32>, bias: &CudaSlice<f32>) -> Result<(), CudaError> {
        self.row_broadcast("add_bias_rows", "add_bias_rows_f32", x, None, bias)
    }

    /// f32 → bf16 bits (round to nearest even).
    pub fn f32_to_bf16(&self, x: &CudaSlice<f32>, out: &mut CudaSlice<u16>) -> Result<(), CudaError> {
        check_len("f32_to_bf16", "out", out.len(), x.len())?;
        let n = x.len() as u64;
        let f = self.function(&TRANSFORMER_POINTWISE, "f32_to_bf16")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(out).arg(&n);
        // SAFETY: matches `f32_to_bf16`; both hold n elements.
        unsafe { b.launch(pointwise_config(n as usize)) }?;
        Ok(())
    }

    /// bf16 bits → f32 (exact).
    pub fn bf16_to_f32(&self, x: &CudaSlice<u16>, out: &mut CudaSlice<f32>) -> Result<(), CudaError> {
        check_len("bf16_to_f32", "out", out.len(), x.len())?;
        let n = x.len() as u64;
        let f = self.function(&TRANSFORMER_POINTWISE, "bf16_to_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(out).arg(&n);
        // SAFETY: matches `bf16_to_f32`; both hold n elements.
        unsafe { b.launch(pointwise_config(n as usize)) }?;
        Ok(())
    }

    /// Interleaved RoPE in place, as `cpu::nn_rope::rope_interleaved_in_place`.
    pub fn rope_interleaved(
        &self,
        x: &mut CudaSlice<f32>,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        cos: &CudaSlice<f32>,
        sin: &CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "rope_interleaved";
        if !head_dim.is_multiple_of(2) {
            return Err(shape_error(OP, format!("head_dim {head_dim} is odd; it must be even")));
        }
        check_len(OP, "x", x.len(), tokens * heads * head_dim)?;
        check_len(OP, "cos", cos.len(), tokens * head_dim)?;
        check_len(OP, "sin", sin.len(), tokens * head_dim)?;
        let (t, h, d) = (
            as_u32(OP, "tokens", tokens)?,
            as_u32(OP, "heads", heads)?,
            as_u32(OP, "head_dim", head_dim)?,
        );
        let f = self.function(&TRANSFORMER_ROPE, "rope_interleaved_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(cos).arg(sin).arg(&t).arg(&h).arg(&d);
        // SAFETY: matches `rope_interleaved_f32`; lengths checked above.
        unsafe { b.launch(pointwise_config(tokens * heads * head_dim / 2)) }?;
        Ok(())
    }

    /// Patch gather `[C, T, H, W]` → `[S, C·pt·ph·pw]` (`grid` = tokens per axis `(f, h, w)`).
    pub fn patchify(
        &self,
        x: &CudaSlice<f32>,
        channels: usize,
        grid: [usize; 3],
        patch: [usize; 3],
        patches: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        self.patch_op("patchify", "patchify_f32", x, channels, grid, patch, patches)
    }

    /// `[S, pt·ph·pw·C_out]` → `[C_out, T, H, W]`, as `models::wan::transformer::embed::unpatchify`.
    pub fn unpatchify(
        &self,
        y: &CudaSlice<f32>,
        out_c: usize,
        grid: [usize; 3],
        patch: [usize; 3],
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        self.patch_op("unpatchify", "unpatchify_f32", y, out_c, grid, patch, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn patch_op(
        &self,
        op: &'static str,
        kernel: &str,
        src: &CudaSlice<f32>,
        channels: usize,
        grid: [usize; 3],
        patch: [usize; 3],
        dst: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let len = channels * grid.iter().product::<usize>() * patch.iter().product::<usize>();
        check_len(op, "input", src.len(), len)?;
        check_len(op, "output", dst.len(), len)?;
        let c = as_u32(op, "channels", channels)?;
        let [gf, gh, gw] = grid.map(|v| v as u32);
        let [pt, ph, pw] = patch.map(|v| v as u32);
        let f = self.function(&TRANSFORMER_PATCHIFY, kernel)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(src)
            .arg(dst)
            .arg(&c)
            .arg(&gf)
            .arg(&gh)
            .arg(&gw)
            .arg(&pt)
            .arg(&ph)
            .arg(&pw);
        // SAFETY: matches `patchify_f32` / `unpatchify_f32`; both buffers hold the `len` values
        // the grid and patch address (each extent ≤ len, so the u32 casts are exact).
        unsafe { b.launch(pointwise_config(len)) }?;
        Ok(())
    }

    /// `out = softmax(scale·q·kᵀ [+ rel_bias])·v` per head, as `cpu::nn_attention::attention`
    /// (and `nn_attention_bias::attention_rel_bias` when `rel_bias` is given:
    /// `[heads, q_tokens + kv_tokens − 1]`), from f32 q, k, v: they are rounded to bf16 into
    /// scratch buffers on the stream, each head zero-padded to the kernel size that holds it
    /// ([`attention_padded_head_dim`]; any head_dim up to 128), and the product runs on tensor
    /// cores as in [`Self::attention_bf16`], so parity with the CPU is the bf16 tolerance.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        rel_bias: Option<&CudaSlice<f32>>,
        shape: AttentionShape,
        scale: f32,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "attention";
        let w = shape.width();
        check_len(OP, "q", q.len(), shape.q_tokens * w)?;
        check_len(OP, "k", k.len(), shape.kv_tokens * w)?;
        check_len(OP, "v", v.len(), shape.kv_tokens * w)?;
        let Some(padded) = attention_padded_head_dim(shape.head_dim) else {
            return Err(shape_error(
                OP,
                format!("head_dim {} is not in 1..={}", shape.head_dim, ATTN_HEAD_DIMS[1]),
            ));
        };
        let pack = |x: &CudaSlice<f32>| -> Result<CudaSlice<u16>, CudaError> {
            let n = (x.len() / shape.head_dim.max(1) * padded) as u64;
            let mut packed = self.stream().alloc_zeros::<u16>(n as usize)?;
            if n > 0 {
                let (hd, pd) = (shape.head_dim as u32, padded as u32);
                let f = self.function(&ATTENTION_FLASH, "attention_pack_bf16")?;
                let mut b = self.stream().launch_builder(&f);
                b.arg(x).arg(&mut packed).arg(&n).arg(&hd).arg(&pd);
                // SAFETY: matches `attention_pack_bf16`; x holds n / padded rows of head_dim
                // floats, `packed` the n values written.
                unsafe { b.launch(pointwise_config(n as usize)) }?;
            }
            Ok(packed)
        };
        let (qb, kb, vb) = (pack(q)?, pack(k)?, pack(v)?);
        let kernel = self.attention_kernel(rel_bias.is_some())?;
        self.launch_attention(kernel, &qb, &kb, &vb, rel_bias, shape, padded, scale, out)
    }

    /// `out = softmax(scale·q·kᵀ [+ rel_bias])·v` per head on tensor cores: bf16 q, k, v
    /// (`[tokens, heads·head_dim]` rows), f32 accumulation and output, never the score matrix.
    /// `head_dim` must be one of [`ATTN_HEAD_DIMS`]; `kv_tokens` may differ from `q_tokens`
    /// (cross-attention). The kernel is [`choose_attention_kernel`]'s: attention_wgmma.cu on
    /// Hopper without bias, attention_flash.cu otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_bf16(
        &self,
        q: &CudaSlice<u16>,
        k: &CudaSlice<u16>,
        v: &CudaSlice<u16>,
        rel_bias: Option<&CudaSlice<f32>>,
        shape: AttentionShape,
        scale: f32,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let kernel = self.attention_kernel(rel_bias.is_some())?;
        self.attention_bf16_with(kernel, q, k, v, rel_bias, shape, scale, out)
    }

    /// [`Self::attention_bf16`] on the kernel named (A/B comparisons, the parity tests): wgmma
    /// only on compute capability 9.0 and without bias, or an error.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_bf16_with(
        &self,
        kernel: AttentionKernel,
        q: &CudaSlice<u16>,
        k: &CudaSlice<u16>,
        v: &CudaSlice<u16>,
        rel_bias: Option<&CudaSlice<f32>>,
        shape: AttentionShape,
        scale: f32,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        if !ATTN_HEAD_DIMS.contains(&shape.head_dim) {
            return Err(shape_error(
                "attention",
                format!("head_dim {} is not one of {ATTN_HEAD_DIMS:?}", shape.head_dim),
            ));
        }
        if kernel == AttentionKernel::Wgmma {
            let forced = Some("wgmma");
            choose_attention_kernel(self.info().compute_capability, rel_bias.is_some(), forced)
                .map_err(|m| shape_error("attention", m))?;
        }
        self.launch_attention(kernel, q, k, v, rel_bias, shape, shape.head_dim, scale, out)
    }

    /// The kernel for head size `d` on inputs packed to `[tokens, heads·d]`, writing the first
    /// `shape.head_dim` columns of each head to `out` (`[q_tokens, heads·head_dim]`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch_attention<O: AttentionOut>(
        &self,
        kernel_choice: AttentionKernel,
        q: &CudaSlice<u16>,
        k: &CudaSlice<u16>,
        v: &CudaSlice<u16>,
        rel_bias: Option<&CudaSlice<f32>>,
        shape: AttentionShape,
        d: usize,
        scale: f32,
        out: &mut CudaSlice<O>,
    ) -> Result<(), CudaError> {
        const OP: &str = "attention";
        let packed_width = shape.heads * d;
        check_len(OP, "q", q.len(), shape.q_tokens * packed_width)?;
        check_len(OP, "k", k.len(), shape.kv_tokens * packed_width)?;
        check_len(OP, "v", v.len(), shape.kv_tokens * packed_width)?;
        check_len(OP, "out", out.len(), shape.q_tokens * shape.width())?;
        let kernel = O::kernel(d, rel_bias.is_some())
            .ok_or_else(|| shape_error(OP, format!("no attention kernel for head size {d}")))?;
        if shape.q_tokens == 0 || shape.heads == 0 {
            return Ok(());
        }
        if shape.kv_tokens == 0 {
            return Err(shape_error(OP, "no keys: a softmax over nothing"));
        }
        if let Some(bias) = rel_bias {
            check_len(
                OP,
                "rel_bias",
                bias.len(),
                shape.heads * (shape.q_tokens + shape.kv_tokens - 1),
            )?;
        }
        let qt = as_u32(OP, "q_tokens", shape.q_tokens)?;
        let kt = as_u32(OP, "kv_tokens", shape.kv_tokens)?;
        let h = as_u32(OP, "heads", shape.heads)?;
        if h > 65_535 {
            return Err(shape_error(OP, format!("{h} heads exceed the grid's y limit of 65535")));
        }
        let out_dim = shape.head_dim as u32; // ≤ d ≤ 128
        as_u32(OP, "q_tokens + kv_tokens", shape.q_tokens + shape.kv_tokens)?;
        if kernel_choice == AttentionKernel::Wgmma {
            return self.launch_wgmma(q, k, v, shape, d, scale, out, O::WGMMA);
        }
        let smem = attention_smem_bytes(d) as u32;
        let f = self.function(&ATTENTION_FLASH, kernel)?;
        // Above 48 KiB of dynamic shared memory a kernel must opt in (sm_90 allows 227 KiB).
        f.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )?;
        let null = 0u64;
        let mut b = self.stream().launch_builder(&f);
        b.arg(q).arg(k).arg(v);
        match rel_bias {
            Some(bias) => b.arg(bias),
            None => b.arg(&null),
        };
        b.arg(out).arg(&qt).arg(&kt).arg(&h).arg(&out_dim).arg(&scale);
        let cfg = LaunchConfig {
            grid_dim: (qt.div_ceil(ATTN_BLOCK_M as u32), h, 1),
            block_dim: (ATTN_THREADS as u32, 1, 1),
            shared_mem_bytes: smem,
        };
        // SAFETY: matches `attention_bf16_d{64,128}[_bias|_obf16]` (the name chosen from d, the
        // bias and the output type O, f32 or bf16 bits); q holds q_tokens·heads·d values, k/v kv_tokens·heads·d, out q_tokens·heads·out_dim
        // with out_dim ≤ d, the bias (passed only to the _bias kernels, null otherwise)
        // heads·(q+kv−1); rows of heads·d bf16 are 16-byte aligned (d is a multiple of 8,
        // allocations 256-byte aligned) as cp.async needs; the grid has one block per 64 queries
        // per head, the block the 128 threads and attention_smem_bytes(d) of shared memory that
        // the kernel indexes.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
    /// [`choose_attention_kernel`] for this device and [`ATTENTION_ENV`].
    pub fn attention_kernel(&self, bias: bool) -> Result<AttentionKernel, CudaError> {
        let forced = std::env::var(ATTENTION_ENV).ok();
        choose_attention_kernel(self.info().compute_capability, bias, forced.as_deref())
            .map_err(|m| shape_error("attention", m))
    }

    /// attention_wgmma.cu on inputs packed to head size `d`, writing the first `shape.head_dim`
    /// columns of each head as `T` (f32 or bf16 bits, as `out_kind` says). Lengths, token counts
    /// and the head count are checked by the callers.
    #[allow(clippy::too_many_arguments)]
    fn launch_wgmma<T: DeviceRepr>(
        &self,
        q: &CudaSlice<u16>,
        k: &CudaSlice<u16>,
        v: &CudaSlice<u16>,
        shape: AttentionShape,
        d: usize,
        scale: f32,
        out: &mut CudaSlice<T>,
        out_kind: WgmmaOut,
    ) -> Result<(), CudaError> {
        const OP: &str = "attention";
        let kernel = wgmma_kernel_name(d, out_kind)
            .ok_or_else(|| shape_error(OP, format!("no wgmma attention kernel for head size {d}")))?;
        // TMA box coordinates are signed 32-bit.
        for (what, tokens) in [("q_tokens", shape.q_tokens), ("kv_tokens", shape.kv_tokens)] {
            if tokens > i32::MAX as usize {
                return Err(shape_error(
                    OP,
                    format!("{what} {tokens} exceeds 2^31 − 1 (TMA coordinates)"),
                ));
            }
        }
        let [mq, mk, mv] = wgmma_tensor_maps(shape, d).map_err(|m| shape_error(OP, m))?;
        let stream = self.stream();
        // The guards keep cudarc's event bookkeeping for buffers the kernel reads through the maps.
        let (q_ptr, _q_read) = q.device_ptr(stream);
        let (k_ptr, _k_read) = k.device_ptr(stream);
        let (v_ptr, _v_read) = v.device_ptr(stream);
        let (tq, tk, tv) = (
            tensor_map::encode_bf16(&mq, q_ptr)?,
            tensor_map::encode_bf16(&mk, k_ptr)?,
            tensor_map::encode_bf16(&mv, v_ptr)?,
        );
        let (qt, kt, h) = (shape.q_tokens as u32, shape.kv_tokens as u32, shape.heads as u32);
        let out_dim = shape.head_dim as u32;
        let smem = wgmma_smem_bytes(d) as u32;
        let f = self.function(&ATTENTION_WGMMA, kernel)?;
        f.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )?;
        let mut b = stream.launch_builder(&f);
        b.arg(&tq).arg(&tk).arg(&tv).arg(out);
        b.arg(&qt).arg(&kt).arg(&h).arg(&out_dim).arg(&scale);
        let cfg = LaunchConfig {
            grid_dim: (qt.div_ceil(WG_BLOCK_M as u32), h, 1),
            block_dim: (WG_THREADS as u32, 1, 1),
            shared_mem_bytes: smem,
        };
        // SAFETY: matches `attention_wgmma_d{64,128}_{f32,bf16}out` (the name chosen from d and
        // T's kind): three tensor maps by value, then out, q_tokens, kv_tokens, heads, out_dim,
        // scale. The maps describe q ([q_tokens, heads·d]) and k, v ([kv_tokens, heads·d]) bf16,
        // whose lengths the callers checked, and the kernel reads nothing else of them (TMA clips
        // at the extents); out holds q_tokens·heads·out_dim values of T with out_dim ≤ d; the grid
        // has one block per 128 queries per head, the block WG_THREADS threads and the
        // wgmma_smem_bytes(d) the kernel lays out (alignment slack included). The device is
        // compute capability 9.0 (choose_attention_kernel), where the sm_90a image runs.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hopper_without_bias_runs_wgmma_and_the_override_is_strict() {
        use AttentionKernel::*;
        let hopper = (9, 0);
        assert_eq!(choose_attention_kernel(hopper, false, None), Ok(Wgmma));
        assert_eq!(choose_attention_kernel(hopper, false, Some("")), Ok(Wgmma));
        assert_eq!(choose_attention_kernel(hopper, true, None), Ok(MmaSync));
        for other in [(8, 0), (8, 9), (10, 0), (12, 0)] {
            assert_eq!(choose_attention_kernel(other, false, None), Ok(MmaSync), "{other:?}");
            assert!(choose_attention_kernel(other, false, Some("wgmma")).is_err());
        }
        assert_eq!(choose_attention_kernel(hopper, false, Some("mma")), Ok(MmaSync));
        assert_eq!(choose_attention_kernel(hopper, false, Some("wgmma")), Ok(Wgmma));
        assert!(choose_attention_kernel(hopper, true, Some("wgmma")).is_err());
        let err = choose_attention_kernel(hopper, false, Some("tma")).unwrap_err();
        assert!(err.contains(ATTENTION_ENV) && err.contains("tma"), "{err}");
    }
}
