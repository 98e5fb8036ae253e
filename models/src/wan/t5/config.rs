//! `text_encoder/config.json` of a Wan2.1 pipeline: transformers' `UMT5Config` (spec §3), the
//! fields the encoder needs, with transformers' defaults for any that are missing.

use crate::wan::error::WanError;
use serde::Deserialize;
use std::path::Path;

/// Activations transformers maps to the tanh-approximate GELU in a gated FFN (`gated-gelu` is
/// rewritten to `gelu_new` by `UMT5Config.__post_init__`).
const TANH_GELU_FFN: &[&str] = &["gated-gelu", "gated-gelu_new", "gated-gelu_pytorch_tanh"];

/// `UMT5Config`, encoder fields only. Unknown fields (`dropout_rate`, `dense_act_fn`, which
/// transformers recomputes from `feed_forward_proj`, …) are ignored.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct UMT5Config {
    /// `umt5` when present; `t5` checkpoints have a relative bias in layer 0 only.
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f64,
    pub feed_forward_proj: String,
    pub is_decoder: bool,
}

impl Default for UMT5Config {
    /// transformers' `UMT5Config` defaults (umT5-small's shape).
    fn default() -> Self {
        Self {
            model_type: None,
            vocab_size: 250112,
            d_model: 512,
            d_kv: 64,
            d_ff: 1024,
            num_layers: 8,
            num_heads: 6,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "gated-gelu".into(),
            is_decoder: false,
        }
    }
}

impl UMT5Config {
    /// umT5-XXL as Wan2.1 ships it (spec §3).
    pub fn umt5_xxl() -> Self {
        Self {
            model_type: Some("umt5".into()),
            vocab_size: 256384,
            d_model: 4096,
            d_kv: 64,
            d_ff: 10240,
            num_layers: 24,
            num_heads: 64,
            ..Self::default()
        }
    }

    /// Reads and validates `path`.
    pub fn from_file(path: &Path) -> Result<Self, WanError> {
        let cfg: Self = crate::wan::error::read_json(path)?;
        cfg.validate().map_err(|reason| WanError::config(path, reason))?;
        Ok(cfg)
    }

    /// Checks what the CPU encoder relies on; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = self.model_type.as_deref().filter(|t| *t != "umt5") {
            return Err(format!(
                "model_type '{t}' is not supported (only umt5, which has a relative attention bias in every layer)"
            ));
        }
        if self.is_decoder {
            return Err("is_decoder is true; only the encoder is supported".into());
        }
        if !TANH_GELU_FFN.contains(&self.feed_forward_proj.as_str()) {
            return Err(format!(
                "feed_forward_proj '{}' is not supported (only {})",
                self.feed_forward_proj,
                TANH_GELU_FFN.join(", ")
            ));
        }
        let sizes = [
            self.vocab_size,
            self.d_model,
            self.d_kv,
            self.d_ff,
            self.num_layers,
            self.num_heads,
        ];
        if sizes.contains(&0) {
            return Err("vocab_size, d_model, d_kv, d_ff, num_layers and num_heads must be positive".into());
        }
        // The bidirectional bucketing halves the buckets, then keeps half of those for exact offsets;
        // the log-spaced rest needs max_distance beyond the exact range.
        let max_exact = self.relative_attention_num_buckets / 4;
        if max_exact == 0 || self.relative_attention_max_distance <= max_exact {
            return Err(format!(
                "relative_attention_num_buckets {} must be at least 4 and relative_attention_max_distance {} above a quarter of it",
                self.relative_attention_num_buckets, self.relative_attention_max_distance
            ));
        }
        if !(self.layer_norm_epsilon > 0.0 && self.layer_norm_epsilon.is_finite()) {
            return Err(format!(
                "layer_norm_epsilon {} must be positive",
                self.layer_norm_epsilon
            ));
        }
        Ok(())
    }

    /// `num_heads · d_kv`, the width of q, k, v.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// Parameters of the encoder, embedding included (5,680,910,336 for umT5-XXL, spec §3).
    pub fn parameter_count(&self) -> usize {
        let (d, inner, ff) = (self.d_model, self.inner_dim(), self.d_ff);
        let per_layer = 4 * d * inner + self.relative_attention_num_buckets * self.num_heads + 3 * d * ff + 2 * d;
        self.vocab_size * d + self.num_layers * per_layer + d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umt5_xxl_has_the_spec_parameter_count() {
        let c = UMT5Config::umt5_xxl();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.parameter_count(), 5_680_910_336);
    }

    #[test]
    fn rejects_t5_decoders_other_activations_and_degenerate_buckets() {
        let bad = [
            UMT5Config {
                model_type: Some("t5".into()),
                ..UMT5Config::default()
            },
            UMT5Config {
                is_decoder: true,
                ..UMT5Config::default()
            },
            UMT5Config {
                feed_forward_proj: "relu".into(),
                ..UMT5Config::default()
            },
            UMT5Config {
                relative_attention_num_buckets: 2,
                ..UMT5Config::default()
            },
            UMT5Config {
                relative_attention_max_distance: 8,
                ..UMT5Config::default()
            },
            UMT5Config {
                d_kv: 0,
                ..UMT5Config::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
