//! Numeric ops used by the co-denoising loop and the models.
//!
//! `cpu` holds the reference implementations: plain, deterministic f32 code that is the ground truth
//! for every accelerated version. A CUDA backend (issue: GPU backend) adds the same ops behind a
//! feature; this is the only crate that will ever contain `unsafe`.
//!
//! Every op works on flat slices with explicit shapes so that the tensor type in `longshot-core`
//! (and later device buffers) can dispatch to it without copying.
//!
//! `mmap` is the safe, read-only file mapping the model loaders read checkpoints through.

pub mod cpu;
pub mod mmap;
