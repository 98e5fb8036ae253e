//! The umT5-XXL text encoder (`UMT5EncoderModel`, spec §3) on the CPU in f32, and
//! [`TextEncoder`], the prompt → `prompt_embeds` step of `WanPipeline` that a job runs once and
//! sends to every worker.
//!
//! The pipeline runs the encoder on 512 ids with an attention mask, keeps the first `seq_len`
//! rows and zero-fills the rest. Pad keys are masked out and pad rows are discarded, and the
//! relative bias depends only on offsets, so running on the `seq_len` real tokens alone gives the
//! same rows ([`UMT5Encoder::forward`]); the goldens measure the two within 1e-6 relative in
//! PyTorch. [`UMT5Encoder::prompt_embeds`] then zero-pads to 512 rows, as the pipeline does.
//!
//! Cost of the real model: 5.68 B parameters, held here as f32 (about 22.7 GB; the embedding table
//! alone is 4.2 GB, of which a prompt reads a few rows); about 9.3 GFLOP per token
//! (24 layers × 2·(4·4096² + 3·4096·10240)), so a 100-token prompt is about 0.9 TFLOP.
//!
//! - [`config`]: [`UMT5Config`](config::UMT5Config); [`layers`]: one block and the
//!   relative-position buckets.
//! - [`tokenizer`]: [`UmT5Tokenizer`] (`tokenizer.json` as transformers 5 builds it, 512 tokens with
//!   `</s>`); [`prompt`]: WanPipeline's `prompt_clean` (Python's `html.unescape`, no ftfy).

mod charsmap;
pub mod config;
pub mod layers;
pub mod prompt;
pub mod tokenizer;

use crate::wan::error::WanError;
use crate::wan::pipeline::PipelineDir;
use crate::wan::weights::WeightStore;
use config::UMT5Config;
use layers::{bucket_table, T5Block};
use longshot_kernels::cpu::nn_norm::rms_norm_in_place;
use rayon::prelude::*;
use std::path::Path;
use tokenizer::{UmT5Tokenizer, T5_MAX_LENGTH};

/// The embedding's two names: the encoder's `embed_tokens` is tied to `shared` in transformers,
/// and `save_pretrained` stores it once, under either name.
const SHARED: &str = "shared.weight";
const EMBED_TOKENS: &str = "encoder.embed_tokens.weight";

/// A loaded umT5 encoder.
#[derive(Clone, Debug)]
pub struct UMT5Encoder {
    cfg: UMT5Config,
    /// `[vocab_size, d_model]`.
    embedding: Vec<f32>,
    blocks: Vec<T5Block>,
    final_norm: Vec<f32>,
}

impl UMT5Encoder {
    /// Loads `dir/config.json` and the weights in `dir` (a diffusers `text_encoder/` directory).
    pub fn load(dir: &Path) -> Result<Self, WanError> {
        let cfg = UMT5Config::from_file(&dir.join("config.json"))?;
        let store = WeightStore::open(dir)?;
        Self::from_store(cfg, &store)
    }

    /// Builds the encoder from `store`. Every tensor the store holds must be used: leftovers (a
    /// decoder, an LM head) mean a different checkpoint and are an error.
    pub fn from_store(cfg: UMT5Config, store: &WeightStore) -> Result<Self, WanError> {
        cfg.validate()
            .map_err(|reason| WanError::config(store.source(), reason))?;
        let embedding = load_embedding(store, &cfg)?;
        let blocks = (0..cfg.num_layers)
            .into_par_iter()
            .map(|i| T5Block::load(store, &cfg, i))
            .collect::<Result<Vec<_>, _>>()?;
        let final_norm = store.get("encoder.final_layer_norm.weight", &[cfg.d_model])?;
        store.check_all_used(|_| false)?;
        Ok(Self {
            cfg,
            embedding,
            blocks,
            final_norm,
        })
    }

    pub fn config(&self) -> &UMT5Config {
        &self.cfg
    }

    /// `last_hidden_state` of the real tokens: `ids` (`1..=512` of them, each below
    /// `vocab_size`) → `[ids.len(), d_model]`.
    pub fn forward(&self, ids: &[u32]) -> Result<Vec<f32>, WanError> {
        let d = self.cfg.d_model;
        if ids.is_empty() || ids.len() > T5_MAX_LENGTH {
            return Err(WanError::Input(format!(
                "{} token ids; the encoder takes 1 to {T5_MAX_LENGTH}",
                ids.len()
            )));
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(WanError::Input(format!(
                "token id {bad} is not below vocab_size {}",
                self.cfg.vocab_size
            )));
        }
        let tokens = ids.len();
        let mut h = Vec::with_capacity(tokens * d);
        for &id in ids {
            let row = id as usize * d;
            h.extend_from_slice(&self.embedding[row..row + d]);
        }
        let buckets = bucket_table(tokens, &self.cfg);
        for block in &self.blocks {
            block.forward(&mut h, tokens, &buckets, &self.cfg);
        }
        rms_norm_in_place(&mut h, d, self.cfg.layer_norm_epsilon, &self.final_norm);
        Ok(h)
    }

