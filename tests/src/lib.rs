//! Shared harness for Longshot's cross-crate tests: the procedural reference model rendered
//! in-process (partitions on threads) and seam measurements over the result; [`etcd_server`], a
//! real etcd process for the etcd membership and job-record tests; [`fixtures`], a fake worker and
//! a `WorkerInfo` fixture for the coordinator's, the worker's and the gRPC adapters' tests.
#![forbid(unsafe_code)]

pub mod etcd_server;
pub mod fixtures;

use longshot_core::codenoise::{BlendMode, PartitionConfig};
use longshot_core::denoiser::Conditioning;
use longshot_core::local::{render_local, LocalRender};
use longshot_core::plan::WindowPlan;
use longshot_core::scheduler::{Schedule, Solver};
use longshot_core::seam::{
    placebo_zones, score_zones, seam_zones, Clip, FrameLayout, SeamGeometry, Summary, ZoneScore,
};
use longshot_models::ProceduralModel;
use std::time::Duration;

/// A small but real procedural-model clip: `windows` windows of 21 latent frames, overlap 5.
pub fn procedural_config(windows: usize, latent_hw: (usize, usize), steps: usize, mode: BlendMode) -> PartitionConfig {
    let model = ProceduralModel::new().info();
    let (w, o) = (model.window_frames, model.default_overlap);
    let latent_frames = w + (windows - 1) * (w - o);
    let plan = WindowPlan::new(latent_frames, w, o).expect("valid plan");
    PartitionConfig {
        plan,
        windows: 0..plan.windows(),
        channels: model.latent_channels,
        height: latent_hw.0,
        width: latent_hw.1,
        schedule: Schedule::new(Solver::UniPc, steps, 3.0).expect("valid schedule"),
        guidance: 3.0,
        noise: longshot_core::noise::NoiseKeys::single(2026),
        mode,
        hash_every: 5,
        output_frames: model.output_frames_for(latent_frames),
        first_step: 0,
        repaint: None,
    }
}

pub fn conditioning(prompt: &str) -> Conditioning {
    Conditioning::new(prompt, "")
}

/// Renders `cfg` with the procedural model over `partitions` in-process partitions.
pub fn render_procedural(cfg: &PartitionConfig, partitions: usize, prompt: &str) -> LocalRender {
    let model = ProceduralModel::new();
    let cond = conditioning(prompt);
    let (h, w) = (cfg.height, cfg.width);
    render_local(
        cfg,
        partitions,
        &|| model.denoiser(&cond, h, w),
        model.decoder().as_ref(),
        Duration::from_secs(60),
    )
    .expect("local render")
}

/// Seam and placebo scores of a render, on decoded frames and on latents.
pub struct SeamScores {
    pub frames_seams: Vec<ZoneScore>,
    pub frames_placebo: Vec<ZoneScore>,
    pub latent_seams: Vec<ZoneScore>,
    pub latent_placebo: Vec<ZoneScore>,
}

/// The seam bounds of the project (docs/long-clips.md §6): seams at the placebo level are within
/// 1.25× its median and 1.5× its max (a single zone).
#[track_caller]
pub fn assert_seams_like_placebo(what: &str, seams: &Summary, placebo: &Summary) {
    assert!(
        seams.median <= 1.25 * placebo.median,
        "{what}: seam median {} vs placebo {}",
        seams.median,
        placebo.median
    );
    assert!(
        seams.max <= 1.5 * placebo.max,
        "{what}: seam max {} vs placebo {}",
        seams.max,
        placebo.max
    );
}

/// A render's decoded frames and its latents, as clips the seam metrics read.
pub fn frame_and_latent_clips(r: &LocalRender) -> (Clip<'_>, Clip<'_>) {
    let f0 = &r.frames[0];
    let clip = Clip {
        frames: r.frames.iter().map(|f| f.data.as_slice()).collect(),
        channels: 3,
        height: f0.height,
        width: f0.width,
        layout: FrameLayout::Hwc,
    };
    let shape = r.latents.shape();
    let lat = Clip {
        frames: (0..shape.frames).map(|t| r.latents.frames(t..t + 1)).collect(),
        channels: shape.channels,
        height: shape.height,
        width: shape.width,
        layout: FrameLayout::Chw,
    };
    (clip, lat)
}

pub fn seam_scores(cfg: &PartitionConfig, r: &LocalRender) -> SeamScores {
    let (clip, lat) = frame_and_latent_clips(r);
    let (n, shape) = (clip.frames.len(), r.latents.shape());
    let (gf, gl) = (SeamGeometry::FRAMES, SeamGeometry::LATENTS);
    SeamScores {
        frames_seams: score_zones(&clip, &seam_zones(&cfg.plan, Some(4), n, gf), gf),
        frames_placebo: score_zones(&clip, &placebo_zones(&cfg.plan, Some(4), n, gf, 7), gf),
        latent_seams: score_zones(&lat, &seam_zones(&cfg.plan, None, shape.frames, gl), gl),
        latent_placebo: score_zones(&lat, &placebo_zones(&cfg.plan, None, shape.frames, gl, 7), gl),
    }
}
