//! Live previews against a real coordinator and workers on the built-in model: `submit
//! --preview-every` and `watch --preview DIR` keep a low-resolution clip on disk while the job
//! runs; a watcher that joins late first gets the newest preview of every frame; the last
//! preview is close to the final frames; a preview interval that is not below the steps is
//! refused by name; `render --preview DIR` keeps one too, and refuses half of the pair.

mod harness;

use harness::{ffprobe, read_png_dir, render_ok, render_timed, Cluster, BIN};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// 209 frames = 53 latent frames = 3 windows at 128×96 (latent 16×12).
const JOB: &[&str] = &[
    "--prompt",
    "a paper boat drifting down a rain gutter",
    "--frames",
    "209",
    "--width",
    "128",
    "--height",
    "96",
    "--steps",
    "1000",
    "--preview-every",
    "250",
    "--seed",
    "8",
    "--format",
    "png",
];
const LATENT_FRAMES: usize = 53;

fn watch(c: &Cluster, job: &str, dir: &Path) -> Child {
    Command::new(BIN)
        .arg("--coordinator")
        .arg(&c.endpoint)
        .args(c.client_args())
        .args(["--json", "watch", job, "--preview"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run longshot watch")
}

/// The watcher's JSON event lines, after it exited successfully.
fn events(child: Child, c: &Cluster) -> Vec<serde_json::Value> {
    let out = child.wait_with_output().expect("watch");
    assert!(
        out.status.success(),
        "watch failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn preview_steps(events: &[serde_json::Value]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["event"]["event"] == "preview")
        .filter_map(|e| e["event"]["step"].as_u64())
        .collect()
}

#[test]
fn watch_keeps_the_live_preview_of_a_running_job() {
    let c = Cluster::start(2, 10.0);
    let job = c.ok(&[&["submit"][..], JOB].concat()).trim().to_string();
    let started = Instant::now();
    let first = c.dir.path().join("preview");
    let early = watch(&c, &job, &first);
    // A second watcher joins once every window has passed the first preview.
    c.wait_steps(&job, 3 * 300);
    let late_dir = c.dir.path().join("late");
    let late = watch(&c, &job, &late_dir);
    let (early, late) = (events(early, &c), events(late, &c));
    eprintln!("job took {:.1} s", started.elapsed().as_secs_f64());
    let status = c.status(&job);
    assert_eq!(status["state"], "done", "{status}");

    // Previews after 250, 500 and 750 of the 1000 steps (never after the last).
    let steps = preview_steps(&early);
    for s in [250, 500, 750] {
        assert!(steps.contains(&s), "no preview at step {s}: {steps:?}");
    }
    assert!(steps.iter().all(|s| [250, 500, 750].contains(s)), "{steps:?}");
    // The late watcher's first events after the plan are the previews made before it joined.
    let kinds: Vec<&str> = late.iter().filter_map(|e| e["event"]["event"].as_str()).collect();
    assert_eq!(kinds.len(), late.len());
    assert_eq!(kinds[0], "planned", "{kinds:?}");
    assert_eq!(
        kinds[1],
        "preview",
        "a late watcher starts with the clip's previews: {:?}",
        &kinds[..9]
    );
    assert!(late[1]["event"]["step"].as_u64() >= Some(250), "{}", late[1]);

    for dir in [&first, &late_dir] {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("preview.json")).expect("preview.json")).expect("json");
        assert_eq!(manifest["complete_step"], 750, "{manifest}");
        assert_eq!(manifest["total_steps"], 1000);
        assert_eq!(
            (manifest["width"].as_u64(), manifest["height"].as_u64()),
            (Some(16), Some(12))
        );
        assert_eq!(manifest["steps"].as_array().map(Vec::len), Some(LATENT_FRAMES));
        // 53 preview frames over the clip's 209 frames at 16 fps: 4 fps keeps its duration.
        assert_eq!(manifest["mp4_fps"], 4);
        let probe = ffprobe(&dir.join("preview.mp4"));
        let stream = &probe["streams"][0];
        assert_eq!(stream["codec_name"], "h264", "{probe}");
        // ×6: the short side at least 64 pixels.
        assert_eq!(
            (stream["width"].as_u64(), stream["height"].as_u64()),
            (Some(96), Some(72)),
            "{probe}"
        );
        assert_eq!(stream["nb_read_frames"], LATENT_FRAMES.to_string(), "{probe}");
    }
    let previews = read_png_dir(&first.join("frames"));
    assert_eq!(previews.len(), LATENT_FRAMES);
    assert_eq!(
        previews,
        read_png_dir(&late_dir.join("frames")),
        "both watchers end with the same preview"
    );

    // The last preview shows the final clip: latent frame l's last output frame, box-downscaled
    // ×8, within a few levels.
    let out = c.dir.path().join("frames");
    c.ok(&["fetch", &job, "-o", out.to_str().unwrap(), "--format", "png"]);
    let frames = read_png_dir(&out);
    let mut diff = 0.0;
    for (l, p) in previews.iter().enumerate() {
        assert_eq!(p.len(), 16 * 12 * 3);
        let f = &frames[if l == 0 { 0 } else { 4 * l }];
        for y in 0..12 {
            for x in 0..16 {
                for k in 0..3 {
                    let mut sum = 0.0;
                    for yy in 8 * y..8 * y + 8 {
                        for xx in 8 * x..8 * x + 8 {
                            sum += f64::from(f[(yy * 128 + xx) * 3 + k]);
                        }
                    }
                    diff += (sum / 64.0 - f64::from(p[(y * 16 + x) * 3 + k])).abs();
                }
            }
        }
    }
    let diff = diff / (LATENT_FRAMES * 16 * 12 * 3) as f64;
    eprintln!("last preview vs final frames: {diff:.2} levels");
    assert!(diff < 6.0, "the last preview is {diff:.2} levels from the final frames");
}

#[test]
fn a_preview_interval_not_below_the_steps_is_refused_by_name() {
    let c = Cluster::start(1, 10.0);
    let out = c.cli(&[
        "submit",
        "--prompt",
        "x",
        "--frames",
        "17",
        "--width",
        "64",
        "--height",
        "48",
        "--steps",
        "4",
        "--preview-every",
        "4",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("preview_every") && err.contains("not below the job's 4 steps"),
        "{err}"
    );
    assert_eq!(c.ok(&["--json", "list"]).trim(), "", "a refused job is not created");
}

#[test]
fn render_keeps_a_preview_and_wants_both_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clip, preview) = (dir.path().join("clip.mp4"), dir.path().join("preview"));
    let base = [
        "--prompt",
        "a kite",
        "--frames",
        "33",
        "--width",
        "64",
        "--height",
        "48",
        "--steps",
        "6",
        "--workers",
        "1",
    ];
    let (clip_s, preview_s) = (clip.to_str().unwrap(), preview.to_str().unwrap());
    for (args, want) in [
        (
            vec!["-o", clip_s, "--preview-every", "2"],
            "--preview-every 2 needs --preview DIR",
        ),
        (
            vec!["-o", clip_s, "--preview", preview_s],
            "--preview DIR needs --preview-every N",
        ),
    ] {
        let (out, _) = render_timed(&base, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!clip.exists() && !preview.exists(), "{args:?}: nothing is written");
    }
    render_ok(&base, &["-o", clip_s, "--preview-every", "2", "--preview", preview_s]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(preview.join("preview.json")).expect("preview.json")).expect("json");
    // 33 frames = 9 latent frames; previews after steps 2 and 4 of 6.
    assert_eq!(manifest["complete_step"], 4, "{manifest}");
    assert_eq!(manifest["steps"].as_array().map(Vec::len), Some(9));
    assert_eq!(read_png_dir(&preview.join("frames")).len(), 9);
    let probe = ffprobe(&preview.join("preview.mp4"));
    assert_eq!(probe["streams"][0]["width"], 88, "8x6 latent frames ×11: {probe}");
    assert!(clip.exists());
}
