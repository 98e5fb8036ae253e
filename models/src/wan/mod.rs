//! Wan2.1 text-to-video, ported from diffusers 0.42 (`docs/wan21.md` is the spec that `spec §N`
//! in this module's comments refers to; goldens from `scripts/goldens/wan.py`). CPU reference in
//! f32.
//!
//! Module map, by component (a second model family would mirror it):
//! - Loading, shared by every component:
//!   - [`weights`]: [`WeightStore`], the tensors of one component directory (single or sharded
//!     safetensors, F32/BF16/F16 upcast to f32, shape and finiteness checks, unused-tensor
//!     tracking); [`safetensors_file`]: one memory-mapped file and its validation.
//!   - [`pipeline`]: [`PipelineDir`] (`model_index.json` and component directories) and the
//!     scheduler config.
//!   - [`error`]: [`WanError`], naming the file and tensor of every loading failure.
//!   - [`fingerprint`]: a cheap fingerprint of a pipeline's weights (`ModelInfo::weights`).
//!   - [`tensor_io`]: named-tensor safetensors files for the `longshot dev` commands.
//! - [`transformer`]: `WanTransformer3DModel` (spec §1): [`WanTransformer`], its config, blocks,
//!   embeddings, RoPE, tensor names, FLOPs, and [`transformer::denoiser::WanDenoiser`], Wan2.1
//!   behind the `Denoiser` trait for one job.
//! - [`vae`]: `AutoencoderKLWan` (spec §2): [`WanVaeEncoder`] (`encode`'s posterior mean) and
//!   [`WanVaeDecoder`] (whole-clip
//!   `decode`, and `decode_range`: a shard with a causal warm-up halo, bit-identical to the
//!   sequential decode), its config, blocks and tensor names, and
//!   [`vae::frame_decoder::WanFrameDecoder`] behind the `FrameDecoder` trait.
//! - [`clip`]: the image encoder of image-to-video (`CLIPVisionModel`'s penultimate hidden
//!   states): [`ClipVisionEncoder`].
//! - [`image2video`]: the mask and VAE condition image-to-video adds to the transformer's input.
//! - [`t5`]: the umT5 text encoder and tokenizer (`UMT5EncoderModel`, spec §3), run once per job:
//!   [`TextEncoder`] (`load(pipeline_dir)`, `encode(prompt)` → [`PromptEmbeds`] `[512, d]`),
//!   [`UMT5Encoder`], [`UMT5Config`], [`UmT5Tokenizer`] and WanPipeline's prompt cleaning.
//! - [`layout`]: frame-major ↔ channel-major latents, for the `Denoiser` and `FrameDecoder` edges.
//! - [`served`]: [`WanModel`], a pipeline as a worker serves it (transformer and VAE loaded,
//!   text encoder on first use, a denoiser per job from the embeddings the coordinator sent).
//! - [`sample`]: WanPipeline's loop over one native-length clip (`longshot dev sample`).
//!
//! Numeric ops (GEMM, norms, activations, attention, RoPE) live in `longshot_kernels::cpu::nn_*`,
//! the CPU references a GPU port is checked against.
//!
//! - [`gpu`] (feature `cuda`): `GpuWanTransformer`, the transformer forward on one GPU (bf16
//!   cuBLASLt GEMMs, f32 elsewhere; parity with the CPU to the bf16 tolerance, 1e-2 relative), and
//!   `GpuWanVaeDecoder`.
//!
//! Not here yet: bf16 execution on the CPU (weights are upcast to f32).

pub mod clip;
pub mod error;
pub mod fingerprint;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod image2video;
pub mod layout;
pub mod pil_resize;
pub mod pipeline;
pub mod safetensors_file;
pub mod sample;
pub mod served;
pub mod t5;
pub mod tensor_io;
pub mod transformer;
pub mod vae;
pub mod video2video;
pub mod weights;

pub use clip::{ClipImageProcessor, ClipVisionConfig, ClipVisionEncoder};
pub use error::WanError;
pub use pipeline::{PipelineDir, SchedulerConfig, SchedulerKind};
pub use served::{served_info, served_name, WanBackend, WanModel};
pub use t5::config::UMT5Config;
pub use t5::tokenizer::{TokenizedPrompt, UmT5Tokenizer, T5_MAX_LENGTH};
pub use t5::{PromptEmbeds, TextEncoder, UMT5Encoder};
pub use transformer::config::TransformerConfig;
pub use transformer::denoiser::WanForward;
pub use transformer::flops::{forward_flops, forward_flops_breakdown, ForwardFlops};
pub use transformer::{TextContext, WanTransformer};
pub use vae::config::{VaeConfig, WAN21_DECODE_HALO};
pub use vae::encoder::{WanVaeEncoder, WAN21_ENCODE_HALO};
pub use vae::{DecodedFrames, WanVae, WanVaeDecoder};
pub use weights::WeightStore;
