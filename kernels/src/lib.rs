//! Numeric ops used by the co-denoising loop and the models.
//!
//! `cpu` holds the reference implementations: plain, deterministic f32 code that is the ground truth
//! for every accelerated version. `cuda` (feature `cuda`, off by default) holds the same ops as
//! NVRTC-compiled CUDA kernels, loaded at run time so a build with the feature still runs, and
//! says "no driver", on machines without CUDA. This is the only crate that contains `unsafe`.
//!
//! Every op works on flat slices with explicit shapes so that the tensor type in `longshot-core`
//! (and later device buffers) can dispatch to it without copying.
//!
//! `tensor_core` holds the tensor-core attention kernel's geometry, index maps and tile loop in
//! plain Rust, checked on the CPU against the PTX ISA's fragment layouts and `cpu`'s attention.
//!
//! `mmap` is the safe, read-only file mapping the model loaders read checkpoints through; `h264`
//! (feature `h264`, for `longshot-media`) the one raw OpenH264 call the MP4 writer needs.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "h264")]
pub mod h264;
pub mod mmap;
pub mod tensor_core;
