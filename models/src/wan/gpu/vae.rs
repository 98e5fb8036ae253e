//! The Wan VAE decoder on the GPU (feature `cuda`): [`WanVaeDecoder`](crate::wan::WanVaeDecoder)'s
//! decode op for op on `longshot_kernels::cuda`'s VAE kernels, **f32 end to end** (f32 weights,
//! f32 activations; no bf16, no cuBLASLt).
//!
//! Same graph and the same full-sequence form as the CPU (spec §2.4): every causal conv runs over
//! all frames of its level with zeros in front (`causal_conv3d_f32`, a direct convolution that
//! reads the `kt` input frames of each output frame), `upsample3d`'s `time_conv` skips the clip's
//! first frame when the window starts at latent 0, and every other op (channel RMS norm, SiLU,
//! nearest ×2 upsample, the mid block's attention, residual adds, the clamp) works frame by frame.
//!
//! Parity: the convolutions and the attention sum in another order than the CPU's GEMMs, so GPU vs
//! CPU holds by tolerance (`tests/wan_gpu_vae.rs`: 1e-4 relative). Sharding: every output value's
//! arithmetic depends only on its own inputs (one thread per value, a fixed loop), never on the
//! number of frames, so [`GpuWanVaeDecoder::decode_range`] with the halo reproduces the GPU's
//! sequential decode bit for bit, as on the CPU.
//!
//! Memory: the whole window's activations live on the device at once (the largest is the last
//! up-block's input upsampled to full resolution). Wan2.1 at 480×832 needs about 25 GB per buffer
//! for 21 latent frames; a worker's shard (its latents plus the halo) is what is decoded here.
//! Decoding in frame chunks with caches (diffusers' form) is a later optimisation.

use super::error::GpuWanError;
use crate::wan::vae::blocks::VaeFetch;
use crate::wan::vae::config::{UpBlockPlan, Upsample, VaeConfig};
use crate::wan::vae::keys::VaeKeys;
use crate::wan::vae::{check_window, DecodedFrames, WanVae};
use crate::wan::weights::WeightStore;
use crate::wan::WanError;
use cudarc::driver::CudaSlice;
use longshot_kernels::cuda::{ConvShape, CudaBackend};
use std::path::Path;
use std::sync::Arc;

/// Activations on the device, frame-major `[frames, channels, height, width]`.
struct GpuVideo {
    frames: usize,
    channels: usize,
    height: usize,
    width: usize,
    data: CudaSlice<f32>,
}

impl GpuVideo {
    fn pixels(&self) -> usize {
        self.height * self.width
    }
}

/// A causal conv with its PyTorch weight `[cout, cin, kt, ks, ks]` and bias in f32 on the device.
struct GpuConv {
    weight: CudaSlice<f32>,
    bias: CudaSlice<f32>,
    cout: usize,
    cin: usize,
    kt: usize,
    ks: usize,
}

impl GpuConv {
    /// `{prefix}.weight` with `shape` (3-D `[cout, cin, kt, ks, ks]`, or 2-D `[cout, cin, ks, ks]`,
    /// which is the same memory as `kt = 1`) and `{prefix}.bias`.
    fn load(
        be: &CudaBackend,
        f: &VaeFetch<'_>,
        prefix: &str,
        shape: &[usize],
        (cout, cin, kt, ks): (usize, usize, usize, usize),
    ) -> Result<Self, GpuWanError> {
        let w = f.get(&format!("{prefix}.weight"), shape)?;
        let b = f.get(&format!("{prefix}.bias"), &[cout])?;
        Ok(Self {
            weight: be.upload(&w)?,
            bias: be.upload(&b)?,
            cout,
            cin,
            kt,
            ks,
        })
    }

    fn conv3d(
        be: &CudaBackend,
        f: &VaeFetch<'_>,
        prefix: &str,
        cout: usize,
        cin: usize,
        kt: usize,
        ks: usize,
    ) -> Result<Self, GpuWanError> {
        Self::load(be, f, prefix, &[cout, cin, kt, ks, ks], (cout, cin, kt, ks))
    }

