//! attention_flash.cu's tile loop on the CPU: every block, warp and lane of the kernel, with the
//! shared-memory tiles it copies (swizzled, zero-filled past the end), the fragments `ldmatrix`
//! gives each lane, emulated `mma` (see [`super::fragments`]), and the kernel's online softmax
//! (log2-scaled scores, the −inf guard, bf16 P, quad shuffles), in the kernel's order. The tests
//! compare it with [`crate::cpu::nn_attention`] and [`crate::cpu::nn_attention_bias`].
//!
//! Differences from the device, all rounding-level: `exp2` is Rust's (the kernel's `ex2.approx`
//! is within 2 ulp), and mma sums in k order (the hardware's order is unspecified).

use super::fragments::{
    a_ldm_chunk, a_ldm_row, b_ldm_chunk, b_ldm_row, bf16_bits, c_row_col, ldmatrix_x4, mma_16816, pack_bf16x2, reg,
    shfl_xor, swizzled_offset, WarpRegs, WARP,
};
use super::{attention_padded_head_dim, attention_smem_bytes, ATTN_BLOCK_M, ATTN_BLOCK_N, ATTN_THREADS, ATTN_WARPS};
use crate::cpu::nn_attention::AttentionShape;

const LOG2E: f32 = std::f32::consts::LOG2_E;

/// What the kernel writes for `softmax(scale·q·kᵀ [+ rel_bias])·v` given f32 inputs, packed as the
/// launch wrapper does (attention_pack_bf16: rounded to bf16, heads zero-padded to the kernel's
/// size). Elements the kernel does not write stay NaN.
pub fn emulate_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    rel_bias: Option<&[f32]>,
    shape: AttentionShape,
    scale: f32,
) -> Vec<f32> {
    let AttentionShape {
        q_tokens,
        kv_tokens,
        heads,
        head_dim,
    } = shape;
    let d = attention_padded_head_dim(head_dim).unwrap_or_else(|| panic!("no kernel for head_dim {head_dim}"));
    // attention_pack_bf16: element i of the padded rows.
    let pack = |x: &[f32]| -> Vec<u16> {
        (0..x.len() / head_dim * d)
            .map(|i| {
                let (r, c) = (i / d, i % d);
                if c < head_dim {
                    bf16_bits(x[r * head_dim + c])
                } else {
                    0
                }
            })
            .collect()
    };
    let call = Call {
        q: pack(q),
        k: pack(k),
        v: pack(v),
        rel_bias,
        q_tokens,
        kv_tokens,
        heads,
        width: heads * d,
        d,
        out_dim: head_dim,
        scale_log2: scale * LOG2E,
    };
    let mut out = vec![f32::NAN; q.len()];
    for head in 0..heads {
        for m0 in (0..q_tokens).step_by(ATTN_BLOCK_M) {
            call.block(head, m0, &mut out);
        }
    }
    out
}

struct Call<'a> {
    q: Vec<u16>,
    k: Vec<u16>,
    v: Vec<u16>,
    rel_bias: Option<&'a [f32]>,
    q_tokens: usize,
    kv_tokens: usize,
    heads: usize,
    /// Row width of the packed inputs, `heads·d`.
    width: usize,
    /// The kernel's head size.
    d: usize,
    /// Columns per head of the output (the caller's head size).
    out_dim: usize,
    scale_log2: f32,
}

/// One warp's registers across the tile loop.
struct Warp {
    warp: usize,
    qf: Vec<WarpRegs<u32, 4>>,
    o: Vec<WarpRegs<f32, 4>>,
    row_max: [[f32; 2]; WARP],
    row_sum: [[f32; 2]; WARP],
}

