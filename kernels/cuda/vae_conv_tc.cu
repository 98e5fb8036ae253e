// The Wan VAE decoder's causal convolutions on tensor cores (reference: kernels/src/cpu/nn_conv.rs),
// as an implicit GEMM: bf16 operands, f32 accumulation, f32 output with the bias (and optionally a
// residual) added in the epilogue.
//
// Operands:
// - x: the activations packed by vae_pack_cl_bf16 below, channels-last bf16 [in_frames, in_h, in_w,
//   cpad] with cpad = cin rounded up to 8 (channels cin..cpad are zeros), so 8 channels of one pixel
//   are one 16-byte cp.async.
// - weight: packed on the host (kernels/src/tensor_core/conv.rs, pack_conv_weight) to bf16
//   [cout, taps·cw], the reduction axis ordered (dt, kh, kw, c) with c fastest and cw = cin rounded
//   up to CONV_BLOCK_K (zeros past cin): every K tile lies inside one tap.
// - out: f32 [frames, cout, h, w] (the decoder's frame-major layout).
//
// GEMM view, one output frame t per blockIdx.z: M = the frame's h·w output pixels (CONV_BLOCK_M per
// block), N = cout (CONV_BLOCK_N per block), K = taps·cw. The A element (pixel m, K index (dt, kh,
// kw, c)) is x[s, y', x', c] with s = t + dt + hist − (kt − 1) (causal: s < 0 is zero; `hist` real
// frames of history sit in front of the output's first frame in x, 0 for the plain contract of
// causal_conv3d_f32), y' = m / w + kh − ks/2 and x' = m % w + kw − ks/2 zero outside the (output-size)
// frame, and with `up` the input is the half-size frame read at (y' / 2, x' / 2): nearest ×2
// upsampling fused into the gather, the 4× tensor never exists. Taps whose frame is causal padding
// for the whole block are skipped (their products are exact zeros).
//
// Structure: 4 warps in a 2 × 2 grid, each owning a 64 × 32 output tile (4 × 4 mma tiles, 64 f32
// accumulators per thread). A (128 × 32) and B (64 × 32) tiles stream through CONV_STAGES shared-
// memory stages with cp.async (zero-fill for every kind of padding and for M/N tails), 64-byte rows
// swizzled by conv_swizzle; fragments come from ldmatrix (A: a_ldm_*, B from the n × k weight rows:
// b_ldm_*, as K in attention_flash.cu). The index maps are mirrored and checked on the CPU in
// kernels/src/tensor_core/conv.rs and conv_emu.rs (an emulation of this kernel, block by block, warp
// by warp, compared with nn_conv).
//
// Every output value's sum runs over the same K tiles in the same order whatever the number of
// frames, the chunk of frames launched or the block's position, so a frame's bits depend only on
// its kt input frames (the property the sharded decode rests on). Parity with the f32 reference is
// the bf16 tolerance (the products are exact, the inputs rounded to bf16).
#include "common.cuh"
#include "mma_sm80.cuh"

#define CONV_WARPS 4
#define CONV_THREADS (CONV_WARPS * 32)
#define CONV_BLOCK_M 128
#define CONV_BLOCK_N 64
#define CONV_BLOCK_K 32
#define CONV_STAGES 3
#define CONV_A_BYTES (CONV_BLOCK_M * CONV_BLOCK_K * 2)
#define CONV_B_BYTES (CONV_BLOCK_N * CONV_BLOCK_K * 2)
#define CONV_STAGE_BYTES (CONV_A_BYTES + CONV_B_BYTES)

// Byte offset of 16-byte chunk `chunk` (0..4) of row `row` in a tile of 64-byte rows. The chunk is
// XORed with (row / 2) % 4: the 8 rows one ldmatrix matrix reads (same logical chunk) then cover
// all 8 16-byte bank groups, so neither ldmatrix nor the cp.async stores conflict.
__device__ __forceinline__ u32 conv_swizzle(u32 row, u32 chunk) {
    return (row * 4u + (chunk ^ ((row >> 1) & 3u))) * 16u;
}

