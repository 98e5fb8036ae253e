//! The VAE decoder's building blocks (spec §2.2) on frame-major activations [`Video`]: the
//! channel RMS norm, the residual block, the mid block's per-frame attention, and the up-blocks
//! with their `upsample2d` / `upsample3d` resamplers.
//!
//! Everything here uses the full-sequence form of spec §2.4 (each causal conv over all frames of
//! its level with two zero frames in front), which equals diffusers' chunked decode. Every op
//! other than the causal convs works frame by frame.

use super::config::{UpBlockPlan, Upsample};
use super::keys::VaeKeys;
use crate::wan::error::WanError;
use crate::wan::weights::WeightStore;
use longshot_kernels::cpu::nn_act::silu_in_place;
use longshot_kernels::cpu::nn_attention::{attention, AttentionShape};
use longshot_kernels::cpu::nn_conv::CausalConv3d;
use longshot_kernels::cpu::nn_linear::linear_new;
use longshot_kernels::cpu::nn_vae::{channel_rms_norm, upsample_nearest2x};
use rayon::prelude::*;

/// Activations, frame-major `[frames, channels, height, width]`: one frame is contiguous, which
/// is what per-frame ops and per-frame GEMMs want, and what a decoded clip is emitted as.
#[derive(Clone, Debug, PartialEq)]
pub struct Video {
    pub frames: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Video {
    pub fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// The same geometry with other channels and data.
    fn with(&self, channels: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), self.frames * channels * self.pixels());
        Self {
            channels,
            data,
            ..*self
        }
    }

    /// This video through `conv` (same frames and size, the conv's output channels).
    pub fn conv(&self, conv: &CausalConv3d) -> Self {
        let data = conv.forward(&self.data, self.frames, self.height, self.width);
        self.with(conv.out_channels(), data)
    }
}

/// Fetches diffusers-named tensors through the checkpoint's naming.
pub(crate) struct VaeFetch<'a> {
    pub store: &'a WeightStore,
    pub keys: &'a VaeKeys,
}

impl VaeFetch<'_> {
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, WanError> {
        self.store.get(&self.keys.stored_name(name), shape)
    }

    /// `{prefix}.weight [cout, cin, kt, ks, ks]` and `{prefix}.bias`.
    pub fn conv3d(
        &self,
        prefix: &str,
        cout: usize,
        cin: usize,
        kt: usize,
        ks: usize,
    ) -> Result<CausalConv3d, WanError> {
        let w = self.get(&format!("{prefix}.weight"), &[cout, cin, kt, ks, ks])?;
        let b = self.get(&format!("{prefix}.bias"), &[cout])?;
        Ok(CausalConv3d::new(&w, &b, cout, cin, kt, ks))
    }

    /// `{prefix}.weight [cout, cin, ks, ks]` and `{prefix}.bias`, applied frame by frame.
    pub fn conv2d(&self, prefix: &str, cout: usize, cin: usize, ks: usize) -> Result<CausalConv3d, WanError> {
        let w = self.get(&format!("{prefix}.weight"), &[cout, cin, ks, ks])?;
        let b = self.get(&format!("{prefix}.bias"), &[cout])?;
        Ok(CausalConv3d::conv2d(&w, &b, cout, cin, ks))
    }

    /// `{prefix}.gamma`: `(C,1,1,1)` in residual blocks and the head, `(C,1,1)` in attention.
    pub fn norm(&self, prefix: &str, channels: usize, video: bool) -> Result<RmsNorm, WanError> {
        let shape: &[usize] = if video { &[channels, 1, 1, 1] } else { &[channels, 1, 1] };
        Ok(RmsNorm {
            gamma: self.get(&format!("{prefix}.gamma"), shape)?,
        })
    }
}

/// `WanRMS_norm`: every pixel's channel vector scaled to norm √C, times γ.
#[derive(Clone, Debug)]
pub(crate) struct RmsNorm {
    gamma: Vec<f32>,
}

impl RmsNorm {
    pub fn apply(&self, x: &mut Video) {
        let (c, p) = (x.channels, x.pixels());
        channel_rms_norm(&mut x.data, c, p, &self.gamma);
    }
}

