//! vae_conv_tc.cu's `causal_conv3d_bf16_tc` on the CPU: every block, thread and warp of the
//! kernel, with its tile copies into the swizzled shared-memory stages (the `ConvGather` counters,
//! zero-fill for every kind of padding), the fragments `ldmatrix` gives each lane, emulated `mma`
//! ([`super::fragments`]) and the epilogue, in the kernel's order. The tests compare it with
//! [`crate::cpu::nn_conv::CausalConv3d`] on bf16-rounded operands.
//!
//! Differences from the device, all rounding-level: mma sums in k order here (the hardware's
//! internal order is unspecified).

use super::conv::{
    conv_swizzle, weight_tap_columns, ConvGeometry, CONV_BLOCK_K, CONV_BLOCK_M, CONV_BLOCK_N, CONV_STAGES,
    CONV_STAGE_BYTES, CONV_THREADS,
};
use super::fragments::{a_ldm_chunk, a_ldm_row, b_ldm_chunk, b_ldm_row, ldmatrix_x4, mma_16816, reg, WarpRegs, WARP};

/// Bytes of the A tile of one stage (`CONV_A_BYTES`).
const A_BYTES: usize = CONV_BLOCK_M * CONV_BLOCK_K * 2;

/// What `causal_conv3d_bf16_tc` leaves in `out` for packed input `x` (channels-last bf16),
/// packed weight (`conv::pack_conv_weight`) and `bias`; with `residual`, `out` holds the residual
/// on entry. Elements the kernel does not write keep their value.
pub fn emulate_conv(x: &[u16], weight: &[u16], bias: &[f32], g: ConvGeometry, residual: bool, out: &mut [f32]) {
    g.check().expect("a valid geometry");
    assert_eq!(x.len(), g.input_len(), "x length");
    assert_eq!(weight.len(), g.weight_len(), "weight length");
    assert_eq!(bias.len(), g.cout, "bias length");
    assert_eq!(out.len(), g.output_len(), "out length");
    let (gx, gy, gz) = g.grid();
    for t in 0..gz {
        for by in 0..gy {
            for bx in 0..gx {
                block(x, weight, bias, g, residual, out, (bx, by, t));
            }
        }
    }
}

/// The per-thread part of `ConvGather`: chunk `j` of rows `row0 + 32·i`.
struct Thread {
    j: usize,
    row0: usize,
    /// Output pixel (y, x) of each A row, `None` past h·w.
    pixel: [Option<(isize, isize)>; 4],
    /// Start of each B row's weight row at column 8·j, `None` past cout.
    wrow: [Option<usize>; 2],
}

/// The block-uniform counters of `ConvGather` (the next K tile).
struct Counters {
    s: isize,
    kh: usize,
    kw: usize,
    ct: usize,
    k0: usize,
}

