//! The CUDA backend (feature `cuda`): every op of [`crate::cpu`] that the co-denoising loop and
//! Wan2.1 need, as NVRTC-compiled kernels with typed, length-checked launch wrappers.
//!
//! Layout:
//! - [`probe`]: is there a driver, a device, an NVRTC? Answers with [`CudaError`], never a panic
//!   (cudarc panics on first use of a missing library, so everything asks here first).
//! - [`sources`]: the embedded `kernels/cuda/*.cu` files, one per op family, and the compile options.
//! - [`nvrtc`]: compiles one source for one architecture; errors keep NVRTC's log.
//! - [`kernel_cache`]: compiled modules on disk, keyed by source, options, arch and NVRTC version;
//!   an entry is used only when its header's key, length and hash match, and written atomically.
//! - [`backend`]: [`CudaBackend`] (device, stream, loaded modules) and launch helpers.
//! - `ops_denoise`, `ops_transformer`, `ops_fused` (the DiT's fused bf16 path), `ops_vae`: the
//!   launch wrappers, as `CudaBackend` methods.
//! - [`tensor_map`]: TMA tensor maps (`cuTensorMapEncodeTiled`) for the wgmma attention kernel.
//! - [`gemm_cublaslt`]: bf16 × bf16 → f32 or bf16 GEMMs through cuBLASLt, bias and GELU fused
//!   into the epilogue, plans cached per shape.
//! - [`nccl_exchange`]: the overlap exchange over NCCL on a communication stream (single-rank
//!   tested on the device; multi-rank NCCL has not been run here).
//! - [`parity`]: seeded random inputs and comparisons for the GPU parity tests (test support).
//!
//! The CPU references stay the ground truth: each kernel documents which reference it mirrors and
//! whether it matches bit for bit or by tolerance (`kernels/tests/gpu_*.rs` and, for the
//! references that live in core and models, `tests/tests/gpu_parity_*.rs` check both).

pub mod backend;
pub mod error;
pub mod gemm_cublaslt;
pub mod kernel_cache;
pub mod nccl_exchange;
pub mod nccl_host;
pub mod nvrtc;
mod ops_denoise;
mod ops_fused;
mod ops_transformer;
mod ops_vae;
pub mod parity;
pub mod probe;
pub mod sources;
pub mod tensor_map;

pub use crate::tensor_core::conv::{pack_conv_weight, ConvGeometry};
pub use backend::{CapturedGraph, CudaBackend};
pub use error::CudaError;
pub use gemm_cublaslt::{BlasLt, Epilogue, GemmKey, GemmOut, OutType};
pub use kernel_cache::{CacheKey, CacheOutcome, KernelCache};
pub use nccl_exchange::{nccl_version, InFlight, NcclExchange, NcclUniqueId};
pub use nccl_host::HostOverlapExchange;
pub use ops_denoise::UniPcCoefficients;
pub use ops_fused::{LnAffine, QkvLayout};
pub use ops_transformer::{choose_attention_kernel, AttentionKernel, ATTENTION_ENV, ATTN_HEAD_DIMS};
pub use ops_vae::ConvShape;
pub use probe::DeviceInfo;
