// PTX wrappers and index maps shared by the tensor-core kernels (attention_flash.cu,
// vae_conv_tc.cu): cp.async, ldmatrix, mma.sync m16n8k16 bf16 → f32, and the ldmatrix lane
// addresses over swizzled shared-memory tiles. Mirrored, under the same names, by
// kernels/src/tensor_core/fragments.rs, whose tests check them against the PTX ISA's layouts.
// Needs sm_80 or newer.
#pragma once

typedef unsigned int u32;

// ---- PTX wrappers -------------------------------------------------------------------------------

__device__ __forceinline__ u32 shared_address(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}

// 16 bytes global → shared, asynchronously; src_bytes = 0 writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async_16(u32 dst, const void* src, u32 src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::);
}

template <int PENDING>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING));
}

// Four 8×8 b16 matrices; lane l gives the row address of row l % 8 of matrix l / 8 and receives in
// r[i] row l / 4, columns 2·(l % 4) + {0, 1} of matrix i (with .trans: row 2·(l % 4) + {0, 1},
// column l / 4).
__device__ __forceinline__ void ldmatrix_x4(u32 r[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(u32 r[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// d += a·b for one 16×8×16 bf16 tile, f32 accumulators.
__device__ __forceinline__ void mma_bf16_16816(float d[4], const u32 a[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats → one register of two bf16 (round to nearest even); `lo` is the element with the
// lower column index, which mma reads from the low half (cvt puts its first source in the high half).
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// ---- Index maps (mirrored by kernels/src/tensor_core/fragments.rs) ------------------------------

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile of CHUNKS chunks per row. The chunk
// index is XORed with row % 8, so the 8 row addresses of one ldmatrix matrix (same logical chunk,
// 8 consecutive rows) fall in 8 different 16-byte bank groups: no bank conflicts.
template <int CHUNKS>
__device__ __forceinline__ u32 swizzled_offset(u32 row, u32 chunk) {
    return (row * CHUNKS + (chunk ^ (row & 7u))) * 16u;
}

// ldmatrix lane addresses, as (row within a 16-row group, chunk offset 0 or 1 within a 16-column
// k-step). For Q (A fragments, row-major 16×16) and V (.trans, B fragments of P·V) matrix i is
// rows 8·(i % 2).., columns 8·(i / 2)..: r[0..4] = a0..a3, or b0, b1 of d-block 2p and of 2p + 1.
__device__ __forceinline__ u32 a_ldm_row(u32 lane) { return lane & 15u; }
__device__ __forceinline__ u32 a_ldm_chunk(u32 lane) { return lane >> 4; }
// For K (B fragments of Q·Kᵀ: K row-major is Kᵀ column-major) matrix i is keys 8·(i / 2)..,
// columns 8·(i % 2)..: r[0], r[1] = b0, b1 of key block 2p; r[2], r[3] those of key block 2p + 1.
__device__ __forceinline__ u32 b_ldm_row(u32 lane) { return (lane & 7u) | ((lane >> 4) << 3); }
__device__ __forceinline__ u32 b_ldm_chunk(u32 lane) { return (lane >> 3) & 1u; }
