//! The Wan2.1 transformer and VAE decoder on the GPU (feature `cuda`): the CPU forward of
//! [`WanTransformer`](super::WanTransformer) op for op, on `longshot_kernels::cuda`'s kernels and
//! cuBLASLt GEMMs; the VAE decoder ([`GpuWanVaeDecoder`]) on the VAE kernels, its convs on tensor
//! cores (bf16 operands, f32 accumulation and activations).
//!
//! Transformer precision (the dtype policy of diffusers in bf16, spec §1.4, except that the
//! residual stream stays f32):
//! - Every Linear runs as a cuBLASLt GEMM with **bf16 weights and bf16 inputs, f32
//!   accumulation**, the bias (and for the FFN's and text MLP's first Linear the tanh-GELU) fused
//!   into the epilogue. A GEMM writes **bf16 when another GEMM or attention consumes it** (the
//!   FFN hidden, the text embedding; bias then in bf16 as in diffusers) and **f32 when a norm or
//!   the residual does** (the fused QKV projection, the out-projections, `ffn_out`,
//!   `time_proj`, `proj_out`; bias f32).
//! - to_q/to_k/to_v of self-attention are one `[3D, D]` GEMM, to_k/to_v of cross-attention one
//!   `[2D, D]` GEMM (weights and biases concatenated at load).
//! - Norm weights, biases, the modulation tables and the RoPE tables are f32. LayerNorm (+ AdaLN
//!   modulation or affine) writes bf16; RMSNorm of q, k (across heads) and RoPE run in f32 on the
//!   fused projection and write bf16 q, k, v in the attention kernel's head layout; attention
//!   reads those and writes bf16 (tensor cores: scores, softmax and accumulation in f32, P in
//!   bf16); the gated residuals add into the f32 residual stream.
//! - The time embedder (`time_embedder.linear_1/2`, kept in fp32 by diffusers too) runs on the
//!   host in f32 with the CPU reference ops: it is one token computed from `t`, an input; its
//!   result goes to the device once. `timestep_proj` and every block's modulation stay on the
//!   device (no host round trip inside a forward), and the block stack runs as a CUDA graph
//!   from a shape's third forward (`transformer` module doc; `LONGSHOT_CUDA_GRAPHS=0` turns it
//!   off).
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
//! - `block`: one transformer block (fused QKV, the modulation layout); `linear`: a bf16 Linear
//!   with epilogue variants and the device handle the layers
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
