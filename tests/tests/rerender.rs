//! Re-rendering a time range in place on the procedural model, in-process (RePaint along time,
//! docs/long-clips.md §9): frames outside the range plus its margin are bit-identical to the
//! original render, the result is the same on 1–3 partitions, the range itself changes, and the
//! seams at both joins stay at the placebo level.

use longshot_core::checkpoint::WindowState;
use longshot_core::codenoise::{BlendMode, PartitionConfig};
use longshot_core::denoiser::{Branch, DenoiseError, Denoiser, ModelInfo, StepPoint, WindowContext};
use longshot_core::local::{render_local_from_video, LocalRender};
use longshot_core::noise::NoiseKeys;
use longshot_core::repaint::{latents_of_output, KnownLatents, RepaintMask, MARGIN_OVERLAPS};
use longshot_core::seam::{output_frames_of, placebo_zones, score_zones, summarize, SeamGeometry, Summary};
use longshot_core::tensor::Latents;
use longshot_models::ProceduralModel;
use longshot_tests::{
    assert_seams_like_placebo, conditioning, frame_and_latent_clips, procedural_config, render_procedural,
};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PROMPT: &str = "a calm slow red sunset over the sea";

/// `cfg` re-rendering output frames `frames` of `original` (margin: the jobs' default) with
/// `prompt` and `seed`, over `partitions` partitions.
fn rerender(
    cfg: &PartitionConfig,
    original: &Latents,
    frames: Range<usize>,
    prompt: &str,
    seed: u64,
    partitions: usize,
) -> (LocalRender, RepaintMask) {
    let (r, mask, _) = rerender_resumable(cfg, original, frames, prompt, seed, partitions, 0, None);
    (r, mask)
}

/// [`rerender`] with checkpoints every `every` steps (returned), resuming from `resume`.
#[allow(clippy::too_many_arguments)]
fn rerender_resumable(
    cfg: &PartitionConfig,
    original: &Latents,
    frames: Range<usize>,
    prompt: &str,
    seed: u64,
    partitions: usize,
    every: usize,
    resume: Option<&[WindowState]>,
) -> (LocalRender, RepaintMask, Vec<WindowState>) {
    let free = latents_of_output(frames, 4);
    let margin = MARGIN_OVERLAPS * cfg.plan.overlap();
    let mask = RepaintMask::new(free, margin, cfg.plan.latent_frames()).unwrap();
    let cfg = PartitionConfig {
        repaint: Some(mask.clone()),
        noise: NoiseKeys::single(seed),
        ..cfg.clone()
    };
    let known = KnownLatents {
        first: 0,
        latents: original.clone(),
    };
    let shape = original.shape().with_frames(cfg.plan.window());
    let window = |k: usize| known.window(&cfg.plan, k, shape).unwrap();
    let model = ProceduralModel::new();
    let cond = conditioning(prompt);
    let (h, w) = (cfg.height, cfg.width);
    let (r, states) = render_local_from_video(
        &cfg,
        partitions,
        &|| model.denoiser(&cond, h, w),
        model.decoder().as_ref(),
        Duration::from_secs(60),
        every,
        resume,
        Some(&window),
    )
    .expect("rerender");
    (r, mask, states)
}

fn differing_frames(a: &LocalRender, b: &LocalRender) -> Vec<usize> {
    (0..a.frames.len()).filter(|&i| a.frames[i] != b.frames[i]).collect()
}

fn differing_latents(a: &Latents, b: &Latents) -> Vec<usize> {
    (0..a.shape().frames)
        .filter(|&l| a.frames(l..l + 1) != b.frames(l..l + 1))
        .collect()
}