    fn conv2d(
        be: &CudaBackend,
        f: &VaeFetch<'_>,
        prefix: &str,
        cout: usize,
        cin: usize,
        ks: usize,
    ) -> Result<Self, GpuWanError> {
        Self::load(be, f, prefix, &[cout, cin, ks, ks], (cout, cin, 1, ks))
    }

    /// `x [frames, cin, h, w]` → `[frames, cout, h, w]`.
    fn run(
        &self,
        be: &CudaBackend,
        x: &CudaSlice<f32>,
        frames: usize,
        h: usize,
        w: usize,
    ) -> Result<CudaSlice<f32>, GpuWanError> {
        // Never called with an empty video (windows hold ≥ 1 latent; `upsample3d` skips an empty
        // `time_conv`), so the allocation is never of zero bytes.
        debug_assert!(frames * h * w > 0);
        let mut out = be.stream().alloc_zeros::<f32>(frames * self.cout * h * w)?;
        let s = ConvShape {
            frames,
            cin: self.cin,
            cout: self.cout,
            h,
            w,
            kt: self.kt,
            ks: self.ks,
        };
        be.causal_conv3d(x, &self.weight, &self.bias, s, &mut out)?;
        Ok(out)
    }

    fn forward(&self, be: &CudaBackend, x: &GpuVideo) -> Result<GpuVideo, GpuWanError> {
        let data = self.run(be, &x.data, x.frames, x.height, x.width)?;
        Ok(GpuVideo {
            frames: x.frames,
            channels: self.cout,
            height: x.height,
            width: x.width,
            data,
        })
    }
}

/// `WanRMS_norm`'s γ on the device.
struct GpuRmsNorm {
    gamma: CudaSlice<f32>,
}

impl GpuRmsNorm {
    fn load(be: &CudaBackend, f: &VaeFetch<'_>, prefix: &str, c: usize, video: bool) -> Result<Self, GpuWanError> {
        let shape: &[usize] = if video { &[c, 1, 1, 1] } else { &[c, 1, 1] };
        Ok(Self {
            gamma: be.upload(&f.get(&format!("{prefix}.gamma"), shape)?)?,
        })
    }

    fn apply(&self, be: &CudaBackend, x: &mut GpuVideo) -> Result<(), GpuWanError> {
        let (c, p) = (x.channels, x.pixels());
        be.channel_rms_norm(&mut x.data, c, p, &self.gamma)?;
        Ok(())
    }

    /// `norm → SiLU` in place.
    fn apply_silu(&self, be: &CudaBackend, x: &mut GpuVideo) -> Result<(), GpuWanError> {
        self.apply(be, x)?;
        be.silu(&mut x.data)?;
        Ok(())
    }
}

fn clone_video(be: &CudaBackend, x: &GpuVideo) -> Result<GpuVideo, GpuWanError> {
    Ok(GpuVideo {
        data: be.stream().clone_dtod(&x.data)?,
        ..*x
    })
}

/// `WanResidualBlock`, as `vae::blocks::ResidualBlock`.
struct GpuResidualBlock {
    norm1: GpuRmsNorm,
    conv1: GpuConv,
    norm2: GpuRmsNorm,
    conv2: GpuConv,
    shortcut: Option<GpuConv>,
}

impl GpuResidualBlock {
    fn load(be: &CudaBackend, f: &VaeFetch<'_>, prefix: &str, cin: usize, cout: usize) -> Result<Self, GpuWanError> {
        Ok(Self {
            norm1: GpuRmsNorm::load(be, f, &format!("{prefix}.norm1"), cin, true)?,
            conv1: GpuConv::conv3d(be, f, &format!("{prefix}.conv1"), cout, cin, 3, 3)?,
            norm2: GpuRmsNorm::load(be, f, &format!("{prefix}.norm2"), cout, true)?,
            conv2: GpuConv::conv3d(be, f, &format!("{prefix}.conv2"), cout, cout, 3, 3)?,
            shortcut: if cin != cout {
                Some(GpuConv::conv3d(
                    be,
                    f,
                    &format!("{prefix}.conv_shortcut"),
                    cout,
                    cin,
                    1,
                    1,
                )?)
            } else {
                None
            },
        })
    }

