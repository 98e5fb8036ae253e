// Multi-head attention softmax(scale·q·kᵀ [+ rel_bias])·v on tensor cores, never materialising the
// score matrix (references: kernels/src/cpu/nn_attention.rs and nn_attention_bias.rs).
// bf16 q, k, v; f32 accumulation, f32 output; online softmax in base 2 (scores prescaled by
// scale·log2 e, so every exponential is one ex2).
//
// Structure (FlashAttention-2's): a block owns ATTN_BLOCK_M = 64 query rows of one head, one warp
// per 16-row slice. Its Q tile is copied to shared memory once and kept in registers as mma
// A fragments; K/V tiles of ATTN_BLOCK_N = 64 keys stream through shared memory with cp.async,
// two stages, the next tile copying while the current one is used. Per tile each warp computes
// S = Q·Kᵀ (16×64, f32 in registers), rescales its running max/sum/output, turns S into P = 2^(S−m)
// packed as bf16 A fragments (the C layout of S is the A layout of P, register for register) and
// accumulates O += P·V. The head size is a compile-time constant (one kernel per size).
//
// Every index map used below (ldmatrix lane addresses, the shared-memory swizzle, the fragment
// layouts of mma.m16n8k16, the tile order) is written out and checked on the CPU against the PTX
// ISA's layouts and the reference attention in kernels/src/tensor_core/ (fragments.rs,
// attention_emu.rs); the names there match the helpers here.
//
// Layout: q [q_tokens, heads·D], k, v [kv_tokens, heads·D] (bf16 bits), out [q_tokens,
// heads·out_dim] f32 (or bf16, the *_obf16 kernels, rounded to nearest even: the input of the
// out-projection GEMM): the first out_dim ≤ D columns of each head. A smaller head runs zero-padded
// to the next kernel's D (attention_pack_bf16 below): zero columns add nothing to q·k, and give
// output columns that are not stored. rel_bias (the *_bias kernels only): [heads, q_tokens +
// kv_tokens − 1] f32, score(i, j) += bias[h, j − i + q_tokens − 1]. Grid (ceil(q_tokens / 64),
// heads), block 128 threads, dynamic shared memory 5·64·D·2 bytes (80 KiB for D = 128). Needs
// sm_80 or newer (cp.async, bf16 mma).
#include "common.cuh"
#include "mma_sm80.cuh"

#define ATTN_WARPS 4
#define ATTN_THREADS (ATTN_WARPS * 32)
#define ATTN_BLOCK_M (ATTN_WARPS * 16)
#define ATTN_BLOCK_N 64
#define ATTN_LOG2E 1.4426950408889634f
#define ATTN_NEG_INF __int_as_float(0xff800000)

// ---- Attention-only helpers ----------------------------------------------------------------------

// 2^x; 2^−inf = +0 (masked scores), never NaN for x ≤ 0.
__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// ---- Tile copies --------------------------------------------------------------------------------

// Rows row0.. of one head (columns col0..col0 + D) of a [rows_total, width] bf16 matrix into a
// swizzled ATTN_BLOCK_N × D tile; rows past rows_total are zero-filled (so masked keys carry no
// NaN into P·V, and padding queries stay finite).
template <int D>
__device__ __forceinline__ void copy_tile_async(u32 tile, const bf16_bits* src, u32 row0, u32 rows_total,
                                                unsigned long long width, u32 col0, u32 tid) {
    constexpr u32 CHUNKS = D / 8;
#pragma unroll
    for (u32 i = 0; i < ATTN_BLOCK_N * CHUNKS / ATTN_THREADS; ++i) {
        u32 c = tid + i * ATTN_THREADS;
        u32 r = c / CHUNKS, chunk = c % CHUNKS;
        bool inside = row0 + r < rows_total;
        unsigned long long row = inside ? (unsigned long long)(row0 + r) : 0ull;
        cp_async_16(tile + swizzled_offset<CHUNKS>(r, chunk), src + row * width + col0 + chunk * 8,
                    inside ? 16u : 0u);
    }
}

