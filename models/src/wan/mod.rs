//! Wan2.1 text-to-video, ported from diffusers 0.42 (`docs/wan21.md` is the spec that `spec §N`
//! in this module's comments refers to; goldens from `scripts/goldens/wan.py`). CPU reference in
//! f32.
//!
//! Module map:
//! - Loading, shared by every Wan component (transformer, VAE decoder, umT5):
//!   - [`weights`]: [`WeightStore`], the tensors of one component directory (single or sharded
//!     safetensors, F32/BF16/F16 upcast to f32, shape and finiteness checks, unused-tensor
//!     tracking); [`safetensors_file`]: one memory-mapped file and its validation.
//!   - [`config`]: the transformer `config.json` (diffusers or original layout), the scheduler
//!     config, and [`PipelineDir`] (`model_index.json` and component directories).
//!   - [`error`]: [`WanError`], naming the file and tensor of every loading failure.
//! - Transformer (`WanTransformer3DModel`, spec §1):
//!   - [`transformer`]: [`WanTransformer`] (load, text conditioning, forward);
//!   - [`block`]: one transformer block; [`embed`]: patch / time / text embeddings and
//!     unpatchify; [`rope`]: the 3D RoPE tables; [`layers`]: `Linear` and the named-tensor fetch;
//!     [`keys`]: original Wan2.1 ↔ diffusers tensor names.
//!   - [`flops`]: [`forward_flops`], the work of one forward (spec §6).
//! - [`layout`]: frame-major ↔ channel-major latents, for the `Denoiser` edge.
//! - [`denoiser`]: [`denoiser::WanDenoiser`], Wan2.1 behind the `Denoiser` trait for one job.
//! - [`frame_decoder`]: the VAE behind the `FrameDecoder` trait (denormalise, decode with the
//!   causal warm-up halo, RGB in [0, 1]).
//! - [`fingerprint`]: a cheap fingerprint of a pipeline's weights (`ModelInfo::weights`).
//! - [`served`]: [`WanModel`], a pipeline as a worker serves it (transformer and VAE loaded,
//!   text encoder on first use, a denoiser per job from the embeddings the coordinator sent).
//! - [`sample`]: WanPipeline's loop over one native-length clip (`longshot dev sample`).
//! - [`tensor_io`]: named-tensor safetensors files for the `longshot dev` commands.
//! - umT5 text encoder and tokenizer (`UMT5EncoderModel`, spec §3), run once per job:
//!   - [`t5`]: [`TextEncoder`] (`load(pipeline_dir)`, `encode(prompt)` → [`PromptEmbeds`]
//!     `[512, d]`) and [`UMT5Encoder`]; [`t5_layers`]: one block and the relative-position
//!     buckets; [`t5_config`]: [`UMT5Config`];
//!   - [`tokenizer`]: [`UmT5Tokenizer`] (`tokenizer.json` as transformers 5 builds it, 512 tokens
//!     with `</s>`); [`t5_prompt`]: WanPipeline's `prompt_clean` (Python's `html.unescape`, no ftfy).
//! - VAE decoder (the decoder half of `AutoencoderKLWan`, spec §2):
//!   - [`vae`]: [`WanVaeDecoder`] (load, denormalise, whole-clip `decode`, and `decode_range`:
//!     a shard with a causal warm-up halo, bit-identical to the sequential decode);
//!   - [`vae_blocks`]: residual / attention / up-blocks on frame-major video; [`vae_config`]:
//!     [`VaeConfig`], the derived structure and [`VaeConfig::decode_halo`]; [`vae_keys`]:
//!     original `Wan2.1_VAE.pth` ↔ diffusers tensor names.
//!
//! Numeric ops (GEMM, norms, activations, attention, RoPE) live in `longshot_kernels::cpu::nn_*`,
//! the CPU references a GPU port is checked against.
//!
//! - [`gpu`] (feature `cuda`): `GpuWanTransformer`, the transformer forward on one GPU (bf16
//!   cuBLASLt GEMMs, f32 elsewhere; parity with the CPU to the bf16 tolerance, 1e-2 relative).
//!
//! Not here yet: bf16 execution on the CPU (weights are upcast to f32).

pub mod block;
pub mod config;
pub mod denoiser;
pub mod embed;
pub mod error;
pub mod fingerprint;
pub mod flops;
pub mod frame_decoder;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod keys;
pub mod layers;
pub mod layout;
pub mod rope;
pub mod safetensors_file;
pub mod sample;
pub mod served;
pub mod t5;
pub mod t5_config;
pub mod t5_layers;
pub mod t5_prompt;
pub mod tensor_io;
pub mod tokenizer;
pub mod transformer;
pub mod vae;
pub mod vae_blocks;
pub mod vae_config;
pub mod vae_keys;
pub mod weights;

pub use config::{PipelineDir, SchedulerConfig, SchedulerKind, TransformerConfig};
pub use error::WanError;
pub use flops::{forward_flops, forward_flops_breakdown, ForwardFlops};
pub use served::{served_name, WanBackend, WanModel};
pub use t5::{PromptEmbeds, TextEncoder, UMT5Encoder};
pub use t5_config::UMT5Config;
pub use tokenizer::{TokenizedPrompt, UmT5Tokenizer, T5_MAX_LENGTH};
pub use denoiser::WanForward;
pub use transformer::{TextContext, WanTransformer};
pub use vae::{DecodedFrames, WanVae, WanVaeDecoder};
pub use vae_config::{VaeConfig, WAN21_DECODE_HALO};
pub use weights::WeightStore;
