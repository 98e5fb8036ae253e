// Row-wise normalisations of the DiT (kernels/src/cpu/nn_norm.rs): LayerNorm with or without
// affine parameters, LayerNorm fused with AdaLN modulation, and RMSNorm, on [rows, dim] f32.
//
// One block per row. Statistics are accumulated in double like the CPU reference, but as a tree
// over the block instead of in index order; the double sums differ by a few double ulps at most,
// so mean/rstd rounded to float almost always match bit for bit, and the per-element float
// arithmetic is the reference's, in its order.
#include "common.cuh"

#define NORM_THREADS 256

__device__ double block_sum_f64(double v) {
    __shared__ double partial[NORM_THREADS];
    partial[threadIdx.x] = v;
    __syncthreads();
    for (unsigned int s = NORM_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    double total = partial[0];
    __syncthreads();  // partial is reused by the next call
    return total;
}

// (mean, rstd) of one row, rounded to float.
__device__ float2 row_stats(const float* row, unsigned int dim, double eps) {
    double s = 0.0;
    for (unsigned int j = threadIdx.x; j < dim; j += NORM_THREADS) s += (double)row[j];
    double mean = block_sum_f64(s) / (double)dim;
    double q = 0.0;
    for (unsigned int j = threadIdx.x; j < dim; j += NORM_THREADS) {
        double d = (double)row[j] - mean;
        q += d * d;
    }
    double var = block_sum_f64(q) / (double)dim;
    return make_float2((float)mean, (float)(1.0 / sqrt(var + eps)));
}

// out = (x − mean)·rstd, then ·weight + bias when weight is not null (bias then too).
extern "C" __global__ void layer_norm_f32(const float* x, float* out, const float* weight,
                                          const float* bias, unsigned int dim, double eps) {
    const float* row = x + (unsigned long long)blockIdx.x * dim;
    float* orow = out + (unsigned long long)blockIdx.x * dim;
    float2 st = row_stats(row, dim, eps);
    for (unsigned int j = threadIdx.x; j < dim; j += NORM_THREADS) {
        float n = (row[j] - st.x) * st.y;
        orow[j] = weight ? n * weight[j] + bias[j] : n;
    }
}

// out = ((x − mean)·rstd)·(1 + scale) + shift; scale, shift: [dim], shared by all rows.
extern "C" __global__ void layer_norm_modulate_f32(const float* x, float* out, const float* scale,
                                                   const float* shift, unsigned int dim, double eps) {
    const float* row = x + (unsigned long long)blockIdx.x * dim;
    float* orow = out + (unsigned long long)blockIdx.x * dim;
    float2 st = row_stats(row, dim, eps);
    for (unsigned int j = threadIdx.x; j < dim; j += NORM_THREADS) {
        float one_plus = 1.0f + scale[j];
        orow[j] = (row[j] - st.x) * st.y * one_plus + shift[j];
    }
}

// In place: x = (x·r)·weight, r = 1/sqrt(mean(x²) + eps) in double, rounded to float.
extern "C" __global__ void rms_norm_f32(float* x, const float* weight, unsigned int dim, double eps) {
    float* row = x + (unsigned long long)blockIdx.x * dim;
    double s = 0.0;
    for (unsigned int j = threadIdx.x; j < dim; j += NORM_THREADS) s += (double)row[j] * (double)row[j];
    double ms = block_sum_f64(s) / (double)dim;
    float r = (float)(1.0 / sqrt(ms + eps));
    for (unsigned int j = threadIdx.x; j < dim; j += NORM_THREADS) row[j] = row[j] * r * weight[j];
}
