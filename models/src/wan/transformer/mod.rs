//! `WanTransformer3DModel` on the CPU in f32 (spec §1.3): loading from a checkpoint directory and
//! the forward pass, with the prompt-dependent work split out so it runs once per job.
//!
//! Layout at this edge is diffusers' channel-major `[C, T, H, W]` per batch item (`[B, C, T, H, W]`
//! for `WanForward::forward_batch`); `layout` converts from longshot's frame-major latents.
//!
//! - [`config`]: [`TransformerConfig`](config::TransformerConfig), the transformer's `config.json`.
//! - [`block`]: one transformer block; [`embed`]: patch / time / text embeddings and unpatchify;
//!   [`rope`]: the 3D RoPE tables; [`layers`]: `Linear` and the named-tensor fetch; [`keys`]:
//!   original Wan2.1 ↔ diffusers tensor names.
//! - [`denoiser`]: [`WanDenoiser`](denoiser::WanDenoiser), the transformer behind the `Denoiser`
//!   trait for one job, generic over the [`WanForward`](denoiser::WanForward) trait the CPU and GPU
//!   transformers implement.
//! - [`flops`]: the work of one forward (spec §6).

pub mod block;
pub mod config;
pub mod denoiser;
pub mod embed;
pub mod flops;
pub mod keys;
pub mod layers;
pub mod rope;

use crate::wan::error::WanError;
use crate::wan::weights::WeightStore;
use block::{CrossKv, WanBlock};
use config::TransformerConfig;
use embed::{unpatchify, ImageEmbedding, PatchEmbedding, TextEmbedding, TimeEmbedding, TokenGrid};
use keys::TransformerKeys;
use layers::{Fetch, Linear};
use longshot_kernels::cpu::nn_norm::layer_norm_modulate;
use rayon::prelude::*;
use rope::RopeTables;
use std::path::Path;

/// Tensors a diffusers checkpoint may carry that the model ignores (diffusers'
/// `_keys_to_ignore_on_load_unexpected`).
pub(super) const IGNORED_SUFFIXES: &[&str] = &["norm_added_q.weight"];

/// A loaded Wan2.1 transformer.
#[derive(Clone, Debug)]
pub struct WanTransformer {
    cfg: TransformerConfig,
    patch_embedding: PatchEmbedding,
    time: TimeEmbedding,
    text: TextEmbedding,
    /// Image-to-video models only.
    image: Option<ImageEmbedding>,
    blocks: Vec<WanBlock>,
    /// `[2, D]`: shift, scale of the output head.
    head_table: Vec<f32>,
    proj_out: Linear,
    rope: RopeTables,
}

/// The text conditioning of one prompt, prepared for every block: embedded tokens and each
/// block's cross-attention K/V. Reuse it across steps (it does not depend on the latents or t).
#[derive(Clone, Debug)]
pub struct TextContext {
    tokens: usize,
    per_block: Vec<CrossKv>,
}

impl TextContext {
    /// Number of text tokens (Wan's pipeline always passes 512, zero-padded).
    pub fn tokens(&self) -> usize {
        self.tokens
    }
}

impl WanTransformer {
    /// Loads `dir/config.json` and the weights in `dir` (a diffusers `transformer/` directory, or
    /// an original Wan2.1 checkpoint directory).
    pub fn load(dir: &Path) -> Result<Self, WanError> {
        let cfg = TransformerConfig::from_file(&dir.join("config.json"))?;
        let store = WeightStore::open(dir)?;
        Self::from_store(cfg, &store)
    }

    /// Builds the model from `store`, whichever naming it uses. Every tensor the store holds must
    /// be used: leftovers mean a different model variant and are an error.
    pub fn from_store(cfg: TransformerConfig, store: &WeightStore) -> Result<Self, WanError> {
        cfg.validate()
            .map_err(|reason| WanError::config(store.source(), reason))?;
        let keys = TransformerKeys::detect(store)?;
        let f = Fetch { store, keys: &keys };
        let d = cfg.inner_dim();
        // Blocks dominate the load time (dtype conversion); load them in parallel.
        let blocks = (0..cfg.num_layers)
            .into_par_iter()
            .map(|i| WanBlock::load(&f, &cfg, i))
            .collect::<Result<Vec<_>, _>>()?;
        let model = Self {
            patch_embedding: PatchEmbedding::load(&f, &cfg)?,
            time: TimeEmbedding::load(&f, &cfg)?,
            text: TextEmbedding::load(&f, &cfg)?,
            image: ImageEmbedding::load(&f, &cfg)?,
            blocks,
            head_table: f.get("scale_shift_table", &[1, 2, d])?,
            proj_out: f.linear("proj_out", d, cfg.patch_volume() * cfg.out_channels())?,
            rope: RopeTables::new(cfg.attention_head_dim, cfg.rope_split(), cfg.rope_max_seq_len),
            cfg,
        };
        store.check_all_used(|n| IGNORED_SUFFIXES.iter().any(|s| n.ends_with(s)))?;
        Ok(model)
    }

