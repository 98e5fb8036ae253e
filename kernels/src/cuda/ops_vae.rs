//! Launch wrappers for the VAE decoder's ops (`kernels/cuda/vae_ops.cu`) on frame-major video
//! `[T, C, H, W]`: causal 3-D convolution (PyTorch weight layout, as `cpu::nn_conv::CausalConv3d`),
//! channel RMS norm and nearest ×2 upsample (`cpu::nn_vae`), planar → interleaved RGB
//! (`models::wan::vae::DecodedFrames::rgb_frame`), the residual add, the output clamp and the mid
//! block's per-frame attention (`models::wan::vae::blocks::AttentionBlock`). SiLU is
//! `CudaBackend::silu`.
//!
//! The tensor-core convolution (`vae_conv_tc.cu`) takes its operands packed: activations by
//! [`CudaBackend::pack_channels_last_bf16`] (channels-last bf16, optionally normalised and SiLU'd
//! on the way), weights by [`crate::tensor_core::conv::pack_conv_weight`] on the host; its
//! geometry and index maps are [`crate::tensor_core::conv`], checked on the CPU.

use super::backend::{as_u32, pointwise_config, CudaBackend};
use super::error::{check_len, shape_error, CudaError};
use super::sources::{VAE_CONV_TC, VAE_OPS};
use crate::tensor_core::conv::{padded_channels, ConvGeometry, CONV_THREADS, PACK_PIXELS, PACK_THREADS};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DevicePtr, LaunchConfig, PushKernelArg};

/// The grid's y and z limit.
const GRID_YZ_MAX: usize = 65_535;

/// Geometry of one causal convolution: `x [frames, cin, h, w]`, weight `[cout, cin, kt, ks, ks]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub frames: usize,
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
    pub kt: usize,
    pub ks: usize,
}

