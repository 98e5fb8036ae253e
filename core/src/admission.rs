//! What a job needs from the cluster, computed in one place: the coordinator admits and places
//! jobs with it, and a worker refuses an assignment above its budget with it, so no request can
//! make a worker allocate without bound.
//!
//! A worker keeps every window of its shard resident for the whole denoising loop (the windows
//! advance in lockstep), so a shard needs its window count times [`model_window_bytes`] (the
//! latent state, and an image-to-video window's condition channels). This
//! covers the latent state only; model weights and activations are the worker's own business
//! (its budget, `WorkerInfo::budget_bytes`, is what is left for job state).

use crate::api::WorkerInfo;
use crate::denoiser::ModelInfo;

/// Copies of a window's latents the co-denoising loop keeps: the latents, the step's noise, the
/// conditional and unconditional model outputs, the guided velocity, the solver's saved model
/// outputs (UniPC: two), and the overlap buffers to and from the neighbours. An upper estimate.
pub const WINDOW_STATE_COPIES: u64 = 8;

/// Bytes a worker holds for one window of `frames × channels × height × width` f32 latents.
/// Saturating: absurd dimensions give `u64::MAX`, never a wrapped small number.
pub fn window_state_bytes(frames: usize, channels: usize, height: usize, width: usize) -> u64 {
    [frames, channels, height, width]
        .iter()
        .fold(4 * WINDOW_STATE_COPIES, |acc, &d| acc.saturating_mul(d as u64))
}

/// Latent copies a rerender's window holds beside its state: the source's known latents and the
/// window's noise, to re-noise them at every step ([`crate::repaint`]).
pub const REPAINT_COPIES: u64 = 2;

/// Bytes a worker holds for one window of `frames` latent frames of `height × width` cells of
/// `model`: its [`window_state_bytes`]; for a rerender [`REPAINT_COPIES`] more; and for a model
/// that takes reference images the window's condition channels too (kept for the job: a mask
/// channel per frame of the video rate, the temporal compression, and the condition's latents).
pub fn model_window_bytes(model: &ModelInfo, frames: usize, height: usize, width: usize, rerender: bool) -> u64 {
    let mut state = window_state_bytes(frames, model.latent_channels, height, width);
    if rerender {
        state = state.saturating_add(state / WINDOW_STATE_COPIES * REPAINT_COPIES);
    }
    if model.reference_images == 0 {
        return state;
    }
    let condition_channels = model.temporal_compression.saturating_add(model.latent_channels);
    let condition = [frames, condition_channels, height, width]
        .iter()
        .fold(4u64, |acc, &d| acc.saturating_mul(d as u64));
    state.saturating_add(condition)
}

/// The bytes `w` offers for job state; a worker that states none (0) is not limited.
pub fn budget_of(w: &WorkerInfo) -> u64 {
    match w.budget_bytes {
        0 => u64::MAX,
        b => b,
    }
}

/// Bytes of one prompt's text conditioning at most: UMT5-XXL's 512 tokens of 4096 f32 (Wan2.1's
/// text encoder, the largest any served model has).
pub const MAX_TEXT_CONDITIONING_BYTES: u64 = 512 * 4096 * 4;

/// Bytes of an image-to-video job's reference images at most: first and last frame, 8-bit RGB at
/// the largest clip side (`job::MAX_SIDE`).
pub const MAX_REFERENCE_IMAGES_BYTES: u64 = 2 * 3 * (crate::job::MAX_SIDE as u64 * crate::job::MAX_SIDE as u64);

/// Bytes of the image encoder's output at most: two images of CLIP ViT-H/14's 257 tokens of 1280
/// f32 (Wan2.1 I2V's image encoder).
pub const MAX_IMAGE_CONDITIONING_BYTES: u64 = 2 * 257 * 1280 * 4;

