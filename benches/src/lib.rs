//! Benchmark fixtures shared by the criterion benches: a procedural-model clip of a given size,
//! rendered in-process over N partitions.
#![forbid(unsafe_code)]

use longshot_core::codenoise::{BlendMode, PartitionConfig};
use longshot_core::denoiser::Conditioning;
use longshot_core::local::{render_local, render_local_previewed, LocalRender};
use longshot_core::plan::WindowPlan;
use longshot_core::preview::PreviewFrames;
use longshot_core::scheduler::{Schedule, Solver};
use longshot_models::ProceduralModel;
use std::time::Duration;

/// `windows` windows of the procedural model (W=21, O=5) at `latent_hw`, `steps` UniPC steps, CFG on.
pub fn config(windows: usize, latent_hw: (usize, usize), steps: usize) -> PartitionConfig {
    let info = ProceduralModel::new().info();
    let (w, o) = (info.window_frames, info.default_overlap);
    let latent_frames = w + (windows - 1) * (w - o);
    let plan = WindowPlan::new(latent_frames, w, o).expect("valid plan");
    PartitionConfig {
        first_step: 0,
        repaint: None,
        plan,
        windows: 0..plan.windows(),
        channels: info.latent_channels,
        height: latent_hw.0,
        width: latent_hw.1,
        schedule: Schedule::new(Solver::UniPc, steps, 3.0).expect("valid schedule"),
        guidance: 5.0,
        noise: longshot_core::noise::NoiseKeys::single(7),
        mode: BlendMode::CoDenoise,
        hash_every: 5,
        output_frames: info.output_frames_for(latent_frames),
    }
}

pub fn render(cfg: &PartitionConfig, partitions: usize) -> LocalRender {
    let model = ProceduralModel::new();
    let cond = Conditioning::new("a slow red sunset over the sea", "");
    render_local(
        cfg,
        partitions,
        &|| model.denoiser(&cond, cfg.height, cfg.width),
        model.decoder().as_ref(),
        Duration::from_secs(120),
    )
    .expect("render")
}

/// [`render`] with live previews every `every` steps.
pub fn render_previewed(cfg: &PartitionConfig, partitions: usize, every: usize) -> (LocalRender, Vec<PreviewFrames>) {
    let model = ProceduralModel::new();
    let cond = Conditioning::new("a slow red sunset over the sea", "");
    render_local_previewed(
        cfg,
        partitions,
        &|| model.denoiser(&cond, cfg.height, cfg.width),
        model.decoder().as_ref(),
        Duration::from_secs(120),
        every,
    )
    .expect("render")
}
