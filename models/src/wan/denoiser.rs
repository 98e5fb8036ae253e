//! Wan2.1 behind the `Denoiser` trait: one job's text conditioning (both CFG branches, K/V
//! precomputed once) and the transformer, with the layout conversion at the edge.

use super::layout::{channel_major_to_frame_major, frame_major_to_channel_major};
use super::transformer::{TextContext, WanTransformer};
use super::WanError;
use longshot_core::denoiser::{Branch, DenoiseError, Denoiser, ModelInfo, StepPoint, WindowContext};
use longshot_core::tensor::Latents;
use std::sync::Arc;

/// Native window of Wan2.1: 81 frames = 21 latent frames; overlap 5 (long-clips.md §1).
pub const WINDOW_FRAMES: usize = 21;
pub const DEFAULT_OVERLAP: usize = 5;

/// `ModelInfo` of a Wan2.1 transformer served under `name`.
pub fn model_info(name: &str, transformer: &WanTransformer) -> ModelInfo {
    model_info_for(name, transformer.config())
}

/// `ModelInfo` of a Wan2.1 transformer with config `cfg`, served under `name`.
pub fn model_info_for(name: &str, cfg: &super::TransformerConfig) -> ModelInfo {
    ModelInfo {
        name: name.to_string(),
        window_frames: WINDOW_FRAMES,
        latent_channels: cfg.in_channels,
        temporal_compression: 4,
        spatial_compression: 8,
        default_overlap: DEFAULT_OVERLAP,
        weights: String::new(),
    }
}

/// A Wan2.1 denoiser bound to one job's prompt embeddings.
pub struct WanDenoiser {
    info: ModelInfo,
    transformer: Arc<WanTransformer>,
    cond: TextContext,
    uncond: TextContext,
}

impl WanDenoiser {
    /// `prompt` / `negative`: `[N, text_dim]` embeddings as the pipeline passes them (zero-padded
    /// to 512 rows).
    pub fn new(info: ModelInfo, transformer: Arc<WanTransformer>, prompt: &[f32], negative: &[f32]) -> Result<Self, WanError> {
        let cond = transformer.encode_text(prompt)?;
        let uncond = transformer.encode_text(negative)?;
        Ok(Self { info, transformer, cond, uncond })
    }
}

impl Denoiser for WanDenoiser {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn predict(&mut self, x: &Latents, _window: WindowContext, step: StepPoint, branch: Branch, out: &mut Latents) -> Result<(), DenoiseError> {
        let s = x.shape();
        if out.shape() != s {
            return Err(DenoiseError::Shape { got: out.shape(), want: format!("{s:?}") });
        }
        let text = match branch {
            Branch::Conditional => &self.cond,
            Branch::Unconditional => &self.uncond,
        };
        let hw = s.height * s.width;
        let cm = frame_major_to_channel_major(x.as_slice(), s.frames, s.channels, hw);
        let v = self
            .transformer
            .forward(&cm, [s.channels, s.frames, s.height, s.width], step.timestep, text)
            .map_err(|e| DenoiseError::Model(e.to_string()))?;
        out.as_mut_slice().copy_from_slice(&channel_major_to_frame_major(&v, s.channels, s.frames, hw));
        Ok(())
    }
}
