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
//! `mmap` is the safe, read-only file mapping the model loaders read checkpoints through.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod mmap;
