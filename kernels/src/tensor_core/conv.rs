//! The tensor-core causal convolution (kernels/cuda/vae_conv_tc.cu) as plain Rust: its geometry
//! (the launch wrapper's single source of it), the two packed operand layouts, the shared-memory
//! swizzle, the implicit-GEMM index map, and the CPU reference of the activation pack kernel
//! (`vae_pack_cl_bf16`). [`super::conv_emu`] runs the kernel's tile loop on top of these.
//!
//! Layouts:
//! - activations, channels-last bf16 `[in_frames, in_h, in_w, cpad]`, `cpad` = `cin` rounded up to
//!   8 ([`padded_channels`]), the extra channels zero: 8 channels of a pixel are one 16-byte copy;
//! - weights, bf16 `[cout, taps·cw]` ([`pack_conv_weight`]): the reduction axis ordered
//!   `(dt, kh, kw, c)`, `c` fastest, `cw` = `cin` rounded up to [`CONV_BLOCK_K`] (zeros past
//!   `cin`), so every K tile of the GEMM lies inside one tap.

use super::fragments::bf16_bits;
use crate::cpu::{nn_act, nn_vae};

/// Warps per block (`CONV_WARPS`), in a 2 × 2 grid of 64 × 32 warp tiles.
pub const CONV_WARPS: usize = 4;
/// Threads per block (`CONV_THREADS`).
pub const CONV_THREADS: usize = CONV_WARPS * 32;
/// Output pixels per block (`CONV_BLOCK_M`).
pub const CONV_BLOCK_M: usize = 128;
/// Output channels per block (`CONV_BLOCK_N`).
pub const CONV_BLOCK_N: usize = 64;
/// Reduction columns per K tile (`CONV_BLOCK_K`): four 16-byte chunks per tile row.
pub const CONV_BLOCK_K: usize = 32;
/// Shared-memory pipeline depth (`CONV_STAGES`).
pub const CONV_STAGES: usize = 3;
/// Bytes of one stage: the A tile then the B tile, bf16.
pub const CONV_STAGE_BYTES: usize = (CONV_BLOCK_M + CONV_BLOCK_N) * CONV_BLOCK_K * 2;
/// Pixels per block of the pack kernel (`PACK_PIXELS`).
pub const PACK_PIXELS: usize = 64;
/// Threads per block of the pack kernel (`PACK_THREADS`).
pub const PACK_THREADS: usize = 256;

/// Byte offset of 16-byte chunk `chunk` (0..4) of row `row` in a tile of 64-byte rows, the chunk
/// XORed with `(row / 2) % 4` (vae_conv_tc.cu's `conv_swizzle`).
pub fn conv_swizzle(row: usize, chunk: usize) -> usize {
    (row * 4 + (chunk ^ ((row >> 1) & 3))) * 16
}

/// The packed activations' channel stride: `cin` rounded up to 8.
pub fn padded_channels(cin: usize) -> usize {
    cin.div_ceil(8) * 8
}

/// K tiles per tap (the kernel's `cpt`).
pub fn channel_tiles(cin: usize) -> usize {
    padded_channels(cin).div_ceil(CONV_BLOCK_K)
}

/// Columns per tap of the packed weight (the kernel's `cw`).
pub fn weight_tap_columns(cin: usize) -> usize {
    channel_tiles(cin) * CONV_BLOCK_K
}

/// PyTorch's `[cout, cin, kt, ks, ks]` f32 weight → bf16 `[cout, (dt, kh, kw, c)]` with
/// [`weight_tap_columns`] channels per tap (zeros past `cin`), rounded to nearest even.
pub fn pack_conv_weight(weight: &[f32], cout: usize, cin: usize, kt: usize, ks: usize) -> Vec<u16> {
    let area = ks * ks;
    assert_eq!(weight.len(), cout * cin * kt * area, "pack_conv_weight: weight length");
    let cw = weight_tap_columns(cin);
    let row = kt * area * cw;
    let mut out = vec![0u16; cout * row];
    for o in 0..cout {
        for c in 0..cin {
            for dt in 0..kt {
                for k in 0..area {
                    let tap = dt * area + k;
                    out[o * row + tap * cw + c] = bf16_bits(weight[((o * cin + c) * kt + dt) * area + k]);
                }
            }
        }
    }
    out
}

