//! Hard cuts through the real CLI and cluster processes on the built-in model: a shot list with a
//! blend and a cut renders its two takes side by side (3 workers) or in waves (1 worker) with
//! the same bits; the take after the cut is exactly the plain job of its shot; editing a shot
//! before the cut leaves the take after it untouched; the clip shows one cut and nothing else;
//! `status` names the cut.

mod harness;

use harness::{ffprobe, latent_bytes, read_png_dir, render_ok, submit, Cluster};
use longshot_core::seam::{d1, jump_ratio, Clip, FrameLayout, SeamGeometry};
use longshot_core::shots::shot_seed;
use std::path::Path;
use std::time::Duration;

/// Take 0: shots 0 and 1 (80 + 41 frames, blended) = 121 frames = 31 latent frames, two windows
/// of 21 (overlap 5); take 1: shot 2, 81 frames = 21 latent frames, one window. 64×48.
const TAKE0_LATENTS: usize = 31;
const SHAPE: [usize; 4] = [31 + 21, 16, 6, 8];
const CUT_FRAME: usize = 121;

fn shots(middle_prompt: &str) -> String {
    format!(
        "\
shots:
  - prompt: a calm slow red sunset over the sea
    frames: 80
    transition: {{blend: 2}}
  - prompt: {middle_prompt}
    frames: 41
    transition: cut
  - prompt: a quiet green forest at dawn
    frames: 81
"
    )
}

const BASE: &[&str] = &["--steps", "4", "--seed", "11", "--width", "64", "--height", "48"];

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Latent frames `frames` of a latents file of `shape`, as bytes.
fn latent_frames<'a>(bytes: &'a [u8], shape: &[usize; 4], frames: std::ops::Range<usize>) -> &'a [u8] {
    let per = shape[1] * shape[2] * shape[3] * 4;
    &bytes[frames.start * per..frames.end * per]
}

#[test]
fn a_cut_renders_separate_takes_with_the_same_bits_on_any_worker_count() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let yaml = write(&t.join("cut.yaml"), &shots("a calm slow blue lagoon under the sky"));
    let out = |name: &str| t.join(name).to_str().unwrap().to_string();
    // 1 worker runs the two takes one after the other; 3 workers run them side by side (two
    // workers on take 0's two windows, one on take 1).
    for workers in ["1", "3"] {
        let lat = out(&format!("w{workers}.safetensors"));
        render_ok(BASE, &["--shots", &yaml, "--workers", workers, "-o", &lat]);
    }
    let one = latent_bytes(&t.join("w1.safetensors"), &SHAPE);
    assert!(
        one == latent_bytes(&t.join("w3.safetensors"), &SHAPE),
        "cut-list latents differ between 1 and 3 workers"
    );

    // Editing the shot before the cut changes take 0 and leaves take 1 bit for bit.
    let edited = write(&t.join("edited.yaml"), &shots("a stormy grey harbour at night"));
    let lat = out("edited.safetensors");
    render_ok(BASE, &["--shots", &edited, "--workers", "2", "-o", &lat]);
    let edited = latent_bytes(Path::new(&lat), &SHAPE);
    assert!(
        latent_frames(&edited, &SHAPE, TAKE0_LATENTS..SHAPE[0]) == latent_frames(&one, &SHAPE, TAKE0_LATENTS..SHAPE[0]),
        "editing shot 1 changed the take after the cut"
    );
    assert!(
        latent_frames(&edited, &SHAPE, 0..TAKE0_LATENTS) != latent_frames(&one, &SHAPE, 0..TAKE0_LATENTS),
        "editing shot 1 changed nothing"
    );
}

/// Shots 0 and 1 alone: take 0 as a job of its own.
const TAKE0: &str = "\
shots:
  - prompt: a calm slow red sunset over the sea
    frames: 80
    transition: {blend: 2}
  - prompt: a calm slow blue lagoon under the sky
    frames: 41
";