impl CudaBackend {
    /// Causal-in-time, "same"-in-space 3-D convolution (kt = 1 is the per-frame 2-D conv).
    pub fn causal_conv3d(
        &self,
        x: &CudaSlice<f32>,
        weight: &CudaSlice<f32>,
        bias: &CudaSlice<f32>,
        s: ConvShape,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "causal_conv3d";
        if s.kt == 0 || s.ks.is_multiple_of(2) {
            return Err(shape_error(
                OP,
                format!("kernel ({}, {}) must have kt ≥ 1 and an odd ks", s.kt, s.ks),
            ));
        }
        check_len(OP, "x", x.len(), s.frames * s.cin * s.h * s.w)?;
        check_len(OP, "weight", weight.len(), s.cout * s.cin * s.kt * s.ks * s.ks)?;
        check_len(OP, "bias", bias.len(), s.cout)?;
        let n = s.frames * s.cout * s.h * s.w;
        check_len(OP, "out", out.len(), n)?;
        let dims = [s.frames, s.cin, s.cout, s.h, s.w, s.kt, s.ks];
        let names = ["frames", "cin", "cout", "h", "w", "kt", "ks"];
        let mut a = [0u32; 7];
        for ((slot, &v), name) in a.iter_mut().zip(&dims).zip(names) {
            *slot = as_u32(OP, name, v)?;
        }
        if n == 0 {
            return Ok(());
        }
        let f = self.function(&VAE_OPS, "causal_conv3d_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(weight).arg(bias).arg(out);
        for v in &a {
            b.arg(v);
        }
        // SAFETY: matches `causal_conv3d_f32` (x, weight, bias, out, frames, cin, cout, h, w, kt,
        // ks); every buffer length is checked against the shape the kernel indexes.
        unsafe { b.launch(pointwise_config(n)) }?;
        Ok(())
    }

    /// f32 `x [frames, channels, pixels]` → bf16 channels-last `out [frames, pixels, cpad]`
    /// (`cpad` = channels rounded up to 8, the extra channels zero), the tensor-core conv's input.
    /// With `norm` (γ, `channels` values) each pixel is first channel-RMS-normalised, then with
    /// `silu` SiLU'd; as `tensor_core::conv::pack_channels_last` (the norm bit-identical to
    /// `channel_rms_norm`, SiLU within `expf`'s 2 ulp, then rounded to bf16).
    pub fn pack_channels_last_bf16(
        &self,
        x: &CudaView<'_, f32>,
        channels: usize,
        pixels: usize,
        norm: Option<&CudaSlice<f32>>,
        silu: bool,
        out: &mut CudaViewMut<'_, u16>,
    ) -> Result<(), CudaError> {
        const OP: &str = "pack_channels_last_bf16";
        let frame = channels * pixels;
        if frame == 0 {
            return Err(shape_error(
                OP,
                format!("{channels} channels × {pixels} pixels is empty"),
            ));
        }
        if !x.len().is_multiple_of(frame) {
            return Err(shape_error(
                OP,
                format!("length {} is not whole frames of {frame}", x.len()),
            ));
        }
        let frames = x.len() / frame;
        let cpad = padded_channels(channels);
        check_len(OP, "out", out.len(), frames * pixels * cpad)?;
        if let Some(g) = norm {
            check_len(OP, "gamma", g.len(), channels)?;
        }
        if frames > GRID_YZ_MAX {
            return Err(shape_error(
                OP,
                format!("{frames} frames exceed the grid's {GRID_YZ_MAX}"),
            ));
        }
        check_aligned(OP, "out", out.device_ptr(self.stream()).0)?;
        let (c, cp, p) = (
            as_u32(OP, "channels", channels)?,
            as_u32(OP, "padded channels", cpad)?,
            as_u32(OP, "pixels", pixels)?,
        );
        if frames == 0 {
            return Ok(());
        }
        let silu = silu as u32;
        let null = 0u64;
        let f = self.function(&VAE_CONV_TC, "vae_pack_cl_bf16")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x);
        match norm {
            Some(g) => b.arg(g),
            None => b.arg(&null),
        };
        b.arg(out).arg(&c).arg(&cp).arg(&p).arg(&silu);
        let cfg = LaunchConfig {
            grid_dim: (p.div_ceil(PACK_PIXELS as u32), frames as u32, 1),
            block_dim: (PACK_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `vae_pack_cl_bf16` (x, gamma or null, out, channels, cpad, hw, silu); x
        // holds frames·channels·pixels floats, out frames·pixels·cpad bf16 16-byte aligned (checked;
        // the kernel stores 8 channels at a time at multiples of 8), gamma `channels` floats; the
        // grid covers the pixels of every frame.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// The causal conv on tensor cores (`causal_conv3d_bf16_tc`): `out [g.frames, cout, h, w]` =
    /// conv + bias (with `residual`, `out` += conv + bias, summed as `(conv + bias) + out`) from
    /// `x`, packed by [`Self::pack_channels_last_bf16`] (`[g.in_frames(), in_h, in_w, cpad]`: `hist`
    /// history frames, then one input frame per output frame; half-size frames when
    /// `g.upsample`), and `weight` packed by `tensor_core::conv::pack_conv_weight`. bf16 operands,
    /// f32 accumulation: parity with `cpu::nn_conv` is the bf16 tolerance, and a frame's bits
    /// depend only on its own input frames (not on `frames`, `hist` or the chunk launched).
    pub fn causal_conv3d_bf16(
        &self,
        x: &CudaView<'_, u16>,
        weight: &CudaSlice<u16>,
        bias: &CudaSlice<f32>,
        g: ConvGeometry,
        residual: bool,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "causal_conv3d_bf16";
        g.check().map_err(|m| shape_error(OP, m))?;
        check_len(OP, "x", x.len(), g.input_len())?;
        check_len(OP, "weight", weight.len(), g.weight_len())?;
        check_len(OP, "bias", bias.len(), g.cout)?;
        check_len(OP, "out", out.len(), g.output_len())?;
        let (gx, gy, gz) = g.grid();
        if gy > GRID_YZ_MAX || gz > GRID_YZ_MAX {
            return Err(shape_error(
                OP,
                format!("grid {gx}×{gy}×{gz} exceeds {GRID_YZ_MAX} in y or z"),
            ));
        }
        // cp.async copies 16 bytes: the packed input must start 16-byte aligned (a view that
        // starts at a whole frame does; allocations are 256-byte aligned).
        check_aligned(OP, "x", x.device_ptr(self.stream()).0)?;
        let args = [
            as_u32(OP, "hist", g.hist)?,
            as_u32(OP, "padded channels", g.cpad())?,
            as_u32(OP, "cout", g.cout)?,
            as_u32(OP, "h", g.h)?,
            as_u32(OP, "w", g.w)?,
            as_u32(OP, "kt", g.kt)?,
            as_u32(OP, "ks", g.ks)?,
            g.upsample as u32,
            residual as u32,
        ];
        as_u32(OP, "h·w", g.h * g.w)?;
        if g.frames == 0 {
            return Ok(());
        }
        let f = self.function(&VAE_CONV_TC, "causal_conv3d_bf16_tc")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(weight).arg(bias).arg(out);
        for v in &args {
            b.arg(v);
        }
        let cfg = LaunchConfig {
            grid_dim: (as_u32(OP, "pixel tiles", gx)?, gy as u32, gz as u32),
            block_dim: (CONV_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `causal_conv3d_bf16_tc` (x, weight, bias, out, hist, cpad, cout, h, w, kt,
        // ks, up, residual); every length is checked against the geometry the kernel indexes
        // (tensor_core::conv::ConvGeometry, whose index map the CPU tests check: reads stay inside
        // x's in_frames·in_h·in_w·cpad values and the weight's cout rows), x is 16-byte aligned
        // (checked) and its rows of cpad (a multiple of 8) bf16 keep every chunk aligned, weight rows
        // hold multiples of 32 bf16 in a fresh allocation; the kernel's shared memory is static.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// In place on `[frames, channels, pixels]`, as `cpu::nn_vae::channel_rms_norm`.
    pub fn channel_rms_norm(
        &self,
        x: &mut CudaSlice<f32>,
        channels: usize,
        pixels: usize,
        gamma: &CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "channel_rms_norm";
        check_len(OP, "gamma", gamma.len(), channels)?;
        let frame = channels * pixels;
        if frame == 0 {
            return Ok(());
        }
        if !x.len().is_multiple_of(frame) {
            return Err(shape_error(
                OP,
                format!("length {} is not whole frames of {frame}", x.len()),
            ));
        }
        let frames = as_u32(OP, "frames", x.len() / frame)?;
        let (c, p) = (as_u32(OP, "channels", channels)?, pixels as u64);
        let f = self.function(&VAE_OPS, "channel_rms_norm_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(gamma).arg(&frames).arg(&c).arg(&p);
        // SAFETY: matches `channel_rms_norm_f32`; x holds frames·channels·pixels floats.
        unsafe { b.launch(pointwise_config(frames as usize * pixels)) }?;
        Ok(())
    }

    /// `x [planes, h, w]` → `out [planes, 2h, 2w]`, as `cpu::nn_vae::upsample_nearest2x`.
    pub fn upsample_nearest2x(
        &self,
        x: &CudaSlice<f32>,
        planes: usize,
        h: usize,
        w: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "upsample_nearest2x";
        check_len(OP, "x", x.len(), planes * h * w)?;
        check_len(OP, "out", out.len(), 4 * planes * h * w)?;
        let (p, hh, ww) = (as_u32(OP, "planes", planes)?, as_u32(OP, "h", h)?, as_u32(OP, "w", w)?);
        let f = self.function(&VAE_OPS, "upsample_nearest2x_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(out).arg(&p).arg(&hh).arg(&ww);
        // SAFETY: matches `upsample_nearest2x_f32`; lengths checked above.
        unsafe { b.launch(pointwise_config(4 * planes * h * w)) }?;
        Ok(())
    }

    /// One frame `[3, H, W]` in [−1, 1] → RGB `[H, W, 3]` in [0, 1].
    pub fn rgb_from_planar(&self, x: &CudaSlice<f32>, rgb: &mut CudaSlice<f32>) -> Result<(), CudaError> {
        const OP: &str = "rgb_from_planar";
        if !x.len().is_multiple_of(3) {
            return Err(shape_error(OP, format!("length {} is not 3 planes", x.len())));
        }
        check_len(OP, "rgb", rgb.len(), x.len())?;
        let hw = (x.len() / 3) as u64;
        let f = self.function(&VAE_OPS, "rgb_from_planar_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(rgb).arg(&hw);
        // SAFETY: matches `rgb_from_planar_f32`; both hold 3·hw floats.
        unsafe { b.launch(pointwise_config(x.len())) }?;
        Ok(())
    }

    /// `x[i] += y[i]`, the residual add of the VAE's blocks (bit-identical to the reference).
    pub fn add_in_place(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>) -> Result<(), CudaError> {
        const OP: &str = "add_in_place";
        check_len(OP, "y", y.len(), x.len())?;
        let n = x.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(&VAE_OPS, "add_in_place_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(y).arg(&n);
        // SAFETY: matches `add_in_place_f32` (x, y, n); both hold n floats.
        unsafe { b.launch(pointwise_config(n as usize)) }?;
        Ok(())
    }

    /// `x = x.clamp(lo, hi)` in place (NaN stays NaN, as `f32::clamp`).
    pub fn clamp(&self, x: &mut CudaSlice<f32>, lo: f32, hi: f32) -> Result<(), CudaError> {
        const OP: &str = "clamp";
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(shape_error(OP, format!("bounds [{lo}, {hi}] are not ordered")));
        }
        let n = x.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(&VAE_OPS, "clamp_f32")?;
        let mut b = self.stream().launch_builder(&f);
        b.arg(x).arg(&lo).arg(&hi).arg(&n);
        // SAFETY: matches `clamp_f32` (x, lo, hi, n); x holds n floats.
        unsafe { b.launch(pointwise_config(n as usize)) }?;
        Ok(())
    }

    /// The VAE mid block's per-frame single-head attention, frame `frame` of `qkv`
    /// (`[frames, 3·channels, pixels]`, the `to_qkv` 1×1 conv's output: q, k, v channel-major):
    /// `out[frame] = (softmax(scale·qᵀk)·vᵀ)ᵀ`, channel-major `[channels, pixels]` inside
    /// `out [frames, channels, pixels]`. `scores` (`pixels²`) and `denom` (`pixels`) are scratch.
    /// Any head size (Wan2.1's is 384); the frame's score matrix is materialised.
    #[allow(clippy::too_many_arguments)]
    pub fn vae_frame_attention(
        &self,
        qkv: &CudaSlice<f32>,
        frame: usize,
        channels: usize,
        pixels: usize,
        scale: f32,
        scores: &mut CudaSlice<f32>,
        denom: &mut CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "vae_frame_attention";
        let per_frame = channels * pixels;
        if per_frame == 0 {
            return Ok(());
        }
        if !qkv.len().is_multiple_of(3 * per_frame) {
            return Err(shape_error(
                OP,
                format!("qkv length {} is not whole frames of 3·{channels}·{pixels}", qkv.len()),
            ));
        }
        let frames = qkv.len() / (3 * per_frame);
        if frame >= frames {
            return Err(shape_error(OP, format!("frame {frame} of {frames}")));
        }
        check_len(OP, "out", out.len(), frames * per_frame)?;
        check_len(OP, "scores", scores.len(), pixels * pixels)?;
        check_len(OP, "denom", denom.len(), pixels)?;
        let (fr, c, p) = (
            as_u32(OP, "frame", frame)?,
            as_u32(OP, "channels", channels)?,
            as_u32(OP, "pixels", pixels)?,
        );
        {
            let f = self.function(&VAE_OPS, "vae_attn_scores_f32")?;
            let mut b = self.stream().launch_builder(&f);
            b.arg(qkv).arg(&mut *scores).arg(&fr).arg(&c).arg(&p).arg(&scale);
            // SAFETY: matches `vae_attn_scores_f32` (qkv, scores, frame, c, p, scale); qkv holds
            // `frames`·3·c·p floats with frame < frames, scores p·p.
            unsafe { b.launch(pointwise_config(pixels * pixels)) }?;
        }
        {
            let f = self.function(&VAE_OPS, "vae_attn_softmax_f32")?;
            let mut b = self.stream().launch_builder(&f);
            b.arg(&mut *scores).arg(&mut *denom).arg(&p);
            // SAFETY: matches `vae_attn_softmax_f32` (scores, denom, p); scores holds p·p floats,
            // denom p, p ≥ 1. One warp per row: 32 threads per row (the grid-stride loop covers
            // the rows the capped grid does not).
            unsafe { b.launch(pointwise_config(32 * pixels)) }?;
        }
        {
            let f = self.function(&VAE_OPS, "vae_attn_apply_f32")?;
            let mut b = self.stream().launch_builder(&f);
            b.arg(&*scores).arg(&*denom).arg(qkv).arg(out).arg(&fr).arg(&c).arg(&p);
            // SAFETY: matches `vae_attn_apply_f32` (scores, denom, qkv, out, frame, c, p); out holds
            // `frames`·c·p floats, the others as above.
            unsafe { b.launch(pointwise_config(per_frame)) }?;
        }
        Ok(())
    }
}

/// A device address that cp.async and 16-byte vector stores can use.
fn check_aligned(op: &'static str, what: &str, ptr: u64) -> Result<(), CudaError> {
    if ptr.is_multiple_of(16) {
        Ok(())
    } else {
        Err(shape_error(op, format!("{what} at {ptr:#x} is not 16-byte aligned")))
    }
}
