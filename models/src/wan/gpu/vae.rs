//! The Wan VAE decoder on the GPU (feature `cuda`): [`WanVaeDecoder`](crate::wan::WanVaeDecoder)'s
//! decode op for op on `longshot_kernels::cuda`'s VAE kernels. Activations are f32 between ops;
//! every convolution runs on tensor cores (`causal_conv3d_bf16`: bf16 operands, f32 accumulation,
//! bias and residual add fused), reading its input packed to channels-last bf16 by
//! `pack_channels_last_bf16`, which also applies the channel RMS norm and SiLU that precede the
//! conv. Weights are packed to bf16 once, at load.
//!
//! Same graph and the same full-sequence form as the CPU (spec §2.4): every causal conv sees all
//! frames of its level with zeros in front, `upsample3d`'s `time_conv` skips the clip's first frame
//! when the window starts at latent 0, and everything else works frame by frame.
//!
//! Memory: convs run over chunks of frames ([`CHUNK_BYTES`] of scratch), their packed input held
//! in a [`Ring`] that keeps the last `kt − 1` packed frames as the next chunk's history, so no
//! conv's input or intermediate ever exists for the whole window. A residual block streams norm1 →
//! conv1 → norm2 → conv2 chunk by chunk and adds into its input in place (or into the shortcut's
//! output): its live set is x (and the shortcut output) plus chunk scratch. The nearest ×2
//! upsample is fused into the following conv's gather, so the 4× tensor is never materialised.
//! At 480×832 × 81 frames the peak is the last upsampler: its bf16-packed input (3.1 GB) and its
//! 96-channel full-resolution f32 output (12.4 GB), about 15.5 GB (it was about 50 GB).
//!
//! Parity: bf16 operands, so GPU vs CPU holds by the bf16 tolerance (`tests/wan_gpu_vae.rs`).
//! Sharding: a frame's conv output depends only on its own input frames, never on the chunk or
//! the number of frames launched, so [`GpuWanVaeDecoder::decode_range`] with the halo reproduces
//! the GPU's sequential decode bit for bit, as on the CPU.

use super::error::GpuWanError;
use super::source::{RandomSource, VaeSource};
use crate::wan::vae::blocks::VaeFetch;
use crate::wan::vae::config::{UpBlockPlan, Upsample, VaeConfig};
use crate::wan::vae::keys::VaeKeys;
use crate::wan::vae::{check_window, DecodedFrames, WanVae};
use crate::wan::weights::WeightStore;
use crate::wan::WanError;
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use longshot_kernels::cuda::{pack_conv_weight, ConvGeometry, CudaBackend};
use longshot_kernels::tensor_core::conv::padded_channels;
use std::path::Path;
use std::sync::Arc;

/// Scratch per chunk of a chunked conv (packed input frames and f32 intermediates), about.
const CHUNK_BYTES: usize = 1 << 30;

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

    fn frame_len(&self) -> usize {
        self.channels * self.pixels()
    }
}

/// Frames per chunk when each frame needs `bytes_per_frame` of scratch: at least 2, so a chunk
/// always holds the `kt − 1 ≤ 2` history frames the next one keeps.
fn chunk_frames(bytes_per_frame: usize) -> usize {
    (CHUNK_BYTES / bytes_per_frame.max(1)).max(2)
}

/// What the pack kernel applies to a conv's input on the way to bf16.
#[derive(Clone, Copy)]
enum Pre<'a> {
    Plain,
    Norm(&'a GpuRmsNorm),
    NormSilu(&'a GpuRmsNorm),
}

impl Pre<'_> {
    fn gamma(&self) -> Option<&CudaSlice<f32>> {
        match self {
            Pre::Plain => None,
            Pre::Norm(n) | Pre::NormSilu(n) => Some(&n.gamma),
        }
    }
}

/// A ring's bookkeeping in frames (what [`Ring`] does to device memory, as plain indices, so the
/// tests check it on the CPU): `hist` frames kept from the previous chunk at the front, then the
/// frames pushed for the current one, `len` in all, never more than `capacity`.
#[derive(Clone, Copy, Debug)]
struct RingFrames {
    capacity: usize,
    hist: usize,
    len: usize,
}

