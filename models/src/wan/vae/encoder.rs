//! The encoder half of diffusers' `AutoencoderKLWan` on the CPU in f32: `vae.encode(x)`'s
//! posterior mean (`latent_dist.mean`, not normalised), for video-to-video and image-to-video.
//!
//! Graph: `conv_in` → down path (per stage `num_res_blocks` residual blocks, then a resampler on
//! every stage but the last: `downsample2d` = zero pad right/bottom + 3×3 conv with stride 2, and
//! `downsample3d` = the same followed by `time_conv`, a (3,1,1) conv with stride 2 in time) → mid
//! block (resnet, per-frame attention, resnet) → RMS norm → SiLU → `conv_out` (2·z_dim channels)
//! → `quant_conv` → the first z_dim channels.
//!
//! Full-sequence form: diffusers encodes frame 0 alone, then chunks of 4 frames, carrying the
//! last two frames of each causal conv's input to the next chunk. Every causal conv then sees the
//! whole sequence with two zero frames in front, as here. The chunking shows in `time_conv`
//! only: the first chunk skips it (frame 0 passes through), and each later chunk runs it on the
//! previous chunk's last frame followed by its own, so output frame `1 + j` reads input frames
//! `2j, 2j+1, 2j+2`: causal output frame `2j + 2` ([`CausalConv3d::forward_frames`]). Frames after
//! the last whole chunk (`F − 1` not a multiple of 4) are dropped, as diffusers drops them.
//!
//! Sharding: the encoder is causal in time with a finite reach ([`WanVaeEncoder::encode_halo`]
//! latents: [`WAN21_ENCODE_HALO`] for Wan2.1). A worker owning latents `[s, e)` encodes the input
//! frames of latents `[s − halo, e)` with [`WanVaeEncoder::encode_range`] and keeps latents `s..`,
//! bit-identical to the sequential encode's, for the same reason as the sharded decode: every conv
//! computes each output frame as one GEMM of a fixed shape from its own input frames.

use super::blocks::{AttentionBlock, ResidualBlock, VaeFetch, Video};
use super::config::VaeConfig;
use super::keys::VaeKeys;
use crate::wan::error::WanError;
use crate::wan::layout::{channel_major_to_frame_major, frame_major_to_channel_major};
use crate::wan::weights::WeightStore;
use longshot_kernels::cpu::nn_act::silu_in_place;
use longshot_kernels::cpu::nn_conv::CausalConv3d;
use longshot_kernels::cpu::nn_vae::channel_rms_norm;
use std::path::Path;

/// Latents of warm-up a Wan2.1 VAE encode needs in front of a shard to reproduce the sequential
/// encode bit for bit: [`WanVaeEncoder::encode_halo`] of the Wan2.1 config.
pub const WAN21_ENCODE_HALO: usize = 28;

/// A loaded Wan VAE encoder.
#[derive(Clone, Debug)]
pub struct WanVaeEncoder {
    cfg: VaeConfig,
    conv_in: CausalConv3d,
    down: Vec<DownLayer>,
    mid: (ResidualBlock, AttentionBlock, ResidualBlock),
    norm_out_gamma: Vec<f32>,
    conv_out: CausalConv3d,
    quant_conv: CausalConv3d,
}

/// One entry of diffusers' flat `encoder.down_blocks` list.
#[derive(Clone, Debug)]
enum DownLayer {
    Residual(ResidualBlock),
    Downsample(Downsample),
}

/// `WanResample` in its encoder modes.
#[derive(Clone, Debug)]
struct Downsample {
    /// `resample.1`: the 3×3 stride-2 conv after the right/bottom zero pad.
    conv: CausalConv3d,
    /// `time_conv` of `downsample3d`.
    time_conv: Option<CausalConv3d>,
}

