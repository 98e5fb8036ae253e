// Multi-head attention softmax(scale·q·kᵀ [+ rel_bias])·v without materialising the score matrix
// (kernels/src/cpu/nn_attention.rs and nn_attention_bias.rs): an online softmax over key tiles
// held in shared memory. Written for correctness, not speed (one query row per thread, no tensor
// cores); tuning it is a later issue.
//
// Layout: q [q_tokens, heads·head_dim], k, v [kv_tokens, heads·head_dim], out like q.
// rel_bias (may be null): [heads, q_tokens + kv_tokens − 1], score(i, j) += bias[h, j − i + q_tokens − 1].
// Grid (ceil(q_tokens / ATTN_QUERIES), heads), block ATTN_QUERIES threads.
#include "common.cuh"

#define ATTN_QUERIES 64
#define ATTN_KEYS 32
#define ATTN_MAX_HEAD_DIM 128

extern "C" __global__ void attention_f32(const float* q, const float* k, const float* v,
                                         const float* rel_bias, float* out,
                                         unsigned int q_tokens, unsigned int kv_tokens,
                                         unsigned int heads, unsigned int head_dim, float scale) {
    __shared__ float k_tile[ATTN_KEYS][ATTN_MAX_HEAD_DIM];
    __shared__ float v_tile[ATTN_KEYS][ATTN_MAX_HEAD_DIM];
    unsigned int h = blockIdx.y;
    unsigned int i = blockIdx.x * ATTN_QUERIES + threadIdx.x;
    bool active = i < q_tokens;
    unsigned long long width = (unsigned long long)heads * head_dim;
    unsigned int offsets = q_tokens + kv_tokens - 1;

    float qv[ATTN_MAX_HEAD_DIM];
    float acc[ATTN_MAX_HEAD_DIM];
    for (unsigned int d = 0; d < head_dim; ++d) {
        qv[d] = active ? q[i * width + h * head_dim + d] : 0.0f;
        acc[d] = 0.0f;
    }
    float m = __int_as_float(0xff800000), l = 0.0f;  // −inf

    for (unsigned int j0 = 0; j0 < kv_tokens; j0 += ATTN_KEYS) {
        unsigned int tile = min((unsigned int)ATTN_KEYS, kv_tokens - j0);
        for (unsigned int e = threadIdx.x; e < tile * head_dim; e += ATTN_QUERIES) {
            unsigned int r = e / head_dim, d = e % head_dim;
            unsigned long long at = (unsigned long long)(j0 + r) * width + h * head_dim + d;
            k_tile[r][d] = k[at];
            v_tile[r][d] = v[at];
        }
        __syncthreads();
        if (active) {
            float s[ATTN_KEYS];
            float tile_max = __int_as_float(0xff800000);
            for (unsigned int r = 0; r < tile; ++r) {
                float dot = 0.0f;
                for (unsigned int d = 0; d < head_dim; ++d) dot = fmaf(qv[d], k_tile[r][d], dot);
                float sc = scale * dot;
                if (rel_bias) sc += rel_bias[(unsigned long long)h * offsets + (j0 + r) + (q_tokens - 1 - i)];
                s[r] = sc;
                tile_max = fmaxf(tile_max, sc);
            }
            float m_new = fmaxf(m, tile_max);
            float correction = expf(m - m_new);  // 0 on the first tile (m = −inf)
            l *= correction;
            for (unsigned int d = 0; d < head_dim; ++d) acc[d] *= correction;
            for (unsigned int r = 0; r < tile; ++r) {
                float p = expf(s[r] - m_new);
                l += p;
                for (unsigned int d = 0; d < head_dim; ++d) acc[d] = fmaf(p, v_tile[r][d], acc[d]);
            }
            m = m_new;
        }
        __syncthreads();
    }
    if (active) {
        for (unsigned int d = 0; d < head_dim; ++d) out[i * width + h * head_dim + d] = acc[d] / l;
    }
}