// One thread's share of the tile copies: it always copies 16-byte chunk `j` of A rows
// `row0 + 32·i` (i < 4) and of B rows `row0 + 32·i` (i < 2). Per-row state is computed once; the
// K tiles are copied strictly in order, so the tile's tap and channel offset are counters advanced
// by next() instead of divisions.
struct ConvGather {
    const bf16_bits* x;
    const bf16_bits* wrow[2];  // this thread's weight rows at column 8·j (null: n ≥ cout)
    int py[4], px[4];          // output pixel of each A row (py = −(1 << 20) past h·w: never valid)
    u32 j, row0, cpad, cpt, ks, h, w, in_w, in_h, up;
    // The next tile: input frame s, tap (kh, kw), channel tile ct; k0 its first weight column.
    int s;
    u32 kh, kw, ct, k0;

    // The next K tile into the stage at `smem`, then advance (c fastest, then kw, kh, dt).
    __device__ __forceinline__ void load_next(u32 smem) {
        const u32 c = ct * CONV_BLOCK_K + 8u * j;
        const int pad = (int)(ks >> 1);
#pragma unroll
        for (u32 i = 0; i < 4; ++i) {
            const int y = py[i] + (int)kh - pad, xx = px[i] + (int)kw - pad;
            const bool inside = s >= 0 && c < cpad && y >= 0 && y < (int)h && xx >= 0 && xx < (int)w;
            const unsigned long long at =
                inside ? (((unsigned long long)s * in_h + ((u32)y >> up)) * in_w + ((u32)xx >> up)) * cpad + c : 0ull;
            cp_async_16(smem + conv_swizzle(row0 + 32u * i, j), x + at, inside ? 16u : 0u);
        }
#pragma unroll
        for (u32 i = 0; i < 2; ++i) {
            const bool inside = wrow[i] != nullptr;
            cp_async_16(smem + CONV_A_BYTES + conv_swizzle(row0 + 32u * i, j), inside ? wrow[i] + k0 : x,
                        inside ? 16u : 0u);
        }
        k0 += CONV_BLOCK_K;
        if (++ct == cpt) {
            ct = 0;
            if (++kw == ks) {
                kw = 0;
                if (++kh == ks) {
                    kh = 0;
                    ++s;
                }
            }
        }
    }
};

