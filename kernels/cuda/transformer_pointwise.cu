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

// The 16-byte forms (n and dim multiples of 4, buffers 16-byte aligned; the wrappers check):
// x[r, j] += y[r, j]·gate[j], the same arithmetic as gated_residual_f32, four floats per access.
extern "C" __global__ void gated_residual_f32x4(float4* x, const float4* __restrict__ y,
                                                const float4* __restrict__ gate, unsigned int dim4,
                                                unsigned long long n4) {
    FOR_EACH_INDEX(i, n4) {
        float4 a = x[i];
        const float4 b = y[i], g = gate[i % dim4];
        a.x += b.x * g.x;
        a.y += b.y * g.y;
        a.z += b.z * g.z;
        a.w += b.w * g.w;
        x[i] = a;
    }
}

// out[r, j] = table[r, j] + v[j]: each block's AdaLN modulation, scale_shift_table [L, 6·D] plus
// the step's timestep_proj [6·D] (one f32 add, as the CPU's).
extern "C" __global__ void add_row_vector_f32x4(const float4* __restrict__ table, const float4* __restrict__ v,
                                                float4* __restrict__ out, unsigned int dim4,
                                                unsigned long long n4) {
    FOR_EACH_INDEX(i, n4) {
        const float4 a = table[i], b = v[i % dim4];
        out[i] = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
    }
}