#[test]
fn a_rerender_keeps_everything_outside_its_range_and_margin_bit_for_bit() {
    let cfg = procedural_config(6, (6, 10), 8, BlendMode::CoDenoise);
    let original = render_procedural(&cfg, 2, PROMPT);
    let (one, mask) = rerender(
        &cfg,
        &original.latents,
        150..200,
        "a calm slow blue lagoon under the sky",
        7,
        1,
    );
    for parts in 2..=3 {
        let (many, _) = rerender(
            &cfg,
            &original.latents,
            150..200,
            "a calm slow blue lagoon under the sky",
            7,
            parts,
        );
        assert!(
            one.latents == many.latents,
            "latents differ between 1 and {parts} partitions"
        );
        assert!(
            one.frames == many.frames,
            "frames differ between 1 and {parts} partitions"
        );
    }
    let touched = mask.touched();
    let changed = differing_latents(&one.latents, &original.latents);
    eprintln!("touched latents {touched:?}, changed {changed:?}");
    assert!(
        !changed.is_empty() && changed.iter().all(|l| touched.contains(l)),
        "{changed:?}"
    );
    assert!(
        mask.free.clone().all(|l| changed.contains(&l)),
        "the free range changes"
    );
    // Decoded frames: the procedural decoder's causal halo is 1 latent frame.
    let may_differ = output_frames_of(touched.start..touched.end + 1, 4);
    let frames = differing_frames(&one, &original);
    assert!(
        !frames.is_empty() && frames.iter().all(|f| may_differ.contains(f)),
        "{frames:?} vs {may_differ:?}"
    );
    assert_eq!(one.frames.len(), original.frames.len());
}

#[test]
fn a_resumed_rerender_is_bit_identical_to_an_undisturbed_one() {
    let cfg = procedural_config(4, (6, 8), 9, BlendMode::CoDenoise);
    let original = render_procedural(&cfg, 2, PROMPT);
    let (whole, _, states) = rerender_resumable(&cfg, &original.latents, 100..140, PROMPT, 5, 2, 3, None);
    let mut at_six: Vec<WindowState> = states.into_iter().filter(|w| w.step == 6).collect();
    at_six.sort_by_key(|w| w.window);
    assert_eq!(at_six.len(), cfg.plan.windows());
    for parts in [1, 3] {
        let (resumed, _, _) = rerender_resumable(&cfg, &original.latents, 100..140, PROMPT, 5, parts, 0, Some(&at_six));
        assert!(
            resumed.latents == whole.latents && resumed.frames == whole.frames,
            "a rerender resumed at step 6 on {parts} partitions differs"
        );
    }
}

#[test]
fn a_rerender_of_the_first_or_last_frames_works_at_the_clips_edges() {
    let cfg = procedural_config(3, (6, 8), 6, BlendMode::CoDenoise);
    let original = render_procedural(&cfg, 1, PROMPT);
    let n = original.frames.len();
    for frames in [0..10, n - 10..n] {
        let (r, mask) = rerender(&cfg, &original.latents, frames.clone(), PROMPT, 99, 2);
        let changed = differing_latents(&r.latents, &original.latents);
        assert!(
            !changed.is_empty() && changed.iter().all(|l| mask.touched().contains(l)),
            "{frames:?}: {changed:?}"
        );
    }
}

/// Seam jump ratios (frames d1, latents d1) of the two joins (each margin ramp) and of the
/// placebo zones, pooled over re-rolled ranges at several places along the clip.
fn pooled_join_scores(cfg: &PartitionConfig, original: &Latents) -> [Summary; 4] {
    let (mut frames, mut frames_placebo, mut latents, mut latents_placebo) = (vec![], vec![], vec![], vec![]);
    let (gf, gl) = (SeamGeometry::FRAMES, SeamGeometry::LATENTS);
    for (i, start) in [120usize, 170, 220, 270].into_iter().enumerate() {
        let (r, mask) = rerender(cfg, original, start..start + 60, PROMPT, 100 + i as u64, 2);
        let t = mask.touched();
        let joins = [t.start..mask.free.start, mask.free.end..t.end];
        let (clip, lat) = frame_and_latent_clips(&r);
        let (n, shape) = (clip.frames.len(), r.latents.shape());
        let pf = placebo_zones(&cfg.plan, Some(4), n, gf, 7);
        let pl = placebo_zones(&cfg.plan, None, shape.frames, gl, 7);
        // Each join is scored as a zone of the placebo's width centred on its ramp (where the
        // ramp is steepest), so wide and narrow margins are measured alike.
        let centred = |z: Range<usize>, width: usize| {
            let c = (z.start + z.end) / 2;
            c - width / 2..c - width / 2 + width
        };
        let frame_zones: Vec<_> = joins
            .iter()
            .map(|j| centred(output_frames_of(j.clone(), 4), pf[0].len()))
            .collect();
        let latent_zones: Vec<_> = joins.iter().map(|j| centred(j.clone(), pl[0].len())).collect();
        frames.extend(score_zones(&clip, &frame_zones, gf).into_iter().map(|z| z.sjr_d1));
        latents.extend(score_zones(&lat, &latent_zones, gl).into_iter().map(|z| z.sjr_d1));
        frames_placebo.extend(score_zones(&clip, &pf, gf).into_iter().map(|z| z.sjr_d1));
        latents_placebo.extend(score_zones(&lat, &pl, gl).into_iter().map(|z| z.sjr_d1));
    }
    [frames, frames_placebo, latents, latents_placebo].map(|v| summarize(v.into_iter()))
}

