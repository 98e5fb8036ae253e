//! References of the DiT's fused bf16 GPU path (kernels/src/cuda/ops_fused.rs), composed from the
//! `nn_*` ops they fuse, in the same order: what the GPU kernels are checked against.
//!
//! bf16 values are their 16 raw bits (`u16`), rounded to nearest even with NaN kept quiet, as
//! `f32_to_bf16` in kernels/cuda/common.cuh and PyTorch's `.to(torch.bfloat16)`.

use super::{nn_norm, nn_rope};

/// f32 → bf16 bits, round to nearest even, NaN kept quiet.
pub fn bf16_bits(f: f32) -> u16 {
    let u = f.to_bits();
    if (u & 0x7f80_0000) == 0x7f80_0000 && (u & 0x007f_ffff) != 0 {
        return ((u >> 16) | 0x0040) as u16;
    }
    let rounding = 0x7fff + ((u >> 16) & 1);
    (u.wrapping_add(rounding) >> 16) as u16
}

/// bf16 bits → f32 (exact).
pub fn bf16_value(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// What follows the normalisation in [`layer_norm_bf16`].
#[derive(Clone, Copy)]
pub enum LnAffine<'a> {
    None,
    /// AdaLN modulation `·(1 + scale) + shift`.
    Modulate {
        scale: &'a [f32],
        shift: &'a [f32],
    },
    /// `·weight + bias`.
    Affine {
        weight: &'a [f32],
        bias: &'a [f32],
    },
}

/// LayerNorm over rows of `dim` (`nn_norm::layer_norm` / `layer_norm_modulate`), rounded to bf16.
pub fn layer_norm_bf16(x: &[f32], dim: usize, eps: f64, affine: LnAffine<'_>) -> Vec<u16> {
    let mut out = vec![0.0f32; x.len()];
    match affine {
        LnAffine::None => nn_norm::layer_norm(x, dim, eps, None, &mut out),
        LnAffine::Modulate { scale, shift } => nn_norm::layer_norm_modulate(x, dim, eps, scale, shift, &mut out),
        LnAffine::Affine { weight, bias } => nn_norm::layer_norm(x, dim, eps, Some((weight, bias)), &mut out),
    }
    out.into_iter().map(bf16_bits).collect()
}

/// The attention inputs from a fused projection `x: [rows, parts·dim]`: part p is copied out,
/// RMS-normalised over its row with `norms[p]` when given (`nn_norm::rms_norm_in_place`),
/// rotated when p < `rope_parts` (`nn_rope::rope_interleaved_in_place`, `rope` = cos, sin
/// `[rows, head_dim]`), rounded to bf16 and laid out `[rows·heads, padded]` with zero columns
/// from head_dim on. Returns one buffer per part.
#[allow(clippy::too_many_arguments)]
pub fn qkv_rms_rope_bf16(
    x: &[f32],
    rows: usize,
    parts: usize,
    dim: usize,
    head_dim: usize,
    padded: usize,
    eps: f64,
    norms: [Option<&[f32]>; 2],
    rope: Option<(&[f32], &[f32])>,
    rope_parts: usize,
) -> Vec<Vec<u16>> {
    assert_eq!(x.len(), rows * parts * dim, "qkv_rms_rope_bf16: x length");
    assert!(
        head_dim > 0 && dim.is_multiple_of(head_dim) && padded >= head_dim,
        "qkv_rms_rope_bf16: head geometry"
    );
    let heads = dim / head_dim;
    (0..parts)
        .map(|p| {
            let mut part: Vec<f32> = x
                .chunks_exact(parts * dim)
                .flat_map(|row| &row[p * dim..(p + 1) * dim])
                .copied()
                .collect();
            if let Some(w) = norms.get(p).copied().flatten() {
                nn_norm::rms_norm_in_place(&mut part, dim, eps, w);
            }
            if p < rope_parts {
                let (cos, sin) = rope.expect("rope_parts > 0 needs the tables");
                nn_rope::rope_interleaved_in_place(&mut part, rows, heads, head_dim, cos, sin);
            }
            let mut out = vec![0u16; rows * heads * padded];
            for (o, h) in out.chunks_exact_mut(padded).zip(part.chunks_exact(head_dim)) {
                for (ov, &hv) in o.iter_mut().zip(h) {
                    *ov = bf16_bits(hv);
                }
            }
            out
        })
        .collect()
}