impl Downsample {
    /// `x` holds frames `first, first + 1, …` of its level (global indices); returns the next
    /// level's frames and the global index of the first. At the clip's start (`first` 0) frame 0
    /// passes through; global output `1 + j` reads input frames `2j, 2j+1, 2j+2` and is computed
    /// only when all three are in `x` (module doc).
    fn forward(&self, x: Video, first: usize) -> (Video, usize) {
        let (data, (height, width)) = self.conv.forward_down2(&x.data, x.frames, x.height, x.width);
        let y = Video {
            channels: self.conv.out_channels(),
            height,
            width,
            data,
            ..x
        };
        let Some(tc) = &self.time_conv else { return (y, first) };
        let (j0, end) = (first.div_ceil(2), first + y.frames);
        // Causal output frame `2j + 2 − first` (local) reads local frames `2j − first ..= 2j + 2 − first`.
        let outputs: Vec<usize> = (j0..)
            .map(|j| 2 * j + 2 - first)
            .take_while(|&t| first + t < end)
            .collect();
        let frame = y.channels * y.pixels();
        let mut data = match first {
            0 => y.data[..frame.min(y.data.len())].to_vec(),
            _ => Vec::new(),
        };
        let passed = data.len() / frame.max(1);
        data.extend(tc.forward_frames(&y.data, y.frames, y.height, y.width, &outputs));
        let next_first = if first == 0 { 0 } else { 1 + j0 };
        let video = Video {
            frames: passed + outputs.len(),
            data,
            ..y
        };
        (video, next_first)
    }
}

/// [`WanVaeEncoder::encode_halo`] of `cfg`.
pub fn encode_halo(cfg: &VaeConfig) -> usize {
    // The trace depends on where the shard starts only through rounding; take the worst case
    // over a whole period of it.
    (1..=2 * cfg.temporal_factor())
        .map(|a| first_exact_latent(cfg, first_frame_of_latent(cfg, a)) - a)
        .max()
        .unwrap_or(0)
}

fn first_frame_of_latent(cfg: &VaeConfig, l: usize) -> usize {
    match l {
        0 => 0,
        l => cfg.temporal_factor() * (l - 1) + 1,
    }
}

fn first_exact_latent(cfg: &VaeConfig, first_frame: usize) -> usize {
    if first_frame == 0 {
        return 0;
    }
    // Each causal 3-tap conv moves the first exact frame of its level on by 2 (a residual block
    // has two); each strided time_conv maps level frame `e` to `1 + ⌈e/2⌉` (output `1 + j` reads
    // `2j..=2j+2`).
    let mut exact = first_frame + 2; // conv_in
    let stages = cfg.dim_mult.len();
    for i in 0..stages {
        exact += 4 * cfg.num_res_blocks;
        if i + 1 != stages && cfg.temperal_downsample[i] {
            exact = 1 + exact.div_ceil(2);
        }
    }
    exact + 4 * 2 + 2 // the mid block's two residual blocks, then conv_out
}

/// The encoder's stage plan: `dims = base_dim·[1] + base_dim·dim_mult`, stage `i` from
/// `dims[i]` to `dims[i+1]`.
fn encoder_dims(cfg: &VaeConfig) -> Vec<usize> {
    std::iter::once(1)
        .chain(cfg.dim_mult.iter().copied())
        .map(|m| cfg.base_dim * m)
        .collect()
}

impl WanVaeEncoder {
    /// Loads `dir/config.json` and the weights in `dir` (a diffusers `vae/` directory, or the
    /// original `Wan2.1_VAE` weights as safetensors), like the decoder.
    pub fn load(dir: &Path) -> Result<Self, WanError> {
        let store = WeightStore::open(dir)?;
        Self::from_store(VaeConfig::for_dir(dir)?, &store)
    }

