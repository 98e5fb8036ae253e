//! The procedural model's `FrameDecoder`: a fixed linear colour map, a sigmoid, ×8 bilinear
//! upsampling and ×4 temporal interpolation.
//!
//! Output frame 0 comes from latent frame 0; latent frame `l ≥ 1` gives output frames `4l−3..=4l`
//! as `(1−w)·U(l−1) + w·U(l)`, `w = smoothstep(k/4)`, `k = 1..=4` (`U` = the colour image of a latent frame),
//! so a clip of `L` latent frames decodes to `1 + 4(L−1)` frames and the halo is one latent frame.
//! Each output frame is a function of (its two latent frames, `k`) only, evaluated in a fixed order,
//! which is why a sharded decode equals the sequential one bit for bit.

use super::colour::{self, CHANNELS};
use super::{detmath, ProceduralError};
use longshot_core::denoiser::{causal_frames, DenoiseError, FrameDecoder, RgbFrame};
use longshot_core::preview::{PreviewMap, Squash};
use longshot_core::tensor::Latents;
use rayon::prelude::*;

/// Output frames per latent frame after the first, and pixels per latent cell.
pub const TEMPORAL: usize = 4;
pub const SPATIAL: usize = 8;

/// The decoder; cheap to build and stateless.
pub struct ProceduralDecoder {
    weights: [[f32; CHANNELS]; 3],
    bias: [f32; 3],
}

impl Default for ProceduralDecoder {
    fn default() -> Self {
        Self {
            weights: colour::weights().map(|row| row.map(|w| w as f32)),
            bias: colour::BIAS.map(|b| b as f32),
        }
    }
}

/// One axis of the bilinear ×8 upsampling: output index → (source, next source, weight of next).
/// Pixel centres are aligned (`s = (p + ½)/8 − ½`) and clamped at the borders.
fn upsample_taps(n: usize) -> Vec<(usize, usize, f32)> {
    (0..n * SPATIAL)
        .map(|p| {
            let s = ((p as f64 + 0.5) / SPATIAL as f64 - 0.5).clamp(0.0, (n - 1) as f64);
            let i0 = s.floor() as usize;
            ((i0), (i0 + 1).min(n - 1), (s - i0 as f64) as f32)
        })
        .collect()
}

fn lerp(a: f32, b: f32, w: f32) -> f32 {
    // (1−w)·a + w·b rather than a + w·(b−a): exact at both ends, so w = 1 reproduces b.
    (1.0 - w) * a + w * b
}

impl ProceduralDecoder {
    /// The colour image `U` of one latent frame: `[h, w, 3]`, `sigmoid(b + Σ_c D_kc·z_c)`.
    fn colour_image(&self, frame: &[f32], plane: usize) -> Vec<f32> {
        let mut rgb = vec![0.0f32; plane * 3];
        for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
            for (k, out) in px.iter_mut().enumerate() {
                let mut acc = self.bias[k];
                for c in 0..CHANNELS {
                    acc += self.weights[k][c] * frame[c * plane + i];
                }
                *out = detmath::sigmoid(f64::from(acc)) as f32;
            }
        }
        rgb
    }

    /// Bilinear ×8 upsampling of an `[h, w, 3]` image: along x, then along y.
    fn upsample(
        &self,
        img: &[f32],
        h: usize,
        w: usize,
        ty: &[(usize, usize, f32)],
        tx: &[(usize, usize, f32)],
    ) -> RgbFrame {
        let (oh, ow) = (h * SPATIAL, w * SPATIAL);
        let mut rows = vec![0.0f32; h * ow * 3];
        for y in 0..h {
            for (px, &(x0, x1, wx)) in tx.iter().enumerate() {
                for k in 0..3 {
                    rows[(y * ow + px) * 3 + k] = lerp(img[(y * w + x0) * 3 + k], img[(y * w + x1) * 3 + k], wx);
                }
            }
        }
        let mut data = vec![0.0f32; oh * ow * 3];
        data.par_chunks_exact_mut(ow * 3)
            .zip(ty)
            .for_each(|(out_row, &(y0, y1, wy))| {
                let (r0, r1) = (
                    &rows[y0 * ow * 3..(y0 + 1) * ow * 3],
                    &rows[y1 * ow * 3..(y1 + 1) * ow * 3],
                );
                for ((o, &a), &b) in out_row.iter_mut().zip(r0).zip(r1) {
                    *o = lerp(a, b, wy).clamp(0.0, 1.0);
                }
            });
        RgbFrame {
            width: ow,
            height: oh,
            data,
        }
    }
}

