//! VAE tensor names: the decoder and the encoder ask for diffusers names; [`VaeKeys`] translates them to what
//! the checkpoint uses — diffusers' `AutoencoderKLWan` names, or the original `Wan2.1_VAE.pth`
//! names (spec §2.3, diffusers' `convert_vae()`), possibly behind a prefix such as `vae.`.
//!
//! The original decoder keeps its up-path in one flat list, `decoder.upsamples.N`: for each
//! up-block, `num_res_blocks + 1` residual blocks, then the upsampler of every block but the last
//! (Wan2.1: 0-2, 3, 4-6, 7, 8-10, 11, 12-14). The original encoder's `encoder.downsamples.N` is
//! diffusers' flat `encoder.down_blocks.N` under another name. The mapping is written for any `num_res_blocks`, not
//! only Wan2.1's, so the original names of small test models translate too.

use crate::wan::error::WanError;
use crate::wan::weights::WeightStore;

/// Prefixes inside a residual block (diffusers → original `residual` Sequential indices).
const RESNET_PARTS: &[(&str, &str)] = &[
    ("norm1.", "residual.0."),
    ("conv1.", "residual.2."),
    ("norm2.", "residual.3."),
    ("conv2.", "residual.6."),
    ("conv_shortcut.", "shortcut."),
];

/// Whole-name prefixes (diffusers → original).
const PREFIXES: &[(&str, &str)] = &[
    ("post_quant_conv.", "conv2."),
    ("decoder.conv_in.", "decoder.conv1."),
    ("decoder.norm_out.", "decoder.head.0."),
    ("decoder.conv_out.", "decoder.head.2."),
    ("decoder.mid_block.attentions.0.", "decoder.middle.1."),
    ("quant_conv.", "conv1."),
    ("encoder.conv_in.", "encoder.conv1."),
    ("encoder.norm_out.", "encoder.head.0."),
    ("encoder.conv_out.", "encoder.head.2."),
    ("encoder.mid_block.attentions.0.", "encoder.middle.1."),
];

/// `"N.rest"` → `(N, "rest")`.
fn parse(s: &str) -> Option<(usize, &str)> {
    let (i, rest) = s.split_once('.')?;
    Some((i.parse().ok()?, rest))
}

fn resnet_part(prefix: &str, rest: &str) -> Option<String> {
    RESNET_PARTS
        .iter()
        .find_map(|(new, old)| rest.strip_prefix(new).map(|tail| format!("{prefix}{old}{tail}")))
}

/// The original name of a diffusers VAE tensor name; names outside the VAE's vocabulary are
/// returned unchanged.
pub fn original_name(diffusers: &str, num_res_blocks: usize) -> String {
    for (new, old) in PREFIXES {
        if let Some(rest) = diffusers.strip_prefix(new) {
            return format!("{old}{rest}");
        }
    }
    for half in ["decoder", "encoder"] {
        if let Some((i, rest)) = diffusers
            .strip_prefix(&format!("{half}.mid_block.resnets."))
            .and_then(parse)
        {
            // middle = [resnet, attention, resnet].
            if let Some(name) = resnet_part(&format!("{half}.middle.{}.", 2 * i), rest) {
                return name;
            }
        }
    }
    if let Some((n, rest)) = diffusers.strip_prefix("encoder.down_blocks.").and_then(parse) {
        let prefix = format!("encoder.downsamples.{n}.");
        return resnet_part(&prefix, rest).unwrap_or_else(|| format!("{prefix}{rest}"));
    }
    if let Some((block, rest)) = diffusers.strip_prefix("decoder.up_blocks.").and_then(parse) {
        let per_block = num_res_blocks + 2;
        if let Some((j, part)) = rest.strip_prefix("resnets.").and_then(parse) {
            if let Some(name) = resnet_part(&format!("decoder.upsamples.{}.", block * per_block + j), part) {
                return name;
            }
        }
        if let Some(part) = rest.strip_prefix("upsamplers.0.") {
            return format!("decoder.upsamples.{}.{part}", block * per_block + num_res_blocks + 1);
        }
    }
    diffusers.to_string()
}

/// How a checkpoint names VAE tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VaeKeys {
    Diffusers { prefix: String },
    Original { prefix: String, num_res_blocks: usize },
}

