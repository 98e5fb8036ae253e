//! Video-to-video's start in the co-denoising loop: windows start at the strength's first step
//! from their clean latents noised with the same Philox noise a text-to-video window starts
//! from. The result is bit-identical over any partition of the windows, resumes bit-identically
//! from a checkpoint (UniPC restarts its order ramp at the first step, and a resumed state must
//! know it), and a one-window run is exactly the sequential sampler's.

use longshot_core::checkpoint::WindowState;
use longshot_core::codenoise::{BlendMode, PartitionConfig};
use longshot_core::denoiser::{Branch, StepPoint, WindowContext};
use longshot_core::local::{render_local_from_video, LocalRender};
use longshot_core::scheduler::strength::{first_step, noise_to};
use longshot_core::scheduler::{new_state_at, Schedule, Solver};
use longshot_core::tensor::{LatentShape, Latents};
use longshot_kernels::cpu::cfg_combine;
use longshot_models::ProceduralModel;
use longshot_tests::{conditioning, procedural_config};
use std::time::Duration;

const PROMPT: &str = "a harbour at dawn, boats drifting";

fn config(windows: usize, solver: Solver, strength: f64) -> PartitionConfig {
    let mut cfg = procedural_config(windows, (6, 8), 12, BlendMode::CoDenoise);
    cfg.schedule = Schedule::new(solver, 12, 3.0).unwrap();
    cfg.first_step = first_step(12, strength).unwrap();
    cfg
}

/// The "video": a smooth pattern keyed by global latent frame, so overlapping windows agree on
/// their shared frames as real encoded windows do.
fn clean_window(cfg: &PartitionConfig, k: usize) -> Latents {
    let shape = LatentShape::new(cfg.plan.window(), cfg.channels, cfg.height, cfg.width);
    let start = cfg.plan.window_range(k).start;
    let (c, h, w) = (cfg.channels, cfg.height, cfg.width);
    let mut data = Vec::with_capacity(shape.len());
    for f in 0..cfg.plan.window() {
        let t = (start + f) as f32;
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    data.push((0.3 * t + ch as f32 + 0.5 * y as f32 - 0.25 * x as f32).sin());
                }
            }
        }
    }
    Latents::from_vec(shape, data).unwrap()
}

fn render(
    cfg: &PartitionConfig,
    parts: usize,
    every: usize,
    resume: Option<&[WindowState]>,
) -> (LocalRender, Vec<WindowState>) {
    let model = ProceduralModel::new();
    let cond = conditioning(PROMPT);
    let (h, w) = (cfg.height, cfg.width);
    render_local_from_video(
        cfg,
        parts,
        &|| model.denoiser(&cond, h, w),
        model.decoder().as_ref(),
        Duration::from_secs(30),
        every,
        resume,
        Some(&|k| clean_window(cfg, k)),
    )
    .unwrap()
}

