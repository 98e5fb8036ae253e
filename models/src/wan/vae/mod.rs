//! The decoder half of diffusers' `AutoencoderKLWan` (spec §2) on the CPU in f32: loading,
//! the pipeline's latent denormalisation (spec §4.3), the whole-clip decode that matches
//! `vae.decode(z).sample`, and the sharded decode of docs/long-clips.md §5.
//!
//! Graph: `post_quant_conv` → `conv_in` → mid block (resnet, per-frame attention, resnet) →
//! up-blocks (resnets, then `upsample3d` / `upsample2d`) → RMS norm → SiLU → `conv_out` →
//! clamp to [−1, 1]. It runs in the full-sequence form of spec §2.4, not diffusers' frame-by-frame
//! chunks; the two are equal up to rounding.
//!
//! Sharding: the decoder is causal in time with a finite reach ([`VaeConfig::decode_halo`]
//! latent frames: 38 for Wan2.1, 30 for `num_res_blocks` 1). A worker owning latents `[s, e)`
//! decodes `[s−h, e)` with [`WanVaeDecoder::decode_range`] and keeps only the frames of `s..`,
//! which are bit-identical to the sequential decode's: every conv computes each output frame as
//! one GEMM of a fixed shape from its own input frames, and every other op works per frame.
//!
//! - [`config`]: [`VaeConfig`], the derived structure and [`VaeConfig::decode_halo`].
//! - [`blocks`]: residual / attention / up-blocks on frame-major video; [`keys`]: original
//!   `Wan2.1_VAE.pth` ↔ diffusers tensor names.
//! - [`encoder`]: [`WanVaeEncoder`](encoder::WanVaeEncoder), the encoder half (`vae.encode`'s
//!   posterior mean), for video-to-video and image-to-video.
//! - [`frame_decoder`]: [`WanFrameDecoder`](frame_decoder::WanFrameDecoder), the decoder behind the
//!   `FrameDecoder` trait.

pub mod blocks;
pub mod config;
pub mod encoder;
pub mod frame_decoder;
pub mod keys;

use crate::wan::error::WanError;
use crate::wan::layout::{channel_major_to_frame_major, frame_major_to_channel_major};
use crate::wan::weights::WeightStore;
use blocks::{AttentionBlock, ResidualBlock, UpBlock, VaeFetch, Video};
use config::VaeConfig;
use keys::VaeKeys;
use longshot_core::denoiser::RgbFrame;
use longshot_kernels::cpu::nn_act::silu_in_place;
use longshot_kernels::cpu::nn_conv::CausalConv3d;
use longshot_kernels::cpu::nn_vae::channel_rms_norm;
use std::path::Path;

/// A loaded Wan VAE decoder.
#[derive(Clone, Debug)]
pub struct WanVaeDecoder {
    cfg: VaeConfig,
    post_quant_conv: CausalConv3d,
    conv_in: CausalConv3d,
    mid: (ResidualBlock, AttentionBlock, ResidualBlock),
    up_blocks: Vec<UpBlock>,
    norm_out_gamma: Vec<f32>,
    conv_out: CausalConv3d,
}

/// Decoded frames, frame-major `[frames, channels, height, width]`, values in [−1, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedFrames {
    /// Global output frame index of the first frame held.
    pub first_frame: usize,
    pub frames: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl DecodedFrames {
    /// Frame `i` (local), `[channels, height, width]`.
    pub fn frame(&self, i: usize) -> &[f32] {
        let len = self.channels * self.height * self.width;
        &self.data[i * len..(i + 1) * len]
    }

    /// Frame `i` as the pipeline's output image: `(x·0.5 + 0.5).clamp(0, 1)`, `[H, W, 3]`
    /// (spec §4.3). `None` unless the decoder has 3 output channels or `i` is out of range.
    pub fn rgb_frame(&self, i: usize) -> Option<RgbFrame> {
        if self.channels != 3 || i >= self.frames {
            return None;
        }
        let (f, hw) = (self.frame(i), self.height * self.width);
        let data = (0..hw * 3)
            .map(|j| (f[(j % 3) * hw + j / 3] * 0.5 + 0.5).clamp(0.0, 1.0))
            .collect();
        Some(RgbFrame {
            width: self.width,
            height: self.height,
            data,
        })
    }
}

impl WanVaeDecoder {
    /// Loads `dir/config.json` and the weights in `dir`: a diffusers `vae/` directory, or a
    /// directory holding the original `Wan2.1_VAE` weights (as safetensors). The original
    /// checkpoint ships without a config; then the Wan2.1 architecture is assumed (the original
    /// repo hard-codes it), and a checkpoint of another shape fails on its first tensor.
    pub fn load(dir: &Path) -> Result<Self, WanError> {
        let store = WeightStore::open(dir)?;
        Self::from_store(VaeConfig::for_dir(dir)?, &store)
    }

