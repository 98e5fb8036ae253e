// Element-wise ops of the DiT (kernels/src/cpu/nn_act.rs, models/src/wan/block.rs) and the bf16
// conversions that feed cuBLASLt. GELU/SiLU use CUDA's tanhf/expf (≤ 2 ulp), so they match the
// CPU by tolerance; the others are bit-identical.
#include "common.cuh"

#define GELU_TANH_BETA 0.7978846f
#define GELU_TANH_KAPPA 0.044715f

// x = 0.5·x·(1 + tanh(β·(x + κ·x³))), in place.
extern "C" __global__ void gelu_tanh_f32(float* x, unsigned long long n) {
    FOR_EACH_INDEX(i, n) {
        float v = x[i];
        float inner = GELU_TANH_BETA * (v + GELU_TANH_KAPPA * (v * v * v));
        x[i] = 0.5f * v * (1.0f + tanhf(inner));
    }
}

// x = x / (1 + exp(−x)), in place.
extern "C" __global__ void silu_f32(float* x, unsigned long long n) {
    FOR_EACH_INDEX(i, n) {
        float v = x[i];
        x[i] = v / (1.0f + expf(-v));
    }
}

// x[r, j] += y[r, j]·gate[j] (the gated residual of a Wan block; the product rounded first).
extern "C" __global__ void gated_residual_f32(float* x, const float* y, const float* gate,
                                              unsigned int dim, unsigned long long n) {
    FOR_EACH_INDEX(i, n) x[i] += y[i] * gate[i % dim];
}

// x[r, j] += bias[j] (the bias of a Linear whose product came from cuBLASLt).
extern "C" __global__ void add_bias_rows_f32(float* x, const float* bias, unsigned int dim,
                                             unsigned long long n) {
    FOR_EACH_INDEX(i, n) x[i] += bias[i % dim];
}

extern "C" __global__ void f32_to_bf16(const float* x, bf16_bits* out, unsigned long long n) {
    FOR_EACH_INDEX(i, n) out[i] = f32_to_bf16(x[i]);
}

extern "C" __global__ void bf16_to_f32(const bf16_bits* x, float* out, unsigned long long n) {
    FOR_EACH_INDEX(i, n) out[i] = bf16_to_f32(x[i]);
}
