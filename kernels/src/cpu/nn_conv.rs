//! Convolutions of video decoders (Wan's VAE): a 3-D convolution that is **causal in time** and
//! zero-padded in space, on frame-major video `[T, C, H, W]`. A 2-D convolution applied frame by
//! frame is the same op with a temporal kernel of 1.
//!
//! Semantics (diffusers' `WanCausalConv3d`, docs/wan21.md §2.2): kernel `(kt, ks, ks)` with
//! stride 1; output frame `t` reads input frames `t−kt+1 ..= t`, frames before 0 being zeros (the
//! "two zero frames in front" of a 3-tap conv); spatial zero padding `(ks−1)/2` on every side, so
//! the output has the input's size. Weights are PyTorch's `[cout, cin, kt, ks, ks]`.
//!
//! Evaluation order (what a GPU port is compared with, by tolerance): for each output frame, an
//! im2col matrix with rows ordered `(dt, cin, kh, kw)` — the `kt` input frames' 2-D patches stacked
//! oldest first — times the weight repacked to `[cout, (dt, cin, kh, kw)]` by [`gemm`], then
//! `+ bias` in f32. The columns (pixels) are cut into tiles of [`PIXEL_TILE`] so the im2col buffer
//! stays bounded (about `kt·cin·9·PIXEL_TILE` values per task).
//!
//! Why per frame: every output frame is one GEMM of the same shape whatever the number of frames,
//! and the GEMM's per-element sum does not depend on where the element sits (see
//! [`super::nn_gemm`]), so a frame's output bits depend only on its `kt` input frames. That is what
//! lets a worker decode a temporal shard with a warm-up halo and get the sequential decode's bits.

use super::nn_gemm::{gemm, MatMut, MatRef};
use rayon::prelude::*;

/// Output pixels per GEMM (and per im2col buffer).
pub const PIXEL_TILE: usize = 2048;

/// A convolution with causal temporal padding and "same" spatial padding, weights packed for
/// the per-frame GEMM.
#[derive(Clone, Debug)]
pub struct CausalConv3d {
    cin: usize,
    cout: usize,
    kt: usize,
    ks: usize,
    /// `[cout, kt·cin·ks·ks]` with the reduction axis ordered `(dt, cin, kh, kw)`.
    packed: Vec<f32>,
    bias: Vec<f32>,
}

impl CausalConv3d {
    /// From PyTorch's weight `[cout, cin, kt, ks, ks]` and bias `[cout]`. Panics on lengths that
    /// disagree with the shape or an even spatial kernel (callers check shapes when loading).
    pub fn new(weight: &[f32], bias: &[f32], cout: usize, cin: usize, kt: usize, ks: usize) -> Self {
        assert!(
            kt > 0 && ks % 2 == 1,
            "causal_conv3d: kernel ({kt}, {ks}) must have kt ≥ 1 and an odd ks"
        );
        let area = ks * ks;
        assert_eq!(weight.len(), cout * cin * kt * area, "causal_conv3d: weight length");
        assert_eq!(bias.len(), cout, "causal_conv3d: bias length");
        let k = kt * cin * area;
        let mut packed = vec![0.0f32; cout * k];
        for o in 0..cout {
            for c in 0..cin {
                for dt in 0..kt {
                    let src = ((o * cin + c) * kt + dt) * area;
                    let dst = o * k + (dt * cin + c) * area;
                    packed[dst..dst + area].copy_from_slice(&weight[src..src + area]);
                }
            }
        }
        Self {
            cin,
            cout,
            kt,
            ks,
            packed,
            bias: bias.to_vec(),
        }
    }

    /// A 2-D convolution (PyTorch weight `[cout, cin, ks, ks]`) applied to every frame.
    pub fn conv2d(weight: &[f32], bias: &[f32], cout: usize, cin: usize, ks: usize) -> Self {
        Self::new(weight, bias, cout, cin, 1, ks)
    }

    pub fn in_channels(&self) -> usize {
        self.cin
    }

    pub fn out_channels(&self) -> usize {
        self.cout
    }

    /// Temporal taps: 1 (no temporal mixing) or 3 (causal, two zero frames in front).
    pub fn temporal_kernel(&self) -> usize {
        self.kt
    }

    /// `x: [frames, cin, h, w]` → `[frames, cout, h, w]`.
    pub fn forward(&self, x: &[f32], frames: usize, h: usize, w: usize) -> Vec<f32> {
        let all: Vec<usize> = (0..frames).collect();
        self.run(x, frames, &all, Geometry::same(h, w, self.ks))
    }

