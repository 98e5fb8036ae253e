//! Video-to-video's way into a schedule, as diffusers' `WanVideoToVideoPipeline` takes it: the
//! scheduler keeps its whole `steps`-step schedule, the loop starts at step
//! `steps − ⌊steps·strength⌋` (`get_timesteps`), and the clean latents are noised to that step's
//! σ (`add_noise` / `scale_noise`, which agree bit for bit).

use super::ScheduleError;

/// The first step a run with `strength` in (0, 1] takes of `steps`; at least one step runs.
pub fn first_step(steps: usize, strength: f64) -> Result<usize, ScheduleError> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(ScheduleError::Strength(strength));
    }
    // Python's `int(num_inference_steps * strength)`: the product in f64, truncated.
    let run = ((steps as f64 * strength) as usize).min(steps);
    if run == 0 {
        return Err(ScheduleError::NoStepAtStrength { strength, steps });
    }
    Ok(steps - run)
}

/// `out = (1 − σ)·clean + σ·noise` in f32, each product rounded, then the sum: torch's
/// `alpha_t * x + sigma_t * noise` with `alpha_t = 1 − σ` a 0-dim f32 tensor (UniPC's `add_noise`
/// with flow sigmas; Euler's `scale_noise` adds the same two products the other way round, which
/// rounds identically).
pub fn noise_to(sigma: f32, clean: &[f32], noise: &[f32], out: &mut [f32]) {
    assert!(
        clean.len() == noise.len() && noise.len() == out.len(),
        "noise_to: lengths differ"
    );
    let alpha = 1.0f32 - sigma;
    for ((o, &x), &n) in out.iter_mut().zip(clean).zip(noise) {
        *o = alpha * x + sigma * n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_step_follows_diffusers_get_timesteps() {
        assert_eq!(first_step(6, 0.7), Ok(2)); // int(4.2) = 4 steps run
        assert_eq!(first_step(50, 1.0), Ok(0));
        assert_eq!(first_step(50, 0.8), Ok(10));
        assert_eq!(first_step(10, 0.29), Ok(8)); // int(2.9) = 2: truncated, not rounded
        assert_eq!(
            first_step(4, 0.2),
            Err(ScheduleError::NoStepAtStrength {
                strength: 0.2,
                steps: 4
            })
        );
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(matches!(first_step(10, bad), Err(ScheduleError::Strength(_))), "{bad}");
        }
    }

    #[test]
    fn noising_mixes_clean_and_noise_by_sigma() {
        let mut out = [0.0f32; 2];
        noise_to(0.25, &[1.0, -2.0], &[4.0, 8.0], &mut out);
        assert_eq!(out, [0.75 + 1.0, -1.5 + 2.0]);
        noise_to(1.0, &[1.0, -2.0], &[4.0, 8.0], &mut out);
        assert_eq!(out, [4.0, 8.0]);
    }
}
