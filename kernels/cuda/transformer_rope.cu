// Rotary position embedding on interleaved pairs (kernels/src/cpu/nn_rope.rs): x is
// [tokens, heads·head_dim]; pair j of every head of token s becomes
// (x0·c − x1·s, x0·s + x1·c) with c = cos[s, 2j], s = sin[s, 2j+1]. Bit-identical (no FMA).
#include "common.cuh"

extern "C" __global__ void rope_interleaved_f32(float* x, const float* cos_t, const float* sin_t,
                                                unsigned int tokens, unsigned int heads,
                                                unsigned int head_dim) {
    unsigned int half = head_dim / 2;
    FOR_EACH_INDEX(i, (unsigned long long)tokens * heads * half) {
        unsigned int j = (unsigned int)(i % half);
        unsigned long long sh = i / half;  // (token, head)
        unsigned int s = (unsigned int)(sh / heads);
        float* p = x + sh * head_dim + 2 * j;
        float c = cos_t[(unsigned long long)s * head_dim + 2 * j];
        float sn = sin_t[(unsigned long long)s * head_dim + 2 * j + 1];
        float x0 = p[0], x1 = p[1];
        p[0] = x0 * c - x1 * sn;
        p[1] = x0 * sn + x1 * c;
    }
}