impl VaeKeys {
    /// Recognises the naming from the decoder's input conv, which only one convention names
    /// `conv_in`, and any prefix in front of it.
    pub fn detect(store: &WeightStore, num_res_blocks: usize) -> Result<Self, WanError> {
        const DIFFUSERS: &str = "decoder.conv_in.weight";
        const ORIGINAL: &str = "decoder.conv1.weight";
        for name in store.names() {
            if let Some(prefix) = name.strip_suffix(DIFFUSERS) {
                return Ok(Self::Diffusers {
                    prefix: prefix.to_string(),
                });
            }
            if let Some(prefix) = name.strip_suffix(ORIGINAL) {
                return Ok(Self::Original {
                    prefix: prefix.to_string(),
                    num_res_blocks,
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
            Self::Original { prefix, num_res_blocks } => format!("{prefix}{}", original_name(name, *num_res_blocks)),
        }
    }

    /// Whether a stored tensor belongs to the half of the autoencoder the decoder does not use
    /// (the encoder and the quantisation conv before the latent), so leaving it unread is fine.
    pub fn is_encoder_side(&self, stored: &str) -> bool {
        let (prefix, quant) = match self {
            Self::Diffusers { prefix } => (prefix, "quant_conv."),
            Self::Original { prefix, .. } => (prefix, "conv1."),
        };
        stored
            .strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.starts_with("encoder.") || rest.starts_with(quant))
    }

    /// Whether a stored tensor belongs to the decoder's half (the decoder and the conv after the
    /// latent), which the encoder leaves unread.
    pub fn is_decoder_side(&self, stored: &str) -> bool {
        let (prefix, post_quant) = match self {
            Self::Diffusers { prefix } => (prefix, "post_quant_conv."),
            Self::Original { prefix, .. } => (prefix, "conv2."),
        };
        stored
            .strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.starts_with("decoder.") || rest.starts_with(post_quant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_row_of_the_spec_table_for_wan21() {
        let cases = [
            ("post_quant_conv.weight", "conv2.weight"),
            ("decoder.conv_in.bias", "decoder.conv1.bias"),
            (
                "decoder.mid_block.resnets.0.norm1.gamma",
                "decoder.middle.0.residual.0.gamma",
            ),
            (
                "decoder.mid_block.attentions.0.to_qkv.weight",
                "decoder.middle.1.to_qkv.weight",
            ),
            (
                "decoder.mid_block.resnets.1.conv2.bias",
                "decoder.middle.2.residual.6.bias",
            ),
            (
                "decoder.up_blocks.0.resnets.2.conv1.weight",
                "decoder.upsamples.2.residual.2.weight",
            ),
            (
                "decoder.up_blocks.0.upsamplers.0.time_conv.weight",
                "decoder.upsamples.3.time_conv.weight",
            ),
            (
                "decoder.up_blocks.1.resnets.0.conv_shortcut.weight",
                "decoder.upsamples.4.shortcut.weight",
            ),
            (
                "decoder.up_blocks.1.resnets.0.norm2.gamma",
                "decoder.upsamples.4.residual.3.gamma",
            ),
            (
                "decoder.up_blocks.1.upsamplers.0.resample.1.bias",
                "decoder.upsamples.7.resample.1.bias",
            ),
            (
                "decoder.up_blocks.2.resnets.0.conv2.weight",
                "decoder.upsamples.8.residual.6.weight",
            ),
            (
                "decoder.up_blocks.2.upsamplers.0.resample.1.weight",
                "decoder.upsamples.11.resample.1.weight",
            ),
            (
                "decoder.up_blocks.3.resnets.2.conv2.bias",
                "decoder.upsamples.14.residual.6.bias",
            ),
            ("decoder.norm_out.gamma", "decoder.head.0.gamma"),
            ("decoder.conv_out.weight", "decoder.head.2.weight"),
        ];
        for (d, o) in cases {
            assert_eq!(original_name(d, 2), o, "{d}");
        }
        // The encoder (diffusers' convert_vae, read backwards).
        let encoder = [
            ("quant_conv.bias", "conv1.bias"),
            ("encoder.conv_in.weight", "encoder.conv1.weight"),
            (
                "encoder.down_blocks.0.norm1.gamma",
                "encoder.downsamples.0.residual.0.gamma",
            ),
            (
                "encoder.down_blocks.3.conv_shortcut.weight",
                "encoder.downsamples.3.shortcut.weight",
            ),
            (
                "encoder.down_blocks.5.time_conv.weight",
                "encoder.downsamples.5.time_conv.weight",
            ),
            (
                "encoder.down_blocks.2.resample.1.bias",
                "encoder.downsamples.2.resample.1.bias",
            ),
            (
                "encoder.mid_block.resnets.1.conv1.weight",
                "encoder.middle.2.residual.2.weight",
            ),
            ("encoder.mid_block.attentions.0.proj.bias", "encoder.middle.1.proj.bias"),
            ("encoder.norm_out.gamma", "encoder.head.0.gamma"),
            ("encoder.conv_out.weight", "encoder.head.2.weight"),
        ];
        for (d, o) in encoder {
            assert_eq!(original_name(d, 2), o, "{d}");
        }
        // num_res_blocks 1: two resnets and an upsampler per block.
        assert_eq!(
            original_name("decoder.up_blocks.3.resnets.1.norm1.gamma", 1),
            "decoder.upsamples.10.residual.0.gamma"
        );
        let k = VaeKeys::Original {
            prefix: "vae.".into(),
            num_res_blocks: 2,
        };
        assert_eq!(k.stored_name("decoder.conv_out.bias"), "vae.decoder.head.2.bias");
        assert!(k.is_encoder_side("vae.conv1.weight") && k.is_encoder_side("vae.encoder.conv1.weight"));
        assert!(!k.is_encoder_side("vae.conv2.weight") && !k.is_encoder_side("decoder.conv1.weight"));
        assert!(k.is_decoder_side("vae.conv2.weight") && k.is_decoder_side("vae.decoder.conv1.weight"));
        assert!(!k.is_decoder_side("vae.conv1.weight") && !k.is_decoder_side("vae.encoder.head.2.bias"));
    }
}
