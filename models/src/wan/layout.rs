//! Layout conversion at the model's edge: longshot's latents are frame-major `[T, C, H, W]`
//! (`longshot_core::tensor`), Wan's are channel-major `[C, T, H, W]` per batch item.

/// `[T, C, H, W]` → `[C, T, H, W]`.
pub fn frame_major_to_channel_major(x: &[f32], t: usize, c: usize, hw: usize) -> Vec<f32> {
    swap_outer_axes(x, t, c, hw)
}

/// `[C, T, H, W]` → `[T, C, H, W]`.
pub fn channel_major_to_frame_major(x: &[f32], c: usize, t: usize, hw: usize) -> Vec<f32> {
    swap_outer_axes(x, c, t, hw)
}

/// `[a, b, inner]` → `[b, a, inner]`.
fn swap_outer_axes(x: &[f32], a: usize, b: usize, inner: usize) -> Vec<f32> {
    assert_eq!(x.len(), a * b * inner, "layout: length mismatch");
    let mut out = vec![0.0f32; x.len()];
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * inner..(j * a + i + 1) * inner]
                .copy_from_slice(&x[(i * b + j) * inner..(i * b + j + 1) * inner]);
        }
    }
    out
}

/// A video as the pipelines take it, `[F, H, W, 3]` in [0, 1], to what the VAE encoder takes:
/// frame-major `[F, 3, H, W]` in [−1, 1], each value `2·x − 1` rounded twice as diffusers'
/// `VideoProcessor.normalize` computes it.
pub fn unit_rgb_to_signed_frames(x: &[f32], frames: usize, height: usize, width: usize) -> Vec<f32> {
    assert_eq!(
        x.len(),
        frames * height * width * 3,
        "unit_rgb_to_signed_frames: length"
    );
    let hw = height * width;
    let mut out = vec![0.0f32; x.len()];
    for (src, dst) in x.chunks_exact(hw * 3).zip(out.chunks_exact_mut(hw * 3)) {
        for p in 0..hw {
            for c in 0..3 {
                dst[c * hw + p] = 2.0 * src[p * 3 + c] - 1.0;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_moves_planes() {
        let (t, c, hw) = (3, 2, 4);
        let x: Vec<f32> = (0..t * c * hw).map(|i| i as f32).collect();
        let cm = frame_major_to_channel_major(&x, t, c, hw);
        // Channel 1, frame 2 of the channel-major copy is frame 2, channel 1 of the input.
        assert_eq!(&cm[(t + 2) * hw..(t + 3) * hw], &x[(2 * c + 1) * hw..(2 * c + 2) * hw]);
        assert_eq!(channel_major_to_frame_major(&cm, c, t, hw), x);
    }
}
