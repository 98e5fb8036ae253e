// Multi-head attention softmax(scale·q·kᵀ)·v for Hopper (sm_90a only): wgmma tensor-core ops fed
// by TMA, the no-bias path of attention_flash.cu with the same math contract (reference:
// kernels/src/cpu/nn_attention.rs). bf16 q, k, v; f32 accumulation; online softmax in base 2
// (scores prescaled by scale·log2 e); never the score matrix; output f32 or bf16.
//
// Structure (warp-specialised, FlashAttention-3's split): a block owns WG_BLOCK_M = 128 query rows
// of one head and runs 288 threads: two consumer warpgroups (threads 0..255, 64 query rows each)
// and one producer warp (256..287). One producer thread issues TMA bulk tensor copies
// (cp.async.bulk.tensor.2d) of the Q tile once, then of K/V tiles of WG_BLOCK_N = 64 keys into a
// WG_STAGES-deep ring of shared-memory stages; each stage has a "full" mbarrier (the TMA's
// transaction bytes complete it) and an "empty" one (each consumer warp arrives once it has read
// the stage). A consumer warpgroup per tile: S = Q·Kᵀ (wgmma m64n64k16, both operands from shared
// memory through matrix descriptors), the online-softmax update in registers, then O += P·V
// (wgmma m64nDk16 with P straight from registers as the A operand: the accumulator layout of S is
// the A-fragment layout of P, register for register, as with mma.sync).
//
// Shared-memory tiles use the 128-byte swizzle throughout: a tile is stored as D/64 "spans" of 64
// columns (128 bytes per row, the widest box TMA's SWIZZLE_128B takes), each span rows × 128 bytes
// with 16-byte chunk c of row r at chunk c ^ (r % 8); every span starts 1024-byte aligned, so that
// TMA's write pattern and wgmma's address-bit swizzle (bits 4..6 ^= bits 7..9) are the same map.
// Q and K are read K-major (the head dimension is contiguous), V MN-major (imm-trans-b = 1).
//
// Every index map below (descriptor fields, span offsets, the wgmma fragment layouts, the key and
// row of each accumulator) is written out and checked on the CPU against the PTX ISA and the
// reference attention in kernels/src/tensor_core/wgmma.rs; the names there match the helpers here.
//
// Layout: q [q_tokens, heads·D], k, v [kv_tokens, heads·D] bf16, read only through the three
// tensor maps (2-D, inner extent heads·D, row stride heads·D·2 bytes, boxes 64 × WG_BLOCK_M for q
// and 64 × WG_BLOCK_N for k and v, SWIZZLE_128B, out-of-bounds rows zero-filled). out [q_tokens,
// heads·out_dim] (f32 or bf16): the first out_dim ≤ D columns of each head. Grid
// (ceil(q_tokens / 128), heads), block 288 threads, dynamic shared memory wgmma_smem_bytes(D) of
// kernels/src/tensor_core/wgmma.rs (> 48 KiB: the launch opts in).
#include "common.cuh"

#define WG_CONSUMERS 2                          // consumer warpgroups
#define WG_CONSUMER_WARPS (WG_CONSUMERS * 4)    // they arrive on the "empty" barriers
#define WG_THREADS (WG_CONSUMERS * 128 + 32)    // + the producer warp
#define WG_BLOCK_M (WG_CONSUMERS * 64)          // query rows per block
#define WG_BLOCK_N 64                           // keys per K/V tile
#define WG_STAGES 2                             // K/V ring depth
#define WG_SPAN 64                              // bf16 columns per 128-byte swizzled row
#define WG_LOG2E 1.4426950408889634f
#define WG_NEG_INF __int_as_float(0xff800000)

typedef unsigned int u32;
typedef unsigned long long u64;

// The driver's CUtensorMap (cuda.h is not available to NVRTC): 128 opaque bytes, 128-byte aligned,
// filled on the host by cuTensorMapEncodeTiled and passed by value as a __grid_constant__ param.
struct __align__(128) CUtensorMap {
    u64 opaque[16];
};

// ---- PTX wrappers -------------------------------------------------------------------------------

__device__ __forceinline__ u32 shared_address(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}

