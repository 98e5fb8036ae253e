//! [`GpuWanVaeDecoder`] behind the `FrameDecoder` trait, as `wan::frame_decoder::WanFrameDecoder`:
//! denormalise the owned latents (with their causal warm-up halo) on the host, decode on the GPU,
//! drop the warm-up's frames, and emit RGB frames in [0, 1] as the pipeline post-processes them.

use super::vae::GpuWanVaeDecoder;
use longshot_core::denoiser::{DenoiseError, FrameDecoder, RgbFrame};
use longshot_core::tensor::Latents;
use std::sync::Arc;

pub struct GpuWanFrameDecoder {
    vae: Arc<GpuWanVaeDecoder>,
}

impl GpuWanFrameDecoder {
    pub fn new(vae: Arc<GpuWanVaeDecoder>) -> Self {
        Self { vae }
    }
}

impl FrameDecoder for GpuWanFrameDecoder {
    fn halo(&self) -> usize {
        self.vae.halo()
    }

    fn decode(
        &self,
        latents: &Latents,
        first_global: usize,
        emit_from: usize,
        sink: &mut dyn FnMut(usize, RgbFrame),
    ) -> Result<(), DenoiseError> {
        let s = latents.shape();
        let mut z = latents.as_slice().to_vec();
        let err = |e: super::GpuWanError| DenoiseError::Model(e.to_string());
        self.vae
            .denormalize(&mut z, s.frames, s.height * s.width)
            .map_err(err)?;
        let d = self
            .vae
            .decode_range(
                &z,
                [s.frames, s.channels, s.height, s.width],
                first_global,
                emit_from,
            )
            .map_err(err)?;
        for i in 0..d.frames {
            let frame = d.rgb_frame(i).ok_or_else(|| {
                DenoiseError::Model(format!("the VAE decodes {} channels, not RGB", d.channels))
            })?;
            sink(d.first_frame + i, frame);
        }
        Ok(())
    }
}
