//! WanPipeline's denoising loop for one clip of the model's native length (no windows): the
//! reference `longshot dev sample` runs, and what the windowed cluster reduces to for one window.
//!
//! Per step, as diffusers does it: the conditional forward, then (if guidance > 1) the
//! unconditional one, CFG `uncond + g·(cond − uncond)`, then the scheduler step on f32 latents.
//! WanImageToVideoPipeline's loop is the same with an image-conditioned [`WanDenoiser`]
//! ([`WanDenoiser::conditioned`]).

use crate::wan::transformer::denoiser::WanDenoiser;
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