    /// Builds the encoder from `store`, whichever naming it uses; decoder-side tensors are
    /// ignored, any other tensor left unused is an error.
    pub fn from_store(cfg: VaeConfig, store: &WeightStore) -> Result<Self, WanError> {
        cfg.validate()
            .map_err(|reason| WanError::config(store.source(), reason))?;
        let keys = VaeKeys::detect(store, cfg.num_res_blocks)?;
        let f = VaeFetch { store, keys: &keys };
        let dims = encoder_dims(&cfg);
        let stages = cfg.dim_mult.len();
        let mut down = Vec::new();
        for i in 0..stages {
            let mut cin = dims[i];
            for _ in 0..cfg.num_res_blocks {
                let prefix = format!("encoder.down_blocks.{}", down.len());
                down.push(DownLayer::Residual(ResidualBlock::load(&f, &prefix, cin, dims[i + 1])?));
                cin = dims[i + 1];
            }
            if i + 1 != stages {
                let prefix = format!("encoder.down_blocks.{}", down.len());
                let c = dims[i + 1];
                down.push(DownLayer::Downsample(Downsample {
                    conv: f.conv2d(&format!("{prefix}.resample.1"), c, c, 3)?,
                    time_conv: match cfg.temperal_downsample[i] {
                        true => Some(f.conv3d(&format!("{prefix}.time_conv"), c, c, 3, 1)?),
                        false => None,
                    },
                }));
            }
        }
        let last = dims[stages];
        let z2 = 2 * cfg.z_dim;
        let mid = "encoder.mid_block";
        let model = Self {
            conv_in: f.conv3d("encoder.conv_in", dims[0], cfg.in_channels, 3, 3)?,
            down,
            mid: (
                ResidualBlock::load(&f, &format!("{mid}.resnets.0"), last, last)?,
                AttentionBlock::load(&f, &format!("{mid}.attentions.0"), last)?,
                ResidualBlock::load(&f, &format!("{mid}.resnets.1"), last, last)?,
            ),
            norm_out_gamma: f.get("encoder.norm_out.gamma", &[last, 1, 1, 1])?,
            conv_out: f.conv3d("encoder.conv_out", z2, last, 3, 3)?,
            quant_conv: f.conv3d("quant_conv", z2, z2, 1, 1)?,
            cfg,
        };
        store.check_all_used(|n| keys.is_decoder_side(n))?;
        Ok(model)
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// Input frames the encoder uses of `frames` given: `1 + 4·⌊(frames − 1)/4⌋` (Wan2.1), as
    /// diffusers drops a trailing partial chunk.
    pub fn used_frames(&self, frames: usize) -> usize {
        let r = self.cfg.temporal_factor();
        if frames == 0 {
            0
        } else {
            1 + r * ((frames - 1) / r)
        }
    }

    /// The posterior mean of `x: [F, in_channels, H, W]` (frame-major, values in [−1, 1]):
    /// `[1 + ⌊(F−1)/R⌋, z_dim, H/8, W/8]` frame-major (Wan2.1: R = 4).
    pub fn encode_frames(&self, x: &[f32], dims: [usize; 4]) -> Result<Video, WanError> {
        self.check_video(x, dims)?;
        let used = self.used_frames(dims[0]);
        let frame = dims[1] * dims[2] * dims[3];
        Ok(self
            .encode_segment(&x[..used * frame], [used, dims[1], dims[2], dims[3]], 0)
            .0)
    }

    /// Latents of warm-up in front of a shard: a shard owning latents from `s` encodes the input
    /// frames from the first frame of latent `s − halo` (frame 0 when that is the clip's start)
    /// and gets latents `s..` bit-identical to the sequential encode. Wan2.1:
    /// [`WAN21_ENCODE_HALO`] latents (112 input frames).
    ///
    /// Why it is finite: as in the decode (`VaeConfig::decode_halo`), only the causal 3-tap convs
    /// and the strided `time_conv`s mix frames; tracing the first exact frame of each level
    /// through the graph ([`Self::first_exact_latent`]) gives it.
    pub fn encode_halo(&self) -> usize {
        encode_halo(&self.cfg)
    }

    /// The first input frame of latent `l` (latent 0 is frame 0, latent `l ≥ 1` frames
    /// `R(l−1)+1 ..= Rl`).
    pub fn first_frame_of_latent(&self, l: usize) -> usize {
        first_frame_of_latent(&self.cfg, l)
    }

    /// The first latent that an encode of input frames from `first_frame` on (zeros before it)
    /// computes exactly as the sequential encode does.
    pub fn first_exact_latent(&self, first_frame: usize) -> usize {
        first_exact_latent(&self.cfg, first_frame)
    }

    /// Encodes input frames `[first_frame, first_frame + F)` of a clip, `x: [F, C, H, W]`, and
    /// returns latents `[emit_from, last]` with the global index of the first, bit-identical to
    /// the sequential encode's. `first_frame` must be 0 or a latent's first frame; the segment
    /// must end at a latent's last frame; `emit_from` must be at least
    /// [`first_exact_latent`](Self::first_exact_latent)`(first_frame)`. A sharded encode gives
    /// each worker the frames from [`first_frame_of_latent`](Self::first_frame_of_latent)`(s −
    /// halo)` with `halo` = [`encode_halo`](Self::encode_halo).
    pub fn encode_range(
        &self,
        x: &[f32],
        dims: [usize; 4],
        first_frame: usize,
        emit_from: usize,
    ) -> Result<(Video, usize), WanError> {
        self.check_video(x, dims)?;
        let r = self.cfg.temporal_factor();
        let end = first_frame + dims[0];
        if (first_frame != 0 && first_frame % r != 1) || !(end - 1).is_multiple_of(r) {
            return Err(WanError::Input(format!(
                "frames [{first_frame}, {end}) do not start and end on whole latents (a segment starts at frame 0 \
                 or {r}k+1 and ends at frame {r}k)"
            )));
        }
        let exact = self.first_exact_latent(first_frame);
        if emit_from < exact {
            return Err(WanError::Input(format!(
                "latents from {emit_from} are not exact from frames starting at {first_frame}: the first exact \
                 latent is {exact}"
            )));
        }
        let (mut v, first) = self.encode_segment(x, dims, first_frame);
        let last = first + v.frames - 1;
        if emit_from > last {
            return Err(WanError::Input(format!(
                "emit_from {emit_from} is past the last latent ({last}) of frames [{first_frame}, {end})"
            )));
        }
        let len = v.channels * v.pixels();
        v.data.drain(..(emit_from - first) * len);
        v.frames -= emit_from - first;
        Ok((v, emit_from))
    }

    fn check_video(&self, x: &[f32], dims: [usize; 4]) -> Result<(), WanError> {
        let [f, c, h, w] = dims;
        let s = self.cfg.spatial_factor();
        if c != self.cfg.in_channels || f == 0 || h == 0 || w == 0 || !h.is_multiple_of(s) || !w.is_multiple_of(s) {
            return Err(WanError::Input(format!(
                "video {dims:?} ([F, C, H, W]) must have C = {} channels, at least one frame, and a height and \
                 width that are multiples of {s}",
                self.cfg.in_channels
            )));
        }
        if x.len() != f * c * h * w {
            return Err(WanError::Input(format!("video holds {} values, not {dims:?}", x.len())));
        }
        Ok(())
    }

    /// The graph on frames `first_frame..` of the clip (zeros before them); returns the latents
    /// it computes and the global index of the first.
    fn encode_segment(&self, x: &[f32], dims: [usize; 4], first_frame: usize) -> (Video, usize) {
        let [f, c, h, w] = dims;
        let x = Video {
            frames: f,
            channels: c,
            height: h,
            width: w,
            data: x.to_vec(),
        };
        let mut x = x.conv(&self.conv_in);
        let mut first = first_frame;
        for layer in &self.down {
            x = match layer {
                DownLayer::Residual(r) => r.forward(x),
                DownLayer::Downsample(d) => {
                    let (y, next) = d.forward(x, first);
                    first = next;
                    y
                }
            };
        }
        let x = self.mid.0.forward(x);
        let x = self.mid.1.forward(x);
        let mut x = self.mid.2.forward(x);
        let (channels, pixels) = (x.channels, x.pixels());
        channel_rms_norm(&mut x.data, channels, pixels, &self.norm_out_gamma);
        silu_in_place(&mut x.data);
        let moments = x.conv(&self.conv_out).conv(&self.quant_conv);
        // The mean is the first z_dim channels of every frame.
        let (z, frame) = (self.cfg.z_dim, moments.channels * pixels);
        let data = moments
            .data
            .chunks_exact(frame)
            .flat_map(|fr| fr[..z * pixels].iter().copied())
            .collect();
        let mean = Video {
            channels: z,
            data,
            ..moments
        };
        (mean, first)
    }

    /// The normalised latents of latent frames `range` of a clip of `height × width` frames,
    /// frame-major `[len, z_dim, h, w]`, bit-identical to the same frames of a whole-clip encode:
    /// the frames from the warm-up's first ([`Self::encode_halo`] latents before `range`) to
    /// `range`'s last are encoded, each filled by `fill(global frame, [3, H, W] in [−1, 1])` or
    /// left grey (zeros) where `fill` writes nothing.
    pub fn encode_latents(
        &self,
        range: std::ops::Range<usize>,
        height: usize,
        width: usize,
        mut fill: impl FnMut(usize, &mut [f32]) -> Result<(), WanError>,
    ) -> Result<Video, WanError> {
        if range.is_empty() {
            return Err(WanError::Input(format!("an empty latent range {range:?}")));
        }
        let r = self.cfg.temporal_factor();
        let first_frame = self.first_frame_of_latent(range.start.saturating_sub(self.encode_halo()));
        let end_frame = self.first_frame_of_latent(range.end - 1) + if range.end == 1 { 1 } else { r };
        let plane = 3 * height * width;
        let mut video = vec![0.0f32; (end_frame - first_frame) * plane];
        for (f, slot) in (first_frame..end_frame).zip(video.chunks_exact_mut(plane)) {
            fill(f, slot)?;
        }
        let dims = [end_frame - first_frame, 3, height, width];
        let (mut v, _) = self.encode_range(&video, dims, first_frame, range.start)?;
        let (t, pixels) = (v.frames, v.pixels());
        debug_assert_eq!(t, range.len());
        self.normalize(&mut v.data, t, pixels)?;
        Ok(v)
    }

    /// The pipelines' step after `vae.encode` (video-to-video, image-to-video), in place on
    /// `x: [outer, z_dim, inner]`: `(x − mean)·(1/std)` per channel in f32, with `1/std` an f32
    /// division, as WanVideoToVideoPipeline evaluates it.
    pub fn normalize(&self, x: &mut [f32], outer: usize, inner: usize) -> Result<(), WanError> {
        let z = self.cfg.z_dim;
        if x.len() != outer * z * inner {
            return Err(WanError::Input(format!(
                "latents hold {} values, not {outer}·{z}·{inner}",
                x.len()
            )));
        }
        let mean: Vec<f32> = self.cfg.latents_mean.iter().map(|&m| m as f32).collect();
        let inv_std: Vec<f32> = self.cfg.latents_std.iter().map(|&s| 1.0f32 / s as f32).collect();
        for (i, plane) in x.chunks_exact_mut(inner.max(1)).enumerate() {
            let (m, inv) = (mean[i % z], inv_std[i % z]);
            for v in plane {
                *v = (*v - m) * inv;
            }
        }
        Ok(())
    }

    /// diffusers' `vae.encode(x).latent_dist.mean`: `x` is `[B, C, F, H, W]`; the result is
    /// `[B, z_dim, 1 + ⌊(F−1)/R⌋, H/8, W/8]`, with its shape.
    pub fn encode(&self, x: &[f32], shape: [usize; 5]) -> Result<(Vec<f32>, [usize; 5]), WanError> {
        let [b, c, f, h, w] = shape;
        if x.len() != shape.iter().product::<usize>() || b == 0 {
            return Err(WanError::Input(format!(
                "video holds {} values, not {shape:?}",
                x.len()
            )));
        }
        let item = c * f * h * w;
        let mut out = Vec::new();
        let mut out_shape = [b, self.cfg.z_dim, 0, 0, 0];
        for i in 0..b {
            let frames = channel_major_to_frame_major(&x[i * item..(i + 1) * item], c, f, h * w);
            let m = self.encode_frames(&frames, [f, c, h, w])?;
            out_shape[2..].copy_from_slice(&[m.frames, m.height, m.width]);
            out.extend(frame_major_to_channel_major(&m.data, m.frames, m.channels, m.pixels()));
        }
        Ok((out, out_shape))
    }
}