/// Measured on 2026-12-07 (this setup, release build, 2-core dev VM), join medians over the
/// placebo's for margins of 0, 1, 2 and 3 overlaps (5 latent frames each): frames d1 1.78×,
/// 1.38×, 1.09×, 0.82×; latents d1 2.73×, 1.71×, 1.22×, 0.94×. A re-rolled range is another
/// sample of the prior, so the ramp must be long enough for the model to join the two: three
/// overlaps is the default margin (`MARGIN_OVERLAPS`).
#[test]
fn the_joins_of_a_rerendered_range_stay_at_the_placebo_level() {
    let cfg = procedural_config(10, (8, 12), 20, BlendMode::CoDenoise);
    let original = render_procedural(&cfg, 2, PROMPT);
    let [f, fp, l, lp] = pooled_join_scores(&cfg, &original.latents);
    eprintln!("joins: frames d1 {f:?} placebo {fp:?}; latents d1 {l:?} placebo {lp:?}");
    assert!(f.count == 8 && l.count == 8, "every join is scored: {f:?} {l:?}");
    assert_seams_like_placebo("rerender joins, frames d1", &f, &fp);
    assert_seams_like_placebo("rerender joins, latents d1", &l, &lp);
}

/// Counts each window's model forwards.
struct Counting {
    inner: Box<dyn Denoiser>,
    calls: Arc<Mutex<Vec<usize>>>,
}

impl Denoiser for Counting {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }
    fn predict(
        &mut self,
        x: &Latents,
        window: WindowContext,
        step: StepPoint,
        branch: Branch,
        out: &mut Latents,
    ) -> Result<(), DenoiseError> {
        self.calls.lock().unwrap().push(window.index);
        self.inner.predict(x, window, step, branch, out)
    }
}

#[test]
fn only_the_windows_over_the_range_and_margin_run_the_model() {
    let cfg = procedural_config(8, (6, 8), 4, BlendMode::CoDenoise);
    let original = render_procedural(&cfg, 1, PROMPT);
    // Output frames 260..280 are latents 65..71; with the margin, 50..86 may change: windows
    // 2 to 5 (latents 32..53, 48..69, 64..85, 80..101) run, the other four are held.
    let mask = RepaintMask::new(latents_of_output(260..280, 4), 15, cfg.plan.latent_frames()).unwrap();
    let cfg = PartitionConfig {
        repaint: Some(mask),
        ..cfg
    };
    let known = KnownLatents {
        first: 0,
        latents: original.latents.clone(),
    };
    let shape = original.latents.shape().with_frames(cfg.plan.window());
    let window = |k: usize| known.window(&cfg.plan, k, shape).unwrap();
    let model = ProceduralModel::new();
    let cond = conditioning(PROMPT);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let make = || -> Box<dyn Denoiser> {
        Box::new(Counting {
            inner: model.denoiser(&cond, 6, 8),
            calls: calls.clone(),
        })
    };
    render_local_from_video(
        &cfg,
        3,
        &make,
        model.decoder().as_ref(),
        Duration::from_secs(60),
        0,
        None,
        Some(&window),
    )
    .expect("rerender");
    let mut ran = calls.lock().unwrap().clone();
    ran.sort();
    ran.dedup();
    assert_eq!(ran, [2, 3, 4, 5]);
    // Two forwards (CFG) per step for each running window.
    assert_eq!(calls.lock().unwrap().len(), 4 * 4 * 2);
}
