//! The VAE's `config.json` (diffusers' `AutoencoderKLWan` fields, spec §2.1; the original repo's
//! `WanVAE_` argument names are accepted too) and what the decoder's structure follows from it:
//! channel widths, up-blocks, frame counts, and the warm-up halo of a sharded decode.

use crate::wan::error::WanError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Latent frames of warm-up a Wan2.1 VAE decode needs in front of a shard to reproduce the
/// sequential decode bit for bit: [`VaeConfig::decode_halo`] of the Wan2.1 config (see there).
pub const WAN21_DECODE_HALO: usize = 38;

/// `AutoencoderKLWan`'s config (diffusers field names and defaults: the Wan2.1 VAE).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    /// `dim` in the original repo's `WanVAE_(dim=96, ...)`.
    #[serde(alias = "dim")]
    pub base_dim: usize,
    /// Decoder width when it differs from the encoder's (`None`: `base_dim`).
    pub decoder_base_dim: Option<usize>,
    pub z_dim: usize,
    pub dim_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Must be empty: diffusers' Wan decoder has no attention outside its mid block.
    pub attn_scales: Vec<f64>,
    /// Per encoder stage; the decoder upsamples in time where the reversed list is true.
    pub temperal_downsample: Vec<bool>,
    /// Inference ignores dropout; kept so configs round-trip.
    pub dropout: f64,
    pub latents_mean: Vec<f64>,
    pub latents_std: Vec<f64>,
    /// Wan2.2's residual VAE; not supported (must be false).
    pub is_residual: bool,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Wan2.2's patchified VAE; not supported (must be null).
    pub patch_size: Option<usize>,
    /// Informational in diffusers (the pipeline's shape arithmetic); the decoder derives its own.
    pub scale_factor_temporal: Option<usize>,
    pub scale_factor_spatial: Option<usize>,
}

const WAN21_LATENTS_MEAN: [f64; 16] = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517, -0.3632, -0.1922,
    -0.9497, 0.2503, -0.2921,
];
const WAN21_LATENTS_STD: [f64; 16] = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253,
    2.8251, 1.9160,
];

impl Default for VaeConfig {
    /// diffusers' constructor defaults, which are Wan2.1's VAE.
    fn default() -> Self {
        Self {
            base_dim: 96,
            decoder_base_dim: None,
            z_dim: 16,
            dim_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            attn_scales: Vec::new(),
            temperal_downsample: vec![false, true, true],
            dropout: 0.0,
            latents_mean: WAN21_LATENTS_MEAN.to_vec(),
            latents_std: WAN21_LATENTS_STD.to_vec(),
            is_residual: false,
            in_channels: 3,
            out_channels: 3,
            patch_size: None,
            scale_factor_temporal: Some(4),
            scale_factor_spatial: Some(8),
        }
    }
}

/// How an up-block ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsample {
    /// `upsample2d`: nearest ×2 in space, then a 3×3 conv to half the channels.
    Spatial,
    /// `upsample3d`: a causal 3-tap `time_conv` doubling the frames, then the spatial path.
    SpaceTime,
}

/// One decoder up-block: `resnets` residual blocks `in_dim → out_dim` (the first with a 1×1×1
/// shortcut when the widths differ), then an optional upsampler whose conv halves `out_dim`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpBlockPlan {
    pub in_dim: usize,
    pub out_dim: usize,
    pub resnets: usize,
    pub upsample: Option<Upsample>,
}

impl VaeConfig {
    /// Wan2.1's VAE (`Wan2.1_VAE.pth`, the `vae/` of every Wan2.1 diffusers repo).
    pub fn wan2_1() -> Self {
        Self::default()
    }

    /// The config of a VAE directory: `dir/config.json` (a diffusers `vae/`), or the Wan2.1
    /// architecture when there is none (the original `Wan2.1_VAE` checkpoint ships without one;
    /// a checkpoint of another shape then fails on its first tensor).
    pub fn for_dir(dir: &Path) -> Result<Self, WanError> {
        let config = dir.join("config.json");
        if config.exists() {
            Self::from_file(&config)
        } else {
            Ok(Self::wan2_1())
        }
    }

