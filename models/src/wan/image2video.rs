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

use crate::wan::layout::unit_rgb_to_signed_frames;
use crate::wan::vae::encoder::WanVaeEncoder;
use crate::wan::WanError;

/// The reference frames of an image-to-video clip, `[H, W, 3]` in [0, 1].
pub struct ReferenceImages<'a> {
    pub first: &'a [f32],
    /// First-and-last-frame only.
    pub last: Option<&'a [f32]>,
    pub height: usize,
    pub width: usize,
}

/// The condition channels of a clip of `frames` output frames (`1 + 4k`), frame-major
/// `[T, 20, h, w]`.
pub fn condition(encoder: &WanVaeEncoder, images: &ReferenceImages<'_>, frames: usize) -> Result<Vec<f32>, WanError> {
    let (h, w) = (images.height, images.width);
    let r = encoder.config().temporal_factor();
    let min_frames = if images.last.is_some() { 2 } else { 1 };
    if frames < min_frames || !(frames - 1).is_multiple_of(r) {
        return Err(WanError::Input(format!(
            "an image-to-video clip of {frames} frames: the frame count must be {r}k + 1 and at least {min_frames}"
        )));
    }
    let plane = 3 * h * w;
    let mut video = vec![0.0f32; frames * plane];
    video[..plane].copy_from_slice(&unit_rgb_to_signed_frames(images.first, 1, h, w));
    if let Some(last) = images.last {
        video[(frames - 1) * plane..].copy_from_slice(&unit_rgb_to_signed_frames(last, 1, h, w));
    }
    let mut cond = encoder.encode_frames(&video, [frames, 3, h, w])?;
    let (t, z, pixels) = (cond.frames, cond.channels, cond.pixels());
    encoder.normalize(&mut cond.data, t, pixels)?;
    // The mask at the video's rate, frame 0 repeated r times.
    let given = |f: usize| f == 0 || (images.last.is_some() && f == frames - 1);
    let extended: Vec<bool> = std::iter::repeat_n(given(0), r - 1)
        .chain((0..frames).map(given))
        .collect();
    debug_assert_eq!(extended.len(), r * t);
    let mut out = Vec::with_capacity(t * (r + z) * pixels);
    for (ti, latents) in cond.data.chunks_exact(z * pixels).enumerate() {
        for j in 0..r {
            let m = if extended[ti * r + j] { 1.0 } else { 0.0 };
            out.extend(std::iter::repeat_n(m, pixels));
        }
        out.extend_from_slice(latents);
    }
    Ok(out)
}
