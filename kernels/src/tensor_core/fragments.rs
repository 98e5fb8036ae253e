//! Fragment layouts of `mma.sync.aligned.m16n8k16` (bf16 inputs, f32 accumulators) and of
//! `ldmatrix`, as the PTX ISA defines them, next to the index maps attention_flash.cu uses on top
//! of them, plus a warp emulator of the two instructions. The tests drive random tiles through the
//! kernel's maps and the emulated instructions and compare with a plain matmul.
//!
//! Two kinds of function live here and are kept apart on purpose:
//! - `isa_*`: the hardware's contract, written from the PTX ISA ("Matrix Fragments for
//!   mma.m16n8k16 with floating point type", "Warp-level matrix load instruction: ldmatrix").
//!   Only the emulated instructions use them.
//! - the kernel's maps (`swizzled_offset`, `a_ldm_*`, `b_ldm_*`, `c_row_col`, `pack_bf16x2`): the
//!   same formulas, under the same names, as the `__device__` helpers of attention_flash.cu.
//!
//! `group` and `quad` are the ISA's `groupID = lane / 4` and `threadID_in_group = lane % 4`.

/// Threads of a warp.
pub const WARP: usize = 32;

/// One warp's registers of one kind: `[lane][register]`.
pub type WarpRegs<T, const N: usize> = [[T; N]; WARP];

// ---- The hardware's contract (PTX ISA) ----------------------------------------------------------

/// A (16×16, row-major): element `i` in 0..8 of `lane` (register `i / 2`, low half for even `i`)
/// is at (row, column).
pub fn isa_a_element(lane: usize, i: usize) -> (usize, usize) {
    let (group, quad) = (lane / 4, lane % 4);
    let row = if i < 2 || (4..6).contains(&i) { group } else { group + 8 };
    let col = quad * 2 + (i & 1) + if i >= 4 { 8 } else { 0 };
    (row, col)
}

/// B (16×8, k × n, "col"): element `i` in 0..4 of `lane` (register `i / 2`) is at (k, n).
pub fn isa_b_element(lane: usize, i: usize) -> (usize, usize) {
    let (group, quad) = (lane / 4, lane % 4);
    (quad * 2 + (i & 1) + if i >= 2 { 8 } else { 0 }, group)
}

/// C/D (16×8 f32): accumulator `i` in 0..4 of `lane` is at (row, column).
pub fn isa_c_element(lane: usize, i: usize) -> (usize, usize) {
    let (group, quad) = (lane / 4, lane % 4);
    (if i < 2 { group } else { group + 8 }, quad * 2 + (i & 1))
}

/// `ldmatrix .m8n8 .b16`: register `i` of `lane` receives, in its low (`half` 0) and high half,
/// element (row, column) of 8×8 matrix `i`: row `lane / 4`, columns `2·(lane % 4) + half`; with
/// `.trans`, the transpose.
pub fn isa_ldmatrix_element(lane: usize, half: usize, trans: bool) -> (usize, usize) {
    let (r, c) = (lane / 4, 2 * (lane % 4) + half);
    if trans {
        (c, r)
    } else {
        (r, c)
    }
}

/// `ldmatrix .x4`: the lane whose address is row `row` of matrix `matrix` (threads 0–7 address
/// matrix 0, 8–15 matrix 1, …).
pub fn isa_ldmatrix_address_lane(matrix: usize, row: usize) -> usize {
    8 * matrix + row
}

// ---- The kernel's maps (attention_flash.cu's helpers of the same names) -------------------------

/// Byte offset of 16-byte chunk `chunk` of row `row` in a tile of `chunks` chunks per row, the
/// chunk index XORed with `row % 8`.
pub fn swizzled_offset(chunks: usize, row: usize, chunk: usize) -> usize {
    (row * chunks + (chunk ^ (row & 7))) * 16
}

