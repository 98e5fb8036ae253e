// Counter-based Gaussian noise: Philox4x32-10 + Box–Muller, the GPU port of core/src/noise.rs.
//
// Counter [x/4, y, (step << 16) | channel, frame], key [seed_lo, seed_hi]; one Philox block gives
// the four Gaussians of x = 4b..4b+3, from two Box–Muller pairs computed in double and rounded once
// to float. The Philox words are bit-identical to the CPU. The doubles go through CUDA's log/sin/cos
// (≤ 1–2 ulp in double) instead of the host libm's, so a value can differ from the CPU in its last
// float bit only when the double result lies within a couple of double ulps of a float rounding
// boundary (about 2^-28 per value): the parity test allows 1 float ulp.
#include "common.cuh"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ uint4 philox4x32_10(uint4 ctr, unsigned int k0, unsigned int k1) {
    #pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        unsigned int hi0 = __umulhi(PHILOX_M0, ctr.x), lo0 = PHILOX_M0 * ctr.x;
        unsigned int hi1 = __umulhi(PHILOX_M1, ctr.z), lo1 = PHILOX_M1 * ctr.z;
        ctr = make_uint4(hi1 ^ ctr.y ^ k0, lo1, hi0 ^ ctr.w ^ k1, lo0);
    }
    return ctr;
}

__device__ __forceinline__ float2 box_muller(unsigned int a, unsigned int b) {
    const double inv_2_32 = 1.0 / 4294967296.0;
    const double tau = 6.283185307179586;  // std::f64::consts::TAU
    double u1 = ((double)a + 1.0) * inv_2_32;
    double u2 = (double)b * inv_2_32;
    double r = sqrt(-2.0 * log(u1));
    double theta = tau * u2;
    return make_float2((float)(r * cos(theta)), (float)(r * sin(theta)));
}

// Raw Philox blocks, for the known-answer test: out[4i..4i+4] = philox(ctr[i], key).
extern "C" __global__ void philox4x32_10_u32(const uint4* ctr, unsigned int k0, unsigned int k1,
                                             unsigned int* out, unsigned long long n) {
    FOR_EACH_INDEX(i, n) {
        uint4 r = philox4x32_10(ctr[i], k0, k1);
        out[4 * i] = r.x; out[4 * i + 1] = r.y; out[4 * i + 2] = r.z; out[4 * i + 3] = r.w;
    }
}

// out: [frames, channels, height, width] (frame-major latents) for global frames first_frame..;
// one thread per Philox block (four x positions of one row).
extern "C" __global__ void philox_gaussian_f32(float* out, unsigned int seed_lo, unsigned int seed_hi,
                                               unsigned int step, unsigned int first_frame,
                                               unsigned int frames, unsigned int channels,
                                               unsigned int height, unsigned int width) {
    unsigned long long blocks_per_row = (width + 3) / 4;
    unsigned long long n = (unsigned long long)frames * channels * height * blocks_per_row;
    FOR_EACH_INDEX(i, n) {
        unsigned int xb = (unsigned int)(i % blocks_per_row);
        unsigned long long row = i / blocks_per_row;  // (frame, channel, y)
        unsigned int y = (unsigned int)(row % height);
        unsigned long long plane = row / height;
        unsigned int channel = (unsigned int)(plane % channels);
        unsigned int frame = first_frame + (unsigned int)(plane / channels);
        uint4 r = philox4x32_10(make_uint4(xb, y, (step << 16) | channel, frame), seed_lo, seed_hi);
        float2 ab = box_muller(r.x, r.y), cd = box_muller(r.z, r.w);
        float g[4] = {ab.x, ab.y, cd.x, cd.y};
        float* dst = out + row * width + 4ull * xb;
        unsigned int left = width - 4 * xb;
        for (unsigned int k = 0; k < 4 && k < left; ++k) dst[k] = g[k];
    }
}
