//! The procedural reference model: an exact denoiser for a Gaussian video prior derived from the
//! prompt, and a tiny linear decoder. No weights, no GPU: it lets the whole cluster run and be
//! tested on a laptop, and because its denoiser is exact, tests can check the loop against ground
//! truth. It is not a generative model.
//!
//! - [`prompt`]: words, the stable prompt hash, the colour / motion / direction word tables.
//! - [`prior`]: [`PriorParams`] from a prompt, and the prior mean on the global timeline.
//! - [`basis`]: squared-exponential kernels and their per-axis eigenbases.
//! - [`posterior`]: the posterior mean `E[x0 | x_t]`, applied axis by axis in the eigenbasis.
//! - [`denoiser`]: the `Denoiser` (velocity, CFG branches).
//! - [`decoder`]: the `FrameDecoder`; [`encoder`]: its inverse on block means (video-to-video).
//! - [`colour`]: the latent → colour map shared by prior and decoder; [`detmath`]: libm-free maths.

pub mod basis;
pub mod colour;
pub mod decoder;
pub mod denoiser;
pub mod detmath;
pub mod encoder;
pub mod posterior;
pub mod prior;
pub mod prompt;

#[cfg(test)]
mod model_tests;

pub use decoder::ProceduralDecoder;
pub use denoiser::ProceduralDenoiser;
pub use prior::PriorParams;

use crate::served::{ConditioningError, ServedModel, ServedModelError, TextConditioning};
use longshot_core::denoiser::{Conditioning, DenoiseError, Denoiser, FrameDecoder, ModelInfo, TextEmbeddings};
use longshot_core::inputs::VideoSpan;
use std::ops::Range;
use thiserror::Error;

/// Errors specific to the procedural model; they reach the loop as [`DenoiseError::Model`].
#[derive(Debug, Error, PartialEq)]
pub enum ProceduralError {
    #[error("sigma {0} is outside the allowed range (0 < sigma <= 1; sigma = 0 has no velocity)")]
    Sigma(f32),
    #[error("latents have {got} channels, the procedural model has {want}")]
    Channels { got: usize, want: usize },
    #[error("emit_from {emit_from} is past the {frames} latent frames given")]
    EmitFrom { emit_from: usize, frames: usize },
    #[error(
        "decoding from global latent frame {first_global} needs the preceding latent frame as warm-up (emit_from >= 1)"
    )]
    MissingHalo { first_global: usize },
}

impl From<ProceduralError> for DenoiseError {
    fn from(e: ProceduralError) -> Self {
        DenoiseError::Model(e.to_string())
    }
}

/// The procedural model. Stateless: everything job-specific lives in the denoiser it hands out.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProceduralModel;

impl ProceduralModel {
    pub const NAME: &'static str = "procedural";

    pub fn new() -> Self {
        Self
    }

    /// Same latent geometry as Wan2.1 (window 21, 16 channels, 4× time, 8× space), overlap 5.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            name: Self::NAME.to_string(),
            window_frames: 21,
            latent_channels: colour::CHANNELS,
            temporal_compression: decoder::TEMPORAL,
            spatial_compression: decoder::SPATIAL,
            default_overlap: 5,
            weights: String::new(),
            reference_images: 0,
            // Video-to-video: each latent reads one frame (`encoder`), no warm-up.
            video_warmup: Some(0),
        }
    }

    /// A denoiser bound to one job. `latent_height` / `latent_width` are LATENT sizes; the kernels'
    /// eigenbases for them are computed here, once per job.
    pub fn denoiser(&self, cond: &Conditioning, latent_height: usize, latent_width: usize) -> Box<dyn Denoiser> {
        Box::new(ProceduralDenoiser::new(self.info(), cond, latent_height, latent_width))
    }

    pub fn decoder(&self) -> Box<dyn FrameDecoder> {
        Box::new(ProceduralDecoder::default())
    }
}

/// Conditioned on the prompt text itself: no text encoder, no embeddings. The calls below name
/// the inherent methods, which take precedence over the trait's.
impl ServedModel for ProceduralModel {
    fn info(&self) -> ModelInfo {
        ProceduralModel::info(self)
    }

    fn origin(&self) -> String {
        "the built-in procedural model".into()
    }

    fn text_conditioning(&self) -> TextConditioning {
        TextConditioning::PromptText
    }

    fn encode_text(&self, _prompt: &str, _negative_prompt: &str) -> Result<Option<TextEmbeddings>, ServedModelError> {
        Ok(None)
    }

    fn encode_video(&self, video: &VideoSpan, latents: Range<usize>) -> Result<Vec<f32>, ServedModelError> {
        encoder::encode(video, latents).map_err(|m| ConditioningError::Invalid(format!("input video: {m}")).into())
    }

    fn job_denoiser(&self, cond: &Conditioning, [_, h, w]: [usize; 3]) -> Result<Box<dyn Denoiser>, ServedModelError> {
        Ok(ProceduralModel::denoiser(self, cond, h, w))
    }

    fn frame_decoder(&self) -> Box<dyn FrameDecoder> {
        ProceduralModel::decoder(self)
    }
}