    /// The pipeline's `prompt_embeds` for one prompt: [`forward`](Self::forward)'s rows, then
    /// zeros (+0.0) up to 512 rows → `[512, d_model]`.
    pub fn prompt_embeds(&self, ids: &[u32]) -> Result<Vec<f32>, WanError> {
        let mut out = self.forward(ids)?;
        out.resize(T5_MAX_LENGTH * self.cfg.d_model, 0.0);
        Ok(out)
    }
}

/// `shared.weight`, or `encoder.embed_tokens.weight` when only that name is stored. A checkpoint
/// holding both must hold the same tensor twice (transformers ties them; two different tables
/// would make the choice of name change the output).
fn load_embedding(store: &WeightStore, cfg: &UMT5Config) -> Result<Vec<f32>, WanError> {
    let shape = [cfg.vocab_size, cfg.d_model];
    match (store.contains(SHARED), store.contains(EMBED_TOKENS)) {
        (true, false) => store.get(SHARED, &shape),
        (false, true) => store.get(EMBED_TOKENS, &shape),
        (true, true) => {
            let shared = store.get(SHARED, &shape)?;
            let tokens = store.get(EMBED_TOKENS, &shape)?;
            if shared.iter().zip(&tokens).any(|(a, b)| a.to_bits() != b.to_bits()) {
                let path = store.file_of(EMBED_TOKENS).unwrap_or(store.source()).to_path_buf();
                return Err(WanError::config(
                    path,
                    format!("'{SHARED}' and '{EMBED_TOKENS}' differ; umT5 ties them, so they must be equal"),
                ));
            }
            Ok(shared)
        }
        (false, false) => Err(WanError::MissingTensor {
            tensor: format!("{SHARED} (or {EMBED_TOKENS})"),
            searched: store.source().display().to_string(),
        }),
    }
}

/// One prompt's text conditioning: `[512, d_model]`, the real tokens' rows then zeros.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptEmbeds {
    pub data: Vec<f32>,
    /// `[512, d_model]`.
    pub shape: [usize; 2],
    /// Rows holding real tokens (`</s>` included); the rest are zero.
    pub seq_len: usize,
}

/// Tokenizer plus encoder: `prompt → PromptEmbeds`, as `WanPipeline.encode_prompt` for one prompt
/// (the negative prompt is just another prompt; diffusers' default is `""`, which encodes `</s>`).
#[derive(Clone, Debug)]
pub struct TextEncoder {
    tokenizer: UmT5Tokenizer,
    encoder: UMT5Encoder,
}

impl TextEncoder {
    /// Loads `tokenizer/` and `text_encoder/` of the pipeline directory `pipeline_dir` (the one
    /// holding `model_index.json`).
    pub fn load(pipeline_dir: &Path) -> Result<Self, WanError> {
        let pipeline = PipelineDir::open(pipeline_dir)?;
        Self::from_dirs(
            &pipeline.component_dir("text_encoder")?,
            &pipeline.component_dir("tokenizer")?,
        )
    }

    /// Loads from the two component directories directly.
    pub fn from_dirs(text_encoder_dir: &Path, tokenizer_dir: &Path) -> Result<Self, WanError> {
        let tokenizer = UmT5Tokenizer::load(tokenizer_dir)?;
        let encoder = UMT5Encoder::load(text_encoder_dir)?;
        let (tokens, vocab) = (tokenizer.vocab_size(), encoder.config().vocab_size);
        if tokens > vocab {
            return Err(WanError::config(
                tokenizer.path(),
                format!("{tokens} tokens, more than the text encoder's vocab_size {vocab}"),
            ));
        }
        Ok(Self { tokenizer, encoder })
    }

    pub fn tokenizer(&self) -> &UmT5Tokenizer {
        &self.tokenizer
    }

    pub fn encoder(&self) -> &UMT5Encoder {
        &self.encoder
    }

    /// `prompt_embeds` of one prompt: cleaned, tokenised (at most 512 tokens), encoded and
    /// zero-padded to 512 rows.
    pub fn encode(&self, prompt: &str) -> Result<PromptEmbeds, WanError> {
        let tokens = self.tokenizer.encode(prompt)?;
        Ok(PromptEmbeds {
            data: self.encoder.prompt_embeds(&tokens.ids)?,
            shape: [T5_MAX_LENGTH, self.encoder.config().d_model],
            seq_len: tokens.seq_len(),
        })
    }
}
