//! Launch wrappers for the DiT's ops (`kernels/cuda/transformer_*.cu`, `attention_flash.cu`):
//! LayerNorm (+ AdaLN modulation), RMSNorm, GELU-tanh, SiLU, the gated residual, bias rows,
//! interleaved RoPE, patchify/unpatchify, bf16 conversion and tensor-core flash attention. Argument layouts
//! are those of the CPU references in `cpu::nn_*` and `models::wan`.

use super::backend::{as_u32, pointwise_config, CudaBackend};
use super::error::{check_len, shape_error, CudaError};
use super::sources::{
    ATTENTION_FLASH, TRANSFORMER_NORM, TRANSFORMER_PATCHIFY, TRANSFORMER_POINTWISE, TRANSFORMER_ROPE,
};
use crate::cpu::nn_attention::AttentionShape;
pub use crate::tensor_core::ATTN_HEAD_DIMS;
use crate::tensor_core::{
    attention_kernel_name, attention_kernel_name_obf16, attention_padded_head_dim, attention_smem_bytes, ATTN_BLOCK_M,
    ATTN_THREADS,
};
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

/// An attention output element: f32, or bf16 bits (`u16`, the `*_obf16` kernels, no bias).
pub(crate) trait AttentionOut: DeviceRepr {
    fn kernel(head_dim: usize, bias: bool) -> Option<&'static str>;
}

impl AttentionOut for f32 {
    fn kernel(head_dim: usize, bias: bool) -> Option<&'static str> {
        attention_kernel_name(head_dim, bias)
    }
}

impl AttentionOut for u16 {
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
        self.launch_attention(&qb, &kb, &vb, rel_bias, shape, padded, scale, out)
    }

    /// `out = softmax(scale·q·kᵀ [+ rel_bias])·v` per head on tensor cores (attention_flash.cu):
    /// bf16 q, k, v (`[tokens, heads·head_dim]` rows), f32 accumulation and output, never the
    /// score matrix. `head_dim` must be one of [`ATTN_HEAD_DIMS`]; `kv_tokens` may differ from
    /// `q_tokens` (cross-attention).
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
        if !ATTN_HEAD_DIMS.contains(&shape.head_dim) {
            return Err(shape_error(
                "attention",
                format!("head_dim {} is not one of {ATTN_HEAD_DIMS:?}", shape.head_dim),
            ));
        }
        self.launch_attention(q, k, v, rel_bias, shape, shape.head_dim, scale, out)
    }

    /// The kernel for head size `d` on inputs packed to `[tokens, heads·d]`, writing the first
    /// `shape.head_dim` columns of each head to `out` (`[q_tokens, heads·head_dim]`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch_attention<O: AttentionOut>(
        &self,
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
}