    /// Builds the decoder from `store`, whichever naming it uses. Encoder-side tensors are
    /// ignored; any other tensor left unused means a different model and is an error.
    pub fn from_store(cfg: VaeConfig, store: &WeightStore) -> Result<Self, WanError> {
        cfg.validate()
            .map_err(|reason| WanError::config(store.source(), reason))?;
        let keys = VaeKeys::detect(store, cfg.num_res_blocks)?;
        let f = VaeFetch { store, keys: &keys };
        let (z, dims) = (cfg.z_dim, cfg.decoder_dims());
        let mid_prefix = "decoder.mid_block";
        let last_dim = *dims.last().unwrap_or(&0);
        let model = Self {
            post_quant_conv: f.conv3d("post_quant_conv", z, z, 1, 1)?,
            conv_in: f.conv3d("decoder.conv_in", dims[0], z, 3, 3)?,
            mid: (
                ResidualBlock::load(&f, &format!("{mid_prefix}.resnets.0"), dims[0], dims[0])?,
                AttentionBlock::load(&f, &format!("{mid_prefix}.attentions.0"), dims[0])?,
                ResidualBlock::load(&f, &format!("{mid_prefix}.resnets.1"), dims[0], dims[0])?,
            ),
            up_blocks: cfg
                .up_blocks()
                .iter()
                .enumerate()
                .map(|(i, plan)| UpBlock::load(&f, i, plan))
                .collect::<Result<_, _>>()?,
            norm_out_gamma: f.get("decoder.norm_out.gamma", &[last_dim, 1, 1, 1])?,
            conv_out: f.conv3d("decoder.conv_out", cfg.out_channels, last_dim, 3, 3)?,
            cfg,
        };
        store.check_all_used(|n| keys.is_encoder_side(n))?;
        Ok(model)
    }
}

impl WanVae for WanVaeDecoder {
    type Error = WanError;

    fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// Decodes every frame of `z: [T, z_dim, H, W]` (latents `[first_latent, first_latent + T)`)
    /// as if the clip's latents before `first_latent` were zeros. With `first_latent == 0` this is
    /// the sequential decode; otherwise the frames of the first [`halo`](Self::halo) latents differ
    /// from it (use [`decode_range`](Self::decode_range) to get only the exact ones).
    fn decode_window(&self, z: &[f32], dims: [usize; 4], first_latent: usize) -> Result<DecodedFrames, WanError> {
        check_window(&self.cfg, z.len(), dims)?;
        let [t, c, h, w] = dims;
        let clip_start = first_latent == 0;
        let x = Video {
            frames: t,
            channels: c,
            height: h,
            width: w,
            data: z.to_vec(),
        };
        let x = x.conv(&self.post_quant_conv).conv(&self.conv_in);
        let x = self.mid.0.forward(x);
        let x = self.mid.1.forward(x);
        let mut x = self.mid.2.forward(x);
        for block in &self.up_blocks {
            x = block.forward(x, clip_start);
        }
        let (channels, pixels) = (x.channels, x.pixels());
        channel_rms_norm(&mut x.data, channels, pixels, &self.norm_out_gamma);
        silu_in_place(&mut x.data);
        let mut x = x.conv(&self.conv_out);
        for v in &mut x.data {
            *v = v.clamp(-1.0, 1.0);
        }
        Ok(DecodedFrames {
            first_frame: self.cfg.first_output_frame(first_latent),
            frames: x.frames,
            channels: x.channels,
            height: x.height,
            width: x.width,
            data: x.data,
        })
    }
}

/// The two Wan VAE decoders (the CPU reference [`WanVaeDecoder`] and, with the `cuda` feature,
/// `gpu::GpuWanVaeDecoder`) implement one window's decode; the batch decode, the sharded decode
/// and the denormalisation are written once here on top of it.
pub trait WanVae: Send + Sync {
    type Error: std::fmt::Display + From<WanError>;

    fn config(&self) -> &VaeConfig;

    /// Decodes every frame of `z: [T, z_dim, H, W]` (latents `[first_latent, first_latent + T)`)
    /// as if the clip's latents before `first_latent` were zeros. With `first_latent == 0` this is
    /// the sequential decode; otherwise the frames of the first [`halo`](Self::halo) latents differ
    /// from it (use [`decode_range`](Self::decode_range) to get only the exact ones).
    fn decode_window(&self, z: &[f32], dims: [usize; 4], first_latent: usize) -> Result<DecodedFrames, Self::Error>;

    /// Warm-up latent frames a shard needs: [`VaeConfig::decode_halo`].
    fn halo(&self) -> usize {
        self.config().decode_halo()
    }

    /// The pipeline's step before `vae.decode`, in place on `x: [outer, z_dim, inner]`:
    /// `x / (1/std) + mean` per channel, evaluated exactly like WanPipeline (a division by the f32
    /// reciprocal, not a product with std). `[B, C, T·H·W]` (diffusers) and `[T, C, H·W]`
    /// (frame-major) are both this shape.
    fn denormalize(&self, x: &mut [f32], outer: usize, inner: usize) -> Result<(), Self::Error> {
        // Per channel, as the pipeline computes them in f32: `mean`, and `1 / std` (spec §4.3).
        let cfg = self.config();
        let mean: Vec<f32> = cfg.latents_mean.iter().map(|&m| m as f32).collect();
        let inv_std: Vec<f32> = cfg.latents_std.iter().map(|&s| 1.0f32 / s as f32).collect();
        Ok(denormalize_latents(&mean, &inv_std, x, outer, inner)?)
    }