impl Call<'_> {
    /// copy_tile_async: every thread's 16-byte copies of one tile.
    fn copy_tile(&self, smem: &mut [u16], tile: usize, src: &[u16], row0: usize, rows_total: usize, col0: usize) {
        let chunks = self.d / 8;
        assert_eq!(ATTN_BLOCK_N * chunks % ATTN_THREADS, 0);
        for tid in 0..ATTN_THREADS {
            for i in 0..ATTN_BLOCK_N * chunks / ATTN_THREADS {
                let c = tid + i * ATTN_THREADS;
                let (r, chunk) = (c / chunks, c % chunks);
                let inside = row0 + r < rows_total;
                let row = if inside { row0 + r } else { 0 };
                let dst = (tile + swizzled_offset(chunks, r, chunk)) / 2;
                let from = row * self.width + col0 + chunk * 8;
                for e in 0..8 {
                    smem[dst + e] = if inside { src[from + e] } else { 0 };
                }
            }
        }
    }

    fn block(&self, head: usize, m0: usize, out: &mut [f32]) {
        let (d, chunks) = (self.d, self.d / 8);
        let tile = ATTN_BLOCK_N * d * 2;
        let col0 = head * d;
        let n_tiles = self.kv_tokens.div_ceil(ATTN_BLOCK_N);
        let mut smem = vec![0u16; attention_smem_bytes(d) / 2];
        let q_tile = 0;
        self.copy_tile(&mut smem, q_tile, &self.q, m0, self.q_tokens, col0);
        self.copy_tile(&mut smem, q_tile + tile, &self.k, 0, self.kv_tokens, col0);
        self.copy_tile(&mut smem, q_tile + 2 * tile, &self.v, 0, self.kv_tokens, col0);

        let mut warps: Vec<Warp> = (0..ATTN_WARPS)
            .map(|warp| Warp {
                warp,
                qf: (0..d / 16)
                    .map(|kk| {
                        let at =
                            |l| q_tile + swizzled_offset(chunks, warp * 16 + a_ldm_row(l), 2 * kk + a_ldm_chunk(l));
                        ldmatrix_x4(&smem, at, false)
                    })
                    .collect(),
                o: vec![[[0.0; 4]; WARP]; d / 8],
                row_max: [[f32::NEG_INFINITY; 2]; WARP],
                row_sum: [[0.0; 2]; WARP],
            })
            .collect();

        for j in 0..n_tiles {
            let stage = j & 1;
            if j + 1 < n_tiles {
                // Copied before tile j is used, as the kernel's prefetch may land first.
                let next = q_tile + tile * (1 + 2 * (stage ^ 1));
                let row0 = (j + 1) * ATTN_BLOCK_N;
                self.copy_tile(&mut smem, next, &self.k, row0, self.kv_tokens, col0);
                self.copy_tile(&mut smem, next + tile, &self.v, row0, self.kv_tokens, col0);
            }
            let k_tile = q_tile + tile * (1 + 2 * stage);
            let v_tile = k_tile + tile;
            for w in &mut warps {
                self.tile(w, &smem, k_tile, v_tile, head, m0, j * ATTN_BLOCK_N);
            }
        }
        for w in &warps {
            self.finish(w, m0, head, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn tile(&self, w: &mut Warp, smem: &[u16], k_tile: usize, v_tile: usize, head: usize, m0: usize, key0: usize) {
        let (d, chunks) = (self.d, self.d / 8);
        // S = Q·Kᵀ.
        let mut s = vec![[[0f32; 4]; WARP]; ATTN_BLOCK_N / 8];
        for kk in 0..d / 16 {
            for p in 0..ATTN_BLOCK_N / 16 {
                let at = |l| k_tile + swizzled_offset(chunks, 16 * p + b_ldm_row(l), 2 * kk + b_ldm_chunk(l));
                let b = ldmatrix_x4(smem, at, false);
                mma_16816(&mut s[2 * p], &w.qf[kk], &reg(&b, 0), &reg(&b, 1));
                mma_16816(&mut s[2 * p + 1], &w.qf[kk], &reg(&b, 2), &reg(&b, 3));
            }
        }
        // Log2-scaled scores (+ bias), −inf past the keys.
        let offsets = self.q_tokens + self.kv_tokens - 1;
        for (nb, block) in s.iter_mut().enumerate() {
            for (lane, acc) in block.iter_mut().enumerate() {
                for (e, value) in acc.iter_mut().enumerate() {
                    let (row, col) = c_row_col(lane, e);
                    let key = key0 + nb * 8 + col;
                    let mut x = *value * self.scale_log2;
                    if let Some(bias) = self.rel_bias {
                        let query = m0 + w.warp * 16 + row;
                        if key < self.kv_tokens && query < self.q_tokens {
                            x = bias[head * offsets + key + (self.q_tokens - 1 - query)].mul_add(LOG2E, x);
                        }
                    }
                    *value = if key < self.kv_tokens { x } else { f32::NEG_INFINITY };
                }
            }
        }
        // Online softmax per row; a row's scores are spread over the 4 lanes of a quad.
        for r in 0..2 {
            let mut mx: [f32; WARP] = std::array::from_fn(|lane| {
                s.iter()
                    .fold(w.row_max[lane][r], |m, b| m.max(b[lane][2 * r].max(b[lane][2 * r + 1])))
            });
            for mask in [1, 2] {
                let other = shfl_xor(&mx, mask);
                mx.iter_mut().zip(other).for_each(|(m, o)| *m = m.max(o));
            }
            for lane in 0..WARP {
                let base = if mx[lane] == f32::NEG_INFINITY { 0.0 } else { mx[lane] };
                let correction = (w.row_max[lane][r] - base).exp2();
                w.row_max[lane][r] = mx[lane];
                w.row_sum[lane][r] *= correction;
                for o in &mut w.o {
                    o[lane][2 * r] *= correction;
                    o[lane][2 * r + 1] *= correction;
                }
                for b in &mut s {
                    b[lane][2 * r] = (b[lane][2 * r] - base).exp2();
                    b[lane][2 * r + 1] = (b[lane][2 * r + 1] - base).exp2();
                    w.row_sum[lane][r] += b[lane][2 * r] + b[lane][2 * r + 1];
                }
            }
        }
        // O += P·V.
        for kk in 0..ATTN_BLOCK_N / 16 {
            let (lo, hi) = (&s[2 * kk], &s[2 * kk + 1]);
            let a: WarpRegs<u32, 4> = std::array::from_fn(|l| {
                [
                    pack_bf16x2(lo[l][0], lo[l][1]),
                    pack_bf16x2(lo[l][2], lo[l][3]),
                    pack_bf16x2(hi[l][0], hi[l][1]),
                    pack_bf16x2(hi[l][2], hi[l][3]),
                ]
            });
            for p in 0..d / 16 {
                let at = |l| v_tile + swizzled_offset(chunks, 16 * kk + a_ldm_row(l), 2 * p + a_ldm_chunk(l));
                let b = ldmatrix_x4(smem, at, true);
                mma_16816(&mut w.o[2 * p], &a, &reg(&b, 0), &reg(&b, 1));
                mma_16816(&mut w.o[2 * p + 1], &a, &reg(&b, 2), &reg(&b, 3));
            }
        }
    }

    fn finish(&self, w: &Warp, m0: usize, head: usize, out: &mut [f32]) {
        for r in 0..2 {
            let mut sum: [f32; WARP] = std::array::from_fn(|lane| w.row_sum[lane][r]);
            for mask in [1, 2] {
                let other = shfl_xor(&sum, mask);
                sum.iter_mut().zip(other).for_each(|(s, o)| *s += o);
            }
            for (lane, &total) in sum.iter().enumerate() {
                let inv = if total > 0.0 { 1.0 / total } else { 0.0 };
                let (row, col) = c_row_col(lane, 2 * r);
                let query = m0 + w.warp * 16 + row;
                if query < self.q_tokens {
                    let row = (query * self.heads + head) * self.out_dim;
                    for (nd, o) in w.o.iter().enumerate() {
                        let c = nd * 8 + col;
                        if c < self.out_dim {
                            out[row + c] = o[lane][2 * r] * inv;
                        }
                        if c + 1 < self.out_dim {
                            out[row + c + 1] = o[lane][2 * r + 1] * inv;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::nn_attention::attention;
    use crate::cpu::nn_attention_bias::attention_rel_bias;
    use crate::tensor_core::fragments::bf16_value;

    struct Rng(u64);
    impl Rng {
        fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
            (0..len)
                .map(|_| {
                    self.0 ^= self.0 >> 12;
                    self.0 ^= self.0 << 25;
                    self.0 ^= self.0 >> 27;
                    let u = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
                    (2.0 * u - 1.0) * scale
                })
                .collect()
        }
    }

    fn shape(q_tokens: usize, kv_tokens: usize, heads: usize, head_dim: usize) -> AttentionShape {
        AttentionShape {
            q_tokens,
            kv_tokens,
            heads,
            head_dim,
        }
    }

    /// max |got − want| / max(1, |want|), the GPU parity tests' measure; fails on any non-finite.
    fn max_error(what: &str, got: &[f32], want: &[f32]) -> f32 {
        got.iter().zip(want).enumerate().fold(0.0, |worst, (i, (&g, &w))| {
            assert!(g.is_finite(), "{what}: element {i} is {g} (want {w})");
            worst.max((g - w).abs() / w.abs().max(1.0))
        })
    }

    fn rounded(x: &[f32]) -> Vec<f32> {
        x.iter().map(|&f| bf16_value(bf16_bits(f))).collect()
    }

    /// Tails in both lengths (a partial Q block, a partial last K/V tile, fewer keys than one
    /// tile, a single key and query), both kernel head sizes and padded ones (the test
    /// checkpoints' 12 and 20, and 72), self- and cross-attention lengths.
    const SHAPES: &[(usize, usize, usize, usize)] = &[
        (150, 70, 3, 128),
        (65, 513, 2, 64),
        (1, 1, 1, 64),
        (64, 64, 1, 128),
        (17, 200, 2, 128),
        (130, 129, 1, 64),
        (40, 30, 2, 12),
        (70, 90, 3, 20),
        (33, 65, 2, 72),
    ];

    #[test]
    fn the_tile_loop_matches_the_reference_attention() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for &(qt, kt, h, d) in SHAPES {
            let sh = shape(qt, kt, h, d);
            let w = sh.width();
            let (q, k, v) = (rng.vec(qt * w, 1.5), rng.vec(kt * w, 1.5), rng.vec(kt * w, 1.5));
            let scale = 1.0 / (d as f32).sqrt();
            let got = emulate_attention(&q, &k, &v, None, sh, scale);
            // On the rounded inputs only P's rounding to bf16 and the summation order differ.
            let mut want = vec![0.0; q.len()];
            attention(&rounded(&q), &rounded(&k), &rounded(&v), sh, scale, &mut want);
            let err_rounded = max_error("vs rounded inputs", &got, &want);
            // Against the f32 inputs: the bf16 parity tolerance of the GPU tests.
            attention(&q, &k, &v, sh, scale, &mut want);
            let err = max_error("vs f32 inputs", &got, &want);
            eprintln!("{sh:?}: max error {err_rounded:.2e} (bf16 inputs), {err:.2e} (f32 inputs)");
            assert!(err_rounded < 4e-3 && err < 1e-2, "{sh:?}: {err_rounded}, {err}");
        }
    }

    #[test]
    fn the_tile_loop_adds_the_relative_bias_like_the_reference() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for &(qt, kt, h, d) in SHAPES.iter().step_by(2) {
            let sh = shape(qt, kt, h, d);
            let w = sh.width();
            let (q, k, v) = (rng.vec(qt * w, 1.5), rng.vec(kt * w, 1.5), rng.vec(kt * w, 1.5));
            let bias = rng.vec(h * (qt + kt - 1), 2.0);
            let scale = 1.0 / (d as f32).sqrt();
            let got = emulate_attention(&q, &k, &v, Some(&bias), sh, scale);
            let mut want = vec![0.0; q.len()];
            attention_rel_bias(&rounded(&q), &rounded(&k), &rounded(&v), sh, scale, &bias, &mut want);
            let err = max_error("rel bias", &got, &want);
            eprintln!("{sh:?} + bias: max error {err:.2e} (bf16 inputs)");
            assert!(err < 4e-3, "{sh:?}: {err}");
        }
    }

    #[test]
    fn masked_tiles_and_rows_give_no_nan() {
        // The bias table is per offset j − i + q_tokens − 1, shared between queries. Masking every
        // offset query 1 uses (1..=100) leaves query 1 no key at all (it must come out 0, not NaN),
        // query 0 only key 99 (offset 101: its whole first tile is −inf, so its running max stays
        // −inf through a tile) and query 2 only key 0 (offset 0).
        let (qt, kt, d) = (3, 100, 64);
        let sh = shape(qt, kt, 1, d);
        let mut rng = Rng(7);
        let (q, k, v) = (rng.vec(qt * d, 1.0), rng.vec(kt * d, 1.0), rng.vec(kt * d, 1.0));
        let at = |i: usize, j: usize| j + qt - 1 - i;
        let mut bias = rng.vec(qt + kt - 1, 1.0);
        for j in 0..kt {
            bias[at(1, j)] = f32::NEG_INFINITY;
        }
        let got = emulate_attention(&q, &k, &v, Some(&bias), sh, 0.125);
        assert!(got.iter().all(|x| x.is_finite()), "NaN or inf in {got:?}");
        assert!(got[d..2 * d].iter().all(|&x| x == 0.0), "a row with no key gives 0");
        // Queries 0 and 2 see exactly one key each: the output is that key's value row.
        let vr = rounded(&v);
        for (query, key) in [(0, 99), (2, 0)] {
            let finite: Vec<usize> = (0..kt).filter(|&j| bias[at(query, j)].is_finite()).collect();
            assert_eq!(finite, [key]);
            assert_eq!(
                &got[query * d..(query + 1) * d],
                &vr[key * d..(key + 1) * d],
                "query {query}"
            );
        }
    }

    #[test]
    fn large_scores_do_not_overflow() {
        let sh = shape(2, 3, 1, 64);
        let q = vec![30.0; 2 * 64];
        let k = vec![1.0; 3 * 64];
        let v: Vec<f32> = (0..3 * 64).map(|i| (i / 64) as f32).collect();
        let got = emulate_attention(&q, &k, &v, None, sh, 1.0);
        assert!(got.iter().all(|&x| (x - 1.0).abs() < 1e-6), "{got:?}");
    }
}