/// ldmatrix lane address for A fragments of a row-major tile (Q) and, with `.trans`, B fragments
/// from a row-major k × n tile (V): row within the 16-row group, and chunk 0 or 1 of the k-step.
pub fn a_ldm_row(lane: usize) -> usize {
    lane & 15
}
pub fn a_ldm_chunk(lane: usize) -> usize {
    lane >> 4
}

/// ldmatrix lane address for B fragments from an n × k row-major tile (K, for Q·Kᵀ): registers
/// 0, 1 are b0, b1 of n-block 2p, registers 2, 3 those of n-block 2p + 1.
pub fn b_ldm_row(lane: usize) -> usize {
    (lane & 7) | ((lane >> 4) << 3)
}
pub fn b_ldm_chunk(lane: usize) -> usize {
    (lane >> 3) & 1
}

/// The kernel's reading of accumulator `e` of `lane` in an 8-column block: row `group + 8·(e / 2)`
/// of the warp's 16, column `2·quad + e % 2` (the key or head column within the block).
pub fn c_row_col(lane: usize, e: usize) -> (usize, usize) {
    (lane / 4 + 8 * (e >> 1), 2 * (lane % 4) + (e & 1))
}

/// f32 → bf16 bits, round to nearest even (cvt.rn.bf16x2.f32, and common.cuh's f32_to_bf16 for
/// non-NaN values).
pub fn bf16_bits(f: f32) -> u16 {
    let u = f.to_bits();
    if f.is_nan() {
        return ((u >> 16) | 0x0040) as u16;
    }
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

pub fn bf16_value(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Two floats as one register of two bf16, `lo` (the lower column) in the low half.
pub fn pack_bf16x2(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) as u32 | ((bf16_bits(hi) as u32) << 16)
}

fn half_of(reg: u32, half: usize) -> u16 {
    (reg >> (16 * half)) as u16
}

// ---- Emulated instructions -----------------------------------------------------------------------

/// `ldmatrix.x4` (`.trans` when `trans`) from `smem` (bf16 bits, 16-byte rows addressed in bytes):
/// `address(lane)` is the byte offset that lane supplies.
pub fn ldmatrix_x4(smem: &[u16], address: impl Fn(usize) -> usize, trans: bool) -> WarpRegs<u32, 4> {
    let mut regs = [[0u32; 4]; WARP];
    for (lane, out) in regs.iter_mut().enumerate() {
        for (matrix, reg) in out.iter_mut().enumerate() {
            for half in 0..2 {
                let (r, c) = isa_ldmatrix_element(lane, half, trans);
                let row_address = address(isa_ldmatrix_address_lane(matrix, r));
                assert_eq!(row_address % 16, 0, "ldmatrix row addresses are 16-byte aligned");
                *reg |= (smem[row_address / 2 + c] as u32) << (16 * half);
            }
        }
    }
    regs
}

/// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32`, `d += a·b` (products exact, sums in
/// f32 in k order; the hardware's internal order differs by rounding only).
pub fn mma_16816(d: &mut WarpRegs<f32, 4>, a: &WarpRegs<u32, 4>, b0: &WarpRegs<u32, 1>, b1: &WarpRegs<u32, 1>) {
    let mut am = [[0f32; 16]; 16];
    let mut bm = [[0f32; 8]; 16];
    for lane in 0..WARP {
        for i in 0..8 {
            let (r, c) = isa_a_element(lane, i);
            am[r][c] = bf16_value(half_of(a[lane][i / 2], i % 2));
        }
        let b = [b0[lane][0], b1[lane][0]];
        for i in 0..4 {
            let (kk, n) = isa_b_element(lane, i);
            bm[kk][n] = bf16_value(half_of(b[i / 2], i % 2));
        }
    }
    for (lane, acc) in d.iter_mut().enumerate() {
        for (i, value) in acc.iter_mut().enumerate() {
            let (r, c) = isa_c_element(lane, i);
            for kk in 0..16 {
                *value += am[r][kk] * bm[kk][c];
            }
        }
    }
}

/// Register `i` of every lane, as the one-register operand [`mma_16816`] takes for b0 or b1.
pub fn reg(regs: &WarpRegs<u32, 4>, i: usize) -> WarpRegs<u32, 1> {
    std::array::from_fn(|lane| [regs[lane][i]])
}

/// `__shfl_xor_sync(full mask, x, mask)` across the warp.
pub fn shfl_xor(x: &[f32; WARP], mask: usize) -> [f32; WARP] {
    std::array::from_fn(|lane| x[lane ^ mask])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*, values in ±scale.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, scale: f32) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let u = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0) * scale
        }
        /// A bf16-representable matrix, so every product is exact and sums are the only rounding.
        fn matrix(&mut self, rows: usize, cols: usize) -> Vec<Vec<f32>> {
            (0..rows)
                .map(|_| (0..cols).map(|_| bf16_value(bf16_bits(self.next(2.0)))).collect())
                .collect()
        }
    }

    /// A swizzled tile of `chunks` 16-byte chunks per row holding `m` (row-major, bf16).
    fn tile(m: &[Vec<f32>], chunks: usize) -> Vec<u16> {
        let mut smem = vec![0u16; m.len() * chunks * 8];
        for (r, row) in m.iter().enumerate() {
            for (c, &x) in row.iter().enumerate() {
                smem[swizzled_offset(chunks, r, c / 8) / 2 + c % 8] = bf16_bits(x);
            }
        }
        smem
    }

    fn matmul(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<Vec<f64>> {
        a.iter()
            .map(|row| {
                (0..b[0].len())
                    .map(|j| row.iter().zip(b).map(|(&x, br)| x as f64 * br[j] as f64).sum())
                    .collect()
            })
            .collect()
    }

    fn assert_close(got: f32, want: f64, what: &str) {
        assert!(
            (got as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{what}: {got} vs {want}"
        );
    }

    #[test]
    fn the_isa_layouts_cover_each_matrix_once() {
        let mut a = [[0; 16]; 16];
        let mut b = [[0; 8]; 16];
        let mut c = [[0; 8]; 16];
        for lane in 0..WARP {
            (0..8).for_each(|i| {
                let (r, col) = isa_a_element(lane, i);
                a[r][col] += 1;
            });
            for i in 0..4 {
                let (k, n) = isa_b_element(lane, i);
                b[k][n] += 1;
                let (r, col) = isa_c_element(lane, i);
                c[r][col] += 1;
                // The kernel's reading of the accumulators is the ISA's layout.
                assert_eq!(c_row_col(lane, i), (r, col));
            }
        }
        assert!(a
            .iter()
            .flatten()
            .chain(b.iter().flatten())
            .chain(c.iter().flatten())
            .all(|&n| n == 1));
    }

    #[test]
    fn the_swizzle_is_a_permutation_and_ldmatrix_phases_are_conflict_free() {
        for chunks in [8, 16] {
            let mut seen = vec![false; 64 * chunks];
            for row in 0..64 {
                for chunk in 0..chunks {
                    let at = swizzled_offset(chunks, row, chunk) / 16;
                    assert!(!seen[at] && at / chunks == row, "row {row} chunk {chunk}");
                    seen[at] = true;
                }
            }
            // One ldmatrix matrix: 8 consecutive rows, one logical chunk. Shared memory has 32
            // four-byte banks, so a 16-byte chunk occupies bank group (byte offset / 16) % 8.
            for row0 in (0..64).step_by(8) {
                for chunk in 0..chunks {
                    let mut groups: Vec<usize> = (0..8)
                        .map(|r| swizzled_offset(chunks, row0 + r, chunk) / 16 % 8)
                        .collect();
                    groups.sort();
                    groups.dedup();
                    assert_eq!(groups.len(), 8, "{chunks} chunks, rows {row0}.., chunk {chunk}");
                }
            }
        }
    }

    /// Q·Kᵀ as the kernel computes it: A from a row-major 16×D Q tile through `a_ldm_*`, B from a
    /// row-major 16×D K tile (keys × head) through `b_ldm_*`, then P·V with P repacked from the
    /// accumulators and B from a row-major 16×D V tile through `a_ldm_*` with `.trans`.
    #[test]
    fn the_kernels_maps_multiply_like_a_matmul() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for d in [64, 128] {
            let chunks = d / 8;
            let (q, k, v) = (rng.matrix(16, d), rng.matrix(16, d), rng.matrix(16, d));
            let (q_s, k_s, v_s) = (tile(&q, chunks), tile(&k, chunks), tile(&v, chunks));
            // S = Q·Kᵀ: two 8-key blocks.
            let mut s = [[[0f32; 4]; WARP]; 2];
            for kk in 0..d / 16 {
                let a = ldmatrix_x4(
                    &q_s,
                    |l| swizzled_offset(chunks, a_ldm_row(l), 2 * kk + a_ldm_chunk(l)),
                    false,
                );
                let b = ldmatrix_x4(
                    &k_s,
                    |l| swizzled_offset(chunks, b_ldm_row(l), 2 * kk + b_ldm_chunk(l)),
                    false,
                );
                mma_16816(&mut s[0], &a, &reg(&b, 0), &reg(&b, 1));
                mma_16816(&mut s[1], &a, &reg(&b, 2), &reg(&b, 3));
            }
            let kt: Vec<Vec<f32>> = (0..d).map(|c| k.iter().map(|row| row[c]).collect()).collect();
            let want_s = matmul(&q, &kt);
            for (nb, block) in s.iter().enumerate() {
                for (lane, acc) in block.iter().enumerate() {
                    for (e, &value) in acc.iter().enumerate() {
                        let (r, c) = c_row_col(lane, e);
                        assert_close(value, want_s[r][8 * nb + c], "S = Q·Kᵀ");
                    }
                }
            }
            // O = P·V with P = S rounded to bf16, as the kernel packs it.
            let p: WarpRegs<u32, 4> = std::array::from_fn(|l| {
                [
                    pack_bf16x2(s[0][l][0], s[0][l][1]),
                    pack_bf16x2(s[0][l][2], s[0][l][3]),
                    pack_bf16x2(s[1][l][0], s[1][l][1]),
                    pack_bf16x2(s[1][l][2], s[1][l][3]),
                ]
            });
            let mut o = vec![[[0f32; 4]; WARP]; d / 8];
            for pair in 0..d / 16 {
                let b = ldmatrix_x4(
                    &v_s,
                    |l| swizzled_offset(chunks, a_ldm_row(l), 2 * pair + a_ldm_chunk(l)),
                    true,
                );
                mma_16816(&mut o[2 * pair], &p, &reg(&b, 0), &reg(&b, 1));
                mma_16816(&mut o[2 * pair + 1], &p, &reg(&b, 2), &reg(&b, 3));
            }
            // The packed P, read back through the ISA's A layout, is S at the right places.
            let mut p_matrix = vec![vec![0f32; 16]; 16];
            for (lane, regs) in p.iter().enumerate() {
                for i in 0..8 {
                    let (r, c) = isa_a_element(lane, i);
                    p_matrix[r][c] = bf16_value(half_of(regs[i / 2], i % 2));
                    let want = want_s[r][c];
                    let ulp = want.abs() / 128.0;
                    assert!((p_matrix[r][c] as f64 - want).abs() <= ulp, "P[{r}][{c}]");
                }
            }
            let want_o = matmul(&p_matrix, &v);
            for (nd, block) in o.iter().enumerate() {
                for (lane, acc) in block.iter().enumerate() {
                    for (e, &value) in acc.iter().enumerate() {
                        let (r, c) = c_row_col(lane, e);
                        assert_close(value, want_o[r][8 * nd + c], "O = P·V");
                    }
                }
            }
        }
    }

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80); // tie, even stays
        assert_eq!(bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82); // tie, odd rounds up
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(bf16_bits(f32::NEG_INFINITY), 0xff80);
        assert_eq!(pack_bf16x2(1.0, -2.0), 0xc000_3f80);
    }
}
