//! Floating-point work of one transformer forward (spec §6), for planning and for reporting
//! achieved throughput. A multiply-add counts as 2 FLOPs; element-wise work (norms, activations,
//! softmax, RoPE) is not counted.

use super::config::TransformerConfig;

/// FLOPs of one forward, split the way spec §6 tabulates them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForwardFlops {
    /// Token-wise linears of all blocks (self QKV + out, cross Q + out, FFN).
    pub block_linears: f64,
    /// Cross-attention K/V projections of the text (cacheable across steps).
    pub text_kv: f64,
    /// Patch embedding, `proj_out`, and the text and time MLPs.
    pub embeddings: f64,
    /// Self-attention `QKᵀ` and `PV`.
    pub self_attention: f64,
    /// Cross-attention `QKᵀ` and `PV` over the text tokens.
    pub cross_attention: f64,
}

impl ForwardFlops {
    pub fn linear(&self) -> f64 {
        self.block_linears + self.text_kv + self.embeddings
    }

    pub fn attention(&self) -> f64 {
        self.self_attention + self.cross_attention
    }

    pub fn total(&self) -> f64 {
        self.linear() + self.attention()
    }
}

/// The breakdown for a latent of `latent_t × latent_h × latent_w` and `text_tokens` text tokens.
pub fn forward_flops_breakdown(
    cfg: &TransformerConfig,
    latent_t: usize,
    latent_h: usize,
    latent_w: usize,
    text_tokens: usize,
) -> ForwardFlops {
    let [pt, ph, pw] = cfg.patch_size.map(|p| p as f64);
    let s = (latent_t as f64 / pt).floor() * (latent_h as f64 / ph).floor() * (latent_w as f64 / pw).floor();
    let d = cfg.inner_dim() as f64;
    let f = cfg.ffn_dim as f64;
    let l = cfg.num_layers as f64;
    let n = text_tokens as f64;
    let patch = cfg.patch_volume() as f64;
    let embeddings = 2.0 * s * (cfg.in_channels as f64 * patch) * d
        + 2.0 * s * d * (cfg.out_channels() as f64 * patch)
        + 2.0 * n * (cfg.text_dim as f64 * d + d * d)
        + 2.0 * (cfg.freq_dim as f64 * d + d * d + d * 6.0 * d);
    ForwardFlops {
        block_linears: l * s * (12.0 * d * d + 4.0 * d * f),
        text_kv: l * 4.0 * n * d * d,
        embeddings,
        self_attention: l * 4.0 * s * s * d,
        cross_attention: l * 4.0 * s * n * d,
    }
}

/// Total FLOPs of one forward (see [`forward_flops_breakdown`]).
pub fn forward_flops(
    cfg: &TransformerConfig,
    latent_t: usize,
    latent_h: usize,
    latent_w: usize,
    text_tokens: usize,
) -> f64 {
    forward_flops_breakdown(cfg, latent_t, latent_h, latent_w, text_tokens).total()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, rel: f64) -> bool {
        ((got - want) / want).abs() <= rel
    }

    #[test]
    fn t2v_1_3b_at_480x832x81_matches_the_spec_table() {
        // 81 frames → 21 latent frames; 480×832 → 60×104 latents; 512 text tokens.
        let b = forward_flops_breakdown(&TransformerConfig::t2v_1_3b(), 21, 60, 104, 512);
        assert!(close(b.block_linears, 8.193e13, 1e-3), "{b:?}");
        assert!(close(b.text_kv, 1.45e11, 1e-2), "{b:?}");
        assert!(close(b.embeddings, 2.2e10, 2e-2), "{b:?}");
        assert!(close(b.linear(), 8.21e13, 1e-3), "{b:?}");
        assert!(close(b.self_attention, 1.978e14, 1e-3), "{b:?}");
        assert!(close(b.cross_attention, 3.09e12, 1e-3), "{b:?}");
        assert!(close(b.attention(), 2.009e14, 1e-3), "{b:?}");
        let total = forward_flops(&TransformerConfig::t2v_1_3b(), 21, 60, 104, 512);
        assert!(close(total, 2.83e14, 2e-3), "{total:e}");
    }

    #[test]
    fn t2v_14b_matches_the_spec_comparisons() {
        let cfg = TransformerConfig::t2v_14b();
        let b = forward_flops_breakdown(&cfg, 21, 60, 104, 512);
        assert!(
            close(b.linear(), 7.85e14, 2e-3) && close(b.attention(), 8.93e14, 2e-3),
            "{b:?}"
        );
        let hd = forward_flops_breakdown(&cfg, 21, 90, 160, 512);
        assert!(
            close(hd.linear(), 1.81e15, 3e-3) && close(hd.attention(), 4.71e15, 3e-3),
            "{hd:?}"
        );
        assert!(close(hd.total(), 6.52e15, 3e-3), "{hd:?}");
    }
}
