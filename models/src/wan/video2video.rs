//! What `WanVideoToVideoPipeline` starts from (diffusers 0.42, `prepare_latents`): the input
//! video's VAE encoding (posterior mean), normalised like any latents, which the loop noises to
//! the strength's first σ. A long clip is the same encode on its whole timeline, cut per window:
//! [`window_latents`] gives any latent range's, computed with the sharded encode's warm-up
//! ([`WanVaeEncoder::encode_latents`]), so every window's are bit-identical to a whole-video
//! encode, whichever worker computes them. Frames past the video (the window grid's padding)
//! are grey, as in image-to-video's condition video.

use crate::wan::layout::unit_rgb_to_signed_frames;
use crate::wan::vae::blocks::Video;
use crate::wan::vae::encoder::WanVaeEncoder;
use crate::wan::WanError;
use longshot_core::inputs::VideoSpan;
use std::ops::Range;

/// The clean latents of latent frames `range` of the video `span` is part of, frame-major
/// `[len, z_dim, h, w]`. `span` must hold every frame of the video the encode reads
/// ([`longshot_core::inputs::video_frames_for`] with the encoder's halo).
pub fn window_latents(encoder: &WanVaeEncoder, span: &VideoSpan, range: Range<usize>) -> Result<Video, WanError> {
    span.validate().map_err(WanError::Input)?;
    let (h, w) = (span.height as usize, span.width as usize);
    encoder.encode_latents(range, h, w, |f, slot| {
        if f >= span.video_frames {
            return Ok(());
        }
        let rgb = span.frame(f).ok_or_else(|| {
            WanError::Input(format!(
                "the encode reads frame {f}, but the video frames sent hold {:?}",
                span.first_frame..span.first_frame + span.frames()
            ))
        })?;
        let unit: Vec<f32> = rgb.iter().map(|&v| f32::from(v) / 255.0).collect();
        slot.copy_from_slice(&unit_rgb_to_signed_frames(&unit, 1, h, w));
        Ok(())
    })
}
