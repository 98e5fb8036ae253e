//! The image encoder of Wan2.1 image-to-video: transformers' `CLIPVisionModel` (ViT-H/14 in the
//! real checkpoints) on the CPU in f32, up to what `WanImageToVideoPipeline.encode_image` keeps:
//! the penultimate hidden states, `[1 + (image/patch)², hidden]` per image.
//!
//! Graph: patch embedding (a `patch×patch` conv with stride `patch`, no bias) with the class
//! token in front, plus the position embedding → `pre_layrnorm` → encoder layers (pre-norm:
//! `x += out_proj(attn(LN1(x)))`, `x += fc2(act(fc1(LN2(x))))`). The penultimate hidden state is
//! the output of all layers but the last, so the last layer and `post_layernorm` are not run
//! (their tensors are accepted and left unread).
//!
//! Inputs are `pixel_values` already preprocessed (`CLIPImageProcessor`: resize, centre crop,
//! normalise); this module does not resize.

use crate::wan::error::{read_json, WanError};
use crate::wan::transformer::layers::Linear;
use crate::wan::weights::WeightStore;
use longshot_kernels::cpu::nn_act::{gelu_erf_in_place, quick_gelu_in_place};
use longshot_kernels::cpu::nn_attention::{attention, AttentionShape};
use longshot_kernels::cpu::nn_norm::layer_norm;
use serde::Deserialize;
use std::path::Path;

/// `CLIPVisionConfig`'s fields this port reads (transformers' names and defaults).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    /// transformers' defaults (ViT-B/32); real checkpoints state every field.
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_attention_heads: 12,
            num_hidden_layers: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipVisionConfig {
    /// `dir/config.json` (an `image_encoder/` directory), checked.
    pub fn load(dir: &Path) -> Result<Self, WanError> {
        let path = dir.join("config.json");
        let cfg: ClipVisionConfig = read_json(&path)?;
        cfg.validate().map_err(|reason| WanError::config(&path, reason))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let heads = self.num_attention_heads;
        if heads == 0 || self.hidden_size == 0 || !self.hidden_size.is_multiple_of(heads) {
            return Err(format!(
                "hidden_size {} must be a positive multiple of num_attention_heads {heads}",
                self.hidden_size
            ));
        }
        if self.patch_size == 0 || self.image_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "image_size {} must be a positive multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        if self.num_hidden_layers < 2 {
            return Err(format!(
                "num_hidden_layers {} leaves no penultimate hidden state (at least 2)",
                self.num_hidden_layers
            ));
        }
        if !matches!(self.hidden_act.as_str(), "gelu" | "quick_gelu") {
            return Err(format!(
                "hidden_act '{}' is not one of: gelu, quick_gelu",
                self.hidden_act
            ));
        }
        Ok(())
    }

    /// Tokens per image: the class token and one per patch.
    pub fn tokens(&self) -> usize {
        1 + (self.image_size / self.patch_size).pow(2)
    }
}

/// One `CLIPEncoderLayer`.
#[derive(Clone, Debug)]
struct Layer {
    ln1: (Vec<f32>, Vec<f32>),
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: (Vec<f32>, Vec<f32>),
    fc1: Linear,
    fc2: Linear,
}

/// A loaded CLIP vision encoder.
#[derive(Clone, Debug)]
pub struct ClipVisionEncoder {
    cfg: ClipVisionConfig,
    /// `[hidden, channels·patch·patch]`: the patch conv as a matrix.
    patch_weight: Vec<f32>,
    class_embedding: Vec<f32>,
    /// `[tokens, hidden]`.
    position_embedding: Vec<f32>,
    pre_layrnorm: (Vec<f32>, Vec<f32>),
    /// All layers but the last.
    layers: Vec<Layer>,
}

