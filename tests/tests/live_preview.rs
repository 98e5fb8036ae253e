//! Live previews with the procedural model (in-process partitions): the same previews on any
//! partition count, no output bit changed by making them, and each preview nearer the final
//! frames than the one before.

use longshot_core::codenoise::BlendMode;
use longshot_core::local::render_local_previewed;
use longshot_core::preview::{PreviewClip, PreviewFrames};
use longshot_core::tensor::Latents;
use longshot_models::ProceduralModel;
use longshot_tests::{conditioning, procedural_config, render_procedural};
use std::collections::BTreeMap;
use std::time::Duration;

const PROMPT: &str = "a lighthouse on a cliff at dusk, waves below";

/// Every preview step's assembled clip.
fn by_step(previews: &[PreviewFrames], latent_frames: usize) -> BTreeMap<u32, PreviewClip> {
    let mut clips = BTreeMap::new();
    for p in previews {
        clips
            .entry(p.step)
            .or_insert_with(|| PreviewClip::new(latent_frames, p.width, p.height))
            .update(p)
            .expect("preview fits the clip");
    }
    clips
}

#[test]
fn previews_are_the_same_on_any_partition_count_and_change_no_output_bit() {
    let cfg = procedural_config(3, (12, 16), 8, BlendMode::CoDenoise);
    let latent_frames = cfg.plan.latent_frames();
    let plain = render_procedural(&cfg, 1, PROMPT);
    let model = ProceduralModel::new();
    let cond = conditioning(PROMPT);
    let mut seen: Option<BTreeMap<u32, PreviewClip>> = None;
    for parts in [1, 2, 3] {
        let (render, previews) = render_local_previewed(
            &cfg,
            parts,
            &|| model.denoiser(&cond, 12, 16),
            model.decoder().as_ref(),
            Duration::from_secs(60),
            3,
        )
        .expect("render with previews");
        assert!(
            render.latents == plain.latents,
            "{parts} partitions: previews changed the latents"
        );
        assert!(
            render.frames == plain.frames,
            "{parts} partitions: previews changed the frames"
        );
        let clips = by_step(&previews, latent_frames);
        // Every 3 steps of 8, never at the last step (its frames are decoded for real).
        assert_eq!(
            clips.keys().copied().collect::<Vec<_>>(),
            vec![3, 6],
            "{parts} partitions"
        );
        for (step, clip) in &clips {
            assert_eq!(
                clip.steps,
                vec![*step; latent_frames],
                "step {step}: every frame exactly once"
            );
            assert_eq!((clip.width, clip.height), (16, 12), "latent resolution");
        }
        match &seen {
            None => seen = Some(clips),
            Some(first) => assert!(*first == clips, "{parts} partitions preview differently from 1"),
        }
    }
}

/// Mean absolute difference (levels) between a preview frame and the decoded frame it previews,
/// box-downscaled to latent resolution.
fn distance(preview: &[u8], frame: &[f32], width: usize, height: usize, scale: usize) -> f64 {
    let mut total = 0.0;
    for y in 0..height {
        for x in 0..width {
            for k in 0..3 {
                let mut mean = 0.0;
                for yy in y * scale..(y + 1) * scale {
                    for xx in x * scale..(x + 1) * scale {
                        mean += f64::from(frame[(yy * width * scale + xx) * 3 + k]);
                    }
                }
                let decoded = 255.0 * mean / (scale * scale) as f64;
                total += (f64::from(preview[(y * width + x) * 3 + k]) - decoded).abs();
            }
        }
    }
    total / (width * height * 3) as f64
}

#[test]
fn each_preview_is_nearer_the_final_frames_and_the_last_is_close() {
    let cfg = procedural_config(2, (12, 16), 12, BlendMode::CoDenoise);
    let latent_frames = cfg.plan.latent_frames();
    let model = ProceduralModel::new();
    let cond = conditioning(PROMPT);
    let (render, previews) = render_local_previewed(
        &cfg,
        2,
        &|| model.denoiser(&cond, 12, 16),
        model.decoder().as_ref(),
        Duration::from_secs(60),
        2,
    )
    .expect("render with previews");
    let clips = by_step(&previews, latent_frames);
    // Latent frame l's last output frame is its colour image upsampled: what its preview shows.
    let last_frame_of = |l: usize| if l == 0 { 0 } else { 4 * l };
    let distances: Vec<(u32, f64)> = clips
        .iter()
        .map(|(&step, clip)| {
            let d = (0..latent_frames)
                .map(|l| distance(clip.frame(l), &render.frames[last_frame_of(l)].data, 16, 12, 8))
                .sum::<f64>()
                / latent_frames as f64;
            (step, d)
        })
        .collect();
    eprintln!("preview distance to the final frames by step: {distances:?}");
    assert_eq!(distances.len(), 5, "steps 2, 4, 6, 8, 10");
    for pair in distances.windows(2) {
        assert!(
            pair[1].1 < pair[0].1,
            "preview at step {} is not nearer than at step {}: {distances:?}",
            pair[1].0,
            pair[0].0
        );
    }
    let last = distances.last().expect("previews").1;
    assert!(last < 4.0, "the last preview is {last:.2} levels from the final frames");

    // The final latents projected the same way land nearer still: the projection is the
    // decoder's own colour map, the remaining distance is the upsampling's.
    let map = model.decoder().preview_map().expect("map");
    let fin = map
        .project(
            &Latents::from_vec(render.latents.shape(), render.latents.as_slice().to_vec()).expect("latents"),
            12,
            0,
        )
        .expect("projection");
    let d_final = (0..latent_frames)
        .map(|l| {
            distance(
                &fin.rgb8[l * fin.frame_len()..(l + 1) * fin.frame_len()],
                &render.frames[last_frame_of(l)].data,
                16,
                12,
                8,
            )
        })
        .sum::<f64>()
        / latent_frames as f64;
    assert!(
        d_final <= last,
        "final projection {d_final:.2} vs last preview {last:.2}"
    );
}
