// Shared helpers for every Longshot kernel family, handed to NVRTC as an in-memory header
// (kernels/src/cuda/sources.rs), so no CUDA toolkit headers are needed: the pip NVRTC package
// ships none.
//
// All modules are compiled with --fmad=false: a*b+c must round twice, as the CPU references do,
// or the element-wise ops would not be bit-identical to them. Kernels that want an FMA call fmaf.
#pragma once

typedef unsigned short bf16_bits;  // bfloat16 stored as its 16 raw bits

__device__ __forceinline__ float bf16_to_f32(bf16_bits h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

// Round to nearest even, NaN kept quiet (the rounding PyTorch's .to(torch.bfloat16) uses).
__device__ __forceinline__ bf16_bits f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0u) {
        return (bf16_bits)((u >> 16) | 0x0040u);
    }
    unsigned int rounding = 0x7fffu + ((u >> 16) & 1u);
    return (bf16_bits)((u + rounding) >> 16);
}

// Grid-stride loop over n elements (n fits in 64 bits; Wan latents exceed 2^31 elements in bf16
// activations at 720p, so indices are 64-bit throughout).
#define FOR_EACH_INDEX(i, n)                                                                  \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;   \
         i < (unsigned long long)(n);                                                       \
         i += (unsigned long long)blockDim.x * gridDim.x)