impl RingFrames {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            hist: 0,
            len: 0,
        }
    }

    /// The slots `n` new frames are written to, right after the history.
    fn push(&mut self, n: usize) -> std::ops::Range<usize> {
        assert!(
            self.hist + n <= self.capacity,
            "ring of {} frames overflows",
            self.capacity
        );
        self.len = self.hist + n;
        self.hist..self.len
    }

    /// Keeps the last `keep` frames as the next chunk's history: the (source, destination) slot
    /// moves, to be done in order. Each source is behind its destination and every source is read
    /// before a later move overwrites it, so single-frame copies in this order are safe.
    fn keep_last(&mut self, keep: usize) -> Vec<(usize, usize)> {
        let keep = keep.min(self.len);
        let start = self.len - keep;
        let moves = if start > 0 {
            (0..keep).map(|i| (start + i, i)).collect()
        } else {
            Vec::new()
        };
        self.hist = keep;
        self.len = keep;
        moves
    }
}

/// One conv's packed input (channels-last bf16) on the device, laid out by [`RingFrames`].
struct Ring {
    data: CudaSlice<u16>,
    /// Values per packed frame (`pixels · padded_channels`).
    frame: usize,
    at: RingFrames,
}

impl Ring {
    fn new(be: &CudaBackend, channels: usize, pixels: usize, capacity: usize) -> Result<Self, GpuWanError> {
        let frame = pixels * padded_channels(channels);
        Ok(Self {
            data: be.stream().alloc_zeros::<u16>(frame * capacity)?,
            frame,
            at: RingFrames::new(capacity),
        })
    }

    /// Packs `pre(src)` (whole frames of `channels × pixels`) after the history.
    fn push(
        &mut self,
        be: &CudaBackend,
        src: &CudaView<'_, f32>,
        channels: usize,
        pixels: usize,
        pre: Pre<'_>,
    ) -> Result<(), GpuWanError> {
        let slots = self.at.push(src.len() / (channels * pixels));
        let silu = matches!(pre, Pre::NormSilu(_));
        let mut dst = self.data.slice_mut(slots.start * self.frame..slots.end * self.frame);
        be.pack_channels_last_bf16(src, channels, pixels, pre.gamma(), silu, &mut dst)?;
        Ok(())
    }

    /// The packed frames: the history, then the pushed ones.
    fn view(&self) -> CudaView<'_, u16> {
        self.data.slice(..self.at.len * self.frame)
    }

    /// History frames in front of the pushed ones, and the number pushed.
    fn frames(&self) -> (usize, usize) {
        (self.at.hist, self.at.len - self.at.hist)
    }

    /// Keeps the last `keep` frames as the next chunk's history.
    fn keep_last(&mut self, be: &CudaBackend, keep: usize) -> Result<(), GpuWanError> {
        for (src, dst) in self.at.keep_last(keep) {
            let (mut front, back) = self.data.split_at_mut(src * self.frame);
            be.stream().memcpy_dtod(
                &back.slice(..self.frame),
                &mut front.slice_mut(dst * self.frame..(dst + 1) * self.frame),
            )?;
        }
        Ok(())
    }
}

