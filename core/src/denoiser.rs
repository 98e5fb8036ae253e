//! The model interface the co-denoising loop drives.
//!
//! A [`Denoiser`] is bound to one job's conditioning (prompt, negative prompt, or text embeddings
//! computed once per job) and predicts the flow-matching velocity for one window at one step, for
//! one guidance branch. The loop runs the conditional and unconditional branches as two separate
//! forwards (never batched: batching changes GEMM shapes and therefore rounding) and combines them.
//! A [`FrameDecoder`] turns owned latent frames into RGB frames.

use crate::inputs::{ImageEmbeddings, ReferenceImages};
use crate::tensor::Latents;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What a model tells the planner and the cluster about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Stable identifier used in job specs (e.g. `procedural`, `wan2.1-t2v-1.3b`).
    pub name: String,
    /// Native window length in latent frames (Wan2.1: 21).
    pub window_frames: usize,
    /// Latent channels (Wan2.1: 16).
    pub latent_channels: usize,
    /// Output frames per latent frame after the first (Wan2.1: 4).
    pub temporal_compression: usize,
    /// Pixels per latent cell along each spatial axis (Wan2.1: 8).
    pub spatial_compression: usize,
    /// Overlap used when a job does not set one.
    pub default_overlap: usize,
    /// Identifies the weights behind the name (empty for the weightless procedural model). The
    /// coordinator gangs only workers whose `ModelInfo` is equal, so two different checkpoints
    /// served under one name (a fine-tune and its base) never render one job together.
    #[serde(default)]
    pub weights: String,
    /// Reference images a job must give: 0 (text-to-video), 1 (image-to-video: the first frame)
    /// or 2 (first-and-last-frame).
    #[serde(default)]
    pub reference_images: u32,
    /// Video-to-video: `Some(h)` when the model renders from an input video, encoding each
    /// window's latents with the `h` latent frames before it as causal warm-up (Wan2.1's VAE
    /// encoder: 28), so every window's are bit-identical to a whole-video encode; `None` when it
    /// takes no video.
    #[serde(default)]
    pub video_warmup: Option<u32>,
}

impl ModelInfo {
    /// Latent frames for `frames` output frames (`(F−1)/c + 1`, F rounded down to `c·k+1`).
    pub fn latent_frames_for(&self, frames: usize) -> usize {
        frames.saturating_sub(1) / self.temporal_compression + 1
    }
    /// Output frames decoded from `latent` latent frames: `1 + c·(L−1)`.
    pub fn output_frames_for(&self, latent: usize) -> usize {
        1 + self.temporal_compression * latent.saturating_sub(1)
    }
}

/// The output frames a causal decoder with temporal compression `c` makes from latent frame
/// `latent` (clip-global): frame 0 from latent 0, then `c` frames from each further latent.
pub fn causal_frames(latent: usize, c: usize) -> std::ops::Range<usize> {
    match latent {
        0 => 0..1,
        l => 1 + c * (l - 1)..1 + c * l,
    }
}

/// Guidance branch of a forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Branch {
    Conditional,
    Unconditional,
}

/// The point of the schedule a forward is evaluated at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepPoint {
    /// Step index, 0-based.
    pub index: usize,
    /// Noise level σ in [0, 1] as the scheduler uses it (f32 bits are part of the job).
    pub sigma: f32,
    /// The timestep value the model receives (integer-valued for UniPC, as in diffusers).
    pub timestep: f32,
}

/// Where a window sits on the clip's global latent timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowContext {
    /// Window index in the plan.
    pub index: usize,
    /// Global latent frame of the window's first frame.
    pub first_frame: usize,
}

/// Per-job conditioning handed to a model when the job starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Conditioning {
    pub prompt: String,
    pub negative_prompt: String,
    /// Text embeddings of both prompts, computed once per job by one worker and sent with every
    /// assignment (so every worker conditions on the same bits); `None` for models that read the
    /// prompt text themselves (the procedural model). Never persisted: megabytes per job.
    #[serde(skip)]
    pub embeddings: Option<TextEmbeddings>,
    /// Image-to-video: the reference images, decoded by the coordinator. Never persisted.
    #[serde(skip)]
    pub reference: Option<ReferenceImages>,
    /// Image-to-video: the image encoder's output for `reference`, computed once per job like
    /// `embeddings`. Never persisted.
    #[serde(skip)]
    pub image_embeddings: Option<ImageEmbeddings>,
    /// Shot lists: inside a blend, the prompt this window's conditioning moves toward and how
    /// far (`embeddings` are then already the mix; a prompt-text model mixes its own way).
    #[serde(default)]
    pub blend: Option<PromptBlend>,
}