    /// Only output frames `outputs` (each computed exactly as [`forward`](Self::forward) computes
    /// it), in that order: `[outputs.len(), cout, h, w]`. A temporal stride is this with every
    /// other frame: the encoder's `time_conv` (kernel (3,1,1), stride (2,1,1), no padding) reads
    /// frames `2j, 2j+1, 2j+2`, which is causal output frame `2j + 2`.
    pub fn forward_frames(&self, x: &[f32], frames: usize, h: usize, w: usize, outputs: &[usize]) -> Vec<f32> {
        assert!(
            outputs.iter().all(|&t| t < frames),
            "causal_conv3d: output frame out of range"
        );
        self.run(x, frames, outputs, Geometry::same(h, w, self.ks))
    }

    /// The encoder's spatial downsample (diffusers' `ZeroPad2d((0, 1, 0, 1))` then a `ks×ks` conv
    /// with stride 2 and no padding) on every frame: `[frames, cin, h, w]` →
    /// `[frames, cout, h', w']` with `h' = ⌊(h + 1 − ks) / 2⌋ + 1`, which is
    /// `h / 2` for even `h` and `ks` 3. Returns the data and `(h', w')`.
    pub fn forward_down2(&self, x: &[f32], frames: usize, h: usize, w: usize) -> (Vec<f32>, (usize, usize)) {
        assert!(
            h + 1 >= self.ks && w + 1 >= self.ks,
            "conv_down2: {h}×{w} is smaller than the kernel"
        );
        let geo = Geometry {
            h,
            w,
            out_h: (h + 1 - self.ks) / 2 + 1,
            out_w: (w + 1 - self.ks) / 2 + 1,
            stride: 2,
            pad: 0,
        };
        let all: Vec<usize> = (0..frames).collect();
        (self.run(x, frames, &all, geo), (geo.out_h, geo.out_w))
    }

    fn run(&self, x: &[f32], frames: usize, outputs: &[usize], geo: Geometry) -> Vec<f32> {
        let out_hw = geo.out_h * geo.out_w;
        assert_eq!(
            x.len(),
            frames * self.cin * geo.h * geo.w,
            "causal_conv3d: input length"
        );
        let mut out = vec![0.0f32; outputs.len() * self.cout * out_hw];
        if out.is_empty() {
            return out;
        }
        out.par_chunks_mut(self.cout * out_hw)
            .zip(outputs.par_iter())
            .for_each(|(dst, &t)| {
                self.forward_frame(x, t, geo, dst);
            });
        out
    }

    /// Output frame `t` into `dst` (`[cout, out_h, out_w]`).
    fn forward_frame(&self, x: &[f32], t: usize, geo: Geometry, dst: &mut [f32]) {
        let hw = geo.out_h * geo.out_w;
        let frame_len = self.cin * geo.h * geo.w;
        let k = self.kt * self.cin * self.ks * self.ks;
        // The input frames feeding output frame t, oldest first; None stands for causal zeros.
        let taps: Vec<Option<&[f32]>> = (0..self.kt)
            .map(|dt| {
                (t + dt)
                    .checked_sub(self.kt - 1)
                    .map(|s| &x[s * frame_len..(s + 1) * frame_len])
            })
            .collect();
        if self.kt == 1 && self.ks == 1 && geo.stride == 1 {
            // A 1×1×1 conv is a plain matrix product with the frame: no im2col copy.
            let src = taps[0].unwrap_or(&[]);
            gemm(
                1.0,
                MatRef::row_major(&self.packed, self.cout, k),
                MatRef::row_major(src, self.cin, hw),
                0.0,
                MatMut::row_major(dst, self.cout, hw),
            );
            self.add_bias(dst, hw, 0, hw);
            return;
        }
        let tiles: Vec<(usize, Vec<f32>)> = (0..hw.div_ceil(PIXEL_TILE))
            .into_par_iter()
            .map(|tile| {
                let p0 = tile * PIXEL_TILE;
                let n = PIXEL_TILE.min(hw - p0);
                let mut col = vec![0.0f32; k * n];
                let block = self.cin * self.ks * self.ks * n;
                for (dt, tap) in taps.iter().enumerate() {
                    if let Some(frame) = tap {
                        im2col(
                            frame,
                            self.cin,
                            geo,
                            self.ks,
                            p0,
                            n,
                            &mut col[dt * block..(dt + 1) * block],
                        );
                    }
                }
                let mut buf = vec![0.0f32; self.cout * n];
                gemm(
                    1.0,
                    MatRef::row_major(&self.packed, self.cout, k),
                    MatRef::row_major(&col, k, n),
                    0.0,
                    MatMut::row_major(&mut buf, self.cout, n),
                );
                (p0, buf)
            })
            .collect();
        for (p0, buf) in tiles {
            let n = buf.len() / self.cout;
            for o in 0..self.cout {
                dst[o * hw + p0..o * hw + p0 + n].copy_from_slice(&buf[o * n..(o + 1) * n]);
            }
        }
        self.add_bias(dst, hw, 0, hw);
    }