/// A causal conv, its PyTorch weight `[cout, cin, kt, ks, ks]` packed to bf16 for the tensor-core
/// kernel (`pack_conv_weight`) and its bias in f32, on the device.
struct GpuConv {
    weight: CudaSlice<u16>,
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
        f: &dyn VaeSource,
        prefix: &str,
        shape: &[usize],
        (cout, cin, kt, ks): (usize, usize, usize, usize),
    ) -> Result<Self, GpuWanError> {
        let w = f.get(&format!("{prefix}.weight"), shape)?;
        let b = f.get(&format!("{prefix}.bias"), &[cout])?;
        Ok(Self {
            weight: be.upload(&pack_conv_weight(&w, cout, cin, kt, ks))?,
            bias: be.upload(&b)?,
            cout,
            cin,
            kt,
            ks,
        })
    }

    fn conv3d(
        be: &CudaBackend,
        f: &dyn VaeSource,
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
        f: &dyn VaeSource,
        prefix: &str,
        cout: usize,
        cin: usize,
        ks: usize,
    ) -> Result<Self, GpuWanError> {
        Self::load(be, f, prefix, &[cout, cin, ks, ks], (cout, cin, 1, ks))
    }

    /// Packed bf16 bytes plus f32 output bytes of one frame, the chunk size's measure.
    fn frame_bytes(&self, in_pixels: usize, out_pixels: usize) -> usize {
        2 * padded_channels(self.cin) * in_pixels + 4 * self.cout * out_pixels
    }

    /// The conv of the ring's pushed frames (its history in front) into `out` (`cout × h × w`
    /// per pushed frame); with `residual`, added to what `out` holds.
    fn run_ring(
        &self,
        be: &CudaBackend,
        ring: &Ring,
        (h, w): (usize, usize),
        upsample: bool,
        residual: bool,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), GpuWanError> {
        let (hist, frames) = ring.frames();
        let g = ConvGeometry {
            frames,
            hist,
            cin: self.cin,
            cout: self.cout,
            h,
            w,
            kt: self.kt,
            ks: self.ks,
            upsample,
        };
        be.causal_conv3d_bf16(&ring.view(), &self.weight, &self.bias, g, residual, out)?;
        Ok(())
    }

    /// The conv of `pre(x)` over x's frames `first..` (as if those were the whole video: causal
    /// zeros before `first`), into `out` (`cout` channels, twice x's size with `upsample`); with
    /// `residual`, added to what `out` holds. Chunked: x is packed a chunk at a time.
    #[allow(clippy::too_many_arguments)]
    fn forward_into(
        &self,
        be: &CudaBackend,
        x: &GpuVideo,
        first: usize,
        pre: Pre<'_>,
        upsample: bool,
        residual: bool,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<(), GpuWanError> {
        let frames = x.frames - first;
        let up = upsample as usize;
        let (h, w) = (x.height << up, x.width << up);
        let (in_frame, out_frame) = (x.frame_len(), self.cout * h * w);
        let chunk = chunk_frames(self.frame_bytes(x.pixels(), h * w)).min(frames.max(1));
        let mut ring = Ring::new(be, x.channels, x.pixels(), chunk + self.kt - 1)?;
        for t0 in (0..frames).step_by(chunk) {
            let t1 = (t0 + chunk).min(frames);
            let src = x.data.slice((first + t0) * in_frame..(first + t1) * in_frame);
            ring.push(be, &src, x.channels, x.pixels(), pre)?;
            let mut dst = out.slice_mut(t0 * out_frame..t1 * out_frame);
            self.run_ring(be, &ring, (h, w), upsample, residual, &mut dst)?;
            ring.keep_last(be, t1.min(self.kt - 1))?;
        }
        Ok(())
    }

    /// `pre(x)` → a new video of `cout` channels (twice x's size with `upsample`). x is packed
    /// whole and freed before the output is allocated: the peak is the bf16 input plus the output
    /// (what the upsamplers need: their input is a quarter of their output's pixels).
    fn forward_consuming(
        &self,
        be: &CudaBackend,
        x: GpuVideo,
        pre: Pre<'_>,
        upsample: bool,
    ) -> Result<GpuVideo, GpuWanError> {
        // Never called with an empty video (windows hold ≥ 1 latent; `upsample3d` skips an empty
        // `time_conv`), so no allocation is of zero bytes.
        debug_assert!(x.frames * x.pixels() > 0);
        let mut ring = Ring::new(be, x.channels, x.pixels(), x.frames)?;
        ring.push(be, &x.data.slice(..), x.channels, x.pixels(), pre)?;
        let (frames, up) = (x.frames, upsample as usize);
        let (h, w) = (x.height << up, x.width << up);
        drop(x);
        let mut data = be.stream().alloc_zeros::<f32>(frames * self.cout * h * w)?;
        self.run_ring(be, &ring, (h, w), upsample, false, &mut data.slice_mut(..))?;
        Ok(GpuVideo {
            frames,
            channels: self.cout,
            height: h,
            width: w,
            data,
        })
    }
}

/// `WanRMS_norm`'s γ on the device (applied by the pack kernel of the conv that follows).
struct GpuRmsNorm {
    gamma: CudaSlice<f32>,
}

