// The Wan VAE decoder's ops (kernels/src/cpu/nn_conv.rs, nn_vae.rs, models/src/wan/vae.rs) on
// frame-major video [T, C, H, W]: the causal 3-D convolution, the channel RMS norm, SiLU (in
// transformer_pointwise.cu), the nearest ×2 upsample, the conversion to RGB output pixels, the
// residual add, the output clamp and the mid block's per-frame attention (any head size).
#include "common.cuh"

// Causal in time (output frame t reads frames t−kt+1..=t, earlier frames are zeros), zero-padded
// "same" in space, stride 1; weight PyTorch [cout, cin, kt, ks, ks]. A direct convolution, one
// thread per output value, the sum in float over (dt, cin, kh, kw) like the reference's im2col rows
// (the reference's GEMM blocks the sum differently: parity is by tolerance).
extern "C" __global__ void causal_conv3d_f32(const float* x, const float* weight, const float* bias,
                                             float* out, unsigned int frames, unsigned int cin,
                                             unsigned int cout, unsigned int h, unsigned int w,
                                             unsigned int kt, unsigned int ks) {
    unsigned long long hw = (unsigned long long)h * w;
    int pad = (int)(ks / 2);
    FOR_EACH_INDEX(i, (unsigned long long)frames * cout * hw) {
        unsigned int px = (unsigned int)(i % hw);
        unsigned int o = (unsigned int)((i / hw) % cout);
        unsigned int t = (unsigned int)(i / (hw * cout));
        int y = (int)(px / w), xx = (int)(px % w);
        float acc = 0.0f;
        for (unsigned int dt = 0; dt < kt; ++dt) {
            int s = (int)t + (int)dt - (int)(kt - 1);
            if (s < 0) continue;
            for (unsigned int c = 0; c < cin; ++c) {
                const float* plane = x + ((unsigned long long)s * cin + c) * hw;
                const float* wk = weight + (((unsigned long long)o * cin + c) * kt + dt) * ks * ks;
                for (unsigned int kh = 0; kh < ks; ++kh) {
                    int sy = y + (int)kh - pad;
                    if (sy < 0 || sy >= (int)h) continue;
                    for (unsigned int kw = 0; kw < ks; ++kw) {
                        int sx = xx + (int)kw - pad;
                        if (sx < 0 || sx >= (int)w) continue;
                        acc = fmaf(plane[(unsigned long long)sy * w + sx], wk[kh * ks + kw], acc);
                    }
                }
            }
        }
        out[i] = acc + bias[o];
    }
}

// In place on x [frames, channels, pixels]: y = ((x / max(‖x‖, 1e-12))·√C)·γ_c per pixel, the
// norm's sum of squares in double in channel order (as the reference: bit-identical).
extern "C" __global__ void channel_rms_norm_f32(float* x, const float* gamma, unsigned int frames,
                                                unsigned int channels, unsigned long long pixels) {
    float scale = sqrtf((float)channels);
    FOR_EACH_INDEX(i, (unsigned long long)frames * pixels) {
        unsigned long long p = i % pixels, f = i / pixels;
        float* base = x + f * channels * pixels + p;
        double sumsq = 0.0;
        for (unsigned int c = 0; c < channels; ++c) {
            double v = (double)base[c * pixels];
            sumsq += v * v;
        }
        float d = fmaxf((float)sqrt(sumsq), 1e-12f);
        for (unsigned int c = 0; c < channels; ++c) base[c * pixels] = base[c * pixels] / d * scale * gamma[c];
    }
}

// x [planes, h, w] → out [planes, 2h, 2w], each pixel repeated in a 2×2 block.
extern "C" __global__ void upsample_nearest2x_f32(const float* x, float* out, unsigned int planes,
                                                  unsigned int h, unsigned int w) {
    unsigned long long ow = 2ull * w, oplane = 4ull * h * w;
    FOR_EACH_INDEX(i, (unsigned long long)planes * oplane) {
        unsigned long long p = i / oplane, r = i % oplane;
        unsigned long long y2 = r / ow, x2 = r % ow;
        out[i] = x[(p * h + y2 / 2) * w + x2 / 2];
    }
}

// One decoded frame [3, H, W] in [−1, 1] → interleaved RGB [H, W, 3]: (x·0.5 + 0.5) clamped to
// [0, 1] (NaN stays NaN, as Rust's clamp).
extern "C" __global__ void rgb_from_planar_f32(const float* x, float* rgb, unsigned long long hw) {
    FOR_EACH_INDEX(j, 3ull * hw) {
        float v = x[(j % 3) * hw + j / 3] * 0.5f + 0.5f;
        rgb[j] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
    }
}

