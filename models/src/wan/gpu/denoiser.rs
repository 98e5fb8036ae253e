//! Wan2.1 behind the `Denoiser` trait on the GPU: [`GpuWanTransformer`] with one job's text
//! conditioning (both CFG branches' cross-attention K/V on the device), latents crossing the
//! host edge in the loop's frame-major layout.

use super::transformer::{GpuTextContext, GpuWanTransformer};
use super::GpuWanError;
use crate::wan::layout::{channel_major_to_frame_major, frame_major_to_channel_major};
use longshot_core::denoiser::{Branch, DenoiseError, Denoiser, ModelInfo, StepPoint, WindowContext};
use longshot_core::tensor::Latents;
use std::sync::Arc;

pub struct GpuWanDenoiser {
    info: ModelInfo,
    transformer: Arc<GpuWanTransformer>,
    cond: GpuTextContext,
    uncond: GpuTextContext,
}

impl GpuWanDenoiser {
    /// `prompt` / `negative`: `[N, text_dim]` embeddings (zero-padded to 512 rows).
    pub fn new(info: ModelInfo, transformer: Arc<GpuWanTransformer>, prompt: &[f32], negative: &[f32]) -> Result<Self, GpuWanError> {
        let cond = transformer.encode_text(prompt)?;
        let uncond = transformer.encode_text(negative)?;
        Ok(Self { info, transformer, cond, uncond })
    }
}

impl Denoiser for GpuWanDenoiser {
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
            .map_err(|e| DenoiseError::Model(format!("GPU forward: {e}")))?;
        out.as_mut_slice().copy_from_slice(&channel_major_to_frame_major(&v, s.channels, s.frames, hw));
        Ok(())
    }
}