impl ClipVisionEncoder {
    /// Loads `dir/config.json` and the weights in `dir` (an `image_encoder/` directory). Tensor
    /// names may carry transformers 4's `vision_model.` prefix or not.
    pub fn load(dir: &Path) -> Result<Self, WanError> {
        let cfg = ClipVisionConfig::load(dir)?;
        let store = WeightStore::open(dir)?;
        const ANCHOR: &str = "embeddings.patch_embedding.weight";
        let prefix = store
            .names()
            .iter()
            .find_map(|n| n.strip_suffix(ANCHOR))
            .map(str::to_string)
            .ok_or_else(|| WanError::MissingTensor {
                tensor: ANCHOR.into(),
                searched: store.source().display().to_string(),
            })?;
        let get = |name: &str, shape: &[usize]| store.get(&format!("{prefix}{name}"), shape);
        let (h, m) = (cfg.hidden_size, cfg.intermediate_size);
        let linear = |name: &str, in_f: usize, out_f: usize| -> Result<Linear, WanError> {
            Ok(Linear {
                weight: get(&format!("{name}.weight"), &[out_f, in_f])?,
                bias: get(&format!("{name}.bias"), &[out_f])?,
                in_f,
                out_f,
            })
        };
        let norm = |name: &str| -> Result<(Vec<f32>, Vec<f32>), WanError> {
            Ok((
                get(&format!("{name}.weight"), &[h])?,
                get(&format!("{name}.bias"), &[h])?,
            ))
        };
        let p = cfg.patch_size;
        let layers = (0..cfg.num_hidden_layers - 1)
            .map(|i| {
                let l = format!("encoder.layers.{i}");
                Ok(Layer {
                    ln1: norm(&format!("{l}.layer_norm1"))?,
                    q: linear(&format!("{l}.self_attn.q_proj"), h, h)?,
                    k: linear(&format!("{l}.self_attn.k_proj"), h, h)?,
                    v: linear(&format!("{l}.self_attn.v_proj"), h, h)?,
                    out: linear(&format!("{l}.self_attn.out_proj"), h, h)?,
                    ln2: norm(&format!("{l}.layer_norm2"))?,
                    fc1: linear(&format!("{l}.mlp.fc1"), h, m)?,
                    fc2: linear(&format!("{l}.mlp.fc2"), m, h)?,
                })
            })
            .collect::<Result<Vec<_>, WanError>>()?;
        let model = Self {
            patch_weight: get(ANCHOR, &[h, cfg.num_channels, p, p])?,
            class_embedding: get("embeddings.class_embedding", &[h])?,
            position_embedding: get("embeddings.position_embedding.weight", &[cfg.tokens(), h])?,
            pre_layrnorm: norm("pre_layrnorm")?,
            layers,
            cfg,
        };
        let last = format!("{prefix}encoder.layers.{}.", model.cfg.num_hidden_layers - 1);
        store.check_all_used(|n| {
            n.starts_with(&last) || n.starts_with(&format!("{prefix}post_layernorm.")) || n.ends_with("position_ids")
        })?;
        Ok(model)
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.cfg
    }

    /// The penultimate hidden states of `pixel_values: [B, C, S, S]` (preprocessed, S =
    /// `image_size`): `[B, tokens, hidden]`.
    pub fn penultimate(&self, pixel_values: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, WanError> {
        let [b, c, sh, sw] = shape;
        let s = self.cfg.image_size;
        if b == 0 || c != self.cfg.num_channels || sh != s || sw != s {
            return Err(WanError::Input(format!(
                "pixel_values {shape:?} ([B, C, H, W]) must be [B ≥ 1, {}, {s}, {s}] (preprocessed to the model's \
                 image_size)",
                self.cfg.num_channels
            )));
        }
        if pixel_values.len() != b * c * s * s {
            return Err(WanError::Input(format!(
                "pixel_values hold {} values, not {shape:?}",
                pixel_values.len()
            )));
        }
        let per = c * s * s;
        let mut out = Vec::with_capacity(b * self.cfg.tokens() * self.cfg.hidden_size);
        for img in pixel_values.chunks_exact(per) {
            out.extend(self.encode_one(img));
        }
        Ok(out)
    }

    fn encode_one(&self, img: &[f32]) -> Vec<f32> {
        let cfg = &self.cfg;
        let (h, p, s, c) = (cfg.hidden_size, cfg.patch_size, cfg.image_size, cfg.num_channels);
        let (g, k, tokens) = (s / p, c * p * p, cfg.tokens());
        // Patches as rows [g·g, c·p·p] in the conv weight's (c, ky, kx) order, then one GEMM.
        let mut patches = vec![0.0f32; g * g * k];
        for (i, row) in patches.chunks_exact_mut(k).enumerate() {
            let (py, px) = (i / g, i % g);
            for ch in 0..c {
                for ky in 0..p {
                    let src = (ch * s + py * p + ky) * s + px * p;
                    row[(ch * p + ky) * p..][..p].copy_from_slice(&img[src..src + p]);
                }
            }
        }
        let mut x = vec![0.0f32; tokens * h];
        x[..h].copy_from_slice(&self.class_embedding);
        longshot_kernels::cpu::nn_linear::linear(&patches, g * g, k, &self.patch_weight, None, h, &mut x[h..]);
        for (v, pos) in x.iter_mut().zip(&self.position_embedding) {
            *v += pos;
        }
        let eps = cfg.layer_norm_eps;
        let mut n = vec![0.0f32; x.len()];
        layer_norm(&x, h, eps, Some((&self.pre_layrnorm.0, &self.pre_layrnorm.1)), &mut n);
        let mut x = n;
        let heads = cfg.num_attention_heads;
        let head_dim = h / heads;
        let scale = (head_dim as f32).powf(-0.5);
        let mut n = vec![0.0f32; x.len()];
        for l in &self.layers {
            layer_norm(&x, h, eps, Some((&l.ln1.0, &l.ln1.1)), &mut n);
            let (q, kk, v) = (l.q.forward(&n), l.k.forward(&n), l.v.forward(&n));
            let shape = AttentionShape {
                q_tokens: tokens,
                kv_tokens: tokens,
                heads,
                head_dim,
            };
            attention(&q, &kk, &v, shape, scale, &mut n);
            for (xv, o) in x.iter_mut().zip(l.out.forward(&n)) {
                *xv += o;
            }
            layer_norm(&x, h, eps, Some((&l.ln2.0, &l.ln2.1)), &mut n);
            let mut a = l.fc1.forward(&n);
            match cfg.hidden_act.as_str() {
                "gelu" => gelu_erf_in_place(&mut a),
                _ => quick_gelu_in_place(&mut a),
            }
            for (xv, o) in x.iter_mut().zip(l.fc2.forward(&a)) {
                *xv += o;
            }
        }
        x
    }
}

/// `CLIPImageProcessor`'s `preprocessor_config.json` (the fields this port reads).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ClipImageProcessor {
    pub crop_size: CropSize,
    pub size: ShortestEdge,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    #[serde(default = "default_rescale")]
    pub rescale_factor: f64,
}

