//! WanPipeline's denoising loop for one clip of the model's native length (no windows): the
//! reference `longshot dev sample` runs, and what the windowed cluster reduces to for one window.
//!
//! Per step, as diffusers does it: the conditional forward, then (if guidance > 1) the
//! unconditional one, CFG `uncond + g·(cond − uncond)`, then the scheduler step on f32 latents.

use crate::wan::layout::{channel_major_to_frame_major, frame_major_to_channel_major};
use crate::wan::transformer::denoiser::WanDenoiser;
use crate::wan::transformer::{TextContext, WanTransformer};
use crate::wan::WanError;
use longshot_core::denoiser::{Branch, Denoiser, StepPoint, WindowContext};
use longshot_core::scheduler::{new_state_at, Schedule};
use longshot_core::tensor::Latents;
use longshot_kernels::cpu::cfg_combine;

/// Runs every step of `schedule` from `latents` (frame-major); returns the final latents.
pub fn sample(
    denoiser: &mut WanDenoiser,
    latents: Latents,
    schedule: &Schedule,
    guidance: f32,
) -> Result<Latents, WanError> {
    sample_from(denoiser, latents, schedule, guidance, 0)
}

/// Runs steps `first..` of `schedule` from `latents` (already at σ_first; video-to-video);
/// returns the final latents.
pub fn sample_from(
    denoiser: &mut WanDenoiser,
    mut latents: Latents,
    schedule: &Schedule,
    guidance: f32,
    first: usize,
) -> Result<Latents, WanError> {
    let shape = latents.shape();
    let mut state = new_state_at(schedule, first);
    let mut v = Latents::zeros(shape);
    let mut uncond = Latents::zeros(shape);
    let window = WindowContext {
        index: 0,
        first_frame: 0,
    };
    for i in first..schedule.steps() {
        let point = StepPoint {
            index: i,
            sigma: schedule.sigma(i),
            timestep: schedule.timestep(i),
        };
        denoiser
            .predict(&latents, window, point, Branch::Conditional, &mut v)
            .map_err(|e| WanError::Input(e.to_string()))?;
        if guidance > 1.0 {
            denoiser
                .predict(&latents, window, point, Branch::Unconditional, &mut uncond)
                .map_err(|e| WanError::Input(e.to_string()))?;
            cfg_combine(v.as_mut_slice(), uncond.as_slice(), guidance);
        }
        state.step(schedule, i, &v, &mut latents);
    }
    Ok(latents)
}

/// WanImageToVideoPipeline's loop: like [`sample`], with the transformer reading the 20
/// condition channels of [`crate::wan::image2video::condition`] (`condition`: frame-major
/// `[T, 20, h, w]`) after the 16 latent channels at every step, and `cond` / `uncond` the
/// prompt's and negative prompt's conditioning, both with the image tokens.
pub fn sample_with_condition(
    transformer: &WanTransformer,
    mut latents: Latents,
    condition: &[f32],
    cond: &TextContext,
    uncond: &TextContext,
    schedule: &Schedule,
    guidance: f32,
) -> Result<Latents, WanError> {
    let shape = latents.shape();
    let (t, c, hw) = (shape.frames, shape.channels, shape.height * shape.width);
    let extra = condition.len() / (t * hw).max(1);
    if condition.len() != t * extra * hw || c + extra != transformer.config().in_channels {
        return Err(WanError::Input(format!(
            "condition of {} values: the transformer takes {} input channels, the latents have {c} and the \
             condition must hold the rest for {t} frames of {hw} cells",
            condition.len(),
            transformer.config().in_channels
        )));
    }
    let dims = [c + extra, t, shape.height, shape.width];
    let mut state = new_state_at(schedule, 0);
    for i in 0..schedule.steps() {
        // Frame-major [T, c + extra, hw], then channel-major for the transformer.
        let mut x = Vec::with_capacity(t * (c + extra) * hw);
        for (lat, cnd) in latents
            .as_slice()
            .chunks_exact(c * hw)
            .zip(condition.chunks_exact(extra * hw))
        {
            x.extend_from_slice(lat);
            x.extend_from_slice(cnd);
        }
        let x = frame_major_to_channel_major(&x, t, c + extra, hw);
        let ts = schedule.timestep(i);
        let predict = |ctx: &TextContext| -> Result<Vec<f32>, WanError> {
            let out = transformer.forward(&x, dims, ts, ctx)?;
            Ok(channel_major_to_frame_major(&out, c, t, hw))
        };
        let mut v = predict(cond)?;
        if guidance > 1.0 {
            let u = predict(uncond)?;
            cfg_combine(&mut v, &u, guidance);
        }
        let v = Latents::from_vec(shape, v).ok_or_else(|| WanError::Input("model output shape".into()))?;
        state.step(schedule, i, &v, &mut latents);
    }
    Ok(latents)
}