#[allow(clippy::too_many_arguments)]
fn load_next(
    smem: &mut [u16],
    stage: usize,
    threads: &[Thread],
    k: &mut Counters,
    x: &[u16],
    weight: &[u16],
    g: ConvGeometry,
    cpt: usize,
) {
    let base = stage * CONV_STAGE_BYTES;
    let pad = (g.ks >> 1) as isize;
    let up = g.upsample as usize;
    let cpad = g.cpad();
    for th in threads {
        let c = k.ct * CONV_BLOCK_K + 8 * th.j;
        for (i, pixel) in th.pixel.iter().enumerate() {
            let src = pixel.and_then(|(py, px)| {
                let (y, xx) = (py + k.kh as isize - pad, px + k.kw as isize - pad);
                let inside = k.s >= 0 && c < cpad && y >= 0 && y < g.h as isize && xx >= 0 && xx < g.w as isize;
                inside.then(|| {
                    ((k.s as usize * g.in_h() + ((y as usize) >> up)) * g.in_w() + ((xx as usize) >> up)) * cpad + c
                })
            });
            let dst = (base + conv_swizzle(th.row0 + 32 * i, th.j)) / 2;
            match src {
                Some(at) => smem[dst..dst + 8].copy_from_slice(&x[at..at + 8]),
                None => smem[dst..dst + 8].fill(0),
            }
        }
        for (i, wrow) in th.wrow.iter().enumerate() {
            let dst = (base + A_BYTES + conv_swizzle(th.row0 + 32 * i, th.j)) / 2;
            match wrow {
                Some(at) => smem[dst..dst + 8].copy_from_slice(&weight[at + k.k0..at + k.k0 + 8]),
                None => smem[dst..dst + 8].fill(0),
            }
        }
    }
    k.k0 += CONV_BLOCK_K;
    k.ct += 1;
    if k.ct == cpt {
        k.ct = 0;
        k.kw += 1;
        if k.kw == g.ks {
            k.kw = 0;
            k.kh += 1;
            if k.kh == g.ks {
                k.kh = 0;
                k.s += 1;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn block(
    x: &[u16],
    weight: &[u16],
    bias: &[f32],
    g: ConvGeometry,
    residual: bool,
    out: &mut [f32],
    (bx, by, t): (usize, usize, usize),
) {
    let hw = g.h * g.w;
    let (m0, n0) = (bx * CONV_BLOCK_M, by * CONV_BLOCK_N);
    let cw = weight_tap_columns(g.cin);
    let cpt = cw / CONV_BLOCK_K;
    let area = g.ks * g.ks;
    let threads: Vec<Thread> = (0..CONV_THREADS)
        .map(|tid| {
            let (j, row0) = (tid & 3, tid >> 2);
            Thread {
                j,
                row0,
                pixel: std::array::from_fn(|i| {
                    let m = m0 + row0 + 32 * i;
                    (m < hw).then(|| ((m / g.w) as isize, (m % g.w) as isize))
                }),
                wrow: std::array::from_fn(|i| {
                    let n = n0 + row0 + 32 * i;
                    (n < g.cout).then(|| n * (g.kt * area * cw) + 8 * j)
                }),
            }
        })
        .collect();
    let s_first = t as isize + g.hist as isize - (g.kt - 1) as isize;
    let dt_begin = if s_first < 0 { (-s_first) as usize } else { 0 };
    let mut k = Counters {
        s: s_first + dt_begin as isize,
        kh: 0,
        kw: 0,
        ct: 0,
        k0: dt_begin * area * cw,
    };
    let n_k = (g.kt - dt_begin) * area * cpt;
    let mut smem = vec![0u16; CONV_STAGES * CONV_STAGE_BYTES / 2];
    for s in 0..CONV_STAGES - 1 {
        if s < n_k {
            load_next(&mut smem, s, &threads, &mut k, x, weight, g, cpt);
        }
    }
    // acc[warp][mi][ni], each a 16 × 8 C tile.
    let mut acc = vec![[[[[0f32; 4]; WARP]; 4]; 4]; 4];
    for i in 0..n_k {
        if i + CONV_STAGES - 1 < n_k {
            load_next(
                &mut smem,
                (i + CONV_STAGES - 1) % CONV_STAGES,
                &threads,
                &mut k,
                x,
                weight,
                g,
                cpt,
            );
        }
        let a_tile = (i % CONV_STAGES) * CONV_STAGE_BYTES;
        let b_tile = a_tile + A_BYTES;
        for (warp, acc) in acc.iter_mut().enumerate() {
            let (wm, wn) = (warp & 1, warp >> 1);
            for kk in 0..CONV_BLOCK_K / 16 {
                let a: [WarpRegs<u32, 4>; 4] = std::array::from_fn(|mi| {
                    ldmatrix_x4(
                        &smem,
                        |l| a_tile + conv_swizzle(wm * 64 + mi * 16 + a_ldm_row(l), 2 * kk + a_ldm_chunk(l)),
                        false,
                    )
                });
                let b: [WarpRegs<u32, 4>; 2] = std::array::from_fn(|p| {
                    ldmatrix_x4(
                        &smem,
                        |l| b_tile + conv_swizzle(wn * 32 + p * 16 + b_ldm_row(l), 2 * kk + b_ldm_chunk(l)),
                        false,
                    )
                });
                for (mi, row) in acc.iter_mut().enumerate() {
                    for (ni, d) in row.iter_mut().enumerate() {
                        let r = &b[ni / 2];
                        let (b0, b1) = (reg(r, 2 * (ni % 2)), reg(r, 2 * (ni % 2) + 1));
                        mma_16816(d, &a[mi], &b0, &b1);
                    }
                }
            }
        }
    }
    let frame_out = t * g.cout * hw;
    for (warp, acc) in acc.iter().enumerate() {
        let (wm, wn) = (warp & 1, warp >> 1);
        for lane in 0..WARP {
            let (group, quad) = (lane >> 2, lane & 3);
            for ni in 0..4 {
                for e1 in 0..2 {
                    let n = n0 + wn * 32 + ni * 8 + 2 * quad + e1;
                    if n >= g.cout {
                        continue;
                    }
                    for (mi, row) in acc.iter().enumerate() {
                        for e2 in 0..2 {
                            let m = m0 + wm * 64 + mi * 16 + group + 8 * e2;
                            if m < hw {
                                let at = frame_out + n * hw + m;
                                let mut v = row[ni][lane][2 * e2 + e1] + bias[n];
                                if residual {
                                    v += out[at];
                                }
                                out[at] = v;
                            }
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
    use crate::cpu::nn_conv::CausalConv3d;
    use crate::cpu::nn_vae::upsample_nearest2x;
    use crate::tensor_core::conv::{pack_channels_last, pack_conv_weight};
    use crate::tensor_core::fragments::{bf16_bits, bf16_value};

    struct Rng(u64);
    impl Rng {
        fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
            (0..n)
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

    fn round_bf16(v: &[f32]) -> Vec<f32> {
        v.iter().map(|&x| bf16_value(bf16_bits(x))).collect()
    }

    /// One case: random x [in_frames, cin, in_h, in_w], weight, bias; the emulated kernel on the
    /// packed operands against nn_conv on the same bf16-rounded values (upsampled first when the
    /// geometry upsamples; with history, the reference's output frames after the history).
    fn check(g: ConvGeometry, seed: u64) {
        let mut rng = Rng(seed | 1);
        let (in_hw, hw) = (g.in_h() * g.in_w(), g.h * g.w);
        let x = rng.vec(g.in_frames() * g.cin * in_hw, 1.0);
        let weight = rng.vec(g.cout * g.cin * g.kt * g.ks * g.ks, 0.5);
        let bias = rng.vec(g.cout, 0.5);

        let packed_x = pack_channels_last(&x, g.cin, in_hw, None, false);
        let packed_w = pack_conv_weight(&weight, g.cout, g.cin, g.kt, g.ks);
        let mut got = vec![f32::NAN; g.output_len()];
        emulate_conv(&packed_x, &packed_w, &bias, g, false, &mut got);

        let (xr, wr) = (round_bf16(&x), round_bf16(&weight));
        let full = |x: &[f32]| {
            if g.upsample {
                upsample_nearest2x(x, g.in_frames() * g.cin, g.in_h(), g.in_w())
            } else {
                x.to_vec()
            }
        };
        let reference = |x: &[f32], w: &[f32], b: &[f32]| {
            let all = CausalConv3d::new(w, b, g.cout, g.cin, g.kt, g.ks).forward(&full(x), g.in_frames(), g.h, g.w);
            all[g.hist * g.cout * hw..].to_vec()
        };
        let want = reference(&xr, &wr, &bias);
        // Σ|x·w| per output, for the rounding bound of two f32 sums of n terms.
        let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
        let mag = reference(&abs(&xr), &abs(&wr), &vec![0.0; g.cout]);
        let n_terms = (g.cin * g.kt * g.ks * g.ks + 1) as f32;
        for (i, ((&a, &b), &m)) in got.iter().zip(&want).zip(&mag).enumerate() {
            let bound = 2.0 * n_terms * f32::EPSILON * (m + b.abs()) + 1e-7;
            assert!(
                (a - b).abs() <= bound,
                "{g:?} element {i}: emulated {a} vs nn_conv {b} (bound {bound:e})"
            );
        }

        // The fused residual: (conv + bias) + r, bit for bit the unfused sum.
        let r = rng.vec(g.output_len(), 2.0);
        let mut with_residual = r.clone();
        emulate_conv(&packed_x, &packed_w, &bias, g, true, &mut with_residual);
        for (i, ((&a, &c), &rv)) in with_residual.iter().zip(&got).zip(&r).enumerate() {
            assert_eq!(a.to_bits(), (c + rv).to_bits(), "{g:?} residual element {i}");
        }
    }

    fn geometry(frames: usize, cin: usize, cout: usize, (h, w): (usize, usize), kt: usize, ks: usize) -> ConvGeometry {
        ConvGeometry {
            frames,
            hist: 0,
            cin,
            cout,
            h,
            w,
            kt,
            ks,
            upsample: false,
        }
    }

    #[test]
    fn a_3x3x3_conv_with_odd_channels_matches_nn_conv() {
        check(geometry(3, 5, 7, (5, 7), 3, 3), 1);
    }

    #[test]
    fn fewer_frames_than_taps_read_causal_zeros() {
        check(geometry(2, 3, 4, (4, 4), 3, 3), 2);
        check(geometry(1, 9, 3, (3, 5), 3, 3), 3);
    }

    #[test]
    fn pixel_channel_and_reduction_tails_across_tiles() {
        // h·w = 144 > 128 (two pixel tiles, the second partial), cout 70 > 64 (two channel tiles),
        // cin 40 → cpad 40, two K tiles per tap (the second one partially past cpad).
        check(geometry(2, 40, 70, (9, 16), 1, 1), 4);
        check(geometry(2, 33, 65, (12, 11), 1, 3), 5);
    }

    #[test]
    fn the_3x1x1_time_conv_matches() {
        check(geometry(4, 16, 10, (3, 5), 3, 1), 6);
    }

    #[test]
    fn the_fused_nearest_upsample_matches_upsampling_first() {
        let mut g = geometry(2, 6, 5, (8, 10), 1, 3);
        g.upsample = true;
        check(g, 7);
        let mut g = geometry(3, 11, 9, (6, 14), 3, 3);
        g.upsample = true;
        check(g, 8);
    }

    #[test]
    fn history_frames_reproduce_the_full_sequence_bit_for_bit() {
        let mut rng = Rng(99);
        let (frames, cin, cout, h, w, kt) = (6, 7, 5, 6, 7, 3);
        let x = rng.vec(frames * cin * h * w, 1.0);
        let weight = rng.vec(cout * cin * kt * 9, 0.5);
        let bias = rng.vec(cout, 0.5);
        let px = pack_channels_last(&x, cin, h * w, None, false);
        let pw = pack_conv_weight(&weight, cout, cin, kt, 3);
        let g = geometry(frames, cin, cout, (h, w), kt, 3);
        let mut full = vec![f32::NAN; g.output_len()];
        emulate_conv(&px, &pw, &bias, g, false, &mut full);
        check(
            ConvGeometry {
                hist: 2,
                ..geometry(3, cin, cout, (h, w), kt, 3)
            },
            10,
        );
        // Output frames t0..t1 from input frames t0 − hist..t1, hist = min(t0, kt − 1).
        let (frame_in, frame_out) = (h * w * g.cpad(), cout * h * w);
        for (t0, t1) in [(0, 2), (1, 4), (2, 3), (3, 6)] {
            let hist = t0.min(kt - 1);
            let gc = ConvGeometry {
                frames: t1 - t0,
                hist,
                ..g
            };
            let mut part = vec![f32::NAN; gc.output_len()];
            emulate_conv(
                &px[(t0 - hist) * frame_in..t1 * frame_in],
                &pw,
                &bias,
                gc,
                false,
                &mut part,
            );
            let want = &full[t0 * frame_out..t1 * frame_out];
            assert!(
                part.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "frames {t0}..{t1}"
            );
        }
    }

    #[test]
    fn a_wrong_index_map_would_be_caught() {
        // The bound of `check` is far below a misplaced element: swapping kh and kw of a
        // non-symmetric weight moves outputs by O(1).
        let g = geometry(1, 3, 2, (5, 5), 1, 3);
        let mut rng = Rng(5);
        let x = rng.vec(g.in_frames() * g.cin * 25, 1.0);
        let weight = rng.vec(g.cout * g.cin * 9, 0.5);
        let mut transposed = weight.clone();
        for oc in 0..g.cout * g.cin {
            for kh in 0..3 {
                for kw in 0..3 {
                    transposed[oc * 9 + kh * 3 + kw] = weight[oc * 9 + kw * 3 + kh];
                }
            }
        }
        let px = pack_channels_last(&x, g.cin, 25, None, false);
        let mut a = vec![0.0; g.output_len()];
        let mut b = vec![0.0; g.output_len()];
        emulate_conv(&px, &pack_conv_weight(&weight, 2, 3, 1, 3), &[0.0; 2], g, false, &mut a);
        emulate_conv(
            &px,
            &pack_conv_weight(&transposed, 2, 3, 1, 3),
            &[0.0; 2],
            g,
            false,
            &mut b,
        );
        let worst = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(worst > 0.05, "{worst}");
    }
}
