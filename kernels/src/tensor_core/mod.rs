//! The tensor-core kernels (kernels/cuda/attention_flash.cu, vae_conv_tc.cu) as plain Rust, for
//! checking them without a GPU: their geometry (the launch wrappers' single source of it), their
//! index maps over the PTX ISA's `mma.m16n8k16` / `ldmatrix` fragment layouts ([`fragments`], with
//! a warp emulator of the two instructions), and their whole tile loops ([`attention_emu`],
//! compared with [`crate::cpu::nn_attention`]; [`conv`] and [`conv_emu`], the implicit-GEMM causal
//! conv, compared with [`crate::cpu::nn_conv`]). Not behind the `cuda` feature: these tests run
//! everywhere.
//!
//! The emulation follows the kernel statement by statement (same names, same formulas, same tile
//! order and rounding points), but it is a second copy: a change to one needs the same change to
//! the other. `geometry_matches_the_kernel_source` pins the shared constants and index formulas to
//! the `.cu` text.

pub mod attention_emu;
pub mod conv;
pub mod conv_emu;
pub mod fragments;
pub mod wgmma;

/// Warps per block, one per 16-row query slice (`ATTN_WARPS`).
pub const ATTN_WARPS: usize = 4;
/// Threads per block (`ATTN_THREADS`).
pub const ATTN_THREADS: usize = ATTN_WARPS * 32;
/// Query rows per block (`ATTN_BLOCK_M`).
pub const ATTN_BLOCK_M: usize = ATTN_WARPS * 16;
/// Keys per K/V tile (`ATTN_BLOCK_N`).
pub const ATTN_BLOCK_N: usize = 64;
/// The head sizes the kernel is instantiated for.
pub const ATTN_HEAD_DIMS: [usize; 2] = [64, 128];

/// Dynamic shared memory of one block: the Q tile and two stages of K and V tiles, bf16.
pub const fn attention_smem_bytes(head_dim: usize) -> usize {
    (1 + 2 * 2) * ATTN_BLOCK_N * head_dim * 2
}

/// The kernel head size a head of `head_dim` runs with: the smallest of [`ATTN_HEAD_DIMS`] that
/// holds it (the inputs zero-padded to it), or `None` when none does.
pub fn attention_padded_head_dim(head_dim: usize) -> Option<usize> {
    ATTN_HEAD_DIMS.into_iter().find(|&d| head_dim >= 1 && head_dim <= d)
}

/// The kernel for `head_dim` (with the relative-bias add when `bias`), if one is instantiated.
pub fn attention_kernel_name(head_dim: usize, bias: bool) -> Option<&'static str> {
    Some(match (head_dim, bias) {
        (64, false) => "attention_bf16_d64",
        (64, true) => "attention_bf16_d64_bias",
        (128, false) => "attention_bf16_d128",
        (128, true) => "attention_bf16_d128_bias",
        _ => return None,
    })
}

/// The bf16-output kernel for `head_dim` (no relative bias), if one is instantiated.
pub fn attention_kernel_name_obf16(head_dim: usize) -> Option<&'static str> {
    Some(match head_dim {
        64 => "attention_bf16_d64_obf16",
        128 => "attention_bf16_d128_obf16",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = include_str!("../../cuda/attention_flash.cu");
    const MMA_HEADER: &str = include_str!("../../cuda/mma_sm80.cuh");

    #[test]
    fn geometry_matches_the_kernel_source() {
        for (name, value) in [("ATTN_WARPS", ATTN_WARPS), ("ATTN_BLOCK_N", ATTN_BLOCK_N)] {
            let line = format!("#define {name} {value}\n");
            assert!(SOURCE.contains(&line), "attention_flash.cu lacks {line:?}");
        }
        assert!(SOURCE.contains("#define ATTN_THREADS (ATTN_WARPS * 32)\n"));
        assert!(SOURCE.contains("#define ATTN_BLOCK_M (ATTN_WARPS * 16)\n"));
        for d in ATTN_HEAD_DIMS {
            for bias in [false, true] {
                let name = attention_kernel_name(d, bias).expect("instantiated");
                let line = format!("ATTENTION_KERNEL({name}, {d}, {bias})\n");
                assert!(SOURCE.contains(&line), "attention_flash.cu lacks {line:?}");
            }
        }
        assert_eq!(SOURCE.matches("\nATTENTION_KERNEL(").count(), 2 * ATTN_HEAD_DIMS.len());
        for d in ATTN_HEAD_DIMS {
            let name = attention_kernel_name_obf16(d).expect("instantiated");
            let line = format!("ATTENTION_KERNEL_OBF16({name}, {d})\n");
            assert!(SOURCE.contains(&line), "attention_flash.cu lacks {line:?}");
        }
        assert_eq!(
            SOURCE.matches("\nATTENTION_KERNEL_OBF16(").count(),
            ATTN_HEAD_DIMS.len()
        );
        assert_eq!(attention_kernel_name_obf16(12), None);
        assert_eq!(attention_smem_bytes(128), 80 * 1024);
        // The index maps of fragments.rs, as the .cu spells them: editing one side fails here.
        for body in [
            "u32 a_ldm_row(u32 lane) { return lane & 15u; }",
            "u32 a_ldm_chunk(u32 lane) { return lane >> 4; }",
            "u32 b_ldm_row(u32 lane) { return (lane & 7u) | ((lane >> 4) << 3); }",
            "u32 b_ldm_chunk(u32 lane) { return (lane >> 3) & 1u; }",
            "return (row * CHUNKS + (chunk ^ (row & 7u))) * 16u;",
        ] {
            assert!(MMA_HEADER.contains(body), "mma_sm80.cuh no longer has {body:?}");
        }
        assert!(SOURCE.contains("#include \"mma_sm80.cuh\"\n"));
        for body in [
            "u32 key = key0 + nb * 8 + 2 * quad + (e & 1u);",
            "u32 query = m0 + warp * 16 + group + 8 * (e >> 1);",
            "const u32 a[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),",
        ] {
            assert!(SOURCE.contains(body), "attention_flash.cu no longer has {body:?}");
        }
        let padded: Vec<_> = [0, 1, 12, 64, 65, 128, 129].map(attention_padded_head_dim).into();
        assert_eq!(padded, [None, Some(64), Some(64), Some(64), Some(128), Some(128), None]);
    }
}
