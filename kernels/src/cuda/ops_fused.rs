//! Launch wrappers of the DiT's fused bf16 path (transformer_norm.cu, transformer_pointwise.cu,
//! attention_flash.cu's `*_obf16` kernels), each mirroring a CPU reference of `cpu::nn_fused`:
//! LayerNorm (+ AdaLN modulation or affine) → bf16; RMSNorm + RoPE of a fused QKV projection →
//! bf16 attention inputs; attention from and to bf16; the gated residual and the modulation add
//! with 16-byte accesses.

use super::backend::{as_u32, pointwise_config, CudaBackend};
use super::error::{check_len, shape_error, CudaError};
use super::ops_transformer::{row_config, rows_of};
use super::sources::{TRANSFORMER_NORM, TRANSFORMER_POINTWISE};
use crate::cpu::nn_attention::AttentionShape;
use crate::tensor_core::attention_padded_head_dim;
use cudarc::driver::{CudaSlice, CudaView, DevicePtr, PushKernelArg};

/// What follows the normalisation in [`CudaBackend::layer_norm_bf16`] (`[dim]` vectors shared by
/// every row).
#[derive(Clone, Copy)]
pub enum LnAffine<'a> {
    /// `(x − mean)·rstd`.
    None,
    /// `·(1 + scale) + shift`, AdaLN modulation (`1 + scale` rounded first).
    Modulate {
        scale: &'a CudaView<'a, f32>,
        shift: &'a CudaView<'a, f32>,
    },
    /// `·weight + bias`.
    Affine {
        weight: &'a CudaView<'a, f32>,
        bias: &'a CudaView<'a, f32>,
    },
}

/// The geometry of [`CudaBackend::qkv_rms_rope_bf16`].
#[derive(Clone, Copy, Debug)]
pub struct QkvLayout {
    /// Tokens (rows of the projection).
    pub rows: usize,
    /// Width of one part (q, k or v): heads·head_dim.
    pub dim: usize,
    pub head_dim: usize,
    pub eps: f64,
    /// How many leading parts RoPE rotates (2 for self-attention's q, k; 0 for none).
    pub rope_parts: usize,
}

impl QkvLayout {
    /// The attention kernel's head size the outputs are padded to.
    pub fn padded_head_dim(&self) -> Option<usize> {
        attention_padded_head_dim(self.head_dim)
    }

    /// Elements of one output: `rows·heads·padded`.
    pub fn out_len(&self) -> usize {
        let heads = self.dim.checked_div(self.head_dim).unwrap_or(0);
        self.rows * heads * self.padded_head_dim().unwrap_or(0)
    }
}

/// Fails unless the view's device address is 16-byte aligned (the float4 kernels' loads).
fn check_aligned16(be: &CudaBackend, op: &'static str, what: &str, v: &CudaView<'_, f32>) -> Result<(), CudaError> {
    let (ptr, _g) = v.device_ptr(be.stream());
    if ptr % 16 == 0 {
        Ok(())
    } else {
        Err(shape_error(op, format!("{what} is not 16-byte aligned")))
    }
}

impl CudaBackend {
    /// LayerNorm over rows of `dim` then `affine`, rounded to bf16 (`out`: `[rows, dim]` bits), as
    /// `cpu::nn_fused::layer_norm_bf16`. `dim` must be a multiple of 4.
    pub fn layer_norm_bf16(
        &self,
        x: &CudaSlice<f32>,
        dim: usize,
        eps: f64,
        affine: LnAffine<'_>,
        out: &mut CudaSlice<u16>,
    ) -> Result<(), CudaError> {
        const OP: &str = "layer_norm_bf16";
        check_len(OP, "out", out.len(), x.len())?;
        let rows = rows_of(OP, x.len(), dim)?;
        if !dim.is_multiple_of(4) {
            return Err(shape_error(OP, format!("dim {dim} is not a multiple of 4")));
        }
        let d = as_u32(OP, "dim", dim)?;
        let f = self.function(&TRANSFORMER_NORM, "layer_norm_bf16")?;
        let null = 0u64;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(out);
        let one_plus: u32 = match affine {
            LnAffine::None => {
                b.arg(&null).arg(&null);
                0
            }
            LnAffine::Modulate { scale: m, shift: a } | LnAffine::Affine { weight: m, bias: a } => {
                check_len(OP, "scale/weight", m.len(), dim)?;
                check_len(OP, "shift/bias", a.len(), dim)?;
                check_aligned16(self, OP, "scale/weight", m)?;
                check_aligned16(self, OP, "shift/bias", a)?;
                b.arg(m).arg(a);
                u32::from(matches!(affine, LnAffine::Modulate { .. }))
            }
        };
        b.arg(&one_plus).arg(&rows).arg(&d).arg(&eps);
        if rows == 0 {
            return Ok(());
        }
        // SAFETY: matches `layer_norm_bf16`; x and out hold rows·dim values, dim % 4 == 0 so every
        // row starts 16-byte aligned (allocations are 256-byte aligned); mul/add hold dim floats
        // at 16-byte aligned addresses, or are null, which the kernel tests before reading.
        unsafe { b.launch(row_config(rows, 1)) }?;
        Ok(())
    }