// ---- Output stores (f32, or bf16 for the *_obf16 kernels) ----------------------------------------

__device__ __forceinline__ void store_pair(float* p, float lo, float hi) {
    *reinterpret_cast<float2*>(p) = make_float2(lo, hi);
}
__device__ __forceinline__ void store_pair(bf16_bits* p, float lo, float hi) {
    *reinterpret_cast<u32*>(p) = pack_bf16x2(lo, hi);
}
__device__ __forceinline__ void store_one(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_one(bf16_bits* p, float v) { *p = f32_to_bf16(v); }

// ---- The kernel ---------------------------------------------------------------------------------

template <int D, bool BIAS, typename OutT = float>
__device__ __forceinline__ void attention_tiles(const bf16_bits* __restrict__ q, const bf16_bits* __restrict__ k,
                                                const bf16_bits* __restrict__ v, const float* __restrict__ rel_bias,
                                                OutT* __restrict__ out, u32 q_tokens, u32 kv_tokens, u32 heads,
                                                u32 out_dim, float scale) {
    static_assert(D % 16 == 0 && D >= 64 && D <= 128, "head size: a multiple of 16 in 64..=128");
    static_assert(ATTN_BLOCK_M == ATTN_BLOCK_N, "the Q tile reuses the K/V tile geometry");
    constexpr u32 CHUNKS = D / 8;
    constexpr u32 TILE = ATTN_BLOCK_N * D * 2;  // bytes of one bf16 tile
    extern __shared__ __align__(128) unsigned char attention_smem[];
    // Q tile, then stage s at TILE·(1 + 2s) (K) and TILE·(2 + 2s) (V).
    const u32 q_tile = shared_address(attention_smem);

    const u32 tid = threadIdx.x, warp = tid >> 5, lane = tid & 31u;
    const u32 group = lane >> 2, quad = lane & 3u;  // PTX's groupID and threadID_in_group
    const u32 head = blockIdx.y, m0 = blockIdx.x * ATTN_BLOCK_M;
    const unsigned long long width = (unsigned long long)heads * D;
    const u32 col0 = head * D;
    const u32 n_tiles = (kv_tokens + ATTN_BLOCK_N - 1) / ATTN_BLOCK_N;
    const float scale_log2 = scale * ATTN_LOG2E;

    copy_tile_async<D>(q_tile, q, m0, q_tokens, width, col0, tid);
    cp_async_commit();
    copy_tile_async<D>(q_tile + TILE, k, 0, kv_tokens, width, col0, tid);
    copy_tile_async<D>(q_tile + 2 * TILE, v, 0, kv_tokens, width, col0, tid);
    cp_async_commit();

    // This warp's 16 query rows as A fragments, one per 16-column k-step of the head.
    u32 qf[D / 16][4];
    cp_async_wait<1>();  // the Q group (groups complete in order)
    __syncthreads();
#pragma unroll
    for (u32 kk = 0; kk < D / 16; ++kk) {
        ldmatrix_x4(qf[kk], q_tile + swizzled_offset<CHUNKS>(warp * 16 + a_ldm_row(lane), 2 * kk + a_ldm_chunk(lane)));
    }

    // Row r = 0 is query row `group` of the warp's slice, r = 1 row `group + 8`; o[nd] covers
    // columns 8·nd + 2·quad + {0, 1} of both (C layout: o[nd][2r + c]).
    float o[D / 8][4];
#pragma unroll
    for (u32 nd = 0; nd < D / 8; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
    float row_max[2] = {ATTN_NEG_INF, ATTN_NEG_INF};  // of the log2-scaled scores seen so far
    float row_sum[2] = {0.0f, 0.0f};                  // this thread's share of Σ 2^(s − row_max)

    for (u32 j = 0; j < n_tiles; ++j) {
        const u32 stage = j & 1u;
        if (j + 1 < n_tiles) {
            // The other stage was last read in iteration j − 1, which ended with a barrier.
            u32 next = q_tile + TILE * (1 + 2 * (stage ^ 1u));
            copy_tile_async<D>(next, k, (j + 1) * ATTN_BLOCK_N, kv_tokens, width, col0, tid);
            copy_tile_async<D>(next + TILE, v, (j + 1) * ATTN_BLOCK_N, kv_tokens, width, col0, tid);
            cp_async_commit();
            cp_async_wait<1>();  // tile j has landed, tile j + 1 may still be in flight
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const u32 k_tile = q_tile + TILE * (1 + 2 * stage), v_tile = k_tile + TILE;

        // S = Q·Kᵀ: s[nb] is key block nb (8 keys) of the tile, C layout.
        float s[ATTN_BLOCK_N / 8][4];
#pragma unroll
        for (u32 nb = 0; nb < ATTN_BLOCK_N / 8; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
#pragma unroll
        for (u32 kk = 0; kk < D / 16; ++kk) {
#pragma unroll
            for (u32 p = 0; p < ATTN_BLOCK_N / 16; ++p) {
                u32 b[4];
                ldmatrix_x4(b, k_tile + swizzled_offset<CHUNKS>(16 * p + b_ldm_row(lane), 2 * kk + b_ldm_chunk(lane)));
                mma_bf16_16816(s[2 * p], qf[kk], b[0], b[1]);
                mma_bf16_16816(s[2 * p + 1], qf[kk], b[2], b[3]);
            }
        }

        // Log2-scaled scores (+ bias); keys past kv_tokens are −inf.
        const u32 key0 = j * ATTN_BLOCK_N;
#pragma unroll
        for (u32 nb = 0; nb < ATTN_BLOCK_N / 8; ++nb) {
#pragma unroll
            for (u32 e = 0; e < 4; ++e) {
                u32 key = key0 + nb * 8 + 2 * quad + (e & 1u);
                float x = s[nb][e] * scale_log2;
                if (BIAS) {
                    u32 query = m0 + warp * 16 + group + 8 * (e >> 1);
                    if (key < kv_tokens && query < q_tokens) {
                        unsigned long long at = (unsigned long long)head * (q_tokens + kv_tokens - 1) + key +
                                                (q_tokens - 1 - query);
                        x = fmaf(rel_bias[at], ATTN_LOG2E, x);
                    }
                }
                s[nb][e] = key < kv_tokens ? x : ATTN_NEG_INF;
            }
        }

        // Online softmax, per row: the quad's 4 threads hold the row's 64 scores between them.
#pragma unroll
        for (u32 r = 0; r < 2; ++r) {
            float mx = row_max[r];
#pragma unroll
            for (u32 nb = 0; nb < ATTN_BLOCK_N / 8; ++nb) mx = fmaxf(mx, fmaxf(s[nb][2 * r], s[nb][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            // A row with no finite score yet subtracts 0, not −inf: 2^(−inf − 0) = 0, never
            // 2^(−inf + inf) = NaN.
            const float base = mx == ATTN_NEG_INF ? 0.0f : mx;
            const float correction = exp2_approx(row_max[r] - base);  // 0 while row_max is −inf
            row_max[r] = mx;
            row_sum[r] *= correction;
#pragma unroll
            for (u32 nd = 0; nd < D / 8; ++nd) {
                o[nd][2 * r] *= correction;
                o[nd][2 * r + 1] *= correction;
            }
#pragma unroll
            for (u32 nb = 0; nb < ATTN_BLOCK_N / 8; ++nb) {
                s[nb][2 * r] = exp2_approx(s[nb][2 * r] - base);
                s[nb][2 * r + 1] = exp2_approx(s[nb][2 * r + 1] - base);
                row_sum[r] += s[nb][2 * r] + s[nb][2 * r + 1];
            }
        }

        // O += P·V: key blocks 2kk and 2kk + 1 of S are the A fragment of k-step kk.
#pragma unroll
        for (u32 kk = 0; kk < ATTN_BLOCK_N / 16; ++kk) {
            const u32 a[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (u32 p = 0; p < D / 16; ++p) {
                u32 b[4];
                ldmatrix_x4_trans(b, v_tile + swizzled_offset<CHUNKS>(16 * kk + a_ldm_row(lane), 2 * p + a_ldm_chunk(lane)));
                mma_bf16_16816(o[2 * p], a, b[0], b[1]);
                mma_bf16_16816(o[2 * p + 1], a, b[2], b[3]);
            }
        }
        __syncthreads();  // every warp is done with this stage before it is refilled
    }

#pragma unroll
    for (u32 r = 0; r < 2; ++r) {
        float sum = row_sum[r];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        const u32 query = m0 + warp * 16 + group + 8 * r;
        if (query < q_tokens) {
            OutT* row = out + ((unsigned long long)query * heads + head) * out_dim + 2 * quad;
#pragma unroll
            for (u32 nd = 0; nd < D / 8; ++nd) {
                const float lo = o[nd][2 * r] * inv, hi = o[nd][2 * r + 1] * inv;
                const u32 c = nd * 8 + 2 * quad;  // the column of `lo` in the head
                if (out_dim == D) {
                    store_pair(row + nd * 8, lo, hi);
                } else {
                    if (c < out_dim) store_one(row + nd * 8, lo);
                    if (c + 1 < out_dim) store_one(row + nd * 8 + 1, hi);
                }
            }
        }
    }
}

#define ATTENTION_KERNEL(NAME, D, BIAS)                                                                    \
    extern "C" __global__ void __launch_bounds__(ATTN_THREADS)                                             \
        NAME(const bf16_bits* q, const bf16_bits* k, const bf16_bits* v, const float* rel_bias, float* out, \
             unsigned int q_tokens, unsigned int kv_tokens, unsigned int heads, unsigned int out_dim,      \
             float scale) {                                                                                \
        attention_tiles<D, BIAS>(q, k, v, rel_bias, out, q_tokens, kv_tokens, heads, out_dim, scale);      \
    }

ATTENTION_KERNEL(attention_bf16_d64, 64, false)
ATTENTION_KERNEL(attention_bf16_d64_bias, 64, true)
ATTENTION_KERNEL(attention_bf16_d128, 128, false)
ATTENTION_KERNEL(attention_bf16_d128_bias, 128, true)

// bf16 output (the DiT's self- and cross-attention feed the out-projection GEMM in bf16).
#define ATTENTION_KERNEL_OBF16(NAME, D)                                                                   \
    extern "C" __global__ void __launch_bounds__(ATTN_THREADS)                                             \
        NAME(const bf16_bits* q, const bf16_bits* k, const bf16_bits* v, const float* rel_bias,           \
             bf16_bits* out, unsigned int q_tokens, unsigned int kv_tokens, unsigned int heads,            \
             unsigned int out_dim, float scale) {                                                         \
        attention_tiles<D, false, bf16_bits>(q, k, v, rel_bias, out, q_tokens, kv_tokens, heads, out_dim,  \
                                             scale);                                                      \
    }

ATTENTION_KERNEL_OBF16(attention_bf16_d64_obf16, 64)
ATTENTION_KERNEL_OBF16(attention_bf16_d128_obf16, 128)

// f32 [rows, head_dim] → bf16 [rows, padded] (rows = tokens·heads), columns past head_dim zero:
// the attention kernels' inputs from f32 activations, for heads smaller than a kernel's D.
extern "C" __global__ void attention_pack_bf16(const float* x, bf16_bits* out, unsigned long long n_out,
                                               unsigned int head_dim, unsigned int padded) {
    FOR_EACH_INDEX(i, n_out) {
        unsigned long long r = i / padded;
        unsigned int c = (unsigned int)(i % padded);
        out[i] = c < head_dim ? f32_to_bf16(x[r * head_dim + c]) : (bf16_bits)0;
    }
}