/// Bytes of a shard's conditioning at most: a prompt and a negative prompt, reference images and
/// their embeddings.
pub const MAX_CONDITIONING_BYTES: u64 =
    2 * MAX_TEXT_CONDITIONING_BYTES + MAX_REFERENCE_IMAGES_BYTES + MAX_IMAGE_CONDITIONING_BYTES;

/// The largest message a worker with `budget` bytes of job state is sent by a legitimate peer:
/// a resumed window's checkpoint (its latents and the solver's three saved copies: 4 of the
/// [`WINDOW_STATE_COPIES`] copies the budget covers), a shard's conditioning
/// ([`MAX_CONDITIONING_BYTES`], about 115 MiB), or an overlap frame (smaller than either), plus
/// 1 MiB for the rest of the message. The worker's port refuses anything larger from its length
/// prefix.
pub fn largest_worker_message(budget: u64) -> u64 {
    let checkpoint = (budget / WINDOW_STATE_COPIES).saturating_mul(4);
    checkpoint.max(MAX_CONDITIONING_BYTES).saturating_add(1 << 20)
}

/// How many windows of `window_bytes` fit in `budget`.
pub fn windows_within(budget: u64, window_bytes: u64) -> u64 {
    budget / window_bytes.max(1)
}

/// `bytes` for people: "13.9 MB" (decimal units, as disk and memory sizes are sold).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_state_saturates_instead_of_wrapping() {
        assert_eq!(
            window_state_bytes(21, 16, 60, 104),
            21 * 16 * 60 * 104 * 4 * WINDOW_STATE_COPIES
        );
        assert_eq!(window_state_bytes(usize::MAX, 16, 512, 512), u64::MAX);
        assert_eq!(windows_within(u64::MAX, 0), u64::MAX);
        assert_eq!(windows_within(10, 3), 3);
    }

    #[test]
    fn image_to_video_windows_also_hold_their_condition() {
        let mut m = ModelInfo {
            video_warmup: None,
            name: "m".into(),
            window_frames: 21,
            latent_channels: 16,
            temporal_compression: 4,
            spatial_compression: 8,
            default_overlap: 5,
            weights: String::new(),
            reference_images: 0,
        };
        let state = window_state_bytes(21, 16, 60, 104);
        assert_eq!(model_window_bytes(&m, 21, 60, 104, false), state);
        // A rerender's window also holds its known latents and noise: 2 copies beside 8.
        assert_eq!(model_window_bytes(&m, 21, 60, 104, true), state + state / 4);
        m.reference_images = 1;
        // 20 condition channels beside 8 copies of 16: 5/32 more.
        assert_eq!(model_window_bytes(&m, 21, 60, 104, false), state + state * 20 / 128);
        assert_eq!(model_window_bytes(&m, usize::MAX, 60, 104, false), u64::MAX);
    }

    #[test]
    fn a_worker_message_fits_the_largest_window_checkpoint_its_budget_admits() {
        // A budget of exactly one 480×832 Wan2.1 window: its checkpoint (4 latent copies) fits.
        let window = window_state_bytes(21, 16, 60, 104);
        let latents = 21 * 16 * 60 * 104 * 4;
        assert!(largest_worker_message(window) >= 4 * latents);
        // A budget of sixteen: exactly half of it, the checkpoint of all sixteen's latents.
        assert_eq!(largest_worker_message(16 * window), 64 * latents + (1 << 20));
        // Small budgets still take the largest conditioning: prompts, images and their embeddings.
        assert_eq!(largest_worker_message(0), MAX_CONDITIONING_BYTES + (1 << 20));
        assert_eq!(MAX_CONDITIONING_BYTES, 16 * (1 << 20) + 96 * (1 << 20) + 2_631_680);
        // No budget: no overflow, and no cap below the transport's own.
        assert!(largest_worker_message(u64::MAX) >= u64::MAX / 2);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(13_900_000), "13.9 MB");
        assert_eq!(human_bytes(1_811_939_328_000), "1.8 TB");
    }
}