    /// Adds `bias[o]` to pixels `p0..p0+n` of every output channel row of `dst` (`[cout, hw]`).
    fn add_bias(&self, dst: &mut [f32], hw: usize, p0: usize, n: usize) {
        for (o, &b) in self.bias.iter().enumerate() {
            for v in &mut dst[o * hw + p0..o * hw + p0 + n] {
                *v += b;
            }
        }
    }
}

/// Input and output sizes of one frame's 2-D convolution: output pixel `(oy, ox)` reads input
/// `(oy·stride + kh − pad, ox·stride + kw − pad)`, zero outside the frame.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    stride: usize,
    pad: usize,
}

impl Geometry {
    /// Stride 1 with "same" padding: the output has the input's size.
    fn same(h: usize, w: usize, ks: usize) -> Self {
        Self {
            h,
            w,
            out_h: h,
            out_w: w,
            stride: 1,
            pad: ks / 2,
        }
    }
}

/// The 2-D im2col of output pixels `p0..p0+n` of one frame `[cin, h, w]`: row `(c, kh, kw)` holds
/// the input pixel output pixel `p = oy·out_w + ox` reads through tap `(kh, kw)` (0 outside).
fn im2col(frame: &[f32], cin: usize, geo: Geometry, ks: usize, p0: usize, n: usize, col: &mut [f32]) {
    let (hi, wi) = (geo.h as isize, geo.w as isize);
    let (stride, pad) = (geo.stride as isize, geo.pad as isize);
    for c in 0..cin {
        let plane = &frame[c * geo.h * geo.w..(c + 1) * geo.h * geo.w];
        for kh in 0..ks {
            for kw in 0..ks {
                let row = &mut col[((c * ks + kh) * ks + kw) * n..][..n];
                let (dy, dx) = (kh as isize - pad, kw as isize - pad);
                let (mut y, mut x) = (p0 / geo.out_w, p0 % geo.out_w);
                for v in row.iter_mut() {
                    let (sy, sx) = (y as isize * stride + dy, x as isize * stride + dx);
                    *v = if sy >= 0 && sy < hi && sx >= 0 && sx < wi {
                        plane[(sy * wi + sx) as usize]
                    } else {
                        0.0
                    };
                    x += 1;
                    if x == geo.out_w {
                        x = 0;
                        y += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 + 1.0) * 0.754_877_7 * seed).sin())
            .collect()
    }

    /// The definition, in f64, straight from the module doc.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        weight: &[f32],
        bias: &[f32],
        (frames, cin, h, w): (usize, usize, usize, usize),
        cout: usize,
        kt: usize,
        ks: usize,
    ) -> Vec<f64> {
        let pad = (ks / 2) as isize;
        let mut out = vec![0.0f64; frames * cout * h * w];
        for t in 0..frames {
            for o in 0..cout {
                for y in 0..h {
                    for xx in 0..w {
                        let mut acc = bias[o] as f64;
                        for c in 0..cin {
                            for dt in 0..kt {
                                let Some(s) = (t + dt).checked_sub(kt - 1) else {
                                    continue;
                                };
                                for kh in 0..ks {
                                    for kw in 0..ks {
                                        let sy = y as isize + kh as isize - pad;
                                        let sx = xx as isize + kw as isize - pad;
                                        if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                                            continue;
                                        }
                                        let xv = x[((s * cin + c) * h + sy as usize) * w + sx as usize];
                                        let wv = weight[(((o * cin + c) * kt + dt) * ks + kh) * ks + kw];
                                        acc += xv as f64 * wv as f64;
                                    }
                                }
                            }
                        }
                        out[((t * cout + o) * h + y) * w + xx] = acc;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_loops_for_every_kernel_shape() {
        // (frames, cin, h, w, cout, kt, ks); the last case spans two pixel tiles.
        let cases = [
            (4, 3, 5, 7, 2, 3, 3),
            (3, 5, 4, 3, 6, 3, 1),
            (2, 2, 6, 5, 3, 1, 3),
            (3, 4, 3, 3, 5, 1, 1),
            (1, 1, 1, 1, 1, 3, 3),
            (3, 2, 47, 50, 3, 3, 3),
        ];
        for (i, &(frames, cin, h, w, cout, kt, ks)) in cases.iter().enumerate() {
            let x = values(frames * cin * h * w, 1.1 + i as f32);
            let weight = values(cout * cin * kt * ks * ks, 0.37 + i as f32);
            let bias = values(cout, 2.3);
            let conv = CausalConv3d::new(&weight, &bias, cout, cin, kt, ks);
            let got = conv.forward(&x, frames, h, w);
            let want = naive(&x, &weight, &bias, (frames, cin, h, w), cout, kt, ks);
            for (j, (&g, &v)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g as f64 - v).abs() < 1e-5 * (1.0 + v.abs()),
                    "case {i} element {j}: {g} vs {v}"
                );
            }
        }
    }

    #[test]
    fn each_output_frame_depends_only_on_its_taps_bit_for_bit() {
        // Decoding a prefix, or a suffix with kt−1 real frames in front, reproduces the bits of
        // the whole sequence: the property sharded decoding rests on.
        let (frames, cin, h, w, cout) = (7, 3, 6, 5, 4);
        let x = values(frames * cin * h * w, 0.9);
        let conv = CausalConv3d::new(&values(cout * cin * 27, 1.7), &values(cout, 0.2), cout, cin, 3, 3);
        let full = conv.forward(&x, frames, h, w);
        let frame_out = cout * h * w;
        let prefix = conv.forward(&x[..4 * cin * h * w], 4, h, w);
        assert_eq!(prefix, full[..4 * frame_out]);
        let suffix = conv.forward(&x[2 * cin * h * w..], frames - 2, h, w);
        assert_eq!(suffix[2 * frame_out..], full[4 * frame_out..]);
    }

    #[test]
    fn conv2d_is_the_temporal_kernel_one_case() {
        let (cin, cout, h, w) = (2, 3, 4, 4);
        let weight = values(cout * cin * 9, 0.5);
        let conv = CausalConv3d::conv2d(&weight, &[0.0; 3], cout, cin, 3);
        assert_eq!(conv.temporal_kernel(), 1);
        let x = values(2 * cin * h * w, 1.3);
        let both = conv.forward(&x, 2, h, w);
        let second = conv.forward(&x[cin * h * w..], 1, h, w);
        assert_eq!(both[cout * h * w..], second[..]);
    }

    #[test]
    fn selected_frames_are_the_full_forward_s_frames_bit_for_bit() {
        let (cin, cout, frames, h, w) = (3, 2, 7, 5, 4);
        let weight = values(cout * cin * 3 * 9, 0.8);
        let bias = values(cout, 0.2);
        let conv = CausalConv3d::new(&weight, &bias, cout, cin, 3, 3);
        let x = values(frames * cin * h * w, 1.1);
        let full = conv.forward(&x, frames, h, w);
        let picked = conv.forward_frames(&x, frames, h, w, &[2, 4, 6]);
        let len = cout * h * w;
        for (i, t) in [2, 4, 6].into_iter().enumerate() {
            assert_eq!(
                picked[i * len..(i + 1) * len],
                full[t * len..(t + 1) * len],
                "frame {t}"
            );
        }
    }

    /// `ZeroPad2d((0, 1, 0, 1))` then a stride-2 conv, written out in f64, for even and odd sizes.
    #[test]
    fn down2_matches_zero_pad_right_bottom_then_stride_two() {
        let (cin, cout, frames) = (2, 3, 2);
        let weight = values(cout * cin * 9, 0.6);
        let bias = values(cout, 0.3);
        let conv = CausalConv3d::conv2d(&weight, &bias, cout, cin, 3);
        for (h, w) in [(6, 8), (5, 7), (2, 2)] {
            let x = values(frames * cin * h * w, 0.9);
            let (out, (oh, ow)) = conv.forward_down2(&x, frames, h, w);
            assert_eq!((oh, ow), ((h - 2) / 2 + 1, (w - 2) / 2 + 1));
            let at = |t: usize, c: usize, y: usize, xx: usize| -> f64 {
                if y < h && xx < w {
                    x[((t * cin + c) * h + y) * w + xx] as f64
                } else {
                    0.0
                }
            };
            for t in 0..frames {
                for o in 0..cout {
                    for y in 0..oh {
                        for xx in 0..ow {
                            let mut acc = bias[o] as f64;
                            for c in 0..cin {
                                for kh in 0..3 {
                                    for kw in 0..3 {
                                        let wv = weight[((o * cin + c) * 3 + kh) * 3 + kw] as f64;
                                        acc += wv * at(t, c, 2 * y + kh, 2 * xx + kw);
                                    }
                                }
                            }
                            let got = out[((t * cout + o) * oh + y) * ow + xx] as f64;
                            assert!((got - acc).abs() < 1e-5, "{h}×{w} t{t} o{o} ({y},{xx}): {got} vs {acc}");
                        }
                    }
                }
            }
        }
    }
}