impl GpuRmsNorm {
    fn load(be: &CudaBackend, f: &dyn VaeSource, prefix: &str, c: usize, video: bool) -> Result<Self, GpuWanError> {
        let shape: &[usize] = if video { &[c, 1, 1, 1] } else { &[c, 1, 1] };
        Ok(Self {
            gamma: be.upload(&f.get(&format!("{prefix}.gamma"), shape)?)?,
        })
    }
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
    fn load(be: &CudaBackend, f: &dyn VaeSource, prefix: &str, cin: usize, cout: usize) -> Result<Self, GpuWanError> {
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

    /// `shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))`, a chunk of frames at a time:
    /// chunk [t0, t1) packs x's frames once (conv1's ring keeps the two before t0), runs conv1 into
    /// f32 scratch, packs that into conv2's ring and adds conv2's output to the result's frames
    /// [t0, t1), which is x itself when there is no shortcut (x's frames t0.. are packed before
    /// they are overwritten; the earlier ones live on in the ring).
    fn forward(&self, be: &CudaBackend, mut x: GpuVideo) -> Result<GpuVideo, GpuWanError> {
        let (frames, cin, cout, hw) = (x.frames, x.channels, self.conv1.cout, x.pixels());
        let dims = (x.height, x.width);
        let per_frame = self.conv1.frame_bytes(hw, hw) + self.conv2.frame_bytes(hw, 0);
        let chunk = chunk_frames(per_frame).min(frames.max(1));
        let keep = self.conv1.kt - 1;
        let mut r1 = Ring::new(be, cin, hw, chunk + keep)?;
        let mut r2 = Ring::new(be, cout, hw, chunk + keep)?;
        let mut c1 = be.stream().alloc_zeros::<f32>(chunk * cout * hw)?;
        let mut shortcut = match &self.shortcut {
            Some(conv) => Some((
                conv,
                Ring::new(be, cin, hw, chunk)?,
                be.stream().alloc_zeros::<f32>(frames * cout * hw)?,
            )),
            None => None,
        };
        let (in_frame, out_frame) = (cin * hw, cout * hw);
        for t0 in (0..frames).step_by(chunk) {
            let t1 = (t0 + chunk).min(frames);
            {
                let src = x.data.slice(t0 * in_frame..t1 * in_frame);
                r1.push(be, &src, cin, hw, Pre::NormSilu(&self.norm1))?;
                if let Some((conv, ring, out)) = &mut shortcut {
                    ring.push(be, &src, cin, hw, Pre::Plain)?;
                    conv.run_ring(
                        be,
                        ring,
                        dims,
                        false,
                        false,
                        &mut out.slice_mut(t0 * out_frame..t1 * out_frame),
                    )?;
                    ring.keep_last(be, 0)?;
                }
            }
            let n = (t1 - t0) * out_frame;
            self.conv1
                .run_ring(be, &r1, dims, false, false, &mut c1.slice_mut(..n))?;
            r2.push(be, &c1.slice(..n), cout, hw, Pre::NormSilu(&self.norm2))?;
            let target = match &mut shortcut {
                Some((_, _, out)) => out,
                None => &mut x.data,
            };
            self.conv2.run_ring(
                be,
                &r2,
                dims,
                false,
                true,
                &mut target.slice_mut(t0 * out_frame..t1 * out_frame),
            )?;
            r1.keep_last(be, t1.min(keep))?;
            r2.keep_last(be, t1.min(keep))?;
        }
        Ok(match shortcut {
            Some((_, _, data)) => GpuVideo {
                channels: cout,
                data,
                ..x
            },
            None => x,
        })
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
    fn load(be: &CudaBackend, f: &dyn VaeSource, prefix: &str, c: usize) -> Result<Self, GpuWanError> {
        Ok(Self {
            norm: GpuRmsNorm::load(be, f, &format!("{prefix}.norm"), c, false)?,
            to_qkv: GpuConv::conv2d(be, f, &format!("{prefix}.to_qkv"), 3 * c, c, 1)?,
            proj: GpuConv::conv2d(be, f, &format!("{prefix}.proj"), c, c, 1)?,
            channels: c,
        })
    }

    fn forward(&self, be: &CudaBackend, mut x: GpuVideo) -> Result<GpuVideo, GpuWanError> {
        let (c, p) = (self.channels, x.pixels());
        let mut qkv = be.stream().alloc_zeros::<f32>(x.frames * 3 * c * p)?;
        self.to_qkv
            .forward_into(be, &x, 0, Pre::Norm(&self.norm), false, false, &mut qkv.slice_mut(..))?;
        let scale = (1.0 / (c as f64).sqrt()) as f32;
        let stream = be.stream();
        let mut o = stream.alloc_zeros::<f32>(x.frames * c * p)?;
        let mut scores = stream.alloc_zeros::<f32>(p * p)?;
        let mut denom = stream.alloc_zeros::<f32>(p)?;
        for t in 0..x.frames {
            be.vae_frame_attention(&qkv, t, c, p, scale, &mut scores, &mut denom, &mut o)?;
        }
        drop((qkv, scores, denom));
        let o = GpuVideo {
            frames: x.frames,
            channels: c,
            height: x.height,
            width: x.width,
            data: o,
        };
        // x += proj(o), the add fused into the conv's epilogue.
        self.proj
            .forward_into(be, &o, 0, Pre::Plain, false, true, &mut x.data.slice_mut(..))?;
        Ok(x)
    }
}

/// `WanResample` in its decoder modes, as `vae::blocks::Resample`.
struct GpuResample {
    time_conv: Option<GpuConv>,
    conv: GpuConv,
}

impl GpuResample {
    fn load(be: &CudaBackend, f: &dyn VaeSource, prefix: &str, c: usize, mode: Upsample) -> Result<Self, GpuWanError> {
        Ok(Self {
            time_conv: match mode {
                Upsample::SpaceTime => Some(GpuConv::conv3d(be, f, &format!("{prefix}.time_conv"), 2 * c, c, 3, 1)?),
                Upsample::Spatial => None,
            },
            conv: GpuConv::conv2d(be, f, &format!("{prefix}.resample.1"), c / 2, c, 3)?,
        })
    }

    fn forward(&self, be: &CudaBackend, x: GpuVideo, clip_start: bool) -> Result<GpuVideo, GpuWanError> {
        let x = match &self.time_conv {
            Some(tc) => {
                let frame = x.frame_len();
                let first = if clip_start { x.frames.min(1) } else { 0 };
                let rest = x.frames - first;
                if rest == 0 {
                    x
                } else {
                    // Frame-major `[t, 2C, h, w]` is already the interleave `[2t, C, h, w]`: the
                    // time conv writes straight behind the frame it skips.
                    let stream = be.stream();
                    let mut data = stream.alloc_zeros::<f32>((first + 2 * rest) * frame)?;
                    if first > 0 {
                        stream.memcpy_dtod(&x.data.slice(..first * frame), &mut data.slice_mut(..first * frame))?;
                    }
                    tc.forward_into(
                        be,
                        &x,
                        first,
                        Pre::Plain,
                        false,
                        false,
                        &mut data.slice_mut(first * frame..),
                    )?;
                    GpuVideo {
                        frames: first + 2 * rest,
                        data,
                        ..x
                    }
                }
            }
            None => x,
        };
        // Nearest ×2 fused into the conv's gather.
        self.conv.forward_consuming(be, x, Pre::Plain, true)
    }
}

/// `WanUpBlock`: residual blocks, then an optional resampler.
struct GpuUpBlock {
    resnets: Vec<GpuResidualBlock>,
    upsampler: Option<GpuResample>,
}

impl GpuUpBlock {
    fn load(be: &CudaBackend, f: &dyn VaeSource, i: usize, plan: &UpBlockPlan) -> Result<Self, GpuWanError> {
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

    /// As `WanVaeDecoder::from_store`, uploading each tensor as it is read (conv weights packed
    /// to bf16, everything else in f32). Encoder-side
    /// tensors are ignored; any other unused tensor is an error.
    pub fn from_store(backend: Arc<CudaBackend>, cfg: VaeConfig, store: &WeightStore) -> Result<Self, GpuWanError> {
        cfg.validate()
            .map_err(|reason| WanError::config(store.source(), reason))?;
        let keys = VaeKeys::detect(store, cfg.num_res_blocks)?;
        let decoder = Self::build(backend, cfg, &VaeFetch { store, keys: &keys })?;
        store.check_all_used(|n| keys.is_encoder_side(n))?;
        Ok(decoder)
    }

    /// The decoder of `cfg` with seeded random weights (benchmarks at the real shapes without a
    /// checkpoint): the same loader and decode as a checkpoint's, only the values differ.
    pub fn random(backend: Arc<CudaBackend>, cfg: VaeConfig, seed: u64) -> Result<Self, GpuWanError> {
        cfg.validate()
            .map_err(|reason| WanError::Input(format!("VAE config: {reason}")))?;
        Self::build(backend, cfg, &RandomSource { seed })
    }

    /// Reads every decoder tensor from `f` (diffusers naming) and uploads it.
    fn build(backend: Arc<CudaBackend>, cfg: VaeConfig, f: &dyn VaeSource) -> Result<Self, GpuWanError> {
        let be: &CudaBackend = &backend;
        let (z, dims) = (cfg.z_dim, cfg.decoder_dims());
        let mid = "decoder.mid_block";
        let last_dim = *dims.last().unwrap_or(&0);
        let post_quant_conv = GpuConv::conv3d(be, f, "post_quant_conv", z, z, 1, 1)?;
        let conv_in = GpuConv::conv3d(be, f, "decoder.conv_in", dims[0], z, 3, 3)?;
        let mid = (
            GpuResidualBlock::load(be, f, &format!("{mid}.resnets.0"), dims[0], dims[0])?,
            GpuAttentionBlock::load(be, f, &format!("{mid}.attentions.0"), dims[0])?,
            GpuResidualBlock::load(be, f, &format!("{mid}.resnets.1"), dims[0], dims[0])?,
        );
        let up_blocks = cfg
            .up_blocks()
            .iter()
            .enumerate()
            .map(|(i, plan)| GpuUpBlock::load(be, f, i, plan))
            .collect::<Result<_, _>>()?;
        let norm_out = GpuRmsNorm::load(be, f, "decoder.norm_out", last_dim, true)?;
        let conv_out = GpuConv::conv3d(be, f, "decoder.conv_out", cfg.out_channels, last_dim, 3, 3)?;
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
        let x = self.post_quant_conv.forward_consuming(be, x, Pre::Plain, false)?;
        let x = self.conv_in.forward_consuming(be, x, Pre::Plain, false)?;
        let x = self.mid.0.forward(be, x)?;
        let x = self.mid.1.forward(be, x)?;
        let mut x = self.mid.2.forward(be, x)?;
        let clip_start = first_latent == 0;
        for block in &self.up_blocks {
            x = block.forward(be, x, clip_start)?;
        }
        let mut out = be
            .stream()
            .alloc_zeros::<f32>(x.frames * self.conv_out.cout * x.pixels())?;
        self.conv_out.forward_into(
            be,
            &x,
            0,
            Pre::NormSilu(&self.norm_out),
            false,
            false,
            &mut out.slice_mut(..),
        )?;
        be.clamp(&mut out, -1.0, 1.0)?;
        let data = be.download(&out)?;
        Ok(DecodedFrames {
            first_frame: self.cfg.first_output_frame(first_latent),
            frames: x.frames,
            channels: self.conv_out.cout,
            height: x.height,
            width: x.width,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{chunk_frames, RingFrames, CHUNK_BYTES};

    /// `GpuConv::forward_into`'s loop (and the residual block's, which has the same shape) on
    /// frame labels: before every conv the ring holds exactly input frames t0 − hist .. t1 with
    /// hist = min(t0, kt − 1), the history the conv's geometry is given.
    #[test]
    fn the_ring_holds_each_chunks_input_frames_with_their_history() {
        for frames in 1..12 {
            for chunk in [2, 3, 5, 16] {
                for kt in [1, 3] {
                    let chunk = chunk.min(frames); // as `chunk_frames(..).min(frames)`
                    let mut at = RingFrames::new(chunk + kt - 1);
                    let mut slots: Vec<Option<usize>> = vec![None; chunk + kt - 1];
                    for t0 in (0..frames).step_by(chunk) {
                        let t1 = (t0 + chunk).min(frames);
                        let written = at.push(t1 - t0);
                        for (slot, frame) in written.zip(t0..t1) {
                            slots[slot] = Some(frame);
                        }
                        let hist = t0.min(kt - 1);
                        assert_eq!(
                            (at.hist, at.len - at.hist),
                            (hist, t1 - t0),
                            "{frames} {chunk} {kt} {t0}"
                        );
                        let want: Vec<Option<usize>> = (t0 - hist..t1).map(Some).collect();
                        assert_eq!(
                            slots[..at.len],
                            want[..],
                            "frames {frames} chunk {chunk} kt {kt} t0 {t0}"
                        );
                        for (src, dst) in at.keep_last(t1.min(kt - 1)) {
                            assert!(src > dst);
                            slots[dst] = slots[src];
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn chunks_hold_at_least_the_history_and_fit_the_budget() {
        assert_eq!(chunk_frames(usize::MAX), 2);
        assert_eq!(chunk_frames(0), CHUNK_BYTES);
        // Up-block 3 at 480×832 (96 channels): conv1's bf16 input, f32 output and conv2's input.
        let per_frame = 2 * 96 * 399_360 + 4 * 96 * 399_360 + 2 * 96 * 399_360;
        assert_eq!(chunk_frames(per_frame), 3);
    }
}
