//! A job spec for the crate's unit tests: `frames` frames of `model`, 32×32, 4 steps, seed 1,
//! one prompt; tests change what they need with struct update syntax.

use longshot_core::codenoise::BlendMode;
use longshot_core::job::{defaults, ClipLength, JobSpec};

pub(crate) fn spec(model: &str, frames: u32) -> JobSpec {
    JobSpec {
        shots: Vec::new(),
        rerender: None,
        split_shots: false,
        strength: None,
        draft: None,
        preview_every: 0,
        model: model.into(),
        prompt: "p".into(),
        negative_prompt: String::new(),
        seed: Some(1),
        length: ClipLength::Frames(frames),
        fps: defaults::FPS,
        width: 32,
        height: 32,
        steps: 4,
        guidance: defaults::GUIDANCE,
        shift: defaults::SHIFT,
        solver: defaults::SOLVER,
        overlap: None,
        outputs: vec![defaults::OUTPUT],
        priority: 0,
        blend: BlendMode::CoDenoise,
        inputs: Default::default(),
    }
}
