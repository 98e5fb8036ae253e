//! Per-pixel and per-frame ops of video VAEs on frame-major data `[frames, C, H, W]` (Wan's
//! decoder, docs/wan21.md §2.2): the channel RMS norm and the nearest ×2 spatial upsample.
//! (SiLU is [`super::nn_act::silu_in_place`]; convolutions are in [`super::nn_conv`].)
//!
//! Evaluation order:
//! - `channel_rms_norm`: for each pixel, `n = ‖x‖₂` over the channels with the sum of squares
//!   accumulated in **f64** in channel order and the square root rounded to f32; then per element
//!   in f32 `y = ((x / max(n, 1e-12)) · √C) · γ_c` — diffusers' `F.normalize(x, dim=1) · scale · γ`
//!   with `scale = √C` rounded to f32. (PyTorch reduces in f32; f64 here is at least as accurate.)
//! - `upsample_nearest2x`: `out[y, x] = in[y/2, x/2]`; for an exact factor 2 this is both
//!   `nearest` and `nearest-exact` (`floor((y + 0.5)/2) = floor(y/2)`). Pure copies, no rounding.
//!
//! Both work frame by frame, so a frame's output never depends on other frames.

use rayon::prelude::*;

/// The lower bound `F.normalize` clamps the norm to.
pub const NORMALIZE_EPS: f32 = 1e-12;

/// In place on `x: [frames, channels, pixels]`: every pixel's channel vector scaled to norm √C,
/// then multiplied by `gamma[c]` (see the module doc).
pub fn channel_rms_norm(x: &mut [f32], channels: usize, pixels: usize, gamma: &[f32]) {
    assert_eq!(gamma.len(), channels, "channel_rms_norm: gamma length");
    let frame = channels * pixels;
    if frame == 0 {
        return;
    }
    assert_eq!(x.len() % frame, 0, "channel_rms_norm: length is not whole frames");
    let scale = (channels as f32).sqrt();
    x.par_chunks_mut(frame).for_each(|f| {
        let mut sumsq = vec![0.0f64; pixels];
        for row in f.chunks_exact(pixels) {
            for (s, &v) in sumsq.iter_mut().zip(row) {
                *s += v as f64 * v as f64;
            }
        }
        let denom: Vec<f32> = sumsq.iter().map(|&s| (s.sqrt() as f32).max(NORMALIZE_EPS)).collect();
        for (row, &g) in f.chunks_exact_mut(pixels).zip(gamma) {
            for (v, &d) in row.iter_mut().zip(&denom) {
                *v = *v / d * scale * g;
            }
        }
    });
}

/// `x: [planes, h, w]` → `[planes, 2h, 2w]`, each pixel repeated in a 2×2 block.
pub fn upsample_nearest2x(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    assert_eq!(x.len(), planes * h * w, "upsample_nearest2x: input length");
    let mut out = vec![0.0f32; planes * 4 * h * w];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(4 * h * w)
        .zip(x.par_chunks(h * w))
        .for_each(|(o, plane)| {
            for (y2, orow) in o.chunks_exact_mut(2 * w).enumerate() {
                let src = &plane[(y2 / 2) * w..(y2 / 2 + 1) * w];
                for (pair, &v) in orow.chunks_exact_mut(2).zip(src) {
                    pair[0] = v;
                    pair[1] = v;
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32 + 1.0) * 0.618_034 * seed).sin() * 2.0)
            .collect()
    }

    #[test]
    fn channel_rms_norm_matches_the_formula_per_pixel() {
        let (frames, c, p) = (3, 5, 7);
        let x0 = values(frames * c * p, 1.7);
        let gamma = values(c, 0.4);
        let mut x = x0.clone();
        channel_rms_norm(&mut x, c, p, &gamma);
        for t in 0..frames {
            for px in 0..p {
                let at = |ch: usize| (t * c + ch) * p + px;
                let norm = (0..c).map(|ch| (x0[at(ch)] as f64).powi(2)).sum::<f64>().sqrt();
                for ch in 0..c {
                    let want = x0[at(ch)] as f64 / norm.max(1e-12) * (c as f64).sqrt() * gamma[ch] as f64;
                    assert!(
                        (x[at(ch)] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "{t} {px} {ch}"
                    );
                }
            }
        }
    }

    #[test]
    fn channel_rms_norm_of_a_zero_pixel_stays_zero() {
        let mut x = vec![0.0f32; 6];
        channel_rms_norm(&mut x, 3, 2, &[1.0, 2.0, 3.0]);
        assert!(x.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn upsample_repeats_each_pixel_in_a_two_by_two_block() {
        let (planes, h, w) = (2, 3, 4);
        let x = values(planes * h * w, 0.9);
        let out = upsample_nearest2x(&x, planes, h, w);
        for p in 0..planes {
            for y in 0..2 * h {
                for xx in 0..2 * w {
                    assert_eq!(out[(p * 2 * h + y) * 2 * w + xx], x[(p * h + y / 2) * w + xx / 2]);
                }
            }
        }
    }
}
