//! Wan2.1's VAE behind the `FrameDecoder` trait: denormalise the owned latents (with their causal
//! warm-up halo), decode, drop the warm-up's frames, and emit RGB frames in [0, 1] as the pipeline
//! post-processes them. Generic over the decoder: the CPU reference [`WanVaeDecoder`] (the
//! default) or, with the `cuda` feature, `gpu::GpuWanVaeDecoder` (`gpu::GpuWanFrameDecoder`).

use super::{WanVae, WanVaeDecoder};
use longshot_core::denoiser::{DenoiseError, FrameDecoder, RgbFrame};
use longshot_core::preview::PreviewMap;
use longshot_core::tensor::Latents;
use std::sync::{Arc, OnceLock};

/// Where a served model keeps its fitted preview map, shared by every shard's decoder.
pub type PreviewCache = Arc<OnceLock<PreviewMap>>;

pub struct WanFrameDecoder<V: WanVae = WanVaeDecoder> {
    vae: Arc<V>,
    preview: PreviewCache,
}

impl<V: WanVae> WanFrameDecoder<V> {
    pub fn new(vae: Arc<V>) -> Self {
        Self::sharing(vae, PreviewCache::default())
    }

    /// A decoder whose preview map is fitted once into `preview` and reused by every decoder
    /// sharing it.
    pub fn sharing(vae: Arc<V>, preview: PreviewCache) -> Self {
        Self { vae, preview }
    }
}

impl<V: WanVae> FrameDecoder for WanFrameDecoder<V> {
    fn halo(&self) -> usize {
        self.vae.halo()
    }

    /// No colour map is known for Wan2.1's VAE: fitted to this VAE's own decode (posterior
    /// latents are normalised, so Gaussian latents are their scale), once per served model. Two
    /// shards racing to fit both compute the same map; one is kept.
    fn preview_map(&self) -> Result<PreviewMap, DenoiseError> {
        if let Some(m) = self.preview.get() {
            return Ok(m.clone());
        }
        let map = PreviewMap::fit(self, self.vae.config().z_dim)?;
        Ok(self.preview.get_or_init(|| map).clone())
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
        let err = |e: V::Error| DenoiseError::Model(e.to_string());
        self.vae
            .denormalize(&mut z, s.frames, s.height * s.width)
            .map_err(err)?;
        let d = self
            .vae
            .decode_range(&z, [s.frames, s.channels, s.height, s.width], first_global, emit_from)
            .map_err(err)?;
        for i in 0..d.frames {
            let frame = d
                .rgb_frame(i)
                .ok_or_else(|| DenoiseError::Model(format!("the VAE decodes {} channels, not RGB", d.channels)))?;
            sink(d.first_frame + i, frame);
        }
        Ok(())
    }
}
