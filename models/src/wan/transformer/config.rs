//! The transformer's `config.json` (diffusers layout, or the original repo's `WanModel` layout).

use crate::wan::error::WanError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `WanTransformer3DModel`'s config (diffusers field names and defaults, spec §1.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransformerConfig {
    pub patch_size: [usize; 3],
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub in_channels: usize,
    /// `None` in a config means "same as in_channels", as in diffusers.
    pub out_channels: Option<usize>,
    pub text_dim: usize,
    pub freq_dim: usize,
    pub ffn_dim: usize,
    pub num_layers: usize,
    pub cross_attn_norm: bool,
    /// Accepted and ignored, as diffusers does: q/k always use RMSNorm across all heads.
    pub qk_norm: Option<String>,
    pub eps: f64,
    /// Image-to-video: the width of the image encoder's tokens (CLIP ViT-H/14: 1280); null for
    /// text-to-video.
    pub image_dim: Option<usize>,
    /// Image-to-video: the input width of the cross-attention's image K/V projections (the
    /// model's inner dim); set exactly when `image_dim` is.
    pub added_kv_proj_dim: Option<usize>,
    pub rope_max_seq_len: usize,
    /// First-and-last-frame: image tokens of both images (2·257), with a learned position
    /// embedding; only with `image_dim`.
    pub pos_embed_seq_len: Option<usize>,
}

impl Default for TransformerConfig {
    /// diffusers' constructor defaults (the 14B shape).
    fn default() -> Self {
        Self {
            patch_size: [1, 2, 2],
            num_attention_heads: 40,
            attention_head_dim: 128,
            in_channels: 16,
            out_channels: Some(16),
            text_dim: 4096,
            freq_dim: 256,
            ffn_dim: 13824,
            num_layers: 40,
            cross_attn_norm: true,
            qk_norm: Some("rms_norm_across_heads".into()),
            eps: 1e-6,
            image_dim: None,
            added_kv_proj_dim: None,
            rope_max_seq_len: 1024,
            pos_embed_seq_len: None,
        }
    }
}

/// The original repo's `config.json` (`wan/modules/model.py::WanModel` arguments).
#[derive(Deserialize)]
#[serde(default)]
struct OriginalConfig {
    model_type: String,
    patch_size: [usize; 3],
    in_dim: usize,
    dim: usize,
    ffn_dim: usize,
    freq_dim: usize,
    text_dim: usize,
    out_dim: usize,
    num_heads: usize,
    num_layers: usize,
    cross_attn_norm: bool,
    eps: f64,
}

impl Default for OriginalConfig {
    fn default() -> Self {
        let d = TransformerConfig::default();
        Self {
            model_type: "t2v".into(),
            patch_size: d.patch_size,
            in_dim: 16,
            dim: 2048,
            ffn_dim: 8192,
            freq_dim: 256,
            text_dim: 4096,
            out_dim: 16,
            num_heads: 16,
            num_layers: 32,
            cross_attn_norm: true,
            eps: 1e-6,
        }
    }
}

impl TransformerConfig {
    /// Wan2.1 T2V-1.3B (spec §1.1).
    pub fn t2v_1_3b() -> Self {
        Self {
            num_attention_heads: 12,
            ffn_dim: 8960,
            num_layers: 30,
            ..Self::default()
        }
    }

    /// Wan2.1 T2V-14B (spec §1.1).
    pub fn t2v_14b() -> Self {
        Self::default()
    }

    /// Reads `path`, in either the diffusers or the original layout, and validates it.
    pub fn from_file(path: &Path) -> Result<Self, WanError> {
        let text = std::fs::read_to_string(path).map_err(|e| WanError::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses a config; `path` is only used in error messages. The original layout is recognised
    /// by its `dim` / `num_heads` fields.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, WanError> {
        let json_err = |e| WanError::Json {
            path: path.to_path_buf(),
            source: e,
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(json_err)?;
        let cfg = if value.get("dim").is_some() && value.get("num_heads").is_some() {
            let o: OriginalConfig = serde_json::from_value(value).map_err(json_err)?;
            if o.model_type != "t2v" {
                return Err(WanError::config(
                    path,
                    format!("model_type '{}' is not supported (only t2v)", o.model_type),
                ));
            }
            if o.num_heads == 0 || !o.dim.is_multiple_of(o.num_heads) {
                return Err(WanError::config(
                    path,
                    format!("dim {} is not a multiple of num_heads {}", o.dim, o.num_heads),
                ));
            }
            Self {
                patch_size: o.patch_size,
                num_attention_heads: o.num_heads,
                attention_head_dim: o.dim / o.num_heads,
                in_channels: o.in_dim,
                out_channels: Some(o.out_dim),
                text_dim: o.text_dim,
                freq_dim: o.freq_dim,
                ffn_dim: o.ffn_dim,
                num_layers: o.num_layers,
                cross_attn_norm: o.cross_attn_norm,
                eps: o.eps,
                ..Self::default()
            }
        } else {
            serde_json::from_value(value).map_err(json_err)?
        };
        cfg.validate().map_err(|reason| WanError::config(path, reason))?;
        Ok(cfg)
    }

    /// Checks what the CPU implementation relies on; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match (self.image_dim, self.added_kv_proj_dim) {
            (None, None) if self.pos_embed_seq_len.is_some() => {
                return Err("pos_embed_seq_len is set without image_dim (it belongs to image-to-video)".into())
            }
            (None, None) => {}
            (Some(i), Some(a)) if i > 0 && a == self.inner_dim() => {
                if self.pos_embed_seq_len.is_some_and(|p| p == 0 || p % 2 != 0) {
                    return Err("pos_embed_seq_len must be even (two images' tokens) and positive".into());
                }
            }
            (i, a) => {
                return Err(format!(
                    "image_dim {i:?} and added_kv_proj_dim {a:?} must both be set (added_kv_proj_dim = heads · \
                     head_dim = {}) or both be null",
                    self.inner_dim()
                ))
            }
        }
        if self.patch_size.contains(&0) {
            return Err(format!("patch_size {:?} has a zero entry", self.patch_size));
        }
        let hd = self.attention_head_dim;
        if self.num_attention_heads == 0 || hd < 2 || !hd.is_multiple_of(2) {
            return Err(format!(
                "attention_head_dim {hd} must be even and at least 2, with at least one head"
            ));
        }
        if self.freq_dim == 0 || !self.freq_dim.is_multiple_of(2) {
            return Err(format!("freq_dim {} must be even and positive", self.freq_dim));
        }
        let fields = [
            self.in_channels,
            self.out_channels(),
            self.text_dim,
            self.ffn_dim,
            self.rope_max_seq_len,
        ];
        if fields.contains(&0) {
            return Err("in/out channels, text_dim, ffn_dim and rope_max_seq_len must be positive".into());
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(format!("eps {} must be positive", self.eps));
        }
        Ok(())
    }

    /// Whether the model conditions on an image (Wan2.1 I2V / FLF2V).
    pub fn has_image_path(&self) -> bool {
        self.image_dim.is_some()
    }

    /// `D = heads · head_dim`.
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Values per patch: `pt·ph·pw`.
    pub fn patch_volume(&self) -> usize {
        self.patch_size.iter().product()
    }

    /// RoPE widths per axis `(t, h, w)`: `h = w = 2·(head_dim / 6)`, `t` the rest (spec §1.3).
    pub fn rope_split(&self) -> (usize, usize, usize) {
        let hw = 2 * (self.attention_head_dim / 6);
        (self.attention_head_dim - 2 * hw, hw, hw)
    }
}