    pub fn config(&self) -> &TransformerConfig {
        &self.cfg
    }

    /// Embeds `ctx: [N, text_dim]` and computes every block's cross-attention K/V. Pass what the
    /// pipeline passes: the encoder's output zero-padded to 512 rows. The padded rows are not
    /// masked; they take part in the attention (spec §1.3 step 4).
    pub fn encode_text(&self, ctx: &[f32]) -> Result<TextContext, WanError> {
        self.encode_conditioning(ctx, None)
    }

    /// [`encode_text`](Self::encode_text) plus, for an image-to-video model, the image encoder's
    /// tokens `image: [M, image_dim]` (CLIP's penultimate hidden states; first-and-last-frame:
    /// both images', first image first). An image-to-video model needs them; a text-to-video
    /// model refuses them.
    pub fn encode_conditioning(&self, ctx: &[f32], image: Option<&[f32]>) -> Result<TextContext, WanError> {
        let embedded_image = match (&self.image, image) {
            (Some(e), Some(img)) => Some(e.forward(img)?),
            (Some(_), None) => {
                return Err(WanError::Input(
                    "this is an image-to-video model: it needs the image encoder's embeddings of a reference image"
                        .into(),
                ))
            }
            (None, Some(_)) => {
                return Err(WanError::Input(
                    "this is a text-to-video model: it takes no image (use an image-to-video model such as \
                     Wan2.1-I2V-14B-480P)"
                        .into(),
                ))
            }
            (None, None) => None,
        };
        let td = self.cfg.text_dim;
        if ctx.is_empty() || !ctx.len().is_multiple_of(td) {
            return Err(WanError::Input(format!(
                "text embeddings of {} values are not N x text_dim {td} with N > 0",
                ctx.len()
            )));
        }
        let embedded = self.text.forward(ctx);
        let per_block = self
            .blocks
            .iter()
            .map(|b| b.cross_kv(&embedded, embedded_image.as_deref()))
            .collect();
        Ok(TextContext {
            tokens: ctx.len() / td,
            per_block,
        })
    }

    /// One forward for one batch item: `x: [C_in, T, H, W]` at timestep `t` → `[C_out, T, H, W]`.
    /// `t` is what the scheduler passes (an int64 UniPC timestep converts to f32 exactly, as
    /// diffusers' `t.float()` does).
    pub fn forward(&self, x: &[f32], dims: [usize; 4], t: f32, text: &TextContext) -> Result<Vec<f32>, WanError> {
        let [c, lt, lh, lw] = dims;
        if c != self.cfg.in_channels || Some(x.len()) != checked_len(&dims) {
            return Err(WanError::Input(format!(
                "latent of {} values with dims {dims:?} does not match in_channels {}",
                x.len(),
                self.cfg.in_channels
            )));
        }
        if text.per_block.len() != self.blocks.len() {
            return Err(WanError::Input("text context was prepared by a different model".into()));
        }
        if !t.is_finite() {
            return Err(WanError::Input(format!("timestep {t} is not finite")));
        }
        let grid = TokenGrid::new(&self.cfg, lt, lh, lw)?;
        let (cos, sin) = self.rope.for_grid(grid.f, grid.h, grid.w)?;
        let time = self.time.forward(t);
        let mut h = self.patch_embedding.forward(x, grid);
        for (block, kv) in self.blocks.iter().zip(&text.per_block) {
            block.forward(&mut h, &time.timestep_proj, &cos, &sin, kv);
        }
        // Head: shift, scale = table + temb (not timestep_proj), then LN·(1 + scale) + shift.
        let d = self.cfg.inner_dim();
        let shift: Vec<f32> = self.head_table[..d]
            .iter()
            .zip(&time.temb)
            .map(|(a, b)| a + b)
            .collect();
        let scale: Vec<f32> = self.head_table[d..]
            .iter()
            .zip(&time.temb)
            .map(|(a, b)| a + b)
            .collect();
        let mut n = vec![0.0f32; h.len()];
        layer_norm_modulate(&h, d, self.cfg.eps, &scale, &shift, &mut n);
        drop(h);
        let y = self.proj_out.forward(&n);
        Ok(unpatchify(&y, grid, self.cfg.patch_size, self.cfg.out_channels()))
    }
}

/// The product of `dims`, or `None` on overflow (dims come from callers; never panic on them).
pub(crate) fn checked_len(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}