#[test]
fn a_cut_shows_as_one_cut_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let yaml = write(&t.join("cut.yaml"), &shots("a calm slow blue lagoon under the sky"));
    let clip = t.join("clip.mp4");
    let png = ["--format", "mp4,png", "-o"];
    render_ok(
        BASE,
        &[
            &["--shots", &yaml, "--workers", "2"][..],
            &png,
            &[clip.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(ffprobe(&clip)["streams"][0]["nb_read_frames"], "202");
    let frames = read_png_dir(&t.join("clip.frames"));
    assert_eq!(frames.len(), 202);

    // Each take is exactly its shots rendered as a job of their own: take 0 is the blended pair
    // with the job's seed, take 1 the third shot with its seed (`shot_seed(11, 2)`).
    let take0 = write(&t.join("take0.yaml"), TAKE0);
    let alone0 = t.join("take0.mp4");
    render_ok(
        BASE,
        &[
            &["--shots", &take0, "--workers", "1"][..],
            &png,
            &[alone0.to_str().unwrap()],
        ]
        .concat(),
    );
    let seed = shot_seed(11, 2).to_string();
    let alone1 = t.join("take1.mp4");
    let plain = [
        "--prompt",
        "a quiet green forest at dawn",
        "--frames",
        "81",
        "--seed",
        &seed,
        "--workers",
        "1",
    ];
    render_ok(
        &["--steps", "4", "--width", "64", "--height", "48"],
        &[&plain[..], &png, &[alone1.to_str().unwrap()]].concat(),
    );
    assert!(
        frames[..CUT_FRAME] == read_png_dir(&t.join("take0.frames")),
        "take 0 is not its shots rendered alone"
    );
    assert!(
        frames[CUT_FRAME..] == read_png_dir(&t.join("take1.frames")),
        "take 1 is not its shot rendered alone"
    );

    // So every frame step but the cut is a step of a take: the cut is the one jump. d[i] is the
    // change from frame i to i + 1 (the cut is d[120]); a step's seam jump ratio is the step over
    // the median step 8–24 frames away.
    let frames: Vec<Vec<f32>> = frames
        .iter()
        .map(|f| f.iter().map(|&b| f32::from(b) / 255.0).collect())
        .collect();
    let d = d1(&Clip {
        frames: frames.iter().map(Vec::as_slice).collect(),
        channels: 3,
        height: 48,
        width: 64,
        layout: FrameLayout::Hwc,
    });
    let sjr = |i: usize| jump_ratio(&d, 0, i..i + 1, SeamGeometry::FRAMES).unwrap_or(0.0);
    let cut = sjr(CUT_FRAME - 1);
    let (elsewhere, at) = (0..d.len())
        .filter(|&i| i != CUT_FRAME - 1)
        .map(|i| (sjr(i), i))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    eprintln!("seam jump ratio at the cut {cut:.1}; largest elsewhere {elsewhere:.2} (frame step {at})");
    assert!(cut > 20.0, "the cut does not show: {cut}");
    assert!(
        elsewhere * 20.0 < cut,
        "frame step {at} jumps too ({elsewhere}) beside the cut's {cut}"
    );
}

#[test]
fn status_names_the_cut_and_the_takes() {
    let tmp = tempfile::tempdir().unwrap();
    // The take after the cut reuses shot 0's prompt: it is encoded once for the job.
    let list = shots("a calm slow blue lagoon under the sky")
        .replace("a quiet green forest at dawn", "a calm slow red sunset over the sea");
    let yaml = write(&tmp.path().join("cut.yaml"), &list);
    let c = Cluster::start(1, 30.0);
    c.wait_for_workers(1);
    let job = submit(
        &c,
        &[
            "--shots", &yaml, "--steps", "2", "--seed", "5", "--width", "64", "--height", "48",
        ],
    );
    c.wait_state(&job, &["done"], Duration::from_secs(120));
    let status = c.ok(&["status", &job]);
    for want in [
        "3 windows in 2 takes / 202 frames (202 rendered) on 1 workers",
        "shot 1: frames 80..121  seed ",
        ", cut to shot 2",
        "shot 2: frames 121..202",
    ] {
        assert!(status.contains(want), "status lacks {want:?}:\n{status}");
    }
    let json = c.status(&job);
    assert_eq!(json["steps_done"], 6, "{json}");
    // Its cost: the one CPU worker's time on the two waves' shards, within the job's wall time.
    let (cpu, gpu) = (
        json["cost"]["cpu_seconds"].as_f64().unwrap(),
        json["cost"]["gpu_seconds"].as_f64().unwrap(),
    );
    let wall = (json["finished_unix_ms"].as_u64().unwrap() - json["submitted_unix_ms"].as_u64().unwrap()) as f64 / 1e3;
    assert!(
        cpu > 0.0 && cpu <= wall + 0.01 && gpu == 0.0,
        "cost {cpu} CPU-s, {gpu} GPU-s in {wall} s: {json}"
    );
    assert!(
        status.contains("CPU-seconds (device time summed over its workers)"),
        "{status}"
    );
    let log = std::fs::read_to_string(c.dir.path().join("worker-0.log")).unwrap();
    assert_eq!(
        log.matches("encoded the prompts").count(),
        2,
        "two distinct prompts:\n{log}"
    );
}

/// Three takes of one window each on two workers: two waves. A worker killed during the first
/// wave costs the steps since the checkpoint, and the job ends with the undisturbed bits.
#[test]
fn a_cut_job_in_waves_resumes_from_its_checkpoint_with_the_same_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let list = "shots:\n".to_string()
        + &["a lighthouse in a storm", "a harbour at dawn", "gulls over a calm sea"]
            .map(|p| format!("  - prompt: {p}\n    frames: 81\n    transition: cut\n"))
            .concat();
    let yaml = write(
        &tmp.path().join("takes.yaml"),
        list.trim_end_matches("    transition: cut\n"),
    );
    let job_args = [
        "--shots",
        &yaml,
        "--width",
        "96",
        "--height",
        "64",
        "--steps",
        "1000",
        "--seed",
        "31",
        "--format",
        "png,latents",
    ];
    let shape = [63, 16, 8, 12];
    let options = harness::ClusterOptions {
        coordinator_args: vec!["--checkpoint-every".into(), "10".into()],
        ..Default::default()
    };
    let mut c = Cluster::start_with(2, 30.0, options);
    let reference = submit(&c, &job_args);
    let s = c.wait_state(&reference, &["done", "failed"], Duration::from_secs(300));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    assert_eq!(s["plan"]["windows"], 3, "{s}");
    let want = harness::fetch_render(&c, &reference, "reference", &shape);

    let job = submit(&c, &job_args);
    // 3,000 window-steps; the first wave (takes 0 and 1) is the first 2,000.
    c.wait_steps(&job, 600);
    c.kill_worker(1);
    let s = c.wait_state(&job, &["done", "failed"], Duration::from_secs(300));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    assert!(s["recovery"]["resumes"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["recovery"]["checkpoint_step"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["plan"]["workers"], 1, "{s}");
    let got = harness::fetch_render(&c, &job, "disturbed", &shape);
    assert!(got.0 == want.0, "latents differ from the undisturbed job");
    assert!(got.1 == want.1, "frames differ from the undisturbed job");
    assert_eq!(got.1.len(), 243);
}

/// A cut with a reference image is refused before any process starts, naming the cut.
#[test]
fn a_cut_with_an_image_is_refused_at_the_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let yaml = write(&t.join("cut.yaml"), &shots("a calm slow blue lagoon under the sky"));
    let image = t.join("first.png");
    harness::write_rgb_png(&image, 64, 48, &[128; 64 * 48 * 3]);
    let out = t.join("a.mp4");
    let args = [
        "--shots",
        &yaml,
        "--image",
        image.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    let (res, _) = harness::render_timed(BASE, &args);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{stderr}");
    assert!(
        stderr.contains("shots[1].transition: a cut is not supported with a reference image (--image) yet"),
        "{stderr}"
    );
    assert!(!stderr.contains("starting a local cluster"), "{stderr}");
    assert!(!out.exists());
}

/// `rerender` of a job with a cut: the range's take is re-rendered (its ramp stays inside the
/// take), the take it misses is kept bit for bit, latents and frames; moving the cut is refused.
#[test]
fn a_rerender_of_a_cut_job_keeps_the_takes_it_misses() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = write(
        &tmp.path().join("cut.yaml"),
        &shots("a calm slow blue lagoon under the sky"),
    );
    let c = Cluster::start(2, 30.0);
    let source = submit(
        &c,
        &[
            "--shots",
            &yaml,
            "--steps",
            "4",
            "--seed",
            "11",
            "--width",
            "64",
            "--height",
            "48",
            "--format",
            "png,latents",
        ],
    );
    c.wait_state(&source, &["done"], Duration::from_secs(120));
    let (src_latents, src_frames) = harness::fetch_render(&c, &source, "source", &SHAPE);
    // Seconds 8..9 (frames 128..144) lie in take 1, which starts at frame 121; take 0 is kept.
    for (from, to, kept, redone) in [("8", "9", 0, 1), ("2", "3", 1, 0)] {
        let job = c.ok(&["rerender", &source, "--from", from, "--to", to, "--seed", "99"]);
        let job = job.trim();
        let s = c.wait_state(job, &["done", "failed"], Duration::from_secs(120));
        assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
        let (latents, frames) = harness::fetch_render(&c, job, &format!("re-{from}"), &SHAPE);
        let take = |t: usize| {
            if t == 0 {
                0..TAKE0_LATENTS
            } else {
                TAKE0_LATENTS..SHAPE[0]
            }
        };
        let take_frames = |t: usize| if t == 0 { 0..CUT_FRAME } else { CUT_FRAME..202 };
        assert!(
            latent_frames(&latents, &SHAPE, take(kept)) == latent_frames(&src_latents, &SHAPE, take(kept)),
            "{from}..{to} s: take {kept}'s latents changed"
        );
        assert!(
            frames[take_frames(kept)] == src_frames[take_frames(kept)],
            "{from}..{to} s: take {kept}'s frames changed"
        );
        assert!(
            latent_frames(&latents, &SHAPE, take(redone)) != latent_frames(&src_latents, &SHAPE, take(redone)),
            "{from}..{to} s: take {redone} was not re-rendered"
        );
    }
    // A list whose cut lies elsewhere has another latent layout: refused, naming the takes.
    let moved = write(
        &tmp.path().join("moved.yaml"),
        &shots("a calm slow blue lagoon under the sky")
            .replace("frames: 41", "frames: 45")
            .replace("frames: 81", "frames: 77"),
    );
    let out = c.cli(&["rerender", &source, "--from", "1", "--to", "2", "--shots", &moved]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("a rerender keeps its source job's cuts"),
        "{stderr}"
    );
}
