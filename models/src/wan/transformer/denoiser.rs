//! Wan2.1 behind the `Denoiser` trait: one job's text conditioning (both CFG branches, K/V
//! precomputed once) and the transformer, with the layout conversion at the edge. An
//! image-to-video job adds the image tokens to both branches and, per window, the condition
//! channels the transformer reads after the latents ([`ImageCondition`]).

use super::{checked_len, TextContext, WanTransformer};
use crate::wan::image2video::ImageCondition;
use crate::wan::layout::{channel_major_to_frame_major, frame_major_to_channel_major};
use crate::wan::WanError;
use longshot_core::denoiser::{Branch, DenoiseError, Denoiser, ModelInfo, StepPoint, WindowContext};
use longshot_core::tensor::Latents;
use std::collections::HashMap;
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
        latent_channels: cfg.out_channels(),
        temporal_compression: 4,
        spatial_compression: 8,
        default_overlap: DEFAULT_OVERLAP,
        weights: String::new(),
        reference_images: match (cfg.has_image_path(), cfg.pos_embed_seq_len) {
            (false, _) => 0,
            (true, None) => 1,
            (true, Some(_)) => 2,
        },
        // Video-to-video runs text-to-video transformers (WanVideoToVideoPipeline); the warm-up
        // is Wan2.1's VAE's, and `WanModel::load` sets it from the VAE it loads.
        video_warmup: (!cfg.has_image_path()).then_some(crate::wan::vae::encoder::WAN21_ENCODE_HALO as u32),
    }
}

/// What the denoiser needs of a transformer: the CPU reference [`WanTransformer`] and, with the
/// `cuda` feature, `gpu::GpuWanTransformer` both provide it.
pub trait WanForward: Send + Sync {
    /// One prompt's precomputed cross-attention conditioning.
    type Text: Send;
    type Error: std::fmt::Display + From<WanError>;

    /// `ctx`: `[N, text_dim]` embeddings as the pipeline passes them (zero-padded to 512 rows);
    /// `image`: the image encoder's tokens `[M, image_dim]`, which an image-to-video transformer
    /// needs and a text-to-video one refuses.
    fn encode_conditioning(&self, ctx: &[f32], image: Option<&[f32]>) -> Result<Self::Text, Self::Error>;

    /// One forward: `x: [C_in, T, H, W]` (channel-major) at timestep `t` → `[C_out, T, H, W]`.
    fn forward(&self, x: &[f32], dims: [usize; 4], t: f32, text: &Self::Text) -> Result<Vec<f32>, Self::Error>;

    /// diffusers' call signature: `x: [B, C, T, H, W]`, `timesteps: [B]`, `ctx: [B, N, text_dim]`
    /// and for an image-to-video transformer `image: [B, M, image_dim]` →
    /// `[B, C_out, T, H, W]`. Batch items run one after another (never batched together, so
    /// each item's result is the same as a batch of one).
    fn forward_batch(
        &self,
        x: &[f32],
        shape: [usize; 5],
        timesteps: &[f32],
        ctx: &[f32],
        image: Option<&[f32]>,
    ) -> Result<Vec<f32>, Self::Error> {
        let [b, c, t, h, w] = shape;
        if b == 0
            || timesteps.len() != b
            || Some(x.len()) != checked_len(&shape)
            || !ctx.len().is_multiple_of(b)
            || image.is_some_and(|i| !i.len().is_multiple_of(b))
        {
            return Err(WanError::Input(format!(
                "batch {b}: got {} latent values, {} timesteps, {} text values, {} image values",
                x.len(),
                timesteps.len(),
                ctx.len(),
                image.map_or(0, <[f32]>::len)
            ))
            .into());
        }
        let (per_x, per_ctx) = (x.len() / b, ctx.len() / b);
        let per_img = image.map_or(0, |i| i.len() / b);
        let mut out = Vec::new();
        for i in 0..b {
            let img = image.map(|im| &im[i * per_img..(i + 1) * per_img]);
            let text = self.encode_conditioning(&ctx[i * per_ctx..(i + 1) * per_ctx], img)?;
            out.extend(self.forward(&x[i * per_x..(i + 1) * per_x], [c, t, h, w], timesteps[i], &text)?);
        }
        Ok(out)
    }
}

