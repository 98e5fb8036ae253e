//! Exact clip lengths: `--duration S --fps F` gives round(S·F) frames and `--frames N` gives N,
//! although a causal video model renders `4k + 1` frames: the smallest covering grid is rendered
//! and its tail is never emitted. Checked over lengths 1…2,000 and fps 8…60, and on real renders of
//! the procedural model, bit-identical whatever the number of partitions.

use longshot_core::codenoise::{BlendMode, PartitionConfig};
use longshot_core::denoiser::ModelInfo;
use longshot_core::job::OutputKind;
use longshot_core::job::{defaults, ClipLength, JobSpec, ResolvedJob};
use longshot_models::ProceduralModel;
use longshot_tests::render_procedural;
use proptest::prelude::*;

fn spec(length: ClipLength, fps: u32) -> JobSpec {
    JobSpec {
        shots: Vec::new(),
        rerender: None,
        split_shots: false,
        strength: None,
        draft: None,
        preview_every: 0,
        model: ProceduralModel::NAME.into(),
        prompt: "a slow red sunset over the sea".into(),
        negative_prompt: String::new(),
        seed: Some(11),
        length,
        fps,
        width: 16,
        height: 16,
        steps: 2,
        guidance: defaults::GUIDANCE,
        shift: defaults::SHIFT,
        solver: defaults::SOLVER,
        overlap: None,
        outputs: vec![OutputKind::Mp4],
        priority: 0,
        blend: BlendMode::CoDenoise,
        inputs: Default::default(),
    }
}

fn resolve(length: ClipLength, fps: u32) -> (ResolvedJob, ModelInfo) {
    let info = ProceduralModel::new().info();
    let r = spec(length, fps).resolve(&info, 0).expect("a valid job");
    (r, info)
}

/// The partition a worker would run for `r`, as the coordinator assigns it.
fn partition(r: &ResolvedJob, info: &ModelInfo) -> PartitionConfig {
    PartitionConfig {
        first_step: 0,
        repaint: None,
        plan: r.plan,
        windows: 0..r.plan.windows(),
        channels: info.latent_channels,
        height: r.latent_height,
        width: r.latent_width,
        schedule: r.schedule.clone(),
        guidance: r.spec.guidance,
        noise: longshot_core::noise::NoiseKeys::single(r.seed),
        mode: r.spec.blend,
        hash_every: 1,
        output_frames: r.frames as usize,
    }
}

/// The plan, for every length 1…2,000 and every fps 8…60: the requested count exactly, rendered
/// on the smallest covering 4k+1 grid.
#[test]
fn duration_and_frames_give_exactly_the_requested_count() {
    for fps in 8u32..=60 {
        for frames in 1u32..=2000 {
            let seconds = f64::from(frames) / f64::from(fps);
            for length in [ClipLength::Frames(frames), ClipLength::Seconds(seconds)] {
                let (r, info) = resolve(length, fps);
                assert_eq!(r.frames, frames, "{length:?} at {fps} fps");
                assert_eq!(r.rendered_frames % 4, 1, "{length:?} at {fps} fps");
                assert!(
                    r.rendered_frames >= frames && r.rendered_frames < frames + 4,
                    "{length:?} at {fps} fps"
                );
                assert_eq!(info.output_frames_for(r.latent_frames) as u32, r.rendered_frames);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Real renders: exactly the requested frames, the same bits over 1 and 3 partitions, and the
    /// kept frames equal the first frames of the untrimmed grid (trimming changes nothing else).
    #[test]
    fn renders_have_exactly_the_requested_frames_whatever_the_partition(frames in 1u32..=2000, fps in 8u32..=60) {
        let (r, info) = resolve(ClipLength::Seconds(f64::from(frames) / f64::from(fps)), fps);
        let cfg = partition(&r, &info);
        let one = render_procedural(&cfg, 1, &r.spec.prompt);
        prop_assert_eq!(one.frames.len(), frames as usize);
        let parts = r.plan.windows().min(3);
        let many = render_procedural(&cfg, parts, &r.spec.prompt);
        prop_assert!(one.frames == many.frames, "{} frames: 1 and {} partitions differ", frames, parts);
        prop_assert!(one.latents == many.latents);
        let full = render_procedural(&PartitionConfig { output_frames: r.rendered_frames as usize, ..cfg }, parts, &r.spec.prompt);
        prop_assert_eq!(full.frames.len(), r.rendered_frames as usize);
        prop_assert!(full.frames[..frames as usize] == one.frames[..]);
    }
}

#[test]
fn twenty_seconds_at_16_fps_is_320_frames() {
    let (r, _) = resolve(ClipLength::Seconds(20.0), 16);
    assert_eq!((r.frames, r.rendered_frames, r.latent_frames), (320, 321, 81));
    let (r, _) = resolve(ClipLength::Seconds(60.0), 16);
    assert_eq!((r.frames, r.rendered_frames), (960, 961));
}
