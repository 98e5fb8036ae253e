//! Domain ↔ pb conversions: every domain value survives domain → pb → domain unchanged (exact
//! bits for schedules, guidance and payloads), unset pb fields get the documented defaults, and
//! malformed messages are rejected with the offending field named.
//!
//! `round_trips`: domain → pb → domain; `malformed`: messages a broken or hostile peer could send.

mod malformed;
mod round_trips;

use longshot_core::api::*;
use longshot_core::codenoise::BlendMode;
use longshot_core::denoiser::{Conditioning, ModelInfo, TextEmbeddings};
use longshot_core::exchange::{OverlapMessage, Payload};
use longshot_core::job::{defaults, ClipLength, JobSpec, OutputKind};
use longshot_core::plan::WindowPlan;
use longshot_core::scheduler::{Schedule, Solver};
use longshot_proto::convert::{job_event_to_pb, job_state_from_pb, worker_state_from_pb};
use longshot_proto::pb::{self, job_spec, overlap_frame, shard_event};
use std::fmt::Debug;
use std::time::Duration;

/// domain → pb → domain must give back `value`.
fn round_trip<D, P>(value: D)
where
    D: Clone + PartialEq + Debug + TryFrom<P, Error = ApiError>,
    P: From<D>,
{
    let back = D::try_from(P::from(value.clone())).expect("a converted domain value converts back");
    assert_eq!(back, value);
}

/// The conversion must fail with `InvalidArgument` naming exactly `fields`.
#[track_caller]
fn rejected<T: Debug>(result: Result<T, ApiError>, fields: &[&str]) {
    match result {
        Err(ApiError::InvalidArgument(errors)) => {
            let named: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(named, fields, "errors: {errors:?}");
            assert!(errors
                .iter()
                .all(|e| !e.message.is_empty() && !e.message.ends_with('.')));
        }
        other => panic!("expected InvalidArgument on {fields:?}, got {other:?}"),
    }
}

fn spec() -> JobSpec {
    JobSpec {
        shots: Vec::new(),
        rerender: None,
        split_shots: false,
        strength: None,
        draft: None,
        preview_every: 0,
        model: "procedural".into(),
        prompt: "a lighthouse at dusk".into(),
        negative_prompt: "blur".into(),
        seed: Some(42),
        length: ClipLength::Seconds(12.5),
        fps: 24,
        width: 640,
        height: 368,
        steps: 30,
        // 0 is a real value (guidance off), not "unset".
        guidance: 0.0,
        shift: 5.0,
        solver: Solver::Euler,
        overlap: Some(4),
        outputs: vec![OutputKind::Mp4, OutputKind::Latents],
        priority: -3,
        blend: BlendMode::Independent,
        inputs: Default::default(),
    }
}

fn model() -> ModelInfo {
    ModelInfo {
        video_warmup: None,
        name: "wan2.1-t2v-1.3b".into(),
        window_frames: 21,
        latent_channels: 16,
        temporal_compression: 4,
        spatial_compression: 8,
        default_overlap: 5,
        weights: String::new(),
        reference_images: 0,
    }
}

fn plan() -> PlanSummary {
    PlanSummary {
        windows: 15,
        latent_frames: 241,
        output_frames: 960,
        rendered_frames: 961,
        workers: 4,
        overlap: 5,
        window: 21,
        padded_latent_frames: 245,
    }
}

/// A two-prompt schedule over `a`'s plan: window 5 halfway between them, 6 on from the second.
fn prompt_schedule(a: &ShardAssignment) -> longshot_core::prompt_schedule::PromptSchedule {
    use longshot_core::prompt_schedule::ScheduledPrompt;
    use longshot_core::shots::WindowPrompt;
    let prompt = |p: &str, v: f32| ScheduledPrompt {
        prompt: p.into(),
        negative_prompt: "fog".into(),
        embeddings: Some(TextEmbeddings {
            rows: 1,
            dim: 2,
            prompt: vec![v, -0.0],
            negative: vec![1e-42, v],
        }),
    };
    let windows = (0..a.plan.windows())
        .map(|k| match k {
            0..=4 => WindowPrompt::single(0),
            5 => WindowPrompt {
                from: 0,
                to: 1,
                weight: 0.5,
            },
            _ => WindowPrompt::single(1),
        })
        .collect();
    longshot_core::prompt_schedule::PromptSchedule {
        prompts: vec![prompt("a red fox", 0.25), prompt("a blue sea", 7.5)],
        windows,
    }
}

fn assignment() -> ShardAssignment {
    ShardAssignment {
        prompts: None,
        first_step: 0,
        video: None,
        repaint: None,
        known: None,
        job_id: "j-1".into(),
        plan_id: 3,
        model: "procedural".into(),
        conditioning: Conditioning {
            prompt: "a lighthouse".into(),
            negative_prompt: String::new(),
            embeddings: Some(TextEmbeddings {
                rows: 2,
                dim: 2,
                prompt: vec![0.25, -0.0, 1e-42, -7.5],
                negative: vec![0.0, 1.0, 2.0, 3.0],
            }),
            ..Conditioning::default()
        },
        noise: longshot_core::noise::NoiseKeys::single(u64::MAX),
        channels: 16,
        height: 60,
        width: 104,
        plan: WindowPlan::new(241, 21, 5).expect("valid plan"),
        schedule: Schedule::new(Solver::UniPc, 50, 3.0).expect("valid schedule"),
        guidance: 5.0,
        windows: 4..8,
        left_address: Some("10.0.0.1:7001".into()),
        right_address: None,
        exchange_timeout: Duration::from_secs(120),
        hash_every: 5,
        output_frames: 957,
        blend: BlendMode::CoDenoise,
        nccl: None,
        checkpoint_every: 0,
        preview_every: 0,
        resume: None,
    }
}