impl WanForward for WanTransformer {
    type Text = TextContext;
    type Error = WanError;

    fn encode_conditioning(&self, ctx: &[f32], image: Option<&[f32]>) -> Result<TextContext, WanError> {
        WanTransformer::encode_conditioning(self, ctx, image)
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
    image: Option<WindowConditions>,
}

/// Image-to-video: the clip's condition and each window's channels, computed on the window's
/// first forward (an encode of the window's frames) and kept for the job.
struct WindowConditions {
    source: ImageCondition,
    windows: HashMap<(usize, usize), Vec<f32>>,
}

/// What an image-to-video denoiser adds to the text: the image encoder's tokens `[M, image_dim]`
/// (both branches attend to them, as diffusers passes them to both) and the clip's condition.
pub struct ImageConditioning<'a> {
    pub tokens: &'a [f32],
    pub condition: ImageCondition,
}

impl<T: WanForward> WanDenoiser<T> {
    /// `prompt` / `negative`: `[N, text_dim]` embeddings as the pipeline passes them (zero-padded
    /// to 512 rows).
    pub fn new(info: ModelInfo, transformer: Arc<T>, prompt: &[f32], negative: &[f32]) -> Result<Self, T::Error> {
        Self::conditioned(info, transformer, prompt, negative, None)
    }

    /// [`new`](Self::new), with the image conditioning of an image-to-video job.
    pub fn conditioned(
        info: ModelInfo,
        transformer: Arc<T>,
        prompt: &[f32],
        negative: &[f32],
        image: Option<ImageConditioning<'_>>,
    ) -> Result<Self, T::Error> {
        let tokens = image.as_ref().map(|i| i.tokens);
        let cond = transformer.encode_conditioning(prompt, tokens)?;
        let uncond = transformer.encode_conditioning(negative, tokens)?;
        Ok(Self {
            info,
            transformer,
            cond,
            uncond,
            image: image.map(|i| WindowConditions {
                source: i.condition,
                windows: HashMap::new(),
            }),
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
        window: WindowContext,
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
        let model = |e: WanError| DenoiseError::Model(e.to_string());
        let (input, channels) = match &mut self.image {
            None => (x.as_slice().to_vec(), s.channels),
            Some(ic) => {
                let range = window.first_frame..window.first_frame + s.frames;
                let extra = ic.source.channels();
                let cond = match ic.windows.entry((range.start, range.end)) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => e.insert(ic.source.latents(range).map_err(model)?),
                };
                if cond.len() != s.frames * extra * hw {
                    return Err(DenoiseError::Model(format!(
                        "the image condition has {} values, not {} frames × {extra} channels × {hw} cells (the \
                         reference images do not have the latents' size)",
                        cond.len(),
                        s.frames
                    )));
                }
                // Frame-major [T, C + extra, hw]: each frame's latents, then its condition.
                let mut input = Vec::with_capacity(s.frames * (s.channels + extra) * hw);
                for (lat, c) in x
                    .as_slice()
                    .chunks_exact(s.channels * hw)
                    .zip(cond.chunks_exact(extra * hw))
                {
                    input.extend_from_slice(lat);
                    input.extend_from_slice(c);
                }
                (input, s.channels + extra)
            }
        };
        let cm = frame_major_to_channel_major(&input, s.frames, channels, hw);
        let v = self
            .transformer
            .forward(&cm, [channels, s.frames, s.height, s.width], step.timestep, text)
            .map_err(|e| DenoiseError::Model(e.to_string()))?;
        if v.len() != x.as_slice().len() {
            return Err(DenoiseError::Model(format!(
                "the transformer returned {} values for {} latents",
                v.len(),
                x.as_slice().len()
            )));
        }
        out.as_mut_slice()
            .copy_from_slice(&channel_major_to_frame_major(&v, s.channels, s.frames, hw));
        Ok(())
    }
}
