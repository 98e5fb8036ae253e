//! Shot lists through the real CLI and cluster processes on the built-in model: `--shots` in
//! YAML or JSON renders one take bit-identically on 1 and 3 workers, a one-shot list renders
//! exactly what `--prompt` does, `status` lists the shots, and every schema error names the shot
//! and field before any process starts.

mod harness;

use harness::{ffprobe, latent_bytes, read_png_dir, render_ok, render_timed, submit, Cluster};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// 161 frames = 41 latent frames: three windows of 21 (overlap 5), 64×48.
const SHAPE: [usize; 4] = [41, 16, 6, 8];

const TWO_SHOTS: &str = "\
shots:
  - prompt: a calm slow red sunset over the sea
    frames: 80
    transition: {blend: 6}
  - prompt: a calm slow blue lagoon under the sky
    negative_prompt: fog
    duration: 5.0625
    seed: 77
";

/// Every render's flags before its own.
const BASE: &[&str] = &["--steps", "4", "--seed", "11", "--width", "64", "--height", "48"];

fn render(args: &[&str]) -> (Output, Duration) {
    render_timed(BASE, args)
}

fn ok(args: &[&str]) {
    render_ok(BASE, args)
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_shot_list_renders_one_take_bit_identically_on_any_worker_count() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let yaml = write(&t.join("shots.yaml"), TWO_SHOTS);
    let lat = |name: &str| t.join(format!("{name}.safetensors"));
    for workers in ["1", "3"] {
        let out = lat(&format!("w{workers}"));
        ok(&["--shots", &yaml, "--workers", workers, "-o", out.to_str().unwrap()]);
    }
    let one = latent_bytes(&lat("w1"), &SHAPE);
    assert!(
        one == latent_bytes(&lat("w3"), &SHAPE),
        "shot-list latents differ between 1 and 3 workers"
    );

    // The same list in JSON is the same job.
    let json = write(
        &t.join("shots.json"),
        r#"{"shots": [
            {"prompt": "a calm slow red sunset over the sea", "frames": 80, "transition": {"blend": 6}},
            {"prompt": "a calm slow blue lagoon under the sky", "negative_prompt": "fog", "frames": 81, "seed": 77}
        ]}"#,
    );
    ok(&["--shots", &json, "--workers", "2", "-o", lat("json").to_str().unwrap()]);
    assert!(
        one == latent_bytes(&lat("json"), &SHAPE),
        "the JSON list renders differently"
    );

    // The second prompt changes the take; a one-shot list is exactly the plain prompt job.
    let single = write(
        &t.join("one.yaml"),
        "shots:\n  - prompt: a calm slow red sunset over the sea\n    frames: 161\n",
    );
    ok(&[
        "--shots",
        &single,
        "--workers",
        "2",
        "-o",
        lat("single").to_str().unwrap(),
    ]);
    ok(&[
        "--prompt",
        "a calm slow red sunset over the sea",
        "--frames",
        "161",
        "--workers",
        "2",
        "-o",
        lat("plain").to_str().unwrap(),
    ]);
    let single = latent_bytes(&lat("single"), &SHAPE);
    assert!(
        single == latent_bytes(&lat("plain"), &SHAPE),
        "a one-shot list differs from --prompt"
    );
    assert!(single != one, "the second shot changed nothing");
}