// The inits must be visible to the async proxy (TMA's complete_tx) before any copy is issued.
__device__ __forceinline__ void mbar_fence_init() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// One arrival that also announces `bytes` of transactions the barrier's phase must still receive.
__device__ __forceinline__ void mbar_arrive_expect_tx(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

__device__ __forceinline__ void mbar_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

// Blocks until the phase of parity `parity` has completed (the n-th completion has parity n % 2).
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
    u32 done;
    do {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(bar), "r"(parity)
            : "memory");
    } while (!done);
}

// TMA: the box at (column c0, row c1) of `map` into shared memory at `dst`, completing `bytes` of
// `bar`'s transactions (the whole box, out-of-bounds elements zero-filled).
__device__ __forceinline__ void tma_load_2d(u32 dst, const CUtensorMap* map, int c0, int c1, u32 bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
        "l"((u64)map), "r"(c0), "r"(c1), "r"(bar)
        : "memory");
}

__device__ __forceinline__ void tma_prefetch_descriptor(const CUtensorMap* map) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"((u64)map) : "memory");
}

__device__ __forceinline__ void wgmma_fence() {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait_all() {
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}

// Pins a register between the asynchronous wgmma and its wait: the compiler may not move reads or
// writes of x across this point (wgmma's operands are only defined once the wait has returned).
__device__ __forceinline__ void fence_operand(float& x) {
    asm volatile("" : "+f"(x)::"memory");
}

#define WG_ACC8(d, i) \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define WG_ACC32(d) WG_ACC8(d, 0), WG_ACC8(d, 8), WG_ACC8(d, 16), WG_ACC8(d, 24)
#define WG_ACC64(d) WG_ACC32(d), WG_ACC8(d, 32), WG_ACC8(d, 40), WG_ACC8(d, 48), WG_ACC8(d, 56)

// d (64×64 f32, accumulator layout) = [d +] A·B, A 64×16 and B 16×64 bf16 both from shared memory,
// K-major (imm-trans-a = imm-trans-b = 0). `accumulate` = 0 overwrites d (scale-d false).
__device__ __forceinline__ void wgmma_ss_m64n64k16(float d[32], u64 a_desc, u64 b_desc, u32 accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
        "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : WG_ACC32(d)
        : "l"(a_desc), "l"(b_desc), "r"(accumulate));
}

// d (64×N f32) += A·B, A 64×16 bf16 from registers (4 × bf16x2 per thread), B 16×N bf16 from
// shared memory MN-major (imm-trans-b = 1: V's rows are keys, its columns contiguous).
template <int N>
__device__ __forceinline__ void wgmma_rs(float d[N / 2], const u32 a[4], u64 b_desc);

template <>
__device__ __forceinline__ void wgmma_rs<64>(float d[32], const u32 a[4], u64 b_desc) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
        "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, 1, 1, 1, 1;\n"
        : WG_ACC32(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc));
}

template <>
__device__ __forceinline__ void wgmma_rs<128>(float d[64], const u32 a[4], u64 b_desc) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
        "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "
        "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "
        "%62, %63}, {%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"
        : WG_ACC64(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc));
}

// Two floats → one register of two bf16 (round to nearest even), `lo` (the lower column) in the
// low half, which wgmma reads first (cvt puts its first source in the high half).
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// 2^x; 2^−inf = +0 (masked scores), never NaN for x ≤ 0.
__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// ---- Index maps (mirrored by kernels/src/tensor_core/wgmma.rs) ----------------------------------

// A shared-memory matrix descriptor: start address, leading- and stride-dimension byte offsets
// (each >> 4, 14 bits) and the 128-byte swizzle mode (1 in bits 62..63).
__device__ __forceinline__ u64 smem_desc(u32 addr, u32 lbo, u32 sbo) {
    return (u64)((addr & 0x3FFFFu) >> 4) | ((u64)((lbo & 0x3FFFFu) >> 4) << 16) |
           ((u64)((sbo & 0x3FFFFu) >> 4) << 32) | (1ull << 62);
}

