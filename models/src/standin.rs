//! A fixed-cost stand-in for a GPU model, for measuring what the cluster itself costs.
//!
//! Its forward waits a set time (what a GPU forward would take) and returns Wan2.1-1.3B-shaped
//! velocities (16 channels, 21-frame windows, ×4 temporal and ×8 spatial compression) without
//! computing anything; its decoder emits flat grey frames at once. Rendering with it on worker
//! processes on one machine shows the coordinator, the overlap exchange (≈2 MB per boundary per
//! step at 480×832), the blend, the schedulers and the frame hand-off, with the model's own time
//! known exactly (`benches/cluster_scaling.sh`). Workers serve it only when asked
//! (`longshot worker --standin-forward-ms MS`).

use crate::served::{ServedModel, ServedModelError, TextConditioning};
use longshot_core::denoiser::{
    causal_frames, Branch, Conditioning, DenoiseError, Denoiser, FrameDecoder, ModelInfo, RgbFrame, StepPoint,
    TextEmbeddings, WindowContext,
};
use longshot_core::tensor::Latents;
use std::time::Duration;

const TEMPORAL: usize = 4;
const SPATIAL: usize = 8;

/// The stand-in model; see the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandinModel {
    forward: Duration,
}

impl StandinModel {
    pub const NAME: &'static str = "standin";

    /// A stand-in whose every forward (one CFG branch of one window) takes `forward`.
    pub fn new(forward: Duration) -> Self {
        Self { forward }
    }

    pub fn forward(&self) -> Duration {
        self.forward
    }
}

impl ServedModel for StandinModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            name: Self::NAME.into(),
            window_frames: 21,
            latent_channels: CHANNELS,
            temporal_compression: TEMPORAL,
            spatial_compression: SPATIAL,
            default_overlap: 5,
            // Workers with different forward times must not be ganged as if they were one model.
            weights: format!("standin, forward {} µs", self.forward.as_micros()),
            reference_images: 0,
            video_warmup: None,
        }
    }

    fn origin(&self) -> String {
        format!("the stand-in model (--standin-forward-ms {})", self.forward.as_millis())
    }

    fn text_conditioning(&self) -> TextConditioning {
        TextConditioning::PromptText
    }

    fn encode_text(&self, _prompt: &str, _negative_prompt: &str) -> Result<Option<TextEmbeddings>, ServedModelError> {
        Ok(None)
    }

    fn job_denoiser(&self, _cond: &Conditioning, _latent: [usize; 3]) -> Result<Box<dyn Denoiser>, ServedModelError> {
        Ok(Box::new(StandinDenoiser {
            info: self.info(),
            forward: self.forward,
        }))
    }

    fn frame_decoder(&self) -> Box<dyn FrameDecoder> {
        Box::new(StandinDecoder)
    }
}

struct StandinDenoiser {
    info: ModelInfo,
    forward: Duration,
}

impl Denoiser for StandinDenoiser {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn predict(
        &mut self,
        x: &Latents,
        _window: WindowContext,
        _step: StepPoint,
        _branch: Branch,
        out: &mut Latents,
    ) -> Result<(), DenoiseError> {
        if x.shape() != out.shape() {
            return Err(DenoiseError::Shape {
                got: out.shape(),
                want: format!("{:?}", x.shape()),
            });
        }
        // Sleeping, not spinning: the forward runs on a GPU in the real thing, not on this CPU.
        std::thread::sleep(self.forward);
        out.as_mut_slice().fill(0.0);
        Ok(())
    }
}

/// Flat grey frames, as many and in the order a causal ×4 decoder emits them.
/// Latent channels, as Wan2.1's.
const CHANNELS: usize = 16;

struct StandinDecoder;

impl FrameDecoder for StandinDecoder {
    fn halo(&self) -> usize {
        1
    }

    fn preview_map(&self) -> Result<longshot_core::preview::PreviewMap, DenoiseError> {
        Ok(longshot_core::preview::PreviewMap {
            weights: vec![[0.0; 3]; CHANNELS],
            bias: [0.5; 3],
            squash: longshot_core::preview::Squash::Clamp,
        })
    }

    fn decode(
        &self,
        latents: &Latents,
        first_global: usize,
        emit_from: usize,
        sink: &mut dyn FnMut(usize, RgbFrame),
    ) -> Result<(), DenoiseError> {
        let shape = latents.shape();
        let (height, width) = (shape.height * SPATIAL, shape.width * SPATIAL);
        let frame = || RgbFrame {
            width,
            height,
            data: vec![0.5; width * height * 3],
        };
        for l in emit_from..shape.frames {
            causal_frames(first_global + l, TEMPORAL).for_each(|i| sink(i, frame()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use longshot_core::tensor::LatentShape;
    use std::time::Instant;

    #[test]
    fn a_forward_takes_its_time_and_the_decoder_emits_the_causal_frame_count() {
        let model = StandinModel::new(Duration::from_millis(30));
        let info = model.info();
        assert_eq!(
            (info.window_frames, info.latent_channels, info.default_overlap),
            (21, 16, 5)
        );
        assert_ne!(
            info.weights,
            StandinModel::new(Duration::from_millis(31)).info().weights
        );
        let mut d = model.job_denoiser(&Conditioning::default(), [21, 2, 3]).unwrap();
        let shape = LatentShape::new(21, 16, 2, 3);
        let (x, mut out) = (Latents::zeros(shape), Latents::zeros(shape));
        let started = Instant::now();
        let window = WindowContext {
            index: 0,
            first_frame: 0,
        };
        let step = StepPoint {
            index: 0,
            sigma: 1.0,
            timestep: 999.0,
        };
        d.predict(&x, window, step, Branch::Conditional, &mut out).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30));
        let mut frames = Vec::new();
        model
            .frame_decoder()
            .decode(&Latents::zeros(LatentShape::new(5, 16, 2, 3)), 0, 0, &mut |i, f| {
                frames.push((i, f.width, f.height))
            })
            .unwrap();
        assert_eq!(frames.len(), 1 + 4 * 4);
        assert!(frames
            .iter()
            .enumerate()
            .all(|(n, &(i, w, h))| i == n && (w, h) == (24, 16)));
        // A shard's decode from latent frame 10 with a one-frame halo emits frames 41.. onwards.
        let mut first = None;
        model
            .frame_decoder()
            .decode(&Latents::zeros(LatentShape::new(3, 16, 2, 3)), 9, 1, &mut |i, _| {
                first.get_or_insert(i);
            })
            .unwrap();
        assert_eq!(first, Some(4 * 9 + 1));
    }
}
