//! What `WanImageToVideoPipeline` builds from its reference image(s) before sampling (diffusers
//! 0.42, `prepare_latents`): the VAE condition and the mask, 20 extra input channels per latent
//! frame that the transformer reads next to the 16 it denoises.
//!
//! - The condition video is the image (in [−1, 1]) as frame 0, zeros (mid-grey) after it, and for
//!   first-and-last-frame the last image as the last frame; its VAE encoding's posterior mean,
//!   normalised like any latents, is `latent_condition` `[T, 16, h, w]`.
//! - The mask is 1 on the given frames and 0 elsewhere, at the video's frame rate; frame 0 is
//!   repeated 4 times (the VAE's temporal factor) so the sequence is `4T` long, and latent frame
//!   `t` takes frames `4t..4t+4` of it as its 4 mask channels.
//!
//! The result is frame-major `[T, 4 + 16, h, w]`: mask channels first, as diffusers concatenates.

//!
//! A long clip is the same construction on its whole timeline, cut per window:
//! [`ImageCondition::latents`] gives the condition channels of any latent range, computed with the
//! sharded encode's warm-up ([`WanVaeEncoder::encode_range`]) so that they are bit-identical to
//! the whole clip's, whichever worker asks: the first window carries the image latent, the last
//! one the last frame, and every window the mask and the encoded grey between.

use crate::wan::layout::unit_rgb_to_signed_frames;
use crate::wan::vae::encoder::WanVaeEncoder;
use crate::wan::WanError;
use std::ops::Range;
use std::sync::Arc;

/// The reference frames of an image-to-video clip, `[H, W, 3]` in [0, 1].
pub struct ReferenceImages<'a> {
    pub first: &'a [f32],
    /// First-and-last-frame only.
    pub last: Option<&'a [f32]>,
    pub height: usize,
    pub width: usize,
}

/// The condition video of one image-to-video clip (the image as frame 0, grey after it, the
/// last image as the clip's last frame) and its encoder.
pub struct ImageCondition {
    encoder: Arc<WanVaeEncoder>,
    /// `[3, H, W]` in [−1, 1].
    first: Vec<f32>,
    last: Option<Vec<f32>>,
    height: usize,
    width: usize,
    /// Output frames of the clip (`1 + R·k`): the last image is its last frame.
    frames: usize,
}

impl ImageCondition {
    /// The condition of a clip of `frames` output frames (`R·k + 1`, at least 2 with a last
    /// image).
    pub fn new(encoder: Arc<WanVaeEncoder>, images: &ReferenceImages<'_>, frames: usize) -> Result<Self, WanError> {
        let (h, w) = (images.height, images.width);
        let r = encoder.config().temporal_factor();
        let min_frames = if images.last.is_some() { 2 } else { 1 };
        if frames < min_frames || !(frames - 1).is_multiple_of(r) {
            return Err(WanError::Input(format!(
                "an image-to-video clip of {frames} frames: the frame count must be {r}k + 1 and at least {min_frames}"
            )));
        }
        for (name, img) in [("image", Some(images.first)), ("last_image", images.last)] {
            if img.is_some_and(|i| i.len() != h * w * 3) {
                return Err(WanError::Input(format!("{name} is not [{h}, {w}, 3]")));
            }
        }
        Ok(Self {
            first: unit_rgb_to_signed_frames(images.first, 1, h, w),
            last: images.last.map(|l| unit_rgb_to_signed_frames(l, 1, h, w)),
            encoder,
            height: h,
            width: w,
            frames,
        })
    }

    /// Latent frames of the clip.
    pub fn latent_frames(&self) -> usize {
        (self.frames - 1) / self.encoder.config().temporal_factor() + 1
    }

    /// Channels per latent frame: the mask's R, then the encoder's z_dim.
    pub fn channels(&self) -> usize {
        let cfg = self.encoder.config();
        cfg.temporal_factor() + cfg.z_dim
    }

    /// Whether output frame `f` is given (the first, and the last with a last image).
    fn given(&self, f: usize) -> bool {
        f == 0 || (self.last.is_some() && f == self.frames - 1)
    }

    /// The condition channels of latent frames `range`, frame-major `[len, R + z, h, w]`,
    /// bit-identical to the same frames of the whole clip's. A range may run past the clip (a
    /// plan's padding): the video goes on grey there.
    pub fn latents(&self, range: Range<usize>) -> Result<Vec<f32>, WanError> {
        let enc = &self.encoder;
        let r = enc.config().temporal_factor();
        let given = [(0, Some(&self.first)), (self.frames - 1, self.last.as_ref())];
        let cond = enc.encode_latents(range.clone(), self.height, self.width, |f, slot| {
            if let Some((_, Some(img))) = given.iter().find(|(g, img)| *g == f && img.is_some()) {
                slot.copy_from_slice(img);
            }
            Ok(())
        })?;
        let (t, z, pixels) = (cond.frames, cond.channels, cond.pixels());
        // The mask at the video's rate with frame 0 repeated R times: latent `l` takes entries
        // `R·l .. R·l + R` of that sequence, entry `e` being frame 0 for `e < R` and frame
        // `e − (R − 1)` after.
        let mut out = Vec::with_capacity(t * (r + z) * pixels);
        for (l, latents) in range.zip(cond.data.chunks_exact(z * pixels)) {
            for j in 0..r {
                let e = l * r + j;
                let m = if self.given(e.saturating_sub(r - 1)) { 1.0 } else { 0.0 };
                out.extend(std::iter::repeat_n(m, pixels));
            }
            out.extend_from_slice(latents);
        }
        Ok(out)
    }
}

/// The condition channels of a whole clip of `frames` output frames (`1 + 4k`), frame-major
/// `[T, 20, h, w]`.
pub fn condition(
    encoder: Arc<WanVaeEncoder>,
    images: &ReferenceImages<'_>,
    frames: usize,
) -> Result<Vec<f32>, WanError> {
    let c = ImageCondition::new(encoder, images, frames)?;
    c.latents(0..c.latent_frames())
}
