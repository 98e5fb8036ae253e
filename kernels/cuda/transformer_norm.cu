// Row-wise normalisations of the DiT (kernels/src/cpu/nn_norm.rs): LayerNorm with or without
// affine parameters, LayerNorm fused with AdaLN modulation, and RMSNorm, on [rows, dim] f32; and
// the fused forms that feed the bf16 GEMMs and attention (kernels/src/cpu/nn_fused.rs):
// LayerNorm (+ modulation or affine) → bf16, and RMSNorm (q, k across heads) + interleaved RoPE →
// bf16 attention inputs, read from a fused QKV projection.
//
// One warp per row, NORM_WARPS rows per block, no shared memory and no barrier. A row is read
// with 16-byte loads when dim is a multiple of 4 (Wan's always is; the rows then start 16-byte
// aligned), else element by element. Statistics are accumulated in double like the CPU reference,
// but as a lane-strided sum and a butterfly over the warp instead of in index order; the double
// sums differ by a few double ulps at most, so mean/rstd rounded to float almost always match bit
// for bit, and the per-element float arithmetic is the reference's, in its order. The butterfly
// leaves the same total in every lane (each step adds the same two values, commutatively).
#include "common.cuh"

#define NORM_WARPS 8
#define NORM_THREADS (NORM_WARPS * 32)

typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Σ f(row[j]) over the row, in double, every lane receiving the total.
template <typename F>
__device__ __forceinline__ double warp_row_sum(const float* __restrict__ row, u32 dim, u32 lane, F f) {
    double s = 0.0;
    if ((dim & 3u) == 0u) {
        const float4* r4 = reinterpret_cast<const float4*>(row);
        for (u32 j = lane; j < dim / 4; j += 32) {
            const float4 v = r4[j];
            s += f(v.x);
            s += f(v.y);
            s += f(v.z);
            s += f(v.w);
        }
    } else {
        for (u32 j = lane; j < dim; j += 32) s += f(row[j]);
    }
    return warp_sum_f64(s);
}

// (mean, rstd) of one row, two-pass in double, rounded to float.
__device__ __forceinline__ float2 warp_row_stats(const float* __restrict__ row, u32 dim, double eps, u32 lane) {
    const double mean = warp_row_sum(row, dim, lane, [](float v) { return (double)v; }) / (double)dim;
    const double var = warp_row_sum(row, dim, lane,
                                    [mean](float v) {
                                        const double d = (double)v - mean;
                                        return d * d;
                                    }) /
                       (double)dim;
    return make_float2((float)mean, (float)(1.0 / sqrt(var + eps)));
}

// 1/sqrt(mean(x²) + eps) of one row in double, rounded to float.
__device__ __forceinline__ float warp_row_rms(const float* __restrict__ row, u32 dim, double eps, u32 lane) {
    const double ms = warp_row_sum(row, dim, lane, [](float v) { return (double)v * (double)v; }) / (double)dim;
    return (float)(1.0 / sqrt(ms + eps));
}

// The warp's row, or rows when past the end (the whole warp then returns).
#define WARP_ROW(row, lane)                                   \
    const u32 lane = threadIdx.x & 31u;                       \
    const u32 row = blockIdx.x * NORM_WARPS + (threadIdx.x >> 5)

// Element j of the normalised row (n = (x − mean)·rstd), then the optional per-column step:
// n·m + a, m = 1 + mul[j] (one_plus, AdaLN modulation, `1 + scale` rounded first) or mul[j]
// (affine); plain n when mul is null.
__device__ __forceinline__ float ln_elem(float x, float2 st, const float* mul, const float* add, bool one_plus, u32 j) {
    const float n = (x - st.x) * st.y;
    if (!mul) return n;
    const float m = one_plus ? 1.0f + mul[j] : mul[j];
    return n * m + add[j];
}

// out = (x − mean)·rstd, then ·weight + bias when weight is not null (bias then too).
extern "C" __global__ void __launch_bounds__(NORM_THREADS)
    layer_norm_f32(const float* __restrict__ x, float* __restrict__ out, const float* __restrict__ weight,
                   const float* __restrict__ bias, u32 rows, u32 dim, double eps) {
    WARP_ROW(r, lane);
    if (r >= rows) return;
    const float* row = x + (u64)r * dim;
    float* orow = out + (u64)r * dim;
    const float2 st = warp_row_stats(row, dim, eps, lane);
    for (u32 j = lane; j < dim; j += 32) orow[j] = ln_elem(row[j], st, weight, bias, false, j);
}

// out = ((x − mean)·rstd)·(1 + scale) + shift; scale, shift: [dim], shared by all rows.
extern "C" __global__ void __launch_bounds__(NORM_THREADS)
    layer_norm_modulate_f32(const float* __restrict__ x, float* __restrict__ out, const float* __restrict__ scale,
                            const float* __restrict__ shift, u32 rows, u32 dim, double eps) {
    WARP_ROW(r, lane);
    if (r >= rows) return;
    const float* row = x + (u64)r * dim;
    float* orow = out + (u64)r * dim;
    const float2 st = warp_row_stats(row, dim, eps, lane);
    for (u32 j = lane; j < dim; j += 32) orow[j] = ln_elem(row[j], st, scale, shift, true, j);
}

// In place: x = (x·r)·weight, r = 1/sqrt(mean(x²) + eps) in double, rounded to float.
extern "C" __global__ void __launch_bounds__(NORM_THREADS)
    rms_norm_f32(float* __restrict__ x, const float* __restrict__ weight, u32 rows, u32 dim, double eps) {
    WARP_ROW(r, lane);
    if (r >= rows) return;
    float* row = x + (u64)r * dim;
    const float rr = warp_row_rms(row, dim, eps, lane);
    for (u32 j = lane; j < dim; j += 32) row[j] = row[j] * rr * weight[j];
}