    /// RMSNorm (over each part's whole row, all heads) + interleaved RoPE + bf16 of a fused
    /// projection `x: [rows, parts·dim]` (parts = `outs.len()`, 1 to 3), as
    /// `cpu::nn_fused::qkv_rms_rope_bf16`: part p is normalised with `norms[p]` when given (parts
    /// 0 and 1 only), rotated when p < `rope_parts` (`rope`: cos, sin `[rows, head_dim]`) and
    /// written to `outs[p]`, `[rows·heads, padded]` with `padded` = [`QkvLayout::padded_head_dim`]
    /// (the attention kernel's head size; the padding columns are left as they are, zero when the
    /// buffer was allocated zeroed). `dim` and `head_dim` must be multiples of 4.
    pub fn qkv_rms_rope_bf16(
        &self,
        x: &CudaSlice<f32>,
        layout: QkvLayout,
        norms: [Option<&CudaSlice<f32>>; 2],
        rope: Option<(&CudaSlice<f32>, &CudaSlice<f32>)>,
        outs: &mut [&mut CudaSlice<u16>],
    ) -> Result<(), CudaError> {
        const OP: &str = "qkv_rms_rope_bf16";
        let QkvLayout {
            rows, dim, head_dim, ..
        } = layout;
        let parts = outs.len();
        if !(1..=3).contains(&parts) {
            return Err(shape_error(OP, format!("{parts} outputs: 1 to 3 parts")));
        }
        if head_dim == 0 || !head_dim.is_multiple_of(4) || !dim.is_multiple_of(head_dim) {
            return Err(shape_error(
                OP,
                format!("head_dim {head_dim} must be a non-zero multiple of 4 dividing dim {dim}"),
            ));
        }
        let Some(padded) = layout.padded_head_dim() else {
            return Err(shape_error(
                OP,
                format!("no attention kernel holds head_dim {head_dim}"),
            ));
        };
        check_len(OP, "x", x.len(), rows * parts * dim)?;
        for o in outs.iter() {
            check_len(OP, "output", o.len(), layout.out_len())?;
        }
        for w in norms.iter().flatten() {
            check_len(OP, "norm weight", w.len(), dim)?;
        }
        if layout.rope_parts > 0 {
            let Some((c, s)) = rope else {
                return Err(shape_error(OP, "rope_parts > 0 without RoPE tables"));
            };
            check_len(OP, "cos", c.len(), rows * head_dim)?;
            check_len(OP, "sin", s.len(), rows * head_dim)?;
        }
        let r = as_u32(OP, "rows", rows)?;
        rows_of(OP, rows * dim, dim.max(1))?;
        let (p, d, hd, pd) = (parts as u32, as_u32(OP, "dim", dim)?, head_dim as u32, padded as u32);
        let rope_parts = layout.rope_parts.min(parts) as u32;
        let f = self.function(&TRANSFORMER_NORM, "qkv_rms_rope_bf16")?;
        let null = 0u64;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(&p);
        for w in &norms {
            match w {
                Some(w) => b.arg(*w),
                None => b.arg(&null),
            };
        }
        match rope.filter(|_| rope_parts > 0) {
            Some((c, s)) => b.arg(c).arg(s),
            None => b.arg(&null).arg(&null),
        };
        b.arg(&rope_parts);
        let mut outs = outs.iter_mut();
        for _ in 0..3 {
            match outs.next() {
                Some(o) => b.arg(&mut **o),
                None => b.arg(&null),
            };
        }
        b.arg(&r).arg(&d).arg(&hd).arg(&pd).arg(&layout.eps);
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        // SAFETY: matches `qkv_rms_rope_bf16`; x holds rows·parts·dim floats (rows 16-byte
        // aligned: dim % 4 == 0), the norm weights dim floats or null, cos/sin rows·head_dim
        // floats (non-null exactly when rope_parts > 0), and each of the `parts` outputs
        // rows·heads·padded bf16 (the others null and never selected: blockIdx.y < parts);
        // head_dim and padded are multiples of 4, so each 8-byte store is aligned and in one head.
        unsafe { b.launch(row_config(r, p)) }?;
        Ok(())
    }