    fn forward(&self, be: &CudaBackend, x: GpuVideo) -> Result<GpuVideo, GpuWanError> {
        let (skip, mut h) = match &self.shortcut {
            Some(conv) => (conv.forward(be, &x)?, x),
            None => (clone_video(be, &x)?, x),
        };
        self.norm1.apply_silu(be, &mut h)?;
        let mut h = self.conv1.forward(be, &h)?;
        self.norm2.apply_silu(be, &mut h)?;
        let mut h = self.conv2.forward(be, &h)?;
        be.add_in_place(&mut h.data, &skip.data)?;
        Ok(h)
    }
}

/// `WanAttentionBlock`, as `vae::blocks::AttentionBlock`: `to_qkv` and `proj` are 1×1 convs.
struct GpuAttentionBlock {
    norm: GpuRmsNorm,
    to_qkv: GpuConv,
    proj: GpuConv,
    channels: usize,
}

impl GpuAttentionBlock {
    fn load(be: &CudaBackend, f: &VaeFetch<'_>, prefix: &str, c: usize) -> Result<Self, GpuWanError> {
        Ok(Self {
            norm: GpuRmsNorm::load(be, f, &format!("{prefix}.norm"), c, false)?,
            to_qkv: GpuConv::conv2d(be, f, &format!("{prefix}.to_qkv"), 3 * c, c, 1)?,
            proj: GpuConv::conv2d(be, f, &format!("{prefix}.proj"), c, c, 1)?,
            channels: c,
        })
    }

    fn forward(&self, be: &CudaBackend, mut x: GpuVideo) -> Result<GpuVideo, GpuWanError> {
        let (c, p) = (self.channels, x.pixels());
        let mut normed = clone_video(be, &x)?;
        self.norm.apply(be, &mut normed)?;
        let qkv = self.to_qkv.forward(be, &normed)?;
        drop(normed);
        let scale = (1.0 / (c as f64).sqrt()) as f32;
        let stream = be.stream();
        let mut o = stream.alloc_zeros::<f32>(x.frames * c * p)?;
        let mut scores = stream.alloc_zeros::<f32>(p * p)?;
        let mut denom = stream.alloc_zeros::<f32>(p)?;
        for t in 0..x.frames {
            be.vae_frame_attention(&qkv.data, t, c, p, scale, &mut scores, &mut denom, &mut o)?;
        }
        drop((qkv, scores, denom));
        let y = self.proj.run(be, &o, x.frames, x.height, x.width)?;
        be.add_in_place(&mut x.data, &y)?;
        Ok(x)
    }
}

/// `WanResample` in its decoder modes, as `vae::blocks::Resample`.
struct GpuResample {
    time_conv: Option<GpuConv>,
    conv: GpuConv,
}

impl GpuResample {
    fn load(be: &CudaBackend, f: &VaeFetch<'_>, prefix: &str, c: usize, mode: Upsample) -> Result<Self, GpuWanError> {
        Ok(Self {
            time_conv: match mode {
                Upsample::SpaceTime => Some(GpuConv::conv3d(be, f, &format!("{prefix}.time_conv"), 2 * c, c, 3, 1)?),
                Upsample::Spatial => None,
            },
            conv: GpuConv::conv2d(be, f, &format!("{prefix}.resample.1"), c / 2, c, 3)?,
        })
    }

