//! Wan2.1 behind the `Denoiser` trait: one job's text conditioning (both CFG branches, K/V
//! precomputed once) and the transformer, with the layout conversion at the edge.

use super::{checked_len, TextContext, WanTransformer};
use crate::wan::layout::{channel_major_to_frame_major, frame_major_to_channel_major};
use crate::wan::WanError;
use longshot_core::denoiser::{Branch, DenoiseError, Denoiser, ModelInfo, StepPoint, WindowContext};
use longshot_core::tensor::Latents;
use std::sync::Arc;

/// Native window of Wan2.1: 81 frames = 21 latent frames; overlap 5 (docs/long-clips.md §1).
pub const WINDOW_FRAMES: usize = 21;
pub const DEFAULT_OVERLAP: usize = 5;

/// `ModelInfo` of a Wan2.1 transformer served under `name`.
pub fn model_info(name: &str, transformer: &WanTransformer) -> ModelInfo {
    model_info_for(name, transformer.config())
}

/// `ModelInfo` of a Wan2.1 transformer with config `cfg`, served under `name`.
pub fn model_info_for(name: &str, cfg: &crate::wan::TransformerConfig) -> ModelInfo {
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

/// What the denoiser needs of a transformer: the CPU reference [`WanTransformer`] and, with the
/// `cuda` feature, `gpu::GpuWanTransformer` both provide it.
pub trait WanForward: Send + Sync {
    /// One prompt's precomputed cross-attention conditioning.
    type Text: Send;
    type Error: std::fmt::Display + From<WanError>;

    /// `ctx`: `[N, text_dim]` embeddings as the pipeline passes them (zero-padded to 512 rows).
    fn encode_text(&self, ctx: &[f32]) -> Result<Self::Text, Self::Error>;

    /// One forward: `x: [C_in, T, H, W]` (channel-major) at timestep `t` → `[C_out, T, H, W]`.
    fn forward(&self, x: &[f32], dims: [usize; 4], t: f32, text: &Self::Text) -> Result<Vec<f32>, Self::Error>;

    /// diffusers' call signature: `x: [B, C, T, H, W]`, `timesteps: [B]`, `ctx: [B, N, text_dim]`
    /// → `[B, C_out, T, H, W]`. Batch items run one after another (never batched together, so
    /// each item's result is the same as a batch of one).
    fn forward_batch(
        &self,
        x: &[f32],
        shape: [usize; 5],
        timesteps: &[f32],
        ctx: &[f32],
    ) -> Result<Vec<f32>, Self::Error> {
        let [b, c, t, h, w] = shape;
        if b == 0 || timesteps.len() != b || Some(x.len()) != checked_len(&shape) || !ctx.len().is_multiple_of(b) {
            return Err(WanError::Input(format!(
                "batch {b}: got {} latent values, {} timesteps, {} text values",
                x.len(),
                timesteps.len(),
                ctx.len()
            ))
            .into());
        }
        let (per_x, per_ctx) = (x.len() / b, ctx.len() / b);
        let mut out = Vec::new();
        for i in 0..b {
            let text = self.encode_text(&ctx[i * per_ctx..(i + 1) * per_ctx])?;
            out.extend(self.forward(&x[i * per_x..(i + 1) * per_x], [c, t, h, w], timesteps[i], &text)?);
        }
        Ok(out)
    }
}

impl WanForward for WanTransformer {
    type Text = TextContext;
    type Error = WanError;

    fn encode_text(&self, ctx: &[f32]) -> Result<TextContext, WanError> {
        WanTransformer::encode_text(self, ctx)
    }

    fn forward(&self, x: &[f32], dims: [usize; 4], t: f32, text: &TextContext) -> Result<Vec<f32>, WanError> {
        WanTransformer::forward(self, x, dims, t, text)
    }
}

/// A Wan2.1 denoiser bound to one job's prompt embeddings (both CFG branches' conditioning
/// precomputed), on the CPU reference transformer by default.
pub struct WanDenoiser<T: WanForward = WanTransformer> {
    info: ModelInfo,
    transformer: Arc<T>,
    cond: T::Text,
    uncond: T::Text,
}

impl<T: WanForward> WanDenoiser<T> {
    /// `prompt` / `negative`: `[N, text_dim]` embeddings as the pipeline passes them (zero-padded
    /// to 512 rows).
    pub fn new(info: ModelInfo, transformer: Arc<T>, prompt: &[f32], negative: &[f32]) -> Result<Self, T::Error> {
        let cond = transformer.encode_text(prompt)?;
        let uncond = transformer.encode_text(negative)?;
        Ok(Self {
            info,
            transformer,
            cond,
            uncond,
        })
    }
}

impl<T: WanForward> Denoiser for WanDenoiser<T> {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn predict(
        &mut self,
        x: &Latents,
        _window: WindowContext,
        step: StepPoint,
        branch: Branch,
        out: &mut Latents,
    ) -> Result<(), DenoiseError> {
        let s = x.shape();
        if out.shape() != s {
            return Err(DenoiseError::Shape {
                got: out.shape(),
                want: format!("{s:?}"),
            });
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
        out.as_mut_slice()
            .copy_from_slice(&channel_major_to_frame_major(&v, s.channels, s.frames, hw));
        Ok(())
    }
}