// LayerNorm (+ modulation when one_plus, + affine otherwise, plain when mul is null) rounded to
// bf16: the input of the GEMM that follows. dim must be a multiple of 4 (16-byte loads of x, mul
// and add; 8-byte stores of four bf16).
extern "C" __global__ void __launch_bounds__(NORM_THREADS)
    layer_norm_bf16(const float* __restrict__ x, bf16_bits* __restrict__ out, const float* __restrict__ mul,
                    const float* __restrict__ add, u32 one_plus, u32 rows, u32 dim, double eps) {
    WARP_ROW(r, lane);
    if (r >= rows) return;
    const float* row = x + (u64)r * dim;
    const float2 st = warp_row_stats(row, dim, eps, lane);
    const float4* x4 = reinterpret_cast<const float4*>(row);
    uint2* o4 = reinterpret_cast<uint2*>(out + (u64)r * dim);
    for (u32 j4 = lane; j4 < dim / 4; j4 += 32) {
        const float4 v = x4[j4];
        float y[4] = {v.x, v.y, v.z, v.w};
        if (mul) {
            const float4 m4 = reinterpret_cast<const float4*>(mul)[j4];
            const float4 a4 = reinterpret_cast<const float4*>(add)[j4];
            const float m[4] = {m4.x, m4.y, m4.z, m4.w}, a[4] = {a4.x, a4.y, a4.z, a4.w};
#pragma unroll
            for (u32 e = 0; e < 4; ++e) {
                const float n = (y[e] - st.x) * st.y;
                y[e] = n * (one_plus ? 1.0f + m[e] : m[e]) + a[e];
            }
        } else {
#pragma unroll
            for (u32 e = 0; e < 4; ++e) y[e] = (y[e] - st.x) * st.y;
        }
        o4[j4] = make_uint2((u32)f32_to_bf16(y[0]) | ((u32)f32_to_bf16(y[1]) << 16),
                            (u32)f32_to_bf16(y[2]) | ((u32)f32_to_bf16(y[3]) << 16));
    }
}

// The attention inputs from a fused projection x [rows, parts·dim] (f32, parts ≤ 3 slices of dim
// columns: q, k, v for self-attention; k, v of the text; q alone): part p = blockIdx.y is
// RMS-normalised over its whole row (all heads) with weight w_p when w_p is not null (w0 for
// part 0, w1 for part 1, none for part 2), rotated by interleaved RoPE when p < rope_parts
// (cos/sin [rows, head_dim], pair (2i, 2i+1) by cos[2i], sin[2i+1]), rounded to bf16 and written
// to o_p [rows·heads, padded] (heads = dim / head_dim; columns ≥ head_dim are not written: they
// stay the zeros they were allocated with, the attention kernel's head padding). dim, head_dim
// and padded must be multiples of 4: a 16-byte chunk of the row then lies in one head and holds
// two whole RoPE pairs.
extern "C" __global__ void __launch_bounds__(NORM_THREADS)
    qkv_rms_rope_bf16(const float* __restrict__ x, u32 parts, const float* __restrict__ w0,
                      const float* __restrict__ w1, const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                      u32 rope_parts, bf16_bits* __restrict__ o0, bf16_bits* __restrict__ o1,
                      bf16_bits* __restrict__ o2, u32 rows, u32 dim, u32 head_dim, u32 padded, double eps) {
    WARP_ROW(r, lane);
    if (r >= rows) return;
    const u32 p = blockIdx.y;
    const float* row = x + (u64)r * parts * dim + (u64)p * dim;
    const float* w = p == 0 ? w0 : (p == 1 ? w1 : nullptr);
    bf16_bits* o = p == 0 ? o0 : (p == 1 ? o1 : o2);
    const bool rope = cos_t != nullptr && p < rope_parts;
    const float rr = w ? warp_row_rms(row, dim, eps, lane) : 1.0f;
    const u32 heads = dim / head_dim;
    const float4* x4 = reinterpret_cast<const float4*>(row);
    for (u32 j4 = lane; j4 < dim / 4; j4 += 32) {
        const float4 v = x4[j4];
        float y[4] = {v.x, v.y, v.z, v.w};
        const u32 col = 4 * j4, h = col / head_dim, c = col - h * head_dim;
        if (w) {
            const float4 g = reinterpret_cast<const float4*>(w)[j4];
            y[0] = y[0] * rr * g.x;
            y[1] = y[1] * rr * g.y;
            y[2] = y[2] * rr * g.z;
            y[3] = y[3] * rr * g.w;
        }
        if (rope) {
            const u64 t = (u64)r * head_dim + c;
            const float4 cs = *reinterpret_cast<const float4*>(cos_t + t);
            const float4 sn = *reinterpret_cast<const float4*>(sin_t + t);
            const float a0 = y[0] * cs.x - y[1] * sn.y, a1 = y[0] * sn.y + y[1] * cs.x;
            const float b0 = y[2] * cs.z - y[3] * sn.w, b1 = y[2] * sn.w + y[3] * cs.z;
            y[0] = a0;
            y[1] = a1;
            y[2] = b0;
            y[3] = b1;
        }
        *reinterpret_cast<uint2*>(o + ((u64)r * heads + h) * padded + c) =
            make_uint2((u32)f32_to_bf16(y[0]) | ((u32)f32_to_bf16(y[1]) << 16),
                       (u32)f32_to_bf16(y[2]) | ((u32)f32_to_bf16(y[3]) << 16));
    }
}
