// The DiT's patch gather and its inverse (models/src/wan/embed.rs), pure copies.
// patchify:   x [C, T, H, W] → patches [S, C·pt·ph·pw], feature order (c, kt, kh, kw), tokens in
//             row-major (f, h, w) order (the Linear that follows is a cuBLASLt GEMM).
// unpatchify: y [S, pt·ph·pw·C_out] → [C_out, T, H, W], feature order (kt, kh, kw, c).
#include "common.cuh"

extern "C" __global__ void patchify_f32(const float* x, float* patches, unsigned int channels,
                                        unsigned int gf, unsigned int gh, unsigned int gw,
                                        unsigned int pt, unsigned int ph, unsigned int pw) {
    unsigned int t = gf * pt, h = gh * ph, w = gw * pw;
    unsigned long long feat = (unsigned long long)channels * pt * ph * pw;
    FOR_EACH_INDEX(i, (unsigned long long)gf * gh * gw * feat) {
        unsigned long long s = i / feat, f = i % feat;
        unsigned int kw = (unsigned int)(f % pw), kh = (unsigned int)((f / pw) % ph);
        unsigned int kt = (unsigned int)((f / ((unsigned long long)pw * ph)) % pt);
        unsigned int c = (unsigned int)(f / ((unsigned long long)pw * ph * pt));
        unsigned int wi = (unsigned int)(s % gw), hi = (unsigned int)((s / gw) % gh);
        unsigned int fi = (unsigned int)(s / ((unsigned long long)gw * gh));
        patches[i] = x[(((unsigned long long)c * t + fi * pt + kt) * h + hi * ph + kh) * w + wi * pw + kw];
    }
}

extern "C" __global__ void unpatchify_f32(const float* y, float* out, unsigned int out_c,
                                          unsigned int gf, unsigned int gh, unsigned int gw,
                                          unsigned int pt, unsigned int ph, unsigned int pw) {
    unsigned int t = gf * pt, h = gh * ph, w = gw * pw;
    unsigned long long feat = (unsigned long long)pt * ph * pw * out_c;
    FOR_EACH_INDEX(i, (unsigned long long)gf * gh * gw * feat) {
        unsigned long long s = i / feat, f = i % feat;
        unsigned int c = (unsigned int)(f % out_c);
        unsigned long long k = f / out_c;  // (kt·ph + kh)·pw + kw
        unsigned int kw = (unsigned int)(k % pw), kh = (unsigned int)((k / pw) % ph);
        unsigned int kt = (unsigned int)(k / ((unsigned long long)pw * ph));
        unsigned int wi = (unsigned int)(s % gw), hi = (unsigned int)((s / gw) % gh);
        unsigned int fi = (unsigned int)(s / ((unsigned long long)gw * gh));
        out[(((unsigned long long)c * t + fi * pt + kt) * h + hi * ph + kh) * w + wi * pw + kw] = y[i];
    }
}