    /// `out = softmax(scale·q·kᵀ)·v` per head from bf16 inputs already in the kernel's padded
    /// head layout (`[tokens, heads·padded]`, [`QkvLayout::padded_head_dim`], as
    /// [`qkv_rms_rope_bf16`](Self::qkv_rms_rope_bf16) writes them) to bf16 `out`
    /// `[q_tokens, heads·head_dim]`, on tensor cores (the kernel `attention_kernel` picks: wgmma on
    /// Hopper): no packing step and no f32 round trip.
    pub fn attention_bf16_io(
        &self,
        q: &CudaSlice<u16>,
        k: &CudaSlice<u16>,
        v: &CudaSlice<u16>,
        shape: AttentionShape,
        scale: f32,
        out: &mut CudaSlice<u16>,
    ) -> Result<(), CudaError> {
        let Some(padded) = attention_padded_head_dim(shape.head_dim) else {
            return Err(shape_error(
                "attention",
                format!("head_dim {} has no attention kernel", shape.head_dim),
            ));
        };
        let kernel = self.attention_kernel(false)?;
        self.launch_attention(kernel, q, k, v, None, shape, padded, scale, out)
    }

    /// `x[r, j] += y[r, j]·gate[j]` (`gate`: `[dim]`, a view so it can be one row of a block's
    /// modulation), with 16-byte accesses when dim is a multiple of 4 and everything is aligned,
    /// else element by element; the same f32 arithmetic either way.
    pub fn gated_residual_rows(
        &self,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        gate: &CudaView<'_, f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "gated_residual";
        let dim = gate.len();
        rows_of(OP, x.len(), dim)?;
        check_len(OP, "y", y.len(), x.len())?;
        let n = x.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let (gate_ptr, _g) = gate.device_ptr(self.stream());
        let vector = dim.is_multiple_of(4) && gate_ptr % 16 == 0;
        let (kernel, width, count) = if vector {
            ("gated_residual_f32x4", as_u32(OP, "dim", dim / 4)?, n / 4)
        } else {
            ("gated_residual_f32", as_u32(OP, "dim", dim)?, n)
        };
        let f = self.function(&TRANSFORMER_POINTWISE, kernel)?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(y).arg(gate).arg(&width).arg(&count);
        // SAFETY: matches `gated_residual_f32x4` (float4 x, y, gate, dim/4, n/4) or
        // `gated_residual_f32` (x, y, gate, dim, n); x and y hold n floats, gate dim, n a multiple
        // of dim; the float4 form only when dim % 4 == 0 (then n too, rows start 16-byte aligned
        // in 256-byte aligned allocations) and the gate's address is 16-byte aligned.
        unsafe { b.launch(pointwise_config(count as usize)) }?;
        Ok(())
    }

    /// `out[r, j] = table[r, j] + v[j]` (`v`: `[len]`, `table`/`out`: `[rows, len]`), as
    /// `cpu::nn_fused::add_row_vector`: every block's modulation from the resident
    /// `scale_shift_table`s and the step's `timestep_proj` in one launch. `len` must be a
    /// multiple of 4.
    pub fn add_row_vector(
        &self,
        table: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "add_row_vector";
        check_len(OP, "out", out.len(), table.len())?;
        rows_of(OP, table.len(), v.len())?;
        if !v.len().is_multiple_of(4) {
            return Err(shape_error(
                OP,
                format!("row length {} is not a multiple of 4", v.len()),
            ));
        }
        let (w4, n4) = (as_u32(OP, "row length", v.len() / 4)?, (table.len() / 4) as u64);
        if n4 == 0 {
            return Ok(());
        }
        let f = self.function(&TRANSFORMER_POINTWISE, "add_row_vector_f32x4")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(table).arg(v).arg(out).arg(&w4).arg(&n4);
        // SAFETY: matches `add_row_vector_f32x4`; whole allocations (256-byte aligned) of
        // 4·n4 floats (table, out) and 4·w4 (v).
        unsafe { b.launch(pointwise_config(n4 as usize)) }?;
        Ok(())
    }
}