// Grid (ceil(h·w / CONV_BLOCK_M), ceil(cout / CONV_BLOCK_N), frames), CONV_THREADS threads, static
// shared memory CONV_STAGES·CONV_STAGE_BYTES (36 KiB). out[t] = conv + bias, or with `residual`
// out[t] = (conv + bias) + out[t] (the decoder's residual add, in the reference's order).
extern "C" __global__ void __launch_bounds__(CONV_THREADS)
    causal_conv3d_bf16_tc(const bf16_bits* __restrict__ x, const bf16_bits* __restrict__ weight,
                          const float* __restrict__ bias, float* __restrict__ out, u32 hist, u32 cpad, u32 cout,
                          u32 h, u32 w, u32 kt, u32 ks, u32 up, u32 residual) {
    __shared__ __align__(128) unsigned char conv_smem[CONV_STAGES * CONV_STAGE_BYTES];
    const u32 base = shared_address(conv_smem);
    const u32 tid = threadIdx.x, warp = tid >> 5, lane = tid & 31u;
    const u32 group = lane >> 2, quad = lane & 3u;
    const u32 wm = warp & 1u, wn = warp >> 1;  // this warp's 64-row, 32-column quarter
    const u32 hw = h * w, m0 = blockIdx.x * CONV_BLOCK_M, n0 = blockIdx.y * CONV_BLOCK_N, t = blockIdx.z;
    const u32 cpt = (cpad + CONV_BLOCK_K - 1) / CONV_BLOCK_K;  // K tiles per tap
    const u32 cw = cpt * CONV_BLOCK_K;
    const u32 area = ks * ks;

    ConvGather g;
    g.x = x;
    g.j = tid & 3u;
    g.row0 = tid >> 2;
    g.cpad = cpad;
    g.cpt = cpt;
    g.ks = ks;
    g.h = h;
    g.w = w;
    g.up = up;
    g.in_h = h >> up;
    g.in_w = w >> up;
#pragma unroll
    for (u32 i = 0; i < 4; ++i) {
        const u32 m = m0 + g.row0 + 32u * i;
        g.py[i] = m < hw ? (int)(m / w) : -(1 << 20);
        g.px[i] = m < hw ? (int)(m % w) : 0;
    }
#pragma unroll
    for (u32 i = 0; i < 2; ++i) {
        const u32 n = n0 + g.row0 + 32u * i;
        g.wrow[i] = n < cout ? weight + (unsigned long long)n * (kt * area * cw) + 8u * g.j : nullptr;
    }

    // Tap dt reads input frame t + hist − (kt − 1) + dt; the taps before frame 0 read causal
    // padding only, so the K loop starts at the first tap whose frame exists.
    const int s_first = (int)t + (int)hist - (int)(kt - 1);
    const u32 dt_begin = s_first < 0 ? (u32)(-s_first) : 0u;
    g.s = s_first + (int)dt_begin;
    g.kh = g.kw = g.ct = 0;
    g.k0 = dt_begin * area * cw;
    const u32 n_k = (kt - dt_begin) * area * cpt;

#pragma unroll
    for (u32 s = 0; s < CONV_STAGES - 1; ++s) {
        if (s < n_k) g.load_next(base + s * CONV_STAGE_BYTES);
        cp_async_commit();  // empty groups keep the group count uniform
    }

    // acc[mi][ni]: rows wm·64 + 16·mi.., columns wn·32 + 8·ni.. (C layout).
    float acc[4][4][4];
#pragma unroll
    for (u32 mi = 0; mi < 4; ++mi)
#pragma unroll
        for (u32 ni = 0; ni < 4; ++ni) acc[mi][ni][0] = acc[mi][ni][1] = acc[mi][ni][2] = acc[mi][ni][3] = 0.0f;

    for (u32 i = 0; i < n_k; ++i) {
        cp_async_wait<CONV_STAGES - 2>();  // tile i has landed (groups complete in order)
        __syncthreads();                   // ...for every thread; and stage (i − 1) % S is free
        if (i + CONV_STAGES - 1 < n_k) g.load_next(base + ((i + CONV_STAGES - 1) % CONV_STAGES) * CONV_STAGE_BYTES);
        cp_async_commit();
        const u32 a_tile = base + (i % CONV_STAGES) * CONV_STAGE_BYTES, b_tile = a_tile + CONV_A_BYTES;
#pragma unroll
        for (u32 kk = 0; kk < CONV_BLOCK_K / 16; ++kk) {
            u32 a[4][4], b[4][2];
#pragma unroll
            for (u32 mi = 0; mi < 4; ++mi)
                ldmatrix_x4(a[mi], a_tile + conv_swizzle(wm * 64 + mi * 16 + a_ldm_row(lane), 2 * kk + a_ldm_chunk(lane)));
#pragma unroll
            for (u32 p = 0; p < 2; ++p) {
                u32 r[4];
                ldmatrix_x4(r, b_tile + conv_swizzle(wn * 32 + p * 16 + b_ldm_row(lane), 2 * kk + b_ldm_chunk(lane)));
                b[2 * p][0] = r[0];
                b[2 * p][1] = r[1];
                b[2 * p + 1][0] = r[2];
                b[2 * p + 1][1] = r[3];
            }
#pragma unroll
            for (u32 mi = 0; mi < 4; ++mi)
#pragma unroll
                for (u32 ni = 0; ni < 4; ++ni) mma_bf16_16816(acc[mi][ni], a[mi], b[ni][0], b[ni][1]);
        }
    }
    cp_async_wait<0>();

    // Epilogue: for a fixed channel the 8 lanes of a quad column hold 8 consecutive pixels, so every
    // store instruction writes whole 32-byte sectors.
    float* frame_out = out + (unsigned long long)t * cout * hw;
#pragma unroll
    for (u32 ni = 0; ni < 4; ++ni) {
#pragma unroll
        for (u32 e1 = 0; e1 < 2; ++e1) {
            const u32 n = n0 + wn * 32 + ni * 8 + 2 * quad + e1;
            if (n >= cout) continue;
            const float bn = bias[n];
            float* col = frame_out + (unsigned long long)n * hw;
#pragma unroll
            for (u32 mi = 0; mi < 4; ++mi) {
#pragma unroll
                for (u32 e2 = 0; e2 < 2; ++e2) {
                    const u32 m = m0 + wm * 64 + mi * 16 + group + 8 * e2;
                    if (m < hw) {
                        float v = acc[mi][ni][2 * e2 + e1] + bn;
                        if (residual) v = v + col[m];
                        col[m] = v;
                    }
                }
            }
        }
    }
}

