//! The models a worker can run, built per job.

use longshot_core::denoiser::{Conditioning, Denoiser, FrameDecoder, ModelInfo};
use longshot_models::ProceduralModel;

/// Models this worker serves.
pub fn served() -> Vec<ModelInfo> {
    longshot_models::available_models()
}

/// A denoiser and decoder for one job, or `None` if the model is not served here.
pub fn instantiate(model: &str, cond: &Conditioning, latent_h: usize, latent_w: usize) -> Option<(Box<dyn Denoiser>, Box<dyn FrameDecoder>)> {
    match model {
        ProceduralModel::NAME => {
            let m = ProceduralModel::new();
            Some((m.denoiser(cond, latent_h, latent_w), m.decoder()))
        }
        _ => None,
    }
}
