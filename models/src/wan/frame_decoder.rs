//! Wan2.1's VAE behind the `FrameDecoder` trait: denormalise the owned latents (with their causal
//! warm-up halo), decode, drop the warm-up's frames, and emit RGB frames in [0, 1] as the pipeline
//! post-processes them.

use super::vae::WanVaeDecoder;
use longshot_core::denoiser::{DenoiseError, FrameDecoder, RgbFrame};
use longshot_core::tensor::Latents;
use std::sync::Arc;

pub struct WanFrameDecoder {
    vae: Arc<WanVaeDecoder>,
}

impl WanFrameDecoder {
    pub fn new(vae: Arc<WanVaeDecoder>) -> Self {
        Self { vae }
    }
}

impl FrameDecoder for WanFrameDecoder {
    fn halo(&self) -> usize {
        self.vae.halo()
    }

    fn decode(&self, latents: &Latents, first_global: usize, emit_from: usize, sink: &mut dyn FnMut(usize, RgbFrame)) -> Result<(), DenoiseError> {
        let s = latents.shape();
        let mut z = latents.as_slice().to_vec();
        let err = |e: super::WanError| DenoiseError::Model(e.to_string());
        self.vae.denormalize(&mut z, s.frames, s.height * s.width).map_err(err)?;
        let d = self.vae.decode_range(&z, [s.frames, s.channels, s.height, s.width], first_global, emit_from).map_err(err)?;
        for i in 0..d.frames {
            let frame = d.rgb_frame(i).ok_or_else(|| DenoiseError::Model(format!("the VAE decodes {} channels, not RGB", d.channels)))?;
            sink(d.first_frame + i, frame);
        }
        Ok(())
    }
}