/// The second prompt of a window inside a blend ([`crate::prompt_schedule`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptBlend {
    pub prompt: String,
    pub negative_prompt: String,
    /// In (0, 1]: the weight of this prompt against the window's own.
    pub weight: f32,
}

impl Conditioning {
    /// Prompt text only (no embeddings yet).
    pub fn new(prompt: impl Into<String>, negative_prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: negative_prompt.into(),
            ..Self::default()
        }
    }
}

/// The text encoder's output for a job's prompt and negative prompt, each `[rows, dim]` f32
/// (Wan2.1: `[512, 4096]`, zero-padded after the real tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct TextEmbeddings {
    pub rows: usize,
    pub dim: usize,
    pub prompt: Vec<f32>,
    pub negative: Vec<f32>,
}

impl TextEmbeddings {
    /// Checks that both tensors hold `rows × dim` finite values; the message names the tensor.
    pub fn validate(&self) -> Result<(), String> {
        if self.rows == 0 || self.dim == 0 {
            return Err(format!("shape [{}, {}] is empty", self.rows, self.dim));
        }
        let n = self
            .rows
            .checked_mul(self.dim)
            .ok_or_else(|| format!("shape [{}, {}] overflows", self.rows, self.dim))?;
        for (name, t) in [
            ("prompt embedding", &self.prompt),
            ("negative prompt embedding", &self.negative),
        ] {
            if t.len() != n {
                return Err(format!(
                    "{name} holds {} values, not {} × {} = {n}",
                    t.len(),
                    self.rows,
                    self.dim
                ));
            }
            if let Some(i) = t.iter().position(|v| !v.is_finite()) {
                return Err(format!("{name} value {i} is {} (must be finite)", t[i]));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum DenoiseError {
    #[error("input shape {got:?} does not match what the model was prepared for ({want})")]
    Shape {
        got: crate::tensor::LatentShape,
        want: String,
    },
    #[error("model failure: {0}")]
    Model(String),
}

/// One job's denoiser. Implementations must be deterministic: the same inputs give the same bits,
/// on every worker.
pub trait Denoiser: Send {
    fn info(&self) -> &ModelInfo;

    /// Writes the velocity prediction for window latents `x` (shape `[W, C, H, W]`) into `out`.
    fn predict(
        &mut self,
        x: &Latents,
        window: WindowContext,
        step: StepPoint,
        branch: Branch,
        out: &mut Latents,
    ) -> Result<(), DenoiseError>;
}

/// An RGB frame, row-major `[height, width, 3]`, values in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct RgbFrame {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl RgbFrame {
    /// 8-bit RGB, rounded to nearest.
    pub fn to_rgb8(&self) -> Vec<u8> {
        self.data
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8)
            .collect()
    }
}

/// Decodes latent frames to RGB frames.
///
/// Decoders may be causal in time: output for latent frame `l` may depend on up to
/// [`FrameDecoder::halo`] preceding latent frames, which is why a worker decoding the frames it owns
/// passes that many warm-up frames in front (docs/long-clips.md §5).
pub trait FrameDecoder: Send + Sync {
    /// Preceding latent frames needed so that a sharded decode equals the sequential one.
    fn halo(&self) -> usize;

    /// Decodes `latents`, whose frame 0 is global latent frame `first_global`. Frames before
    /// `emit_from` (local index) are warm-up only. Each decoded output frame is passed to `sink`
    /// with its global output frame index, in increasing order.
    fn decode(
        &self,
        latents: &Latents,
        first_global: usize,
        emit_from: usize,
        sink: &mut dyn FnMut(usize, RgbFrame),
    ) -> Result<(), DenoiseError>;

    /// The cheap latent-to-RGB projection live previews use instead of [`Self::decode`]
    /// ([`crate::preview`]). Called once per shard that previews; a fitted map should be cached.
    fn preview_map(&self) -> Result<crate::preview::PreviewMap, DenoiseError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_frames_tile_the_decoded_clip_in_order() {
        for c in [1, 4] {
            for latents in 1..8 {
                let frames: Vec<usize> = (0..latents).flat_map(|l| causal_frames(l, c)).collect();
                assert_eq!(frames, (0..1 + c * (latents - 1)).collect::<Vec<_>>());
            }
        }
        assert_eq!(causal_frames(3, 4), 9..13);
    }
}