/// `norm → SiLU` in place (the pre-activation of every conv after the first).
fn norm_silu(norm: &RmsNorm, x: &mut Video) {
    norm.apply(x);
    silu_in_place(&mut x.data);
}

/// `WanResidualBlock`: `conv2(SiLU(norm2(conv1(SiLU(norm1(x)))))) + shortcut(x)`.
#[derive(Clone, Debug)]
pub(crate) struct ResidualBlock {
    norm1: RmsNorm,
    conv1: CausalConv3d,
    norm2: RmsNorm,
    conv2: CausalConv3d,
    /// A 1×1×1 conv when the widths differ, else the identity.
    shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    pub fn load(f: &VaeFetch<'_>, prefix: &str, cin: usize, cout: usize) -> Result<Self, WanError> {
        Ok(Self {
            norm1: f.norm(&format!("{prefix}.norm1"), cin, true)?,
            conv1: f.conv3d(&format!("{prefix}.conv1"), cout, cin, 3, 3)?,
            norm2: f.norm(&format!("{prefix}.norm2"), cout, true)?,
            conv2: f.conv3d(&format!("{prefix}.conv2"), cout, cout, 3, 3)?,
            shortcut: if cin != cout {
                Some(f.conv3d(&format!("{prefix}.conv_shortcut"), cout, cin, 1, 1)?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: Video) -> Video {
        let skip = match &self.shortcut {
            Some(conv) => x.conv(conv),
            None => x.clone(),
        };
        let mut h = x;
        norm_silu(&self.norm1, &mut h);
        let mut h = h.conv(&self.conv1);
        norm_silu(&self.norm2, &mut h);
        let mut h = h.conv(&self.conv2);
        for (v, s) in h.data.iter_mut().zip(&skip.data) {
            *v += s;
        }
        h
    }
}

/// `WanAttentionBlock`: single-head self-attention over the pixels of each frame separately,
/// `x + proj(softmax(q·kᵀ/√C)·v)` with q, k, v from a 1×1 conv of the RMS-normed frame.
#[derive(Clone, Debug)]
pub(crate) struct AttentionBlock {
    norm: RmsNorm,
    /// `to_qkv` split into its q, k, v rows: `[C, C]` weights (a 1×1 conv is a Linear per pixel).
    qkv: [(Vec<f32>, Vec<f32>); 3],
    proj: (Vec<f32>, Vec<f32>),
    channels: usize,
}

impl AttentionBlock {
    pub fn load(f: &VaeFetch<'_>, prefix: &str, c: usize) -> Result<Self, WanError> {
        let w = f.get(&format!("{prefix}.to_qkv.weight"), &[3 * c, c, 1, 1])?;
        let b = f.get(&format!("{prefix}.to_qkv.bias"), &[3 * c])?;
        let part = |i: usize| (w[i * c * c..(i + 1) * c * c].to_vec(), b[i * c..(i + 1) * c].to_vec());
        Ok(Self {
            norm: f.norm(&format!("{prefix}.norm"), c, false)?,
            qkv: [part(0), part(1), part(2)],
            proj: (
                f.get(&format!("{prefix}.proj.weight"), &[c, c, 1, 1])?,
                f.get(&format!("{prefix}.proj.bias"), &[c])?,
            ),
            channels: c,
        })
    }

    pub fn forward(&self, x: Video) -> Video {
        let (c, p) = (self.channels, x.pixels());
        let mut normed = x.clone();
        self.norm.apply(&mut normed);
        let scale = (1.0 / (c as f64).sqrt()) as f32;
        let mut out = x;
        out.data
            .par_chunks_mut(c * p)
            .zip(normed.data.par_chunks(c * p))
            .for_each(|(frame, n)| {
                // Pixels become tokens: [C, P] → [P, C].
                let tokens = transpose(n, c, p);
                let [q, k, v] = [0, 1, 2].map(|i| linear_new(&tokens, p, c, &self.qkv[i].0, Some(&self.qkv[i].1), c));
                let mut o = vec![0.0f32; p * c];
                let shape = AttentionShape {
                    q_tokens: p,
                    kv_tokens: p,
                    heads: 1,
                    head_dim: c,
                };
                attention(&q, &k, &v, shape, scale, &mut o);
                let y = linear_new(&o, p, c, &self.proj.0, Some(&self.proj.1), c);
                for (ch, row) in frame.chunks_exact_mut(p).enumerate() {
                    for (px, v) in row.iter_mut().enumerate() {
                        *v += y[px * c + ch];
                    }
                }
            });
        out
    }
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = x[r * cols + c];
        }
    }
    t
}

/// `WanResample` in its decoder modes.
#[derive(Clone, Debug)]
pub(crate) struct Resample {
    /// `time_conv` (`C → 2C`, kernel (3,1,1)) for `upsample3d`.
    time_conv: Option<CausalConv3d>,
    /// `resample.1`: 3×3 conv `C → C/2` after the nearest ×2 upsample.
    conv: CausalConv3d,
}

impl Resample {
    pub fn load(f: &VaeFetch<'_>, prefix: &str, c: usize, mode: Upsample) -> Result<Self, WanError> {
        Ok(Self {
            time_conv: match mode {
                Upsample::SpaceTime => Some(f.conv3d(&format!("{prefix}.time_conv"), 2 * c, c, 3, 1)?),
                Upsample::Spatial => None,
            },
            conv: f.conv2d(&format!("{prefix}.resample.1"), c / 2, c, 3)?,
        })
    }

    /// `clip_start`: frame 0 of `x` is the clip's first frame at this level, which `upsample3d`
    /// passes through alone (diffusers' first chunk); `time_conv` then runs on frames 1.. only.
    /// In a shard that starts later every frame is doubled.
    pub fn forward(&self, x: Video, clip_start: bool) -> Video {
        let x = match &self.time_conv {
            Some(tc) => {
                let frame = x.channels * x.pixels();
                let first = if clip_start { x.frames.min(1) } else { 0 };
                let rest = x.frames - first;
                let doubled = tc.forward(&x.data[first * frame..], rest, x.height, x.width);
                // Frame-major `[t, 2C, h, w]` is already the interleave `[2t, C, h, w]`: frame
                // 2j takes channels 0..C of time j and frame 2j+1 channels C..2C (spec §2.4).
                let mut data = x.data[..first * frame].to_vec();
                data.extend_from_slice(&doubled);
                Video {
                    frames: first + 2 * rest,
                    data,
                    ..x
                }
            }
            None => x,
        };
        let up = upsample_nearest2x(&x.data, x.frames * x.channels, x.height, x.width);
        let data = self.conv.forward(&up, x.frames, 2 * x.height, 2 * x.width);
        Video {
            frames: x.frames,
            channels: self.conv.out_channels(),
            height: 2 * x.height,
            width: 2 * x.width,
            data,
        }
    }
}

/// `WanUpBlock`: residual blocks, then an optional resampler.
#[derive(Clone, Debug)]
pub(crate) struct UpBlock {
    resnets: Vec<ResidualBlock>,
    upsampler: Option<Resample>,
}

impl UpBlock {
    pub fn load(f: &VaeFetch<'_>, i: usize, plan: &UpBlockPlan) -> Result<Self, WanError> {
        let resnets = (0..plan.resnets)
            .map(|j| {
                let cin = if j == 0 { plan.in_dim } else { plan.out_dim };
                ResidualBlock::load(f, &format!("decoder.up_blocks.{i}.resnets.{j}"), cin, plan.out_dim)
            })
            .collect::<Result<_, _>>()?;
        let upsampler = match plan.upsample {
            Some(mode) => Some(Resample::load(
                f,
                &format!("decoder.up_blocks.{i}.upsamplers.0"),
                plan.out_dim,
                mode,
            )?),
            None => None,
        };
        Ok(Self { resnets, upsampler })
    }

    pub fn forward(&self, mut x: Video, clip_start: bool) -> Video {
        for r in &self.resnets {
            x = r.forward(x);
        }
        match &self.upsampler {
            Some(u) => u.forward(x, clip_start),
            None => x,
        }
    }
}
