//! Transformer tensor names: the port asks for diffusers names; [`TransformerKeys`] translates them
//! to whatever the checkpoint uses — diffusers names, or the original Wan2.1 names (spec §1.2,
//! the inverse of diffusers' `TRANSFORMER_KEYS_RENAME_DICT`), possibly behind a prefix such as
//! ComfyUI's `model.diffusion_model.`.

use crate::wan::error::WanError;
use crate::wan::weights::WeightStore;

/// Whole-name prefixes (diffusers → original).
const PREFIXES: &[(&str, &str)] = &[
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("proj_out.", "head.head."),
    // Image-to-video (the original `img_emb` MLP: LayerNorm, Linear, GELU, Linear, LayerNorm).
    ("condition_embedder.image_embedder.norm1.", "img_emb.proj.0."),
    ("condition_embedder.image_embedder.ff.net.0.proj.", "img_emb.proj.1."),
    ("condition_embedder.image_embedder.ff.net.2.", "img_emb.proj.3."),
    ("condition_embedder.image_embedder.norm2.", "img_emb.proj.4."),
];

/// Prefixes inside `blocks.N.` (diffusers → original).
const BLOCK_PARTS: &[(&str, &str)] = &[
    ("attn1.to_q.", "self_attn.q."),
    ("attn1.to_k.", "self_attn.k."),
    ("attn1.to_v.", "self_attn.v."),
    ("attn1.to_out.0.", "self_attn.o."),
    ("attn1.norm_q.", "self_attn.norm_q."),
    ("attn1.norm_k.", "self_attn.norm_k."),
    ("attn2.to_q.", "cross_attn.q."),
    ("attn2.to_k.", "cross_attn.k."),
    ("attn2.to_v.", "cross_attn.v."),
    ("attn2.to_out.0.", "cross_attn.o."),
    ("attn2.norm_q.", "cross_attn.norm_q."),
    ("attn2.norm_k.", "cross_attn.norm_k."),
    ("attn2.add_k_proj.", "cross_attn.k_img."),
    ("attn2.add_v_proj.", "cross_attn.v_img."),
    ("attn2.norm_added_k.", "cross_attn.norm_k_img."),
    ("ffn.net.0.proj.", "ffn.0."),
    ("ffn.net.2.", "ffn.2."),
    // The affine cross-attention LayerNorm is `norm3` in the original (its `norm2` has no weights).
    ("norm2.", "norm3."),
    ("scale_shift_table", "modulation"),
];

/// The original name of a diffusers transformer tensor name (names without a counterpart, such
/// as `patch_embedding.*`, are the same in both).
pub fn original_name(diffusers: &str) -> String {
    if diffusers == "scale_shift_table" {
        return "head.modulation".to_string();
    }
    if diffusers == "condition_embedder.image_embedder.pos_embed" {
        return "img_emb.emb_pos".to_string();
    }
    for (new, old) in PREFIXES {
        if let Some(rest) = diffusers.strip_prefix(new) {
            return format!("{old}{rest}");
        }
    }
    if let Some(rest) = diffusers.strip_prefix("blocks.") {
        if let Some((idx, part)) = rest.split_once('.') {
            for (new, old) in BLOCK_PARTS {
                if let Some(tail) = part.strip_prefix(new) {
                    return format!("blocks.{idx}.{old}{tail}");
                }
            }
        }
    }
    diffusers.to_string()
}

/// How a checkpoint names transformer tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransformerKeys {
    Diffusers { prefix: String },
    Original { prefix: String },
}

impl TransformerKeys {
    /// Recognises the naming from a tensor only one convention has (the time projection), and
    /// any prefix in front of it.
    pub fn detect(store: &WeightStore) -> Result<Self, WanError> {
        const DIFFUSERS: &str = "condition_embedder.time_proj.weight";
        const ORIGINAL: &str = "time_projection.1.weight";
        for name in store.names() {
            if let Some(prefix) = name.strip_suffix(DIFFUSERS) {
                return Ok(Self::Diffusers {
                    prefix: prefix.to_string(),
                });
            }
            if let Some(prefix) = name.strip_suffix(ORIGINAL) {
                return Ok(Self::Original {
                    prefix: prefix.to_string(),
                });
            }
        }
        Err(WanError::MissingTensor {
            tensor: format!("{DIFFUSERS} (or the original {ORIGINAL})"),
            searched: store.source().display().to_string(),
        })
    }

    /// The stored name of the diffusers-named tensor `name`.
    pub fn stored_name(&self, name: &str) -> String {
        match self {
            Self::Diffusers { prefix } => format!("{prefix}{name}"),
            Self::Original { prefix } => format!("{prefix}{}", original_name(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_row_of_the_spec_table() {
        let cases = [
            (
                "condition_embedder.time_embedder.linear_1.weight",
                "time_embedding.0.weight",
            ),
            (
                "condition_embedder.time_embedder.linear_2.bias",
                "time_embedding.2.bias",
            ),
            ("condition_embedder.time_proj.weight", "time_projection.1.weight"),
            (
                "condition_embedder.text_embedder.linear_1.bias",
                "text_embedding.0.bias",
            ),
            (
                "condition_embedder.text_embedder.linear_2.weight",
                "text_embedding.2.weight",
            ),
            ("proj_out.weight", "head.head.weight"),
            ("scale_shift_table", "head.modulation"),
            ("blocks.7.scale_shift_table", "blocks.7.modulation"),
            ("blocks.0.attn1.to_q.weight", "blocks.0.self_attn.q.weight"),
            ("blocks.12.attn1.to_out.0.bias", "blocks.12.self_attn.o.bias"),
            ("blocks.3.attn1.norm_k.weight", "blocks.3.self_attn.norm_k.weight"),
            ("blocks.3.attn2.to_v.weight", "blocks.3.cross_attn.v.weight"),
            ("blocks.3.attn2.norm_q.weight", "blocks.3.cross_attn.norm_q.weight"),
            ("blocks.29.ffn.net.0.proj.weight", "blocks.29.ffn.0.weight"),
            ("blocks.29.ffn.net.2.bias", "blocks.29.ffn.2.bias"),
            ("blocks.1.norm2.weight", "blocks.1.norm3.weight"),
            ("patch_embedding.weight", "patch_embedding.weight"),
        ];
        for (d, o) in cases {
            assert_eq!(original_name(d), o, "{d}");
        }
        let k = TransformerKeys::Original {
            prefix: "model.diffusion_model.".into(),
        };
        assert_eq!(k.stored_name("proj_out.bias"), "model.diffusion_model.head.head.bias");
    }
}