    fn forward(&self, be: &CudaBackend, x: GpuVideo, clip_start: bool) -> Result<GpuVideo, GpuWanError> {
        let stream = be.stream();
        let x = match &self.time_conv {
            Some(tc) => {
                let frame = x.channels * x.pixels();
                let first = if clip_start { x.frames.min(1) } else { 0 };
                let rest = x.frames - first;
                // Frame-major `[t, 2C, h, w]` is already the interleave `[2t, C, h, w]`.
                let data = if rest == 0 {
                    x.data
                } else if first == 0 {
                    tc.run(be, &x.data, rest, x.height, x.width)?
                } else {
                    let tail = stream.clone_dtod(&x.data.slice(first * frame..))?;
                    let doubled = tc.run(be, &tail, rest, x.height, x.width)?;
                    drop(tail);
                    let mut data = stream.alloc_zeros::<f32>((first + 2 * rest) * frame)?;
                    stream.memcpy_dtod(&x.data.slice(..first * frame), &mut data.slice_mut(..first * frame))?;
                    stream.memcpy_dtod(&doubled, &mut data.slice_mut(first * frame..))?;
                    data
                };
                GpuVideo {
                    frames: first + 2 * rest,
                    data,
                    ..x
                }
            }
            None => x,
        };
        let planes = x.frames * x.channels;
        let mut up = stream.alloc_zeros::<f32>(4 * planes * x.pixels())?;
        be.upsample_nearest2x(&x.data, planes, x.height, x.width, &mut up)?;
        drop(x.data);
        let (h2, w2) = (2 * x.height, 2 * x.width);
        let data = self.conv.run(be, &up, x.frames, h2, w2)?;
        Ok(GpuVideo {
            frames: x.frames,
            channels: self.conv.cout,
            height: h2,
            width: w2,
            data,
        })
    }
}

/// `WanUpBlock`: residual blocks, then an optional resampler.
struct GpuUpBlock {
    resnets: Vec<GpuResidualBlock>,
    upsampler: Option<GpuResample>,
}

impl GpuUpBlock {
    fn load(be: &CudaBackend, f: &VaeFetch<'_>, i: usize, plan: &UpBlockPlan) -> Result<Self, GpuWanError> {
        let resnets = (0..plan.resnets)
            .map(|j| {
                let cin = if j == 0 { plan.in_dim } else { plan.out_dim };
                GpuResidualBlock::load(be, f, &format!("decoder.up_blocks.{i}.resnets.{j}"), cin, plan.out_dim)
            })
            .collect::<Result<_, _>>()?;
        let upsampler = match plan.upsample {
            Some(mode) => Some(GpuResample::load(
                be,
                f,
                &format!("decoder.up_blocks.{i}.upsamplers.0"),
                plan.out_dim,
                mode,
            )?),
            None => None,
        };
        Ok(Self { resnets, upsampler })
    }

    fn forward(&self, be: &CudaBackend, mut x: GpuVideo, clip_start: bool) -> Result<GpuVideo, GpuWanError> {
        for r in &self.resnets {
            x = r.forward(be, x)?;
        }
        match &self.upsampler {
            Some(u) => u.forward(be, x, clip_start),
            None => Ok(x),
        }
    }
}

/// A loaded Wan VAE decoder on one GPU; the same API as
/// [`WanVaeDecoder`](crate::wan::WanVaeDecoder), with [`GpuWanError`]s.
pub struct GpuWanVaeDecoder {
    backend: Arc<CudaBackend>,
    cfg: VaeConfig,
    post_quant_conv: GpuConv,
    conv_in: GpuConv,
    mid: (GpuResidualBlock, GpuAttentionBlock, GpuResidualBlock),
    up_blocks: Vec<GpuUpBlock>,
    norm_out: GpuRmsNorm,
    conv_out: GpuConv,
}

impl GpuWanVaeDecoder {
    /// As `WanVaeDecoder::load`: `dir/config.json` (or the Wan2.1 architecture when absent) and
    /// the weights in `dir`, either naming.
    pub fn load(backend: Arc<CudaBackend>, dir: &Path) -> Result<Self, GpuWanError> {
        let store = WeightStore::open(dir)?;
        Self::from_store(backend, VaeConfig::for_dir(dir)?, &store)
    }

