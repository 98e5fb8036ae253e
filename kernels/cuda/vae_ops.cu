// The Wan VAE decoder's ops (kernels/src/cpu/nn_conv.rs, nn_vae.rs, models/src/wan/vae.rs) on
// frame-major video [T, C, H, W]: the causal 3-D convolution, the channel RMS norm, SiLU (in
// transformer_pointwise.cu), the nearest ×2 upsample and the conversion to RGB output pixels.
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