fn default_rescale() -> f64 {
    1.0 / 255.0
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub struct CropSize {
    pub height: usize,
    pub width: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub struct ShortestEdge {
    pub shortest_edge: usize,
}

impl ClipImageProcessor {
    /// Reads `dir/preprocessor_config.json` (a pipeline's `image_processor/`).
    pub fn load(dir: &Path) -> Result<Self, WanError> {
        let path = dir.join("preprocessor_config.json");
        let p: Self = read_json(&path)?;
        if p.image_std.contains(&0.0) || p.crop_size.height == 0 || p.crop_size.width == 0 {
            return Err(WanError::config(
                &path,
                "image_std must be non-zero and crop_size positive",
            ));
        }
        Ok(p)
    }

    /// `image: [H, W, 3]` in [0, 1], 8-bit levels (`v/255`, as images are) → `pixel_values`
    /// `[3, crop_h, crop_w]`, as transformers' PIL backend computes them: the levels resized
    /// so the shorter side is `size.shortest_edge` (the longer one `⌊edge·long/short⌋`) with
    /// Pillow's bicubic ([`crate::wan::pil_resize`]), centre cropped (offsets rounded down),
    /// rescaled (`level·rescale_factor` in f64, rounded to f32) and normalised
    /// (`(x − mean) / std` in f32). transformers' torchvision backend, used instead when
    /// torchvision is installed, resizes differently (by up to a few levels).
    pub fn preprocess(&self, image: &[f32], height: usize, width: usize) -> Result<Vec<f32>, WanError> {
        if image.len() != height * width * 3 || height == 0 || width == 0 {
            return Err(WanError::Input(format!(
                "image holds {} values, not [{height}, {width}, 3]",
                image.len()
            )));
        }
        let levels: Vec<u8> = image
            .iter()
            .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        let edge = self.size.shortest_edge;
        let (short, long) = (height.min(width), height.max(width));
        let new_long = (edge as f64 * long as f64 / short as f64) as usize;
        let (rh, rw) = if width <= height {
            (new_long, edge)
        } else {
            (edge, new_long)
        };
        let resized = crate::wan::pil_resize::resize_bicubic(&levels, (height, width), 3, (rh, rw));
        let CropSize { height: ch, width: cw } = self.crop_size;
        if ch > rh || cw > rw {
            return Err(WanError::Input(format!(
                "the image resized to {rw}×{rh} is smaller than the encoder's {cw}×{ch} crop"
            )));
        }
        let (top, left) = ((rh - ch) / 2, (rw - cw) / 2);
        let mut out = vec![0.0f32; 3 * ch * cw];
        for c in 0..3 {
            let (mean, std) = (self.image_mean[c], self.image_std[c]);
            for y in 0..ch {
                for x in 0..cw {
                    let level = resized[((top + y) * rw + left + x) * 3 + c];
                    let v = (f64::from(level) * self.rescale_factor) as f32;
                    out[(c * ch + y) * cw + x] = (v - mean) / std;
                }
            }
        }
        Ok(out)
    }
}