fn bits(r: &LocalRender) -> Vec<u32> {
    r.latents.as_slice().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn a_video_start_is_identical_on_any_partition_and_resumes_exactly() {
    for solver in [Solver::UniPc, Solver::Euler] {
        let cfg = config(4, solver, 0.6); // int(12·0.6) = 7 steps run: from step 5
        assert_eq!(cfg.first_step, 5);
        let (one, states) = render(&cfg, 1, 3, None);
        for parts in [2, 3, 4] {
            let (r, _) = render(&cfg, parts, 0, None);
            assert_eq!(bits(&r), bits(&one), "{solver}: {parts} partitions");
            assert_eq!(r.frames, one.frames, "{solver}: {parts} partitions");
        }
        // Checkpoints after steps 6, 9 and 12 (every 3 steps, counted from the start).
        let mut steps: Vec<usize> = states.iter().map(|w| w.step).collect();
        steps.sort();
        steps.dedup();
        assert_eq!(steps, vec![6, 9, 12], "{solver}");
        for step in [6, 9] {
            let mut ckpt: Vec<WindowState> = states.iter().filter(|w| w.step == step).cloned().collect();
            ckpt.sort_by_key(|w| w.window);
            let (resumed, _) = render(&cfg, 3, 0, Some(&ckpt));
            assert_eq!(bits(&resumed), bits(&one), "{solver}: resumed after step {step}");
        }
    }
}

#[test]
fn a_checkpoint_from_before_the_first_step_is_refused() {
    let cfg = config(2, Solver::UniPc, 0.5); // from step 6
    let model = ProceduralModel::new();
    let cond = conditioning(PROMPT);
    let (_, states) = render(&config(2, Solver::UniPc, 1.0), 1, 3, None);
    let early: Vec<WindowState> = states.into_iter().filter(|w| w.step == 3).collect();
    let e = render_local_from_video(
        &cfg,
        1,
        &|| model.denoiser(&cond, 6, 8),
        model.decoder().as_ref(),
        Duration::from_secs(30),
        0,
        Some(&early),
        Some(&|k| clean_window(&cfg, k)),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("step 3 is outside 7..=12 (the steps done by a run of 12 steps from step 6)"),
        "{e}"
    );
}

#[test]
fn lower_strength_stays_closer_to_the_video() {
    let distance = |strength: f64| {
        let cfg = config(2, Solver::UniPc, strength);
        let (r, _) = render(&cfg, 1, 0, None);
        // The clean clip, assembled from the windows (they agree on their overlaps).
        let mut clean = Latents::zeros(r.latents.shape());
        for k in 0..cfg.plan.windows() {
            let range = cfg.plan.window_range(k);
            let end = range.end.min(cfg.plan.latent_frames());
            clean.write_frames(range.start, clean_window(&cfg, k).frames(0..end - range.start));
        }
        let d: f64 = r
            .latents
            .as_slice()
            .iter()
            .zip(clean.as_slice())
            .map(|(a, b)| f64::from(a - b).abs())
            .sum();
        d / clean.as_slice().len() as f64
    };
    let (light, heavy) = (distance(0.25), distance(1.0));
    assert!(light < heavy * 0.8, "strength 0.25: {light}, strength 1: {heavy}");
}

/// One window, no neighbours: the loop is exactly the sequential video-to-video sampler (noise
/// the clean latents to σ_first, then steps first.. with a solver started there).
#[test]
fn one_window_is_the_sequential_sampler() {
    let cfg = config(1, Solver::UniPc, 0.7); // int(8.4) = 8 steps run: from step 4
    let (r, _) = render(&cfg, 1, 0, None);
    let model = ProceduralModel::new();
    let mut denoiser = model.denoiser(&conditioning(PROMPT), cfg.height, cfg.width);
    let shape = LatentShape::new(cfg.plan.window(), cfg.channels, cfg.height, cfg.width);
    let noise = cfg.noise.latents(0, shape).unwrap();
    let clean = clean_window(&cfg, 0);
    let mut x = Latents::zeros(shape);
    let sigma = cfg.schedule.sigma(cfg.first_step);
    noise_to(sigma, clean.as_slice(), noise.as_slice(), x.as_mut_slice());
    let mut state = new_state_at(&cfg.schedule, cfg.first_step);
    let (mut v, mut u) = (Latents::zeros(shape), Latents::zeros(shape));
    let ctx = WindowContext {
        index: 0,
        first_frame: 0,
    };
    for i in cfg.first_step..cfg.schedule.steps() {
        let point = StepPoint {
            index: i,
            sigma: cfg.schedule.sigma(i),
            timestep: cfg.schedule.timestep(i),
        };
        denoiser.predict(&x, ctx, point, Branch::Conditional, &mut v).unwrap();
        denoiser.predict(&x, ctx, point, Branch::Unconditional, &mut u).unwrap();
        cfg_combine(v.as_mut_slice(), u.as_slice(), cfg.guidance);
        state.step(&cfg.schedule, i, &v, &mut x);
    }
    let frames = cfg.plan.latent_frames();
    assert_eq!(
        r.latents.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        x.frames(0..frames).iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}