    /// diffusers' `vae.decode(z).sample`: `z` (already denormalised) is `[B, z_dim, T, H, W]`;
    /// the result is `[B, out_channels, 1 + R·(T−1), 8H, 8W]` (Wan2.1: R = 4), clamped to [−1, 1].
    fn decode(&self, z: &[f32], shape: [usize; 5]) -> Result<Vec<f32>, Self::Error> {
        let [b, c, t, h, w] = shape;
        if z.len() != shape.iter().product::<usize>() {
            return Err(WanError::Input(format!("z holds {} values, not {shape:?}", z.len())).into());
        }
        let item = c * t * h * w;
        let mut out = Vec::new();
        for i in 0..b {
            let frames = channel_major_to_frame_major(&z[i * item..(i + 1) * item], c, t, h * w);
            let d = self.decode_window(&frames, [t, c, h, w], 0)?;
            out.extend(frame_major_to_channel_major(
                &d.data,
                d.frames,
                d.channels,
                d.height * d.width,
            ));
        }
        Ok(out)
    }

    /// Decodes latent frames `[first_latent + emit_from, first_latent + T)` of a clip, given
    /// `z: [T, z_dim, H, W]` (frame-major, denormalised) holding latents
    /// `[first_latent, first_latent + T)`: the first `emit_from` of them are warm-up, decoded and
    /// discarded. The result equals the sequential decode's frames bit for bit; that needs
    /// `emit_from ≥` [`halo`](Self::halo) whenever `first_latent > 0` (an error otherwise).
    /// Latent 0 yields 1 frame and every later latent R, so the result starts at global output
    /// frame `1 + R·(first_latent + emit_from − 1)` (0 for latent 0).
    fn decode_range(
        &self,
        z: &[f32],
        dims: [usize; 4],
        first_latent: usize,
        emit_from: usize,
    ) -> Result<DecodedFrames, Self::Error> {
        check_range(self.halo(), dims[0], first_latent, emit_from)?;
        let mut d = self.decode_window(z, dims, first_latent)?;
        drop_warm_up(self.config(), &mut d, first_latent + emit_from);
        Ok(d)
    }
}

/// [`WanVaeDecoder::denormalize`] with the per-channel `mean` and `1 / std` (shared with the GPU
/// decoder, so both evaluate it identically).
pub(crate) fn denormalize_latents(
    mean: &[f32],
    inv_std: &[f32],
    x: &mut [f32],
    outer: usize,
    inner: usize,
) -> Result<(), WanError> {
    let c = mean.len();
    if x.len() != outer * c * inner {
        return Err(WanError::Input(format!(
            "latents hold {} values, not {outer}·{c}·{inner}",
            x.len()
        )));
    }
    for (i, plane) in x.chunks_exact_mut(inner.max(1)).enumerate() {
        let ch = i % c;
        let (inv, mean) = (inv_std[ch], mean[ch]);
        for v in plane {
            *v = *v / inv + mean;
        }
    }
    Ok(())
}

/// The argument checks of [`WanVaeDecoder::decode_range`] for `t` latent frames given.
pub(crate) fn check_range(halo: usize, t: usize, first_latent: usize, emit_from: usize) -> Result<(), WanError> {
    if emit_from > t {
        return Err(WanError::Input(format!(
            "emit_from {emit_from} is past the {t} latent frames given"
        )));
    }
    if first_latent > 0 && emit_from < halo {
        return Err(WanError::Input(format!(
            "a shard starting at latent {first_latent} needs {halo} warm-up latent frames before the first \
             emitted one, got {emit_from}"
        )));
    }
    Ok(())
}

/// Drops the frames of `d` before those of latent `first_emitted`.
pub(crate) fn drop_warm_up(cfg: &VaeConfig, d: &mut DecodedFrames, first_emitted: usize) {
    let emitted = cfg.first_output_frame(first_emitted);
    let drop = emitted - d.first_frame;
    let len = d.channels * d.height * d.width;
    d.data.drain(..drop * len);
    d.frames -= drop;
    d.first_frame = emitted;
}

/// The argument checks of [`WanVaeDecoder::decode_window`]: `len` values as `dims` `[T, C, H, W]`.
pub(crate) fn check_window(cfg: &VaeConfig, len: usize, dims: [usize; 4]) -> Result<(), WanError> {
    let [t, c, h, w] = dims;
    if c != cfg.z_dim || t == 0 || h == 0 || w == 0 {
        return Err(WanError::Input(format!(
            "latents {dims:?} ([T, C, H, W]) must have C = z_dim = {} and no empty axis",
            cfg.z_dim
        )));
    }
    if len != t * c * h * w {
        return Err(WanError::Input(format!("latents hold {len} values, not {dims:?}")));
    }
    Ok(())
}
