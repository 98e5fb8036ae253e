//! The CUDA C sources, embedded in the binary (`kernels/cuda/*.cu`), one per op family. Each is
//! compiled by NVRTC at run time for the device's architecture; `common.cuh` is handed to NVRTC
//! as an in-memory header, so no CUDA toolkit headers are needed anywhere.

/// One `.cu` file: its name (used in NVRTC's diagnostics and the cache) and its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelSource {
    pub file: &'static str,
    pub text: &'static str,
}

macro_rules! cuda_source {
    ($name:ident, $file:literal) => {
        pub const $name: KernelSource = KernelSource {
            file: $file,
            text: include_str!(concat!("../../cuda/", $file)),
        };
    };
}

cuda_source!(NOISE_PHILOX, "noise_philox.cu");
cuda_source!(DENOISE_UPDATE, "denoise_update.cu");
cuda_source!(TRANSFORMER_NORM, "transformer_norm.cu");
cuda_source!(TRANSFORMER_POINTWISE, "transformer_pointwise.cu");
cuda_source!(TRANSFORMER_ROPE, "transformer_rope.cu");
cuda_source!(TRANSFORMER_PATCHIFY, "transformer_patchify.cu");
cuda_source!(ATTENTION_FLASH, "attention_flash.cu");
cuda_source!(VAE_OPS, "vae_ops.cu");
cuda_source!(VAE_CONV_TC, "vae_conv_tc.cu");

/// Every kernel family (what the NVRTC compile test walks).
pub const ALL: &[KernelSource] = &[
    NOISE_PHILOX,
    DENOISE_UPDATE,
    TRANSFORMER_NORM,
    TRANSFORMER_POINTWISE,
    TRANSFORMER_ROPE,
    TRANSFORMER_PATCHIFY,
    ATTENTION_FLASH,
    VAE_OPS,
    VAE_CONV_TC,
];

/// In-memory headers `(include name, text)` available to every source.
pub const HEADERS: &[(&str, &str)] = &[
    ("common.cuh", include_str!("../../cuda/common.cuh")),
    ("mma_sm80.cuh", include_str!("../../cuda/mma_sm80.cuh")),
];

/// NVRTC options every module is compiled with. `--fmad=false`: the CPU references round every
/// product and sum separately, and contracting them into FMAs would change the bits of the
/// element-wise ops (kernels that want an FMA call `fmaf` explicitly).
pub const COMPILE_OPTIONS: &[&str] = &["--fmad=false", "--std=c++17"];
