//! The Wan2.1 transformer and VAE decoder on the GPU (feature `cuda`): the CPU forward of
//! [`WanTransformer`](super::WanTransformer) op for op, on `longshot_kernels::cuda`'s kernels and
//! cuBLASLt GEMMs; the VAE decoder ([`GpuWanVaeDecoder`]) on the VAE kernels, its convs on tensor
//! cores (bf16 operands, f32 accumulation and activations).
//!
//! Transformer precision (the dtype policy of diffusers in bf16, spec §1.4, except that activations stay f32
//! between ops):
//! - Every Linear of the patch embedding, text MLP, `time_proj`, the blocks and `proj_out` runs as
//!   a cuBLASLt GEMM with **bf16 weights and bf16-rounded inputs, f32 accumulation and f32
//!   output**; biases are f32 and added after the GEMM.
//! - Norm weights, biases, the modulation tables and the RoPE tables are f32; LayerNorm, RMSNorm,
//!   modulation, RoPE, GELU and gated residuals run in f32. Attention takes f32 q, k, v and runs
//!   on tensor cores: q, k, v and P rounded to bf16, scores, softmax and accumulation in f32.
//! - The time embedder (`time_embedder.linear_1/2`, kept in fp32 by diffusers too) runs on the
//!   host in f32 with the CPU reference ops: it is one token, and the result is needed on the host
//!   anyway to form each block's modulation vectors.
//!
//! Because of the bf16 GEMMs and attention, GPU vs CPU parity holds to the **bf16 tolerance** (≤ 1e-2 relative,
//! `max|Δ| / max|reference|`), not to the f32 one (1e-5): `tests/wan_gpu.rs` checks that on the
//! tiny fixture checkpoints. There is no f32-GEMM path.
//!
//! Files:
//! - [`transformer`]: [`GpuWanTransformer`] (load from a checkpoint directory or a
//!   [`WeightStore`](super::WeightStore), or random weights for benchmarks; `encode_text`;
//!   `forward` / `forward_device`) and [`GpuTextContext`];
//!   it implements `WanForward`, so [`GpuWanDenoiser`] is `wan::transformer::denoiser::WanDenoiser` on it;
//! - `block`: one transformer block; `linear`: a bf16 Linear and the device handle the layers
//!   share; `source`: where weights come from (checkpoint or seeded random); `error`:
//!   [`GpuWanError`]; `timing`: the optional per-phase timing of a forward ([`ForwardTimings`]);
//! - `vae`: [`GpuWanVaeDecoder`], the VAE decoder (bf16 tensor-core convs: GPU vs CPU to the bf16
//!   tolerance, sharded decode bit-identical to the GPU's sequential one), implementing `WanVae`, so
//!   [`GpuWanFrameDecoder`] is `wan::vae::frame_decoder::WanFrameDecoder` on it.

mod block;
mod error;
mod linear;
mod source;
mod timing;
mod transformer;
mod vae;

pub use error::GpuWanError;
pub use timing::ForwardTimings;
pub use transformer::{GpuTextContext, GpuWanTransformer};
pub use vae::GpuWanVaeDecoder;

/// Wan2.1 behind the `Denoiser` trait with the transformer on the GPU.
pub type GpuWanDenoiser = super::transformer::denoiser::WanDenoiser<GpuWanTransformer>;
/// The GPU VAE decoder behind the `FrameDecoder` trait.
pub type GpuWanFrameDecoder = super::vae::frame_decoder::WanFrameDecoder<GpuWanVaeDecoder>;