#[test]
fn status_lists_the_shots_with_their_frames_and_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = write(&tmp.path().join("shots.yaml"), TWO_SHOTS);
    let c = Cluster::start(2, 30.0);
    c.wait_for_workers(2);
    let job = submit(
        &c,
        &[
            "--shots", &yaml, "--steps", "3", "--seed", "5", "--width", "64", "--height", "48",
        ],
    );
    c.wait_state(&job, &["done"], Duration::from_secs(120));
    let status = c.ok(&["status", &job]);
    for want in [
        "2 shots",
        "shot 0: frames 0..80  seed 5, blends into shot 1 over frames 32..128  \"a calm slow red sunset over the sea\"",
        "shot 1: frames 80..161  seed 77  \"a calm slow blue lagoon under the sky\"",
    ] {
        assert!(status.contains(want), "status lacks {want:?}:\n{status}");
    }
    let json = c.status(&job);
    assert_eq!(json["spec"]["shots"][1]["seed"], 77, "{json}");
    // Per-shot files are fetched by shot; a job without them, or a shot it lacks, is refused.
    let split = submit(
        &c,
        &[
            "--shots",
            &yaml,
            "--split-shots",
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "48",
        ],
    );
    c.wait_state(&split, &["done"], Duration::from_secs(120));
    let listed = c.ok(&["status", &split]);
    assert!(listed.contains("output clip.shot-01.mp4 (mp4"), "{listed}");
    let dst = tmp.path().join("s1.mp4");
    c.ok(&["fetch", &split, "--shot", "1", "-o", dst.to_str().unwrap()]);
    assert_eq!(ffprobe(&dst)["streams"][0]["nb_read_frames"], "81");
    for (job, shot, want) in [
        (split.as_str(), "2", "shot: 2 is not one of job"),
        (job.as_str(), "0", "wrote no per-shot files (submit with --split-shots)"),
    ] {
        let out = c.cli(&["fetch", job, "--shot", shot, "-o", dst.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(want), "{stderr}");
    }
}

#[test]
fn bad_shot_lists_fail_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let out = t.join("a.mp4");
    let cases = [
        ("shots:\n  - promt: a\n    frames: 9\n", "unknown field `promt`"),
        (
            "shots:\n  - prompt: a\n    frames: 9\n  - prompt: b\n    frames: 9\n",
            "shots[0].transition: is required between shots",
        ),
        (
            "shots:\n  - prompt: a\n    frames: 9\n    transition: {blend: 4}\n  - prompt: b\n    frames: 90\n",
            "shots[0].transition: the shot is 9 frames but its blends take 32 frames of it",
        ),
        (
            "shots:\n  - prompt: a\n    duration: 2\n    frames: 9\n",
            "shots[0].duration: give duration or frames, not both",
        ),
        (
            "shots:\n  - prompt: a\n    frames: 9\n    transition: {blend: 1}\n",
            "shots[0].transition: the last shot has no next shot",
        ),
        ("shots: []\n", "shots: list at least one shot"),
        ("shots:\n  - prompt: a\n    frames: [", "--shots"),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let file = write(&t.join(format!("bad{i}.yaml")), text);
        let (res, took) = render(&["--shots", &file, "--workers", "1", "-o", out.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success() && stderr.contains(want), "{text:?}: {stderr}");
        assert!(
            !stderr.contains("starting a local cluster"),
            "{text:?} started a cluster: {stderr}"
        );
        assert!(took < Duration::from_secs(5), "{text:?} took {took:?}");
    }
    let file = write(&t.join("ok.yaml"), "shots:\n  - prompt: a\n    frames: 9\n");
    let (res, _) = render(&["--shots", &file, "--prompt", "b", "-o", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        !res.status.success() && stderr.contains("cannot be used with"),
        "{stderr}"
    );
    let (res, _) = render(&["--shots", "/nonexistent.yaml", "-o", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("--shots: cannot read /nonexistent.yaml"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn split_shots_writes_each_shot_beside_the_clip() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let yaml = write(&t.join("shots.yaml"), TWO_SHOTS);
    let clip = t.join("clip.mp4");
    ok(&[
        "--shots",
        &yaml,
        "--split-shots",
        "--workers",
        "2",
        "--format",
        "mp4,png",
        "-o",
        clip.to_str().unwrap(),
    ]);
    // Shot 0 is frames 0..80, shot 1 frames 80..161.
    for (i, frames) in [(0, 80), (1, 81)] {
        let mp4 = t.join(format!("clip.shot-{i:02}.mp4"));
        let probe = ffprobe(&mp4);
        assert_eq!(
            probe["streams"][0]["nb_read_frames"],
            frames.to_string(),
            "{}: {probe}",
            mp4.display()
        );
    }
    let whole = read_png_dir(&t.join("clip.frames"));
    assert_eq!(whole.len(), 161);
    let first = read_png_dir(&t.join("clip.frames.shot-00"));
    let second = read_png_dir(&t.join("clip.frames.shot-01"));
    assert!(
        first == whole[..80] && second == whole[80..],
        "per-shot PNGs are not the clip's frames"
    );

    let (out, _) = render(&[
        "--prompt",
        "x",
        "--frames",
        "9",
        "--split-shots",
        "-o",
        clip.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--shots"), "{stderr}");
}