// x[i] += y[i] (the residual adds of the decoder's blocks; bit-identical to the reference).
extern "C" __global__ void add_in_place_f32(float* x, const float* y, unsigned long long n) {
    FOR_EACH_INDEX(i, n) x[i] += y[i];
}

// x[i] = clamp(x[i], lo, hi) in place (NaN stays NaN, as Rust's f32::clamp).
extern "C" __global__ void clamp_f32(float* x, float lo, float hi, unsigned long long n) {
    FOR_EACH_INDEX(i, n) {
        float v = x[i];
        x[i] = v < lo ? lo : (v > hi ? hi : v);
    }
}

// The VAE mid block's single-head attention over the pixels of one frame, in three launches
// (models/src/wan/vae_blocks.rs AttentionBlock; evaluation order of cpu/nn_attention.rs, the
// sums in a different blocking: parity by tolerance). The head size is the block's width (384 in
// Wan2.1, above the 128 of attention_flash.cu), so the P×P score matrix of the frame is materialised
// (P = H·W latent pixels: 6240 at 480×832, 156 MB). qkv is the to_qkv conv's output for all
// frames, frame-major [T, 3C, P] (q, k, v are channel-major [C, P] blocks of a frame).
//
// scores[i, j] = scale·Σ_c q[c, i]·k[c, j] (the sum rounded first, then the scale), frame `frame`.
extern "C" __global__ void vae_attn_scores_f32(const float* qkv, float* scores, unsigned int frame,
                                               unsigned int c, unsigned int p, float scale) {
    const float* q = qkv + (unsigned long long)frame * 3 * c * p;
    const float* k = q + (unsigned long long)c * p;
    FOR_EACH_INDEX(e, (unsigned long long)p * p) {
        unsigned int i = (unsigned int)(e / p), j = (unsigned int)(e % p);
        float acc = 0.0f;
        for (unsigned int ch = 0; ch < c; ++ch)
            acc = fmaf(q[(unsigned long long)ch * p + i], k[(unsigned long long)ch * p + j], acc);
        scores[e] = scale * acc;
    }
}

// Per score row i: m = max_j s_j, s_j ← exp(s_j − m) (unnormalised), denom[i] = Σ_j in double,
// rounded to float. One warp per row (grid-stride over rows, so every lane of a warp holds the same
// row and the shuffles are convergent): lane l takes keys l, l + 32, ..., each lane sums its keys
// in key order, and a fixed xor butterfly combines the 32 partial sums (deterministic; the double
// sum differs from the reference's key-order sum by rounding only, far below float's).
extern "C" __global__ void vae_attn_softmax_f32(float* scores, float* denom, unsigned int p) {
    const unsigned int lane = threadIdx.x & 31u;
    const unsigned long long warps = ((unsigned long long)blockDim.x * gridDim.x) >> 5;
    for (unsigned long long i = ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5; i < p; i += warps) {
        float* row = scores + i * p;
        float m = row[0];
        for (unsigned int j = lane; j < p; j += 32) m = fmaxf(m, row[j]);
#pragma unroll
        for (unsigned int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
        double l = 0.0;
        for (unsigned int j = lane; j < p; j += 32) {
            float e = expf(row[j] - m);
            row[j] = e;
            l += (double)e;
        }
#pragma unroll
        for (unsigned int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
        if (lane == 0) denom[i] = (float)l;
    }
}

// out[frame, ch, i] = (Σ_j s[i, j]·v[ch, j]) / denom[i]: the attention output of frame `frame`,
// channel-major like x, into out [T, C, P].
extern "C" __global__ void vae_attn_apply_f32(const float* scores, const float* denom,
                                              const float* qkv, float* out, unsigned int frame,
                                              unsigned int c, unsigned int p) {
    const float* v = qkv + (unsigned long long)frame * 3 * c * p + 2ull * c * p;
    float* o = out + (unsigned long long)frame * c * p;
    FOR_EACH_INDEX(e, (unsigned long long)c * p) {
        unsigned int ch = (unsigned int)(e / p), i = (unsigned int)(e % p);
        const float* row = scores + (unsigned long long)i * p;
        const float* vr = v + (unsigned long long)ch * p;
        float acc = 0.0f;
        for (unsigned int j = 0; j < p; ++j) acc = fmaf(row[j], vr[j], acc);
        o[e] = acc / denom[i];
    }
}
