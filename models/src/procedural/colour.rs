//! The fixed latent → colour map shared by the decoder and the prior.
//!
//! Colour logits are `D·z + b` for a latent cell `z` (16 channels); the decoder squashes them with a
//! sigmoid. `D` is three orthonormal rows (DCT-II basis vectors 1..3 over the channel index), so
//! `Dᵀ` is an exact right inverse: a prior whose channel mean is `Dᵀ(logit(rgb) − b)` decodes to
//! exactly that colour, which is how a prompt's palette becomes a latent mean.

use super::detmath;

/// Latent channels of the procedural model (as Wan2.1).
pub const CHANNELS: usize = 16;

/// Logit bias. Zero, so that the all-zero latent (the neutral prior's mean) decodes to mid-grey.
pub const BIAS: [f64; 3] = [0.0; 3];

/// The 3×16 map `D` in f64 (rows R, G, B). Built from `detmath` so every machine gets the same bits.
pub fn weights() -> [[f64; CHANNELS]; 3] {
    let mut d = [[0.0; CHANNELS]; 3];
    let norm = (2.0 / CHANNELS as f64).sqrt();
    for (k, row) in d.iter_mut().enumerate() {
        for (c, w) in row.iter_mut().enumerate() {
            let angle = std::f64::consts::PI * (k + 1) as f64 * (c as f64 + 0.5) / CHANNELS as f64;
            *w = norm * detmath::sin_cos(angle).1;
        }
    }
    d
}

/// The latent channel mean that decodes to `rgb` (each component in (0, 1)): `Dᵀ(logit(rgb) − b)`.
pub fn latent_for_rgb(rgb: [f64; 3]) -> [f64; CHANNELS] {
    let d = weights();
    let mut m = [0.0; CHANNELS];
    for k in 0..3 {
        let target = detmath::logit(rgb[k].clamp(0.02, 0.98)) - BIAS[k];
        for c in 0..CHANNELS {
            m[c] += d[k][c] * target;
        }
    }
    m
}

/// Removes from `v` its component in the row space of `D`, so adding it to a mean changes no colour.
pub fn project_out_colour(v: &mut [f64; CHANNELS]) {
    for row in weights() {
        let dot: f64 = row.iter().zip(v.iter()).map(|(a, b)| a * b).sum();
        for (x, r) in v.iter_mut().zip(row) {
            *x -= dot * r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_orthonormal_so_the_palette_inverse_is_exact() {
        let d = weights();
        for a in 0..3 {
            for b in 0..3 {
                let dot: f64 = (0..CHANNELS).map(|c| d[a][c] * d[b][c]).sum();
                assert!((dot - f64::from(u8::from(a == b))).abs() < 1e-12, "rows {a},{b}: {dot}");
            }
        }
        let rgb = [0.8, 0.2, 0.4];
        let m = latent_for_rgb(rgb);
        for k in 0..3 {
            let z: f64 = (0..CHANNELS).map(|c| d[k][c] * m[c]).sum::<f64>() + BIAS[k];
            assert!((detmath::sigmoid(z) - rgb[k]).abs() < 1e-12);
        }
        let mut v = [1.0; CHANNELS];
        v[3] = -2.0;
        project_out_colour(&mut v);
        for row in d {
            assert!(row.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>().abs() < 1e-12);
        }
    }
}
