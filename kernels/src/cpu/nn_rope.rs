//! Rotary position embedding on interleaved pairs (GPT-J style), the form Wan uses.
//!
//! Data `x` is `[tokens, heads·head_dim]` row-major; every head of token `s` is rotated by that
//! token's `cos[s, ·]`, `sin[s, ·]` (`[tokens, head_dim]`, each frequency repeated twice, as
//! diffusers' `repeat_interleave_real` tables). For pair `j` of a head,
//! `(x₀, x₁) = (x[2j], x[2j+1])` becomes `(x₀·c − x₁·s, x₀·s + x₁·c)` with `c = cos[2j]`,
//! `s = sin[2j+1]` (the indices diffusers reads), each product rounded to f32 and then added —
//! no fused multiply-add.

use rayon::prelude::*;

/// Rotates `x` in place. Panics on inconsistent lengths or an odd `head_dim`.
pub fn rope_interleaved_in_place(
    x: &mut [f32],
    tokens: usize,
    heads: usize,
    head_dim: usize,
    cos: &[f32],
    sin: &[f32],
) {
    assert_eq!(head_dim % 2, 0, "rope: head_dim must be even");
    let width = heads * head_dim;
    assert_eq!(x.len(), tokens * width, "rope: data length");
    assert!(
        cos.len() == tokens * head_dim && sin.len() == tokens * head_dim,
        "rope: table length"
    );
    if width == 0 {
        return;
    }
    x.par_chunks_mut(width).enumerate().for_each(|(s, row)| {
        let c = &cos[s * head_dim..(s + 1) * head_dim];
        let sn = &sin[s * head_dim..(s + 1) * head_dim];
        for head in row.chunks_exact_mut(head_dim) {
            for j in 0..head_dim / 2 {
                let (x0, x1) = (head[2 * j], head[2 * j + 1]);
                let (cv, sv) = (c[2 * j], sn[2 * j + 1]);
                head[2 * j] = x0 * cv - x1 * sv;
                head[2 * j + 1] = x0 * sv + x1 * cv;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_each_pair_by_its_angle_and_preserves_norm() {
        let (tokens, heads, hd) = (3, 2, 4);
        let mut x: Vec<f32> = (0..tokens * heads * hd).map(|i| (i as f32 * 0.37).sin()).collect();
        let x0 = x.clone();
        let mut cos = vec![0.0f32; tokens * hd];
        let mut sin = vec![0.0f32; tokens * hd];
        for s in 0..tokens {
            for j in 0..hd / 2 {
                let a = s as f64 * (j as f64 + 1.0) * 0.3;
                for r in 0..2 {
                    cos[s * hd + 2 * j + r] = a.cos() as f32;
                    sin[s * hd + 2 * j + r] = a.sin() as f32;
                }
            }
        }
        rope_interleaved_in_place(&mut x, tokens, heads, hd, &cos, &sin);
        for s in 0..tokens {
            for h in 0..heads {
                for j in 0..hd / 2 {
                    let i = (s * heads + h) * hd + 2 * j;
                    let a = s as f64 * (j as f64 + 1.0) * 0.3;
                    let (p, q) = (x0[i] as f64, x0[i + 1] as f64);
                    let want = (p * a.cos() - q * a.sin(), p * a.sin() + q * a.cos());
                    assert!((x[i] as f64 - want.0).abs() < 1e-6 && (x[i + 1] as f64 - want.1).abs() < 1e-6);
                }
            }
        }
        // Token 0 has angle 0: unchanged bit for bit.
        assert_eq!(&x[..heads * hd], &x0[..heads * hd]);
    }
}