// f32 [frames, channels, hw] → bf16 channels-last [frames, hw, cpad] (cpad: channels rounded up to
// 8, the extra channels zero), the tensor-core conv's input. With `gamma` (non-null) each pixel is
// first channel-RMS-normalised exactly as channel_rms_norm_f32 (norm in double in channel order,
// then ((v / d)·√C)·γ_c), with `silu` then v / (1 + exp(−v)) as silu_f32; the value is rounded to
// bf16 last (nearest even). Reference: pack_channels_last in kernels/src/tensor_core/conv.rs.
// Grid (ceil(hw / 64), frames), 256 threads: 64 pixels per block, 32 channels per pass through a
// shared-memory transpose (coalesced reads along pixels, 16-byte writes along channels).
#define PACK_PIXELS 64
#define PACK_THREADS 256
extern "C" __global__ void __launch_bounds__(PACK_THREADS)
    vae_pack_cl_bf16(const float* __restrict__ x, const float* __restrict__ gamma, bf16_bits* __restrict__ out,
                     u32 channels, u32 cpad, u32 hw, u32 silu) {
    __shared__ float tile[32][PACK_PIXELS + 1];
    __shared__ float norm[PACK_PIXELS];
    const u32 tid = threadIdx.x, p0 = blockIdx.x * PACK_PIXELS;
    const float* xf = x + (unsigned long long)blockIdx.y * channels * hw;
    bf16_bits* of = out + (unsigned long long)blockIdx.y * hw * cpad;
    if (gamma != nullptr && tid < PACK_PIXELS) {
        const u32 p = p0 + tid;
        double sumsq = 0.0;
        if (p < hw)
            for (u32 c = 0; c < channels; ++c) {
                const double v = (double)xf[(unsigned long long)c * hw + p];
                sumsq += v * v;
            }
        norm[tid] = fmaxf((float)sqrt(sumsq), 1e-12f);
    }
    __syncthreads();
    const float scale = sqrtf((float)channels);
    for (u32 c0 = 0; c0 < cpad; c0 += 32) {
#pragma unroll
        for (u32 i = 0; i < 8; ++i) {
            const u32 cc = (tid >> 6) + 4 * i, pp = tid & 63u, c = c0 + cc, p = p0 + pp;
            float v = 0.0f;
            if (c < channels && p < hw) {
                v = xf[(unsigned long long)c * hw + p];
                if (gamma != nullptr) v = v / norm[pp] * scale * gamma[c];
                if (silu) v = v / (1.0f + expf(-v));
            }
            tile[cc][pp] = v;
        }
        __syncthreads();
        const u32 pp = tid >> 2, j = tid & 3u, c = c0 + 8 * j, p = p0 + pp;
        if (p < hw && c < cpad) {
            u32 r[4];
#pragma unroll
            for (u32 q = 0; q < 4; ++q)
                r[q] = (u32)f32_to_bf16(tile[8 * j + 2 * q][pp]) | ((u32)f32_to_bf16(tile[8 * j + 2 * q + 1][pp]) << 16);
            *reinterpret_cast<uint4*>(of + (unsigned long long)p * cpad + c) = make_uint4(r[0], r[1], r[2], r[3]);
        }
        __syncthreads();
    }
}