    /// Reads `path` and validates it.
    pub fn from_file(path: &Path) -> Result<Self, WanError> {
        let cfg: Self = crate::wan::error::read_json(path)?;
        cfg.validate().map_err(|reason| WanError::config(path, reason))?;
        Ok(cfg)
    }

    /// Checks what the decoder relies on; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.is_residual || self.patch_size.is_some() {
            return Err("is_residual / patch_size (the Wan2.2 VAE) are not supported".into());
        }
        if !self.attn_scales.is_empty() {
            return Err(format!("attn_scales {:?} must be empty", self.attn_scales));
        }
        if self.dim_mult.is_empty() || self.dim_mult.contains(&0) {
            return Err(format!("dim_mult {:?} must be non-empty and positive", self.dim_mult));
        }
        if self.temperal_downsample.len() + 1 != self.dim_mult.len() {
            return Err(format!(
                "temperal_downsample has {} entries; dim_mult {:?} needs {}",
                self.temperal_downsample.len(),
                self.dim_mult,
                self.dim_mult.len() - 1
            ));
        }
        if self.decoder_dim() == 0 || self.z_dim == 0 || self.out_channels == 0 {
            return Err("base_dim, z_dim and out_channels must be positive".into());
        }
        if let Some(b) = self.up_blocks().iter().find(|b| b.in_dim == 0) {
            return Err(format!(
                "an up-block would start from 0 channels ({b:?}); base_dim is too small"
            ));
        }
        if self.latents_mean.len() != self.z_dim || self.latents_std.len() != self.z_dim {
            return Err(format!(
                "latents_mean / latents_std have {} / {} values; z_dim is {}",
                self.latents_mean.len(),
                self.latents_std.len(),
                self.z_dim
            ));
        }
        if self.latents_std.iter().any(|s| !s.is_finite() || *s == 0.0)
            || self.latents_mean.iter().any(|m| !m.is_finite())
        {
            return Err("latents_mean must be finite and latents_std finite and non-zero".into());
        }
        Ok(())
    }

    /// The decoder's base width.
    pub fn decoder_dim(&self) -> usize {
        self.decoder_base_dim.unwrap_or(self.base_dim)
    }

    /// `dims = dim·[dim_mult[-1]] + dim·reversed(dim_mult)`: mid-block width first.
    pub fn decoder_dims(&self) -> Vec<usize> {
        let d = self.decoder_dim();
        let last = self.dim_mult.last().copied().unwrap_or(1);
        std::iter::once(last)
            .chain(self.dim_mult.iter().rev().copied())
            .map(|m| d * m)
            .collect()
    }

    /// The up-blocks in order. Wan2.1's quirk (diffusers `WanDecoder3d`): every block after the
    /// first starts from `dims[i] / 2`, the previous upsampler's output width.
    pub fn up_blocks(&self) -> Vec<UpBlockPlan> {
        let dims = self.decoder_dims();
        let last = self.dim_mult.len() - 1;
        (0..self.dim_mult.len())
            .map(|i| UpBlockPlan {
                in_dim: if i == 0 { dims[0] } else { dims[i] / 2 },
                out_dim: dims[i + 1],
                resnets: self.num_res_blocks + 1,
                upsample: (i != last).then(|| {
                    // `temperal_upsample = temperal_downsample[::-1]`.
                    if self.temperal_downsample[last - 1 - i] {
                        Upsample::SpaceTime
                    } else {
                        Upsample::Spatial
                    }
                }),
            })
            .collect()
    }

    /// Output frames per latent frame after the first (Wan2.1: 4).
    pub fn temporal_factor(&self) -> usize {
        1 << self.temperal_downsample.iter().filter(|t| **t).count()
    }

    /// Output pixels per latent cell along each axis (Wan2.1: 8).
    pub fn spatial_factor(&self) -> usize {
        1 << (self.dim_mult.len() - 1)
    }

    /// Output frames decoded from latent frames `0..latent`: `1 + R·(latent − 1)`, 0 for none.
    pub fn output_frames(&self, latent: usize) -> usize {
        if latent == 0 {
            0
        } else {
            1 + self.temporal_factor() * (latent - 1)
        }
    }

    /// Global index of the first output frame of latent frame `l` (latent 0 has one frame, every
    /// later one `R`).
    pub fn first_output_frame(&self, l: usize) -> usize {
        self.output_frames(l)
    }

    /// The smallest number `h` of warm-up latent frames such that decoding latents `[s−h, L)`
    /// (the sequence starting with zeros before `s−h`) gives, for latents `s..`, exactly the bits of
    /// the sequential decode of `[0, L)`.
    ///
    /// Why it is finite: the only temporal mixing is the causal 3-tap convolutions (every other op
    /// works per frame), each reading the two previous frames of its level. A shard that starts at
    /// latent `a > 0` sees zeros before `a`, so after `k` such convs at one level the first
    /// `2k` frames of that level differ, and every temporal upsample doubles the count. Tracing
    /// the first frame that is exact through the graph (level frame `i ≥ 1` becomes frames
    /// `2i−1, 2i`) and rounding up to a whole latent frame gives `h`. For Wan2.1
    /// (`num_res_blocks` 2): 2·(1 + 4 + 6 + 1) latent frames at the latent rate, 2·(6 + 1) frames at
    /// twice the rate and 2·(6 + 6 + 1) at four times, i.e. 24 + 7 + 6.5 → 38 ([`WAN21_DECODE_HALO`]);
    /// diffusers' unit-test config (`num_res_blocks` 1) needs 30.
    pub fn decode_halo(&self) -> usize {
        // Level-0 convs: conv_in, and two per resnet in the mid block (2 resnets).
        let a = 1usize;
        let mut exact_from = a + 2 * (1 + 2 * 2);
        for block in self.up_blocks() {
            exact_from += 2 * 2 * block.resnets;
            if block.upsample == Some(Upsample::SpaceTime) {
                exact_from += 2; // time_conv
                exact_from = 2 * exact_from - 1;
            }
        }
        exact_from += 2; // conv_out
        let r = self.temporal_factor();
        // The first latent s ≥ 1 whose first output frame 1 + r·(s − 1) is exact.
        let s = (exact_from - 1).div_ceil(r) + 1;
        s - a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_test() -> VaeConfig {
        VaeConfig {
            base_dim: 3,
            dim_mult: vec![1, 1, 1, 1],
            num_res_blocks: 1,
            ..VaeConfig::default()
        }
    }

    #[test]
    fn wan21_structure_matches_the_spec_table() {
        let c = VaeConfig::wan2_1();
        c.validate().expect("valid");
        assert_eq!(c.decoder_dims(), vec![384, 384, 384, 192, 96]);
        let b = c.up_blocks();
        let widths: Vec<_> = b.iter().map(|b| (b.in_dim, b.out_dim, b.upsample)).collect();
        assert_eq!(
            widths,
            vec![
                (384, 384, Some(Upsample::SpaceTime)),
                (192, 384, Some(Upsample::SpaceTime)),
                (192, 192, Some(Upsample::Spatial)),
                (96, 96, None),
            ]
        );
        assert_eq!((c.temporal_factor(), c.spatial_factor()), (4, 8));
        assert_eq!(c.output_frames(21), 81);
        assert_eq!(c.decode_halo(), WAN21_DECODE_HALO);
    }

    #[test]
    fn unit_test_config_has_the_three_to_one_quirk_and_halo_30() {
        let c = unit_test();
        c.validate().expect("valid");
        let ins: Vec<_> = c.up_blocks().iter().map(|b| (b.in_dim, b.out_dim)).collect();
        assert_eq!(ins, vec![(3, 3), (1, 3), (1, 3), (1, 3)]);
        assert_eq!(c.decode_halo(), 30);
    }

    #[test]
    fn original_argument_names_parse_and_bad_configs_are_rejected() {
        let c: VaeConfig =
            serde_json::from_str(r#"{"dim": 3, "dim_mult": [1,1,1,1], "num_res_blocks": 1}"#).expect("json");
        assert_eq!(c, unit_test());
        let bad = [
            VaeConfig {
                is_residual: true,
                ..unit_test()
            },
            VaeConfig {
                temperal_downsample: vec![true],
                ..unit_test()
            },
            VaeConfig {
                base_dim: 1,
                ..unit_test()
            },
            VaeConfig {
                latents_std: vec![1.0; 3],
                ..unit_test()
            },
            VaeConfig {
                attn_scales: vec![0.5],
                ..unit_test()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