/// CPU reference of `vae_pack_cl_bf16`: f32 `[frames, channels, pixels]` → bf16 channels-last
/// `[frames, pixels, padded_channels(channels)]`, optionally channel-RMS-normalised with `gamma`
/// (`nn_vae::channel_rms_norm`) and then SiLU'd (`nn_act::silu_in_place`) first, rounded to bf16
/// last.
pub fn pack_channels_last(x: &[f32], channels: usize, pixels: usize, gamma: Option<&[f32]>, silu: bool) -> Vec<u16> {
    let frame = channels * pixels;
    assert!(frame > 0 && x.len().is_multiple_of(frame), "pack_channels_last: length");
    let frames = x.len() / frame;
    let mut v = x.to_vec();
    if let Some(g) = gamma {
        nn_vae::channel_rms_norm(&mut v, channels, pixels, g);
    }
    if silu {
        nn_act::silu_in_place(&mut v);
    }
    let cpad = padded_channels(channels);
    let mut out = vec![0u16; frames * pixels * cpad];
    for f in 0..frames {
        for c in 0..channels {
            for p in 0..pixels {
                out[(f * pixels + p) * cpad + c] = bf16_bits(v[(f * channels + c) * pixels + p]);
            }
        }
    }
    out
}

/// One launch of `causal_conv3d_bf16_tc`: `frames` output frames of `cout × h × w` from packed
/// input holding `hist` real frames of history in front of them (`in_frames = frames + hist`;
/// frames before those are causal zeros), kernel `(kt, ks, ks)`, "same" spatial padding; with
/// `upsample` the input frames are `h/2 × w/2`, upsampled nearest ×2 on the fly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub frames: usize,
    pub hist: usize,
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
    pub kt: usize,
    pub ks: usize,
    pub upsample: bool,
}

impl ConvGeometry {
    /// Why the kernel cannot run this geometry, if it cannot (sizes that must fit in 32 bits are
    /// checked by the launch wrapper).
    pub fn check(&self) -> Result<(), String> {
        if self.kt == 0 || self.ks.is_multiple_of(2) {
            return Err(format!(
                "kernel ({}, {}) must have kt ≥ 1 and an odd ks",
                self.kt, self.ks
            ));
        }
        if self.hist >= self.kt {
            return Err(format!(
                "{} history frames for a {}-tap kernel (at most kt − 1)",
                self.hist, self.kt
            ));
        }
        if self.upsample && (!self.h.is_multiple_of(2) || !self.w.is_multiple_of(2)) {
            return Err(format!("upsampled output {}×{} is not even", self.h, self.w));
        }
        if self.cin == 0 || self.cout == 0 {
            return Err("no channels".into());
        }
        Ok(())
    }

    pub fn in_frames(&self) -> usize {
        self.frames + self.hist
    }

    pub fn in_h(&self) -> usize {
        self.h >> self.upsample as usize
    }

    pub fn in_w(&self) -> usize {
        self.w >> self.upsample as usize
    }

    pub fn cpad(&self) -> usize {
        padded_channels(self.cin)
    }

    /// Length of the packed input (bf16 values).
    pub fn input_len(&self) -> usize {
        self.in_frames() * self.in_h() * self.in_w() * self.cpad()
    }

    /// Length of the packed weight (bf16 values).
    pub fn weight_len(&self) -> usize {
        self.cout * self.kt * self.ks * self.ks * weight_tap_columns(self.cin)
    }

    /// Length of the f32 output `[frames, cout, h, w]`.
    pub fn output_len(&self) -> usize {
        self.frames * self.cout * self.h * self.w
    }

    /// K tiles of the whole reduction (taps · [`channel_tiles`]).
    pub fn k_tiles(&self) -> usize {
        self.kt * self.ks * self.ks * channel_tiles(self.cin)
    }

    /// The first tap `dt` of output frame `t` whose input frame exists (the kernel skips the
    /// earlier, all-padding taps).
    pub fn first_tap(&self, t: usize) -> usize {
        (self.kt - 1).saturating_sub(t + self.hist)
    }

    /// The launch grid: (pixel tiles, channel tiles, frames).
    pub fn grid(&self) -> (usize, usize, usize) {
        (
            (self.h * self.w).div_ceil(CONV_BLOCK_M),
            self.cout.div_ceil(CONV_BLOCK_N),
            self.frames,
        )
    }