    /// As `WanVaeDecoder::from_store`, uploading each tensor in f32 as it is read. Encoder-side
    /// tensors are ignored; any other unused tensor is an error.
    pub fn from_store(backend: Arc<CudaBackend>, cfg: VaeConfig, store: &WeightStore) -> Result<Self, GpuWanError> {
        cfg.validate()
            .map_err(|reason| WanError::config(store.source(), reason))?;
        let keys = VaeKeys::detect(store, cfg.num_res_blocks)?;
        let f = VaeFetch { store, keys: &keys };
        let be: &CudaBackend = &backend;
        let (z, dims) = (cfg.z_dim, cfg.decoder_dims());
        let mid = "decoder.mid_block";
        let last_dim = *dims.last().unwrap_or(&0);
        let post_quant_conv = GpuConv::conv3d(be, &f, "post_quant_conv", z, z, 1, 1)?;
        let conv_in = GpuConv::conv3d(be, &f, "decoder.conv_in", dims[0], z, 3, 3)?;
        let mid = (
            GpuResidualBlock::load(be, &f, &format!("{mid}.resnets.0"), dims[0], dims[0])?,
            GpuAttentionBlock::load(be, &f, &format!("{mid}.attentions.0"), dims[0])?,
            GpuResidualBlock::load(be, &f, &format!("{mid}.resnets.1"), dims[0], dims[0])?,
        );
        let up_blocks = cfg
            .up_blocks()
            .iter()
            .enumerate()
            .map(|(i, plan)| GpuUpBlock::load(be, &f, i, plan))
            .collect::<Result<_, _>>()?;
        let norm_out = GpuRmsNorm::load(be, &f, "decoder.norm_out", last_dim, true)?;
        let conv_out = GpuConv::conv3d(be, &f, "decoder.conv_out", cfg.out_channels, last_dim, 3, 3)?;
        store.check_all_used(|n| keys.is_encoder_side(n))?;
        Ok(Self {
            backend,
            cfg,
            post_quant_conv,
            conv_in,
            mid,
            up_blocks,
            norm_out,
            conv_out,
        })
    }

    pub fn backend(&self) -> &Arc<CudaBackend> {
        &self.backend
    }
}

impl WanVae for GpuWanVaeDecoder {
    type Error = GpuWanError;

    fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// As `WanVaeDecoder::decode_window`: every frame of `z [T, z_dim, H, W]` (latents
    /// `[first_latent, first_latent + T)`), as if the latents before were zeros.
    fn decode_window(&self, z: &[f32], dims: [usize; 4], first_latent: usize) -> Result<DecodedFrames, GpuWanError> {
        check_window(&self.cfg, z.len(), dims)?;
        let [t, c, h, w] = dims;
        let be: &CudaBackend = &self.backend;
        let x = GpuVideo {
            frames: t,
            channels: c,
            height: h,
            width: w,
            data: be.upload(z)?,
        };
        let x = self.post_quant_conv.forward(be, &x)?;
        let x = self.conv_in.forward(be, &x)?;
        let x = self.mid.0.forward(be, x)?;
        let x = self.mid.1.forward(be, x)?;
        let mut x = self.mid.2.forward(be, x)?;
        let clip_start = first_latent == 0;
        for block in &self.up_blocks {
            x = block.forward(be, x, clip_start)?;
        }
        self.norm_out.apply_silu(be, &mut x)?;
        let mut x = self.conv_out.forward(be, &x)?;
        be.clamp(&mut x.data, -1.0, 1.0)?;
        let data = be.download(&x.data)?;
        Ok(DecodedFrames {
            first_frame: self.cfg.first_output_frame(first_latent),
            frames: x.frames,
            channels: x.channels,
            height: x.height,
            width: x.width,
            data,
        })
    }
}