/// `x[r, j] += y[r, j]·gate[j]`, the product rounded first (Wan's gated residual).
pub fn gated_residual(x: &mut [f32], y: &[f32], gate: &[f32]) {
    assert_eq!(x.len(), y.len(), "gated_residual: length");
    assert!(
        !gate.is_empty() && x.len().is_multiple_of(gate.len()),
        "gated_residual: gate length"
    );
    for (xr, yr) in x.chunks_exact_mut(gate.len()).zip(y.chunks_exact(gate.len())) {
        for ((xv, &yv), &g) in xr.iter_mut().zip(yr).zip(gate) {
            *xv += yv * g;
        }
    }
}

/// `out[r, j] = table[r, j] + v[j]`: every block's modulation `scale_shift_table + timestep_proj`.
pub fn add_row_vector(table: &[f32], v: &[f32]) -> Vec<f32> {
    assert!(
        !v.is_empty() && table.len().is_multiple_of(v.len()),
        "add_row_vector: lengths"
    );
    table
        .chunks_exact(v.len())
        .flat_map(|row| row.iter().zip(v).map(|(a, b)| a + b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_is_nearest_even_and_keeps_nan() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even 1.0.
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: to the even one.
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_value(bf16_bits(-2.5)), -2.5);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_bits(f32::INFINITY), 0x7f80);
    }

    #[test]
    fn qkv_parts_are_normalised_rotated_and_padded_independently() {
        let (rows, dim, hd, padded) = (3, 8, 4, 8);
        let x: Vec<f32> = (0..rows * 3 * dim).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
        let wq: Vec<f32> = (0..dim).map(|i| 1.0 + i as f32 * 0.1).collect();
        let wk: Vec<f32> = (0..dim).map(|i| 0.5 + i as f32 * 0.05).collect();
        let cos: Vec<f32> = (0..rows * hd).map(|i| (i as f32 * 0.3).cos()).collect();
        let sin: Vec<f32> = (0..rows * hd).map(|i| (i as f32 * 0.3).sin()).collect();
        let out = qkv_rms_rope_bf16(
            &x,
            rows,
            3,
            dim,
            hd,
            padded,
            1e-6,
            [Some(&wq), Some(&wk)],
            Some((&cos, &sin)),
            2,
        );
        assert_eq!(out.len(), 3);
        // v: the third slice of each row, rounded, padded per head.
        for r in 0..rows {
            for h in 0..dim / hd {
                for c in 0..padded {
                    let got = out[2][(r * 2 + h) * padded + c];
                    let want = if c < hd {
                        bf16_bits(x[r * 3 * dim + 2 * dim + h * hd + c])
                    } else {
                        0
                    };
                    assert_eq!(got, want, "v row {r} head {h} col {c}");
                }
            }
        }
        // k: the middle slice through the unfused ops.
        let mut k: Vec<f32> = x
            .chunks_exact(3 * dim)
            .flat_map(|row| row[dim..2 * dim].to_vec())
            .collect();
        nn_norm::rms_norm_in_place(&mut k, dim, 1e-6, &wk);
        nn_rope::rope_interleaved_in_place(&mut k, rows, dim / hd, hd, &cos, &sin);
        for (i, &kv) in k.iter().enumerate() {
            let (row_head, c) = (i / hd, i % hd);
            assert_eq!(out[1][row_head * padded + c], bf16_bits(kv));
        }
        // Without a norm and RoPE, part 0 is a plain rounding: differs from the normalised q.
        let plain = qkv_rms_rope_bf16(&x, rows, 3, dim, hd, padded, 1e-6, [None, None], None, 0);
        assert_ne!(plain[0], out[0]);
        assert_eq!(plain[2], out[2]);
    }

    #[test]
    fn modulation_rows_add_the_vector_to_every_row() {
        let table = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(add_row_vector(&table, &[0.5, -1.0]), [1.5, 1.0, 3.5, 3.0, 5.5, 5.0]);
        let mut x = vec![1.0f32; 4];
        gated_residual(&mut x, &[2.0, 3.0, 4.0, 5.0], &[0.5, 2.0]);
        assert_eq!(x, [2.0, 7.0, 3.0, 11.0]);
    }
}
