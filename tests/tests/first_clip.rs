//! The first clip a new user sees: the procedural model with the README's prompt and the default
//! settings (UniPC, 50 steps, guidance 5, shift 3) is calm and in gamut, and its colours, layout
//! and motion follow the prompt's words.

use longshot_core::codenoise::{BlendMode, PartitionConfig};
use longshot_core::denoiser::RgbFrame;
use longshot_core::job::defaults;
use longshot_core::plan::WindowPlan;
use longshot_core::scheduler::Schedule;
use longshot_models::ProceduralModel;
use longshot_tests::render_procedural;

/// The README's render command's prompt, and prompts of other kinds a user tries first.
const README_PROMPT: &str = "a slow red sunset over the sea";
const PROMPTS: &[&str] = &[
    README_PROMPT,
    "a fast storm over a dark forest",
    "a calm blue ocean",
    "snow falling on a quiet village at night",
    "orange fire",
    "a cat",
];

/// Two windows (37 latent frames = 145 frames) at 96×160 with the default schedule and guidance.
fn default_job() -> PartitionConfig {
    let info = ProceduralModel::new().info();
    let plan = WindowPlan::new(37, info.window_frames, info.default_overlap).expect("valid plan");
    PartitionConfig {
        first_step: 0,
        repaint: None,
        plan,
        windows: 0..plan.windows(),
        channels: info.latent_channels,
        height: 12,
        width: 20,
        schedule: Schedule::new(defaults::SOLVER, defaults::STEPS as usize, defaults::SHIFT).expect("schedule"),
        guidance: defaults::GUIDANCE,
        noise: longshot_core::noise::NoiseKeys::single(1),
        mode: BlendMode::CoDenoise,
        hash_every: 5,
        output_frames: info.output_frames_for(37),
    }
}

fn render(prompt: &str) -> Vec<RgbFrame> {
    render_procedural(&default_job(), 2, prompt).frames
}

/// Fraction of pixels at 0 or 255 in each channel.
fn clipped(frames: &[RgbFrame]) -> [f64; 3] {
    let mut n = [0usize; 3];
    let mut total = 0usize;
    for f in frames {
        for px in f.to_rgb8().chunks_exact(3) {
            (0..3).for_each(|k| n[k] += usize::from(px[k] == 0 || px[k] == 255));
            total += 1;
        }
    }
    n.map(|c| c as f64 / total as f64)
}

/// Mean colour of the rows `rows` of every frame.
fn mean_colour(frames: &[RgbFrame], rows: std::ops::Range<usize>) -> [f64; 3] {
    let mut sum = [0.0; 3];
    let mut count = 0.0;
    for f in frames {
        for px in f.data[rows.start * f.width * 3..rows.end * f.width * 3].chunks_exact(3) {
            (0..3).for_each(|k| sum[k] += f64::from(px[k]));
            count += 1.0;
        }
    }
    sum.map(|s| s / count)
}

/// Mean absolute difference between consecutive frames.
fn motion(frames: &[RgbFrame]) -> f64 {
    let sum: f64 = frames
        .windows(2)
        .map(|p| {
            p[0].data
                .iter()
                .zip(&p[1].data)
                .map(|(a, b)| f64::from((a - b).abs()))
                .sum::<f64>()
        })
        .sum();
    sum / ((frames.len() - 1) * frames[0].data.len()) as f64
}

/// Mean absolute difference between vertical and between horizontal pixel neighbours.
fn gradients(frames: &[RgbFrame]) -> (f64, f64) {
    let (mut dy, mut dx, mut n) = (0.0, 0.0, 0.0);
    for f in frames {
        let at = |y: usize, x: usize, k: usize| f64::from(f.data[(y * f.width + x) * 3 + k]);
        for y in 0..f.height - 1 {
            for x in 0..f.width - 1 {
                for k in 0..3 {
                    dy += (at(y + 1, x, k) - at(y, x, k)).abs();
                    dx += (at(y, x + 1, k) - at(y, x, k)).abs();
                }
                n += 1.0;
            }
        }
    }
    (dy / n, dx / n)
}

#[test]
fn default_renders_stay_in_gamut() {
    for prompt in PROMPTS {
        let c = clipped(&render(prompt));
        eprintln!("{prompt:?}: clipped fraction per channel {c:?}");
        assert!(
            c.iter().all(|&f| f <= 0.01),
            "{prompt:?}: {c:?} of pixels clipped at 0 or 255 (at most 1% allowed)"
        );
    }
}

#[test]
fn the_readme_clip_reads_as_a_slow_warm_horizon() {
    let sunset = render(README_PROMPT);
    let h = sunset[0].height;
    let (all, top, bottom) = (
        mean_colour(&sunset, 0..h),
        mean_colour(&sunset, 0..h / 3),
        mean_colour(&sunset, h - h / 3..h),
    );
    eprintln!("sunset: mean {all:?}, top third {top:?}, bottom third {bottom:?}");
    // Warm overall; red sky above the blue sea ("red sunset over the sea", in that order).
    assert!(all[0] > all[2] + 0.1, "not warm: {all:?}");
    assert!(top[0] > top[2] + 0.3, "the sky is not red: {top:?}");
    assert!(bottom[2] > bottom[0] + 0.1, "the sea is not blue: {bottom:?}");
    // Horizontal: the picture changes more from row to row than along a row.
    let (dy, dx) = gradients(&sunset);
    eprintln!("sunset: vertical gradient {dy:.5}, horizontal {dx:.5}");
    assert!(dy > 1.5 * dx, "not horizontal bands: |d/dy| {dy} vs |d/dx| {dx}");
    // Slow: much less change from frame to frame than a fast, stormy prompt.
    let (slow, fast) = (motion(&sunset), motion(&render("a fast storm over a dark forest")));
    eprintln!("frame-to-frame change: slow sunset {slow:.5}, fast storm {fast:.5}");
    assert!(slow * 2.0 < fast, "slow {slow} vs fast {fast}");
    // And blue for a blue ocean.
    let ocean = mean_colour(&render("a calm blue ocean"), 0..h);
    assert!(ocean[2] > ocean[0] + 0.2, "the ocean is not blue: {ocean:?}");
}