impl FrameDecoder for ProceduralDecoder {
    fn halo(&self) -> usize {
        1
    }

    /// Exactly the colour image `U` each latent frame's last output frame is an upsampling of.
    fn preview_map(&self) -> Result<PreviewMap, DenoiseError> {
        Ok(PreviewMap {
            weights: (0..CHANNELS).map(|c| [0, 1, 2].map(|k| self.weights[k][c])).collect(),
            bias: self.bias,
            squash: Squash::Sigmoid,
        })
    }

    fn decode(
        &self,
        latents: &Latents,
        first_global: usize,
        emit_from: usize,
        sink: &mut dyn FnMut(usize, RgbFrame),
    ) -> Result<(), DenoiseError> {
        let shape = latents.shape();
        if shape.channels != CHANNELS {
            return Err(ProceduralError::Channels {
                got: shape.channels,
                want: CHANNELS,
            }
            .into());
        }
        if emit_from > shape.frames {
            return Err(ProceduralError::EmitFrom {
                emit_from,
                frames: shape.frames,
            }
            .into());
        }
        if emit_from == 0 && first_global > 0 && shape.frames > 0 {
            return Err(ProceduralError::MissingHalo { first_global }.into());
        }
        let (h, w) = (shape.height, shape.width);
        if emit_from == shape.frames || h == 0 || w == 0 {
            return Ok(());
        }
        let (ty, tx) = (upsample_taps(h), upsample_taps(w));
        let plane = h * w;
        let image = |l: usize| self.colour_image(latents.frames(l..l + 1), plane);
        let mut previous = (emit_from > 0).then(|| image(emit_from - 1));
        for l in emit_from..shape.frames {
            let current = image(l);
            let global = first_global + l;
            match &previous {
                None => sink(0, self.upsample(&current, h, w, &ty, &tx)),
                Some(prev) => {
                    for (k, index) in (1..).zip(causal_frames(global, TEMPORAL)) {
                        // Smoothstep rather than linear: a linear ramp has zero second difference
                        // inside each latent step, which makes the d2 seam metric degenerate.
                        let t = k as f32 / TEMPORAL as f32;
                        let wk = t * t * (3.0 - 2.0 * t);
                        let blended: Vec<f32> = prev.iter().zip(&current).map(|(&a, &b)| lerp(a, b, wk)).collect();
                        sink(index, self.upsample(&blended, h, w, &ty, &tx));
                    }
                }
            }
            previous = Some(current);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procedural::prompt::gaussian_latents;
    use longshot_core::tensor::LatentShape;

    fn decode_all(
        dec: &ProceduralDecoder,
        latents: &Latents,
        first_global: usize,
        emit_from: usize,
    ) -> Vec<(usize, RgbFrame)> {
        let mut out = Vec::new();
        dec.decode(latents, first_global, emit_from, &mut |i, f| out.push((i, f)))
            .unwrap();
        out
    }

    /// Latents with large values, so the sigmoid is exercised near both ends.
    fn latents(frames: usize) -> Latents {
        let l = gaussian_latents(LatentShape::new(frames, CHANNELS, 3, 5), 42);
        let data = l.as_slice().iter().map(|v| v * 3.0).collect();
        Latents::from_vec(l.shape(), data).unwrap()
    }

    #[test]
    fn frame_count_order_size_and_range() {
        let dec = ProceduralDecoder::default();
        let frames = decode_all(&dec, &latents(5), 0, 0);
        assert_eq!(frames.len(), 1 + 4 * (5 - 1));
        for (n, (i, f)) in frames.iter().enumerate() {
            assert_eq!(*i, n);
            assert_eq!((f.height, f.width, f.data.len()), (24, 40, 24 * 40 * 3));
            assert!(f.data.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        // Output frame 4l is latent frame l exactly (interpolation weight 1), and frames differ.
        let single = decode_all(&dec, &latents(5).slice_frames(2..3), 0, 0);
        assert_eq!(single[0].1, frames[8].1);
        assert_ne!(frames[7].1, frames[8].1);
    }

    #[test]
    fn sharded_decode_equals_sequential_bit_for_bit() {
        let dec = ProceduralDecoder::default();
        let all = latents(7);
        let sequential = decode_all(&dec, &all, 0, 0);
        for cuts in [vec![1], vec![3], vec![6], vec![1, 2, 3, 4, 5, 6], vec![2, 5]] {
            let mut bounds = vec![0usize];
            bounds.extend(&cuts);
            bounds.push(7);
            let mut sharded = Vec::new();
            for pair in bounds.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let start = a.saturating_sub(dec.halo());
                sharded.extend(decode_all(&dec, &all.slice_frames(start..b), start, a - start));
            }
            assert_eq!(sharded.len(), sequential.len(), "cuts {cuts:?}");
            for ((i, f), (j, g)) in sharded.iter().zip(&sequential) {
                assert_eq!(i, j, "cuts {cuts:?}");
                assert!(
                    f.data.iter().zip(&g.data).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "cuts {cuts:?} frame {i}"
                );
            }
        }
    }

    #[test]
    fn contract_violations_are_errors() {
        let dec = ProceduralDecoder::default();
        let mut sink = |_: usize, _: RgbFrame| {};
        let err = dec.decode(&latents(3), 4, 0, &mut sink).unwrap_err();
        assert!(err.to_string().contains("warm-up"), "{err}");
        assert!(dec.decode(&latents(3), 0, 4, &mut sink).is_err());
        let wrong = Latents::zeros(LatentShape::new(2, 4, 3, 3));
        assert!(dec.decode(&wrong, 0, 0, &mut sink).is_err());
        // Nothing to emit is fine.
        assert!(dec.decode(&latents(3), 5, 3, &mut sink).is_ok());
    }

    /// The live-preview map is exactly the colour image of a latent frame, which its last output
    /// frame upsamples; and fitting a linear map to this (sigmoid) decoder, as is done for
    /// decoders without a known map, explains most of the colour variance on held-out latents.
    #[test]
    fn preview_map_is_the_colour_image_and_a_fitted_map_comes_close() {
        use longshot_core::preview::PreviewMap;
        let dec = ProceduralDecoder::default();
        let z = latents(2);
        let exact = dec.preview_map().unwrap().project(&z.slice_frames(1..2), 1, 1).unwrap();
        let colour = dec.colour_image(z.frames(1..2), 15);
        let want: Vec<u8> = colour.iter().map(|v| (v * 255.0 + 0.5) as u8).collect();
        assert_eq!(exact.rgb8, want);

        let fitted = PreviewMap::fit(&dec, CHANNELS).unwrap();
        let held_out = gaussian_latents(LatentShape::new(1, CHANNELS, 12, 12), 7);
        let (truth, guess) = (
            dec.preview_map().unwrap().project(&held_out, 1, 0).unwrap().rgb8,
            fitted.project(&held_out, 1, 0).unwrap().rgb8,
        );
        let mean = truth.iter().map(|&v| f64::from(v)).sum::<f64>() / truth.len() as f64;
        let var: f64 = truth.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum();
        let err: f64 = truth
            .iter()
            .zip(&guess)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        let explained = 1.0 - err / var;
        assert!(
            explained > 0.8,
            "the fitted map explains {:.1}% of the colour variance",
            100.0 * explained
        );
    }
}