// K-major operands (Q, K): rows 128 bytes apart, 8-row groups SBO = 1024 bytes apart; LBO unused
// by the swizzled K-major layout (16, field value 1). k-step kk (16 columns, 32 bytes) of a tile
// with `rows` rows per span: span kk / 4, then 32·(kk % 4) bytes into the swizzled row.
__device__ __forceinline__ u32 k_major_offset(u32 rows, u32 row0, u32 kk) {
    return (kk >> 2) * rows * 128u + row0 * 128u + (kk & 3u) * 32u;
}
#define WG_K_MAJOR_LBO 16u
#define WG_K_MAJOR_SBO 1024u

// The MN-major operand (V, as B of P·V): key step kk (16 keys) starts 16·128 bytes in; the next 64
// columns (span) are LBO = WG_BLOCK_N·128 bytes on, the next 8 keys SBO = 1024 bytes on.
__device__ __forceinline__ u32 v_offset(u32 kk) {
    return kk * 16u * 128u;
}
#define WG_V_LBO (WG_BLOCK_N * 128u)
#define WG_V_SBO 1024u

// ---- Output -------------------------------------------------------------------------------------

__device__ __forceinline__ void store_pair(float* row, u32 c, float lo, float hi, u32 out_dim, bool full) {
    if (full) {
        *reinterpret_cast<float2*>(row + c) = make_float2(lo, hi);
    } else {
        if (c < out_dim) row[c] = lo;
        if (c + 1 < out_dim) row[c + 1] = hi;
    }
}

__device__ __forceinline__ void store_pair(bf16_bits* row, u32 c, float lo, float hi, u32 out_dim, bool full) {
    if (full) {
        *reinterpret_cast<u32*>(row + c) = pack_bf16x2(lo, hi);
    } else {
        if (c < out_dim) row[c] = f32_to_bf16(lo);
        if (c + 1 < out_dim) row[c + 1] = f32_to_bf16(hi);
    }
}

// ---- The kernel ---------------------------------------------------------------------------------

