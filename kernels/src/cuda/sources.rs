//! The CUDA C sources, embedded in the binary (`kernels/cuda/*.cu`), one per op family. Each is
//! compiled by NVRTC at run time for the device's architecture; `common.cuh` is handed to NVRTC
//! as an in-memory header, so no CUDA toolkit headers are needed anywhere.

/// One `.cu` file: its name (used in NVRTC's diagnostics and the cache), its text, and whether it
/// needs the architecture-specific target (`sm_90a`: wgmma and friends exist only there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelSource {
    pub file: &'static str,
    pub text: &'static str,
    pub arch_specific: bool,
}

impl KernelSource {
    /// The NVRTC architecture to compile this source with on a device whose own is `device_arch`
    /// (`sm_90`): the `a` variant (`sm_90a`) for an `arch_specific` source, else `device_arch`.
    /// The variant is a different cache key (arch and options), so the two images never collide.
    pub fn arch_for(&self, device_arch: &str) -> String {
        let real = device_arch.starts_with("sm_") && !device_arch.ends_with('a');
        if self.arch_specific && real {
            format!("{device_arch}a")
        } else {
            device_arch.to_string()
        }
    }
}

macro_rules! cuda_source {
    ($name:ident, $file:literal) => {
        cuda_source!($name, $file, false);
    };
    ($name:ident, $file:literal, $arch_specific:literal) => {
        pub const $name: KernelSource = KernelSource {
            file: $file,
            text: include_str!(concat!("../../cuda/", $file)),
            arch_specific: $arch_specific,
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
// wgmma, TMA tensor copies: sm_90a only (the backend uses it on compute capability 9.0).
cuda_source!(ATTENTION_WGMMA, "attention_wgmma.cu", true);
cuda_source!(VAE_OPS, "vae_ops.cu");
cuda_source!(VAE_CONV_TC, "vae_conv_tc.cu");

/// Every kernel family (what the NVRTC compile test walks, each for its [`KernelSource::arch_for`]).
pub const ALL: &[KernelSource] = &[
    NOISE_PHILOX,
    DENOISE_UPDATE,
    TRANSFORMER_NORM,
    TRANSFORMER_POINTWISE,
    TRANSFORMER_ROPE,
    TRANSFORMER_PATCHIFY,
    ATTENTION_FLASH,
    ATTENTION_WGMMA,
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
