//! Pillow's bicubic resize of 8-bit images (`Image.resize(size, Image.BICUBIC)`), ported for
//! exact agreement: transformers' PIL image processors (CLIP's) resize this way, and a resized
//! pixel that differs by one level would move every CLIP token.
//!
//! The algorithm (Pillow's `Resample.c`): separable, horizontal pass then vertical, each only
//! when that side changes. Per output position, the filter (Keys' cubic with `a = −0.5`, support
//! 2) is centred at `(i + 0.5)·scale` and stretched by `max(scale, 1)` (antialiasing when
//! shrinking); the weights over the input pixels it covers are normalised to sum 1 in f64, then
//! turned into 22-bit fixed point (rounded half away from zero); each output is the integer sum
//! with a rounding half, shifted back and clamped to 0..=255.

/// Fixed-point bits of the weights (Pillow's `PRECISION_BITS`, 32 − 8 − 2).
const PRECISION_BITS: u32 = 22;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output position: the first input index and the fixed-point weights from there.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    // Pillow computes `(in1 − in0)` in f32 (the box), then divides in f64.
    let scale = f64::from(in_size as f32) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's `(int)` truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let mut k: Vec<f64> = (0..n)
                .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|w| *w /= ww);
            }
            let one = f64::from(1u32 << PRECISION_BITS);
            let fixed = k
                .iter()
                .map(|&w| {
                    if w < 0.0 {
                        (-0.5 + w * one) as i32
                    } else {
                        (0.5 + w * one) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes `src` (`[height, width, channels]` bytes, interleaved) to `[out_h, out_w, channels]`.
pub fn resize_bicubic(
    src: &[u8],
    (height, width): (usize, usize),
    channels: usize,
    (out_h, out_w): (usize, usize),
) -> Vec<u8> {
    assert_eq!(src.len(), height * width * channels, "resize_bicubic: input length");
    let half = 1i64 << (PRECISION_BITS - 1);
    let horizontal = if out_w != width {
        let coeffs = coefficients(width, out_w);
        let mut out = vec![0u8; height * out_w * channels];
        for y in 0..height {
            for (x, (xmin, k)) in coeffs.iter().enumerate() {
                for c in 0..channels {
                    let acc = k.iter().enumerate().fold(half, |acc, (i, &w)| {
                        acc + i64::from(src[(y * width + xmin + i) * channels + c]) * i64::from(w)
                    });
                    out[(y * out_w + x) * channels + c] = clip8(acc);
                }
            }
        }
        out
    } else {
        src.to_vec()
    };
    if out_h == height {
        return horizontal;
    }
    let coeffs = coefficients(height, out_h);
    let mut out = vec![0u8; out_h * out_w * channels];
    for (y, (ymin, k)) in coeffs.iter().enumerate() {
        for x in 0..out_w {
            for c in 0..channels {
                let acc = k.iter().enumerate().fold(half, |acc, (i, &w)| {
                    acc + i64::from(horizontal[((ymin + i) * out_w + x) * channels + c]) * i64::from(w)
                });
                out[(y * out_w + x) * channels + c] = clip8(acc);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_size_is_the_identity_and_a_constant_stays_constant() {
        let img: Vec<u8> = (0..6 * 5 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_bicubic(&img, (6, 5), 3, (6, 5)), img);
        let flat = vec![137u8; 40 * 30 * 3];
        assert!(resize_bicubic(&flat, (40, 30), 3, (17, 11)).iter().all(|&v| v == 137));
        assert!(resize_bicubic(&flat, (40, 30), 3, (64, 91)).iter().all(|&v| v == 137));
    }

    #[test]
    fn the_filter_is_keys_cubic_with_a_minus_half() {
        assert_eq!(bicubic(0.0), 1.0);
        assert_eq!(bicubic(1.0), 0.0);
        assert_eq!(bicubic(2.0), 0.0);
        assert_eq!(bicubic(0.5), 0.5625);
        assert_eq!(bicubic(-1.5), -0.0625);
    }
}