    /// Multiply-adds ×2 of the convolution proper (padding and channel rounding not counted).
    pub fn flops(&self) -> f64 {
        2.0 * (self.frames * self.h * self.w * self.cout) as f64 * (self.cin * self.kt * self.ks * self.ks) as f64
    }

    /// The implicit-GEMM map: the A element of output frame `t`, pixel `m` and reduction column
    /// `k` (in the packed weight's `(dt, kh, kw, c)` order) is packed input element
    /// `Some(index)`, or `None` for padding (causal, spatial, or channels past `cpad`) that the
    /// kernel zero-fills. Written per element; the kernel evaluates it per 16-byte chunk
    /// (`c` a multiple of 8), which is the same map since a chunk never straddles a tap or `cpad`.
    pub fn a_element(&self, t: usize, m: usize, k: usize) -> Option<usize> {
        let (cw, area) = (weight_tap_columns(self.cin), self.ks * self.ks);
        let (tap, c) = (k / cw, k % cw);
        let (dt, kh, kw) = (tap / area, (tap % area) / self.ks, tap % self.ks);
        let pad = (self.ks / 2) as isize;
        let s = (t + dt + self.hist).checked_sub(self.kt - 1)?;
        let y = (m / self.w) as isize + kh as isize - pad;
        let x = (m % self.w) as isize + kw as isize - pad;
        let inside = m < self.h * self.w
            && c < self.cpad()
            && (0..self.h as isize).contains(&y)
            && (0..self.w as isize).contains(&x);
        let up = self.upsample as usize;
        inside.then(|| ((s * self.in_h() + (y as usize >> up)) * self.in_w() + (x as usize >> up)) * self.cpad() + c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_core::fragments::{bf16_value, isa_ldmatrix_address_lane};

    const SOURCE: &str = include_str!("../../cuda/vae_conv_tc.cu");

    #[test]
    fn geometry_matches_the_kernel_source() {
        for (name, value) in [
            ("CONV_WARPS", CONV_WARPS),
            ("CONV_BLOCK_M", CONV_BLOCK_M),
            ("CONV_BLOCK_N", CONV_BLOCK_N),
            ("CONV_BLOCK_K", CONV_BLOCK_K),
            ("CONV_STAGES", CONV_STAGES),
            ("PACK_PIXELS", PACK_PIXELS),
            ("PACK_THREADS", PACK_THREADS),
        ] {
            let line = format!("#define {name} {value}\n");
            assert!(SOURCE.contains(&line), "vae_conv_tc.cu lacks {line:?}");
        }
        // The formulas conv_emu.rs mirrors, as the .cu spells them: editing one side fails here.
        for body in [
            "#define CONV_THREADS (CONV_WARPS * 32)\n",
            "return (row * 4u + (chunk ^ ((row >> 1) & 3u))) * 16u;",
            "const u32 wm = warp & 1u, wn = warp >> 1;",
            "g.j = tid & 3u;",
            "g.row0 = tid >> 2;",
            "const u32 c = ct * CONV_BLOCK_K + 8u * j;",
            "(((unsigned long long)s * in_h + ((u32)y >> up)) * in_w + ((u32)xx >> up)) * cpad + c",
            "g.wrow[i] = n < cout ? weight + (unsigned long long)n * (kt * area * cw) + 8u * g.j : nullptr;",
            "const int s_first = (int)t + (int)hist - (int)(kt - 1);",
            "g.k0 = dt_begin * area * cw;",
            "const u32 n_k = (kt - dt_begin) * area * cpt;",
            "ldmatrix_x4(a[mi], a_tile + conv_swizzle(wm * 64 + mi * 16 + a_ldm_row(lane), 2 * kk + a_ldm_chunk(lane)));",
            "ldmatrix_x4(r, b_tile + conv_swizzle(wn * 32 + p * 16 + b_ldm_row(lane), 2 * kk + b_ldm_chunk(lane)));",
            "const u32 n = n0 + wn * 32 + ni * 8 + 2 * quad + e1;",
            "const u32 m = m0 + wm * 64 + mi * 16 + group + 8 * e2;",
            "float v = acc[mi][ni][2 * e2 + e1] + bn;",
            "if (residual) v = v + col[m];",
        ] {
            assert!(SOURCE.contains(body), "vae_conv_tc.cu no longer has {body:?}");
        }
        assert_eq!(
            CONV_STAGES * CONV_STAGE_BYTES,
            36 * 1024,
            "static shared memory under 48 KiB"
        );
    }

    #[test]
    fn the_swizzle_is_a_permutation_and_conflict_free() {
        // 64-byte rows: 4 chunks. 32 banks of 4 bytes = 8 bank groups of 16 bytes.
        let rows = CONV_BLOCK_M;
        let mut seen = vec![false; rows * 4];
        for row in 0..rows {
            for chunk in 0..4 {
                let at = conv_swizzle(row, chunk) / 16;
                assert!(!seen[at] && at / 4 == row, "row {row} chunk {chunk}");
                seen[at] = true;
            }
        }
        // ldmatrix: the 8 rows of one matrix (rows r0..r0+8, r0 a multiple of 8, one logical
        // chunk) land in 8 different bank groups.
        for r0 in (0..rows).step_by(8) {
            for chunk in 0..4 {
                let mut groups: Vec<usize> = (0..8).map(|r| conv_swizzle(r0 + r, chunk) / 16 % 8).collect();
                groups.sort();
                groups.dedup();
                assert_eq!(groups.len(), 8, "rows {r0}.., chunk {chunk}");
            }
        }
        // cp.async stores: lane l of a warp writes chunk l % 4 of row (warp·32 + l) / 4 (plus 32·i):
        // every quarter-warp phase of 8 lanes (128 bytes) covers all 8 bank groups.
        for warp in 0..CONV_WARPS {
            for phase in 0..4 {
                let mut groups: Vec<usize> = (0..8)
                    .map(|l| {
                        let tid = warp * 32 + phase * 8 + l;
                        conv_swizzle(tid >> 2, tid & 3) / 16 % 8
                    })
                    .collect();
                groups.sort();
                groups.dedup();
                assert_eq!(groups.len(), 8, "warp {warp} phase {phase}");
            }
        }
        // The ldmatrix lane addresses a warp supplies never leave its 16-row slab.
        assert_eq!(isa_ldmatrix_address_lane(3, 7), 31);
    }

    #[test]
    fn the_weight_packing_order_is_dt_kh_kw_c() {
        let (cout, cin, kt, ks) = (3, 37, 3, 3);
        let weight: Vec<f32> = (0..cout * cin * kt * ks * ks).map(|i| i as f32).collect();
        let packed = pack_conv_weight(&weight, cout, cin, kt, ks);
        let cw = weight_tap_columns(cin);
        assert_eq!((padded_channels(cin), channel_tiles(cin), cw), (40, 2, 64));
        assert_eq!(packed.len(), cout * kt * ks * ks * cw);
        for o in 0..cout {
            for dt in 0..kt {
                for kh in 0..ks {
                    for kw in 0..ks {
                        for c in 0..cw {
                            let k = ((dt * ks + kh) * ks + kw) * cw + c;
                            let got = bf16_value(packed[o * kt * ks * ks * cw + k]);
                            let want = if c < cin {
                                weight[(((o * cin + c) * kt + dt) * ks + kh) * ks + kw]
                            } else {
                                0.0
                            };
                            // Integers below 256 are exact in bf16.
                            if want < 256.0 {
                                assert_eq!(got, want, "o {o} dt {dt} kh {kh} kw {kw} c {c}");
                            } else {
                                assert!((got - want).abs() <= want / 128.0, "o {o} k {k}");
                            }
                        }
                    }
                }
            }
        }
        assert_eq!((channel_tiles(16), channel_tiles(96), channel_tiles(384)), (1, 3, 12));
    }

    /// The map against the definition: A(t, m, (dt, kh, kw, c)) is the input at frame
    /// t + dt + hist − (kt − 1), pixel (y + kh − pad, x + kw − pad) (halved when upsampling),
    /// channel c, and zero when any of those is outside.
    #[test]
    fn the_index_map_is_the_causal_padded_gather() {
        for g in [
            ConvGeometry {
                frames: 4,
                hist: 0,
                cin: 5,
                cout: 3,
                h: 4,
                w: 6,
                kt: 3,
                ks: 3,
                upsample: false,
            },
            ConvGeometry {
                frames: 2,
                hist: 2,
                cin: 9,
                cout: 3,
                h: 3,
                w: 5,
                kt: 3,
                ks: 3,
                upsample: false,
            },
            ConvGeometry {
                frames: 3,
                hist: 1,
                cin: 40,
                cout: 3,
                h: 4,
                w: 4,
                kt: 3,
                ks: 1,
                upsample: false,
            },
            ConvGeometry {
                frames: 2,
                hist: 0,
                cin: 3,
                cout: 3,
                h: 6,
                w: 8,
                kt: 1,
                ks: 3,
                upsample: true,
            },
        ] {
            g.check().expect("valid geometry");
            let cw = weight_tap_columns(g.cin);
            let (hw, pad) = (g.h * g.w, (g.ks / 2) as isize);
            // Every input element is read (by some A element), and no index is out of range.
            let mut read = vec![false; g.input_len()];
            for t in 0..g.frames {
                for m in 0..CONV_BLOCK_M {
                    for k in 0..g.k_tiles() * CONV_BLOCK_K {
                        let got = g.a_element(t, m, k);
                        let (tap, c) = (k / cw, k % cw);
                        let (dt, kh, kw) = (tap / (g.ks * g.ks), tap / g.ks % g.ks, tap % g.ks);
                        let s = (t + dt + g.hist) as isize - (g.kt - 1) as isize;
                        let (y, x) = (
                            (m / g.w) as isize + kh as isize - pad,
                            (m % g.w) as isize + kw as isize - pad,
                        );
                        let outside = m >= hw
                            || s < 0
                            || c >= g.cpad()
                            || y < 0
                            || x < 0
                            || y >= g.h as isize
                            || x >= g.w as isize;
                        if outside {
                            assert_eq!(got, None, "{g:?} t {t} m {m} k {k}");
                            continue;
                        }
                        let up = g.upsample as usize;
                        let (ys, xs) = (y as usize >> up, x as usize >> up);
                        let want = ((s as usize * g.in_h() + ys) * g.in_w() + xs) * g.cpad() + c;
                        assert_eq!(got, Some(want), "{g:?} t {t} m {m} k {k}");
                        read[want] = true;
                        // The kernel's chunk form: c a multiple of 8 covers c..c + 8 contiguously.
                        let c0 = c - c % 8;
                        assert_eq!(g.a_element(t, m, k - c % 8), Some(want - c % 8));
                        assert!(c0 + 8 <= g.cpad());
                    }
                }
            }
            // Frames the history holds but no output reads (none: hist ≤ kt − 1) aside, every
            // element of every input frame is read when the kernel spans it.
            if g.ks == 3 || g.upsample {
                assert!(read.iter().all(|&r| r), "{g:?}: some input never read");
            }
            // The all-padding taps the kernel skips are exactly those whose frame is negative.
            for t in 0..g.frames {
                for dt in 0..g.kt {
                    let k = dt * g.ks * g.ks * cw;
                    let any = (0..hw).any(|m| g.a_element(t, m, k + g.ks * g.ks / 2 * cw).is_some());
                    assert_eq!(any, dt >= g.first_tap(t), "{g:?} t {t} dt {dt}");
                }
            }
        }
    }

    #[test]
    fn the_pack_reference_transposes_normalises_and_rounds() {
        let (frames, c, p) = (2, 5, 7);
        let x: Vec<f32> = (0..frames * c * p).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let plain = pack_channels_last(&x, c, p, None, false);
        let cpad = padded_channels(c);
        assert_eq!(plain.len(), frames * p * cpad);
        for f in 0..frames {
            for pix in 0..p {
                for ch in 0..cpad {
                    let got = plain[(f * p + pix) * cpad + ch];
                    let want = if ch < c {
                        bf16_bits(x[(f * c + ch) * p + pix])
                    } else {
                        0
                    };
                    assert_eq!(got, want, "f {f} p {pix} c {ch}");
                }
            }
        }
        let gamma = [1.0, 0.5, -2.0, 1.5, 0.25];
        let normed = pack_channels_last(&x, c, p, Some(&gamma), true);
        // Pixel 3 of frame 1 by hand: ((v / ‖v‖)·√C)·γ, then SiLU, then bf16.
        let v: Vec<f32> = (0..c).map(|ch| x[(c + ch) * p + 3]).collect();
        let norm = v.iter().map(|&a| a as f64 * a as f64).sum::<f64>().sqrt() as f32;
        for ch in 0..c {
            let y = v[ch] / norm * (c as f32).sqrt() * gamma[ch];
            let s = y / (1.0 + (-y).exp());
            let got = bf16_value(normed[(p + 3) * cpad + ch]);
            assert!((got - s).abs() <= s.abs() / 128.0 + 1e-6, "c {ch}: {got} vs {s}");
        }
    }
}
