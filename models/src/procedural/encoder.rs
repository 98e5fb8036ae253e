//! The procedural model's video encoder (video-to-video on the built-in model): the decoder's
//! right inverse on block means. Latent frame `l` is read from output frame `4l` (frame 0 for
//! `l = 0`), the frame the decoder reproduces `l`'s colour image at; each latent cell is
//! `Dᵀ(logit(rgb) − b)` of its 8×8 pixel block's mean colour ([`colour::latent_for_rgb`]), so
//! decoding the latents gives back the block means (clamped to [0.02, 0.98]). A latent depends on
//! one frame only, so the encoder needs no warm-up and any window's latents equal a whole-video
//! encode's. Frames past the video (the window grid's padding) are grey: zero latents.

use super::colour::{self, CHANNELS};
use super::decoder::{SPATIAL, TEMPORAL};
use longshot_core::denoiser::causal_frames;
use longshot_core::inputs::VideoSpan;
use std::ops::Range;

/// Latent frames `latents` of the video `span` is part of, frame-major `[len, 16, H/8, W/8]`;
/// the message names a frame the span lacks or a size that is not whole latent cells.
pub fn encode(span: &VideoSpan, latents: Range<usize>) -> Result<Vec<f32>, String> {
    span.validate()?;
    let (h, w) = (span.height as usize, span.width as usize);
    if !h.is_multiple_of(SPATIAL) || !w.is_multiple_of(SPATIAL) {
        return Err(format!(
            "video frames are {w}x{h}, not whole {SPATIAL}x{SPATIAL} latent cells"
        ));
    }
    let (lh, lw) = (h / SPATIAL, w / SPATIAL);
    let plane = lh * lw;
    let mut out = vec![0.0f32; latents.len() * CHANNELS * plane];
    for (l, frame_out) in latents.zip(out.chunks_exact_mut(CHANNELS * plane)) {
        let f = causal_frames(l, TEMPORAL).end - 1;
        if f >= span.video_frames {
            continue; // grey: the zero latent
        }
        let rgb = span.frame(f).ok_or_else(|| {
            format!(
                "latent {l} reads frame {f}, but the video frames sent hold {:?}",
                span.first_frame..span.first_frame + span.frames()
            )
        })?;
        for (cell, (y, x)) in (0..lh).flat_map(|y| (0..lw).map(move |x| (y, x))).enumerate() {
            let mut sum = [0u32; 3];
            for py in y * SPATIAL..(y + 1) * SPATIAL {
                for px in x * SPATIAL..(x + 1) * SPATIAL {
                    let p = &rgb[(py * w + px) * 3..][..3];
                    for k in 0..3 {
                        sum[k] += u32::from(p[k]);
                    }
                }
            }
            let n = (SPATIAL * SPATIAL) as f64 * 255.0;
            let z = colour::latent_for_rgb(sum.map(|s| f64::from(s) / n));
            for (c, v) in z.iter().enumerate() {
                frame_out[c * plane + cell] = *v as f32;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procedural::decoder::ProceduralDecoder;
    use longshot_core::denoiser::FrameDecoder;
    use longshot_core::tensor::{LatentShape, Latents};

    fn span(frames: usize, first: usize, count: usize) -> VideoSpan {
        let (w, h) = (16u32, 8u32);
        let rgb = (first..first + count)
            .flat_map(|f| (0..w * h).flat_map(move |p| [(p % 16 * 16) as u8, (f * 20) as u8, 128]))
            .collect();
        VideoSpan {
            first_frame: first,
            width: w,
            height: h,
            video_frames: frames,
            rgb,
        }
    }

    #[test]
    fn decoding_the_latents_gives_back_the_block_means() {
        let video = span(9, 0, 9); // latents 0, 1, 2 from frames 0, 4, 8
        let z = encode(&video, 0..3).unwrap();
        let latents = Latents::from_vec(LatentShape::new(3, CHANNELS, 1, 2), z).unwrap();
        let mut frames = Vec::new();
        ProceduralDecoder::default()
            .decode(&latents, 0, 0, &mut |i, f| frames.push((i, f)))
            .unwrap();
        for (i, f) in frames.into_iter().filter(|(i, _)| i % 4 == 0) {
            let src = video.frame(i).unwrap();
            // The left block's mean red is the mean of 0, 16, …, 112 over its columns.
            let mean = |x0: usize, k: usize| {
                (0..8)
                    .flat_map(|y| (x0..x0 + 8).map(move |x| (y, x)))
                    .map(|(y, x)| f64::from(src[(y * 16 + x) * 3 + k]))
                    .sum::<f64>()
                    / (64.0 * 255.0)
            };
            let rgb = f.to_rgb8();
            // Pixels 0 and 15 are each block's own colour (bilinear upsampling clamps at the
            // borders); those between mix the two blocks.
            for (x0, k) in [(0, 0), (8, 0), (0, 1), (8, 2)] {
                let want = mean(x0, k).clamp(0.02, 0.98);
                let px = if x0 == 0 { 0 } else { 15 };
                let got = f64::from(rgb[px * 3 + k]) / 255.0;
                assert!(
                    (got - want).abs() <= 1.0 / 255.0 + 1e-9,
                    "frame {i} x {x0} channel {k}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn a_window_encodes_as_the_whole_video_does_and_pads_with_grey() {
        let whole = encode(&span(41, 0, 41), 0..11).unwrap();
        let cells = CHANNELS * 2;
        let part = encode(&span(41, 17, 24), 5..11).unwrap();
        assert_eq!(part, whole[5 * cells..]);
        // Past the video: zero latents (grey).
        let padded = encode(&span(41, 17, 24), 9..13).unwrap();
        assert_eq!(padded[..2 * cells], whole[9 * cells..]);
        assert!(padded[2 * cells..].iter().all(|&v| v == 0.0));
        // A frame the span does not hold.
        let e = encode(&span(41, 17, 24), 4..6).unwrap_err();
        assert!(
            e.contains("latent 4 reads frame 16, but the video frames sent hold 17..41"),
            "{e}"
        );
        let odd = VideoSpan {
            width: 12,
            rgb: vec![0; 12 * 8 * 3],
            ..span(1, 0, 1)
        };
        assert!(encode(&odd, 0..1).unwrap_err().contains("not whole 8x8 latent cells"));
    }
}