template <int D, typename OUT>
__device__ __forceinline__ void attention_wgmma_tiles(const CUtensorMap* tmap_q, const CUtensorMap* tmap_k,
                                                      const CUtensorMap* tmap_v, OUT* __restrict__ out,
                                                      u32 q_tokens, u32 kv_tokens, u32 heads, u32 out_dim,
                                                      float scale) {
    static_assert(D == 64 || D == 128, "head size 64 or 128");
    constexpr u32 SPANS = D / WG_SPAN;
    constexpr u32 Q_BYTES = WG_BLOCK_M * D * 2;
    constexpr u32 KV_BYTES = WG_BLOCK_N * D * 2;  // one K or one V tile
    extern __shared__ __align__(1024) unsigned char wgmma_smem[];
    // The 128-byte swizzle repeats every 1024 bytes of address: align the tiles to it ourselves
    // (the launch adds 1024 bytes of slack) rather than trust the dynamic-smem base alignment.
    const u32 q_tile = (shared_address(wgmma_smem) + 1023u) & ~1023u;
    const u32 kv_base = q_tile + Q_BYTES;  // stage s: K at kv_base + 2s·KV_BYTES, V after it
    const u32 q_full = kv_base + WG_STAGES * 2 * KV_BYTES;
    const u32 full0 = q_full + 8, empty0 = full0 + 8 * WG_STAGES;

    const u32 tid = threadIdx.x, warp = tid >> 5, lane = tid & 31u;
    const u32 head = blockIdx.y, m0 = blockIdx.x * WG_BLOCK_M;
    const int col0 = (int)(head * D);
    const u32 n_tiles = (kv_tokens + WG_BLOCK_N - 1) / WG_BLOCK_N;

    if (tid == 0) {
        mbar_init(q_full, 1);
        for (u32 s = 0; s < WG_STAGES; ++s) {
            mbar_init(full0 + 8 * s, 1);
            mbar_init(empty0 + 8 * s, WG_CONSUMER_WARPS);
        }
        mbar_fence_init();
    }
    __syncthreads();

    if (warp == WG_CONSUMER_WARPS) {
        // Producer: one thread issues every copy; the ring runs WG_STAGES tiles ahead at most.
        if (lane == 0) {
            tma_prefetch_descriptor(tmap_k);
            tma_prefetch_descriptor(tmap_v);
            mbar_arrive_expect_tx(q_full, Q_BYTES);
#pragma unroll
            for (u32 span = 0; span < SPANS; ++span) {
                tma_load_2d(q_tile + span * WG_BLOCK_M * 128u, tmap_q, col0 + (int)(span * WG_SPAN), (int)m0, q_full);
            }
            for (u32 j = 0; j < n_tiles; ++j) {
                const u32 stage = j % WG_STAGES;
                // Reuse of a stage waits for the consumers' release of tile j − WG_STAGES: that
                // barrier's (j / WG_STAGES − 1)-th completion.
                if (j >= WG_STAGES) mbar_wait(empty0 + 8 * stage, ((j / WG_STAGES) + 1u) & 1u);
                const u32 full = full0 + 8 * stage, k_tile = kv_base + 2 * stage * KV_BYTES;
                mbar_arrive_expect_tx(full, 2 * KV_BYTES);
                const int row = (int)(j * WG_BLOCK_N);
#pragma unroll
                for (u32 span = 0; span < SPANS; ++span) {
                    const int col = col0 + (int)(span * WG_SPAN);
                    tma_load_2d(k_tile + span * WG_BLOCK_N * 128u, tmap_k, col, row, full);
                    tma_load_2d(k_tile + KV_BYTES + span * WG_BLOCK_N * 128u, tmap_v, col, row, full);
                }
            }
        }
        return;
    }

    // Consumers. Warp w of warpgroup g owns query rows 64g + 16w + group (+ 8) of the block; its
    // accumulator register i sits at row group + 8·((i / 2) % 2), column 8·(i / 4) + 2·quad + i % 2
    // of an N-column wgmma result.
    const u32 wg = warp >> 2, wg_warp = warp & 3u;
    const u32 group = lane >> 2, quad = lane & 3u;
    const float scale_log2 = scale * WG_LOG2E;

    float o[D / 2];
#pragma unroll
    for (u32 i = 0; i < D / 2; ++i) o[i] = 0.0f;
    float row_max[2] = {WG_NEG_INF, WG_NEG_INF};  // of the log2-scaled scores seen so far
    float row_sum[2] = {0.0f, 0.0f};              // this thread's share of Σ 2^(s − row_max)

    mbar_wait(q_full, 0);
    for (u32 j = 0; j < n_tiles; ++j) {
        const u32 stage = j % WG_STAGES;
        mbar_wait(full0 + 8 * stage, (j / WG_STAGES) & 1u);
        const u32 k_tile = kv_base + 2 * stage * KV_BYTES, v_tile = k_tile + KV_BYTES;

        // S = Q·Kᵀ over the head dimension, 16 columns per wgmma.
        float s[WG_BLOCK_N / 2];
        wgmma_fence();
#pragma unroll
        for (u32 kk = 0; kk < D / 16; ++kk) {
            const u64 a = smem_desc(q_tile + k_major_offset(WG_BLOCK_M, 64 * wg, kk), WG_K_MAJOR_LBO, WG_K_MAJOR_SBO);
            const u64 b = smem_desc(k_tile + k_major_offset(WG_BLOCK_N, 0, kk), WG_K_MAJOR_LBO, WG_K_MAJOR_SBO);
            wgmma_ss_m64n64k16(s, a, b, kk > 0 ? 1u : 0u);
        }
        wgmma_commit();
        wgmma_wait_all();
#pragma unroll
        for (u32 i = 0; i < WG_BLOCK_N / 2; ++i) fence_operand(s[i]);

        // Log2-scaled scores; keys past kv_tokens (zero-filled by TMA) are −inf.
        const u32 key0 = j * WG_BLOCK_N;
#pragma unroll
        for (u32 i = 0; i < WG_BLOCK_N / 2; ++i) {
            const u32 key = key0 + 8 * (i >> 2) + 2 * quad + (i & 1u);
            s[i] = key < kv_tokens ? s[i] * scale_log2 : WG_NEG_INF;
        }

        // Online softmax, per row r (registers with (i / 2) % 2 == r): the quad's 4 threads hold
        // the row's 64 scores between them.
#pragma unroll
        for (u32 r = 0; r < 2; ++r) {
            float mx = row_max[r];
#pragma unroll
            for (u32 nb = 0; nb < WG_BLOCK_N / 8; ++nb) mx = fmaxf(mx, fmaxf(s[4 * nb + 2 * r], s[4 * nb + 2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            // A row with no finite score yet subtracts 0, not −inf: 2^(−inf − 0) = 0, never
            // 2^(−inf + inf) = NaN.
            const float base = mx == WG_NEG_INF ? 0.0f : mx;
            const float correction = exp2_approx(row_max[r] - base);  // 0 while row_max is −inf
            row_max[r] = mx;
            row_sum[r] *= correction;
#pragma unroll
            for (u32 nd = 0; nd < D / 8; ++nd) {
                o[4 * nd + 2 * r] *= correction;
                o[4 * nd + 2 * r + 1] *= correction;
            }
#pragma unroll
            for (u32 nb = 0; nb < WG_BLOCK_N / 8; ++nb) {
                s[4 * nb + 2 * r] = exp2_approx(s[4 * nb + 2 * r] - base);
                s[4 * nb + 2 * r + 1] = exp2_approx(s[4 * nb + 2 * r + 1] - base);
                row_sum[r] += s[4 * nb + 2 * r] + s[4 * nb + 2 * r + 1];
            }
        }

        // O += P·V, 16 keys per wgmma: S's key blocks 2kk and 2kk + 1 are P's A fragment kk.
        u32 p[WG_BLOCK_N / 16][4];
#pragma unroll
        for (u32 kk = 0; kk < WG_BLOCK_N / 16; ++kk) {
            p[kk][0] = pack_bf16x2(s[8 * kk], s[8 * kk + 1]);
            p[kk][1] = pack_bf16x2(s[8 * kk + 2], s[8 * kk + 3]);
            p[kk][2] = pack_bf16x2(s[8 * kk + 4], s[8 * kk + 5]);
            p[kk][3] = pack_bf16x2(s[8 * kk + 6], s[8 * kk + 7]);
        }
        wgmma_fence();  // o was rescaled in registers since the last wgmma
#pragma unroll
        for (u32 kk = 0; kk < WG_BLOCK_N / 16; ++kk) {
            wgmma_rs<D>(o, p[kk], smem_desc(v_tile + v_offset(kk), WG_V_LBO, WG_V_SBO));
        }
        wgmma_commit();
        wgmma_wait_all();
#pragma unroll
        for (u32 i = 0; i < D / 2; ++i) fence_operand(o[i]);

        // This warp's wgmmas of the stage are complete: release it to the producer.
        __syncwarp();
        if (lane == 0) mbar_arrive(empty0 + 8 * stage);
    }

    const bool full = out_dim == D;
#pragma unroll
    for (u32 r = 0; r < 2; ++r) {
        float sum = row_sum[r];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        const u32 query = m0 + 64 * wg + 16 * wg_warp + group + 8 * r;
        if (query < q_tokens) {
            OUT* row = out + ((u64)query * heads + head) * out_dim;
#pragma unroll
            for (u32 nd = 0; nd < D / 8; ++nd) {
                store_pair(row, 8 * nd + 2 * quad, o[4 * nd + 2 * r] * inv, o[4 * nd + 2 * r + 1] * inv, out_dim, full);
            }
        }
    }
}

#define ATTENTION_WGMMA_KERNEL(NAME, D, OUT)                                                                    \
    extern "C" __global__ void __launch_bounds__(WG_THREADS, 1)                                                 \
        NAME(const __grid_constant__ CUtensorMap tmap_q, const __grid_constant__ CUtensorMap tmap_k,            \
             const __grid_constant__ CUtensorMap tmap_v, OUT* out, unsigned int q_tokens, unsigned int kv_tokens, \
             unsigned int heads, unsigned int out_dim, float scale) {                                           \
        attention_wgmma_tiles<D, OUT>(&tmap_q, &tmap_k, &tmap_v, out, q_tokens, kv_tokens, heads, out_dim, scale); \
    }

ATTENTION_WGMMA_KERNEL(attention_wgmma_d64_f32out, 64, float)
ATTENTION_WGMMA_KERNEL(attention_wgmma_d64_bf16out, 64, bf16_bits)
ATTENTION_WGMMA_KERNEL(attention_wgmma_d128_f32out, 128, float)
ATTENTION_WGMMA_KERNEL(attention_wgmma_d128_bf16out, 128, bf16_bits)
