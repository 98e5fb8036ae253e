//! Cluster tests: real `longshot` coordinator and worker processes talking gRPC on loopback,
//! driven through the CLI exactly as a user would.

mod harness;

use harness::{ffprobe, read_png_dir, submit, Cluster, BIN};
use std::process::Command;
use std::time::{Duration, Instant};

const PROMPT: &str = "a slow red sunset over the sea";
const TERMINAL: &[&str] = &["done", "failed", "cancelled"];

/// 209 frames = 53 latent frames = 3 windows of 21 (overlap 5) at 96×64.
const JOB: &[&str] = &[
    "--prompt", PROMPT, "--frames", "209", "--width", "96", "--height", "64", "--steps", "6", "--seed", "42",
];

fn tensor_bytes(path: &std::path::Path) -> Vec<u8> {
    harness::latent_bytes(path, &[53, 16, 8, 12])
}

#[test]
fn three_workers_render_bit_identical_frames_to_one_worker() {
    let mut renders = Vec::new();
    for workers in [1usize, 3] {
        // Asking for NCCL changes nothing on CPU workers: the gang falls back to TCP and says so.
        let options = harness::ClusterOptions {
            coordinator_args: vec!["--overlap-transport".into(), "nccl".into()],
            ..Default::default()
        };
        let c = Cluster::start_with(workers, 30.0, options);
        let mut args = JOB.to_vec();
        args.extend(["--format", "png,latents,mp4"]);
        let job = submit(&c, &args);
        let s = c.wait_state(&job, TERMINAL, Duration::from_secs(300));
        assert_eq!(s["state"], "done", "job failed: {s}\n{}", c.logs());
        assert_eq!(s["plan"]["windows"], 3);
        assert_eq!(s["plan"]["workers"], workers as u64);
        assert_eq!(s["seed"], 42);
        let out = c.dir.path().join("out");
        let (png, lat, mp4) = (out.join("frames"), out.join("clip.safetensors"), out.join("clip.mp4"));
        c.ok(&["fetch", &job, "-o", png.to_str().unwrap(), "--format", "png"]);
        c.ok(&["fetch", &job, "-o", lat.to_str().unwrap()]);
        c.ok(&["fetch", &job, "-o", mp4.to_str().unwrap()]);
        if workers == 1 {
            // A directory or a missing parent as the destination: a clear error, nothing written.
            let bad = c.cli(&["fetch", &job, "-o", out.to_str().unwrap(), "--format", "mp4"]);
            let err = String::from_utf8_lossy(&bad.stderr);
            assert!(!bad.status.success() && err.contains("is a directory"), "{err}");
            let missing = out.join("no/such/dir/a.mp4");
            let bad = c.cli(&["fetch", &job, "-o", missing.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&bad.stderr);
            assert!(!bad.status.success() && err.contains("no/such/dir"), "{err}");
            let mut names: Vec<_> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, ["clip.mp4", "clip.safetensors", "frames"], "no partial files");
        }
        let probe = ffprobe(&mp4);
        let v = &probe["streams"][0];
        assert_eq!(v["codec_name"], "h264");
        assert_eq!(v["pix_fmt"], "yuv420p");
        assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(96), Some(64)));
        assert_eq!(v["r_frame_rate"], "16/1");
        assert_eq!(v["nb_read_frames"], "209");
        let duration: f64 = probe["format"]["duration"]
            .as_str()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0.0);
        assert!((duration - 209.0 / 16.0).abs() < 0.1, "duration {duration}");
        let frames = read_png_dir(&png);
        assert_eq!(frames.len(), 209);
        assert!(frames.iter().all(|f| f.len() == 96 * 64 * 3));
        renders.push((frames, tensor_bytes(&lat)));
        if workers == 3 {
            let log = std::fs::read_to_string(c.dir.path().join("coordinator.log")).unwrap_or_default();
            assert!(
                log.contains("overlaps over TCP: worker") && log.contains("cannot join NCCL (no GPU or no libnccl)"),
                "no TCP fallback line:\n{log}"
            );
        }
    }
    assert!(renders[0].1 == renders[1].1, "latents differ between 1 and 3 workers");
    let differing = renders[0].0.iter().zip(&renders[1].0).filter(|(a, b)| a != b).count();
    assert_eq!(
        differing, 0,
        "{differing} decoded frames differ between 1 and 3 workers"
    );
}

/// A job long enough to interrupt: 1000 steps over 3 windows at 128×128.
fn long_job(c: &Cluster) -> String {
    submit(
        c,
        &[
            "--prompt", PROMPT, "--frames", "209", "--width", "128", "--height", "128", "--steps", "1000", "--format",
            "mp4",
        ],
    )
}

fn wait_progress(c: &Cluster, job: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while c.status(job)["steps_done"].as_u64().unwrap_or(0) < 3 {
        assert!(Instant::now() < deadline, "no progress on {job}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cancel_mid_job_frees_the_workers() {
    let c = Cluster::start(2, 30.0);
    let job = long_job(&c);
    wait_progress(&c, &job);
    let t = Instant::now();
    c.ok(&["cancel", &job]);
    let s = c.wait_state(&job, TERMINAL, Duration::from_secs(15));
    assert_eq!(s["state"], "cancelled", "{s}");
    assert!(t.elapsed() < Duration::from_secs(10), "cancel took {:?}", t.elapsed());
    assert!(s["steps_done"].as_u64().unwrap() < s["steps_total"].as_u64().unwrap());
    // The workers take the next job.
    let next = submit(
        &c,
        &[
            "--prompt", PROMPT, "--frames", "49", "--width", "64", "--height", "64", "--steps", "3",
        ],
    );
    let s = c.wait_state(&next, TERMINAL, Duration::from_secs(120));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
}

#[test]
fn bad_inputs_are_rejected_with_the_field_and_what_is_allowed() {
    let c = Cluster::start(1, 30.0);
    let base: &[(&str, &str)] = &[
        ("--prompt", PROMPT),
        ("--frames", "49"),
        ("--width", "64"),
        ("--height", "64"),
        ("--steps", "3"),
    ];
    let cases: &[((&str, &str), &str)] = &[
        (("--width", "1000"), "width: 1000 is not a multiple of 16"),
        (("--height", "0"), "height: 0 is not a multiple of 16"),
        (("--fps", "0"), "fps: 0 is not in 1..=120"),
        (("--fps", "500"), "fps: 500 is not in 1..=120"),
        (("--steps", "0"), "steps: 0 is not in 1..=1000"),
        (("--steps", "5000"), "steps: 5000 is not in 1..=1000"),
        (("--guidance", "-1"), "guidance: -1 is not in 0..=50"),
        (("--shift", "0"), "shift: 0 is not in (0, 100]"),
        (("--solver", "ddim"), "solver"),
        (("--overlap", "15"), "overlap: 15 is not in 0..=10"),
        (
            ("--model", "nope"),
            "model: \"nope\" is not served by any worker; available: procedural",
        ),
        (
            ("--format", "gif"),
            "output format \"gif\" is not one of: mp4, prores, png, latents",
        ),
        (("--priority", "500"), "priority: 500 is not in -100..=100"),
        (("--prompt", " "), "prompt: must not be empty"),
        (("--frames", "0"), "frames: must be at least 1"),
        (("--duration", "-5"), "duration: -5 seconds is not in (0, 3600]"),
    ];
    for ((flag, value), expected) in cases {
        let mut args = vec!["submit".to_string()];
        for (f, v) in base
            .iter()
            .filter(|(f, _)| f != flag && !(*flag == "--duration" && *f == "--frames"))
        {
            args.extend([f.to_string(), v.to_string()]);
        }
        args.push(format!("{flag}={value}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = c.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(
            stderr.contains(expected),
            "{flag} {value}: expected {expected:?} in {stderr:?}"
        );
    }
    // Several bad fields are all reported at once.
    let out = c.cli(&[
        "submit", "--prompt", PROMPT, "--frames", "49", "--width", "17", "--height", "64", "--fps", "0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("width: 17") && stderr.contains("fps: 0"), "{stderr}");
    // Nothing was created, and the coordinator still serves.
    assert_eq!(c.ok(&["--json", "list"]).trim(), "");
    let job = submit(
        &c,
        &[
            "--prompt", PROMPT, "--frames", "49", "--width", "64", "--height", "64", "--steps", "3",
        ],
    );
    assert_eq!(c.wait_state(&job, TERMINAL, Duration::from_secs(120))["state"], "done");
    // Unknown jobs are a clear error too.
    let out = c.cli(&["status", "job-0000-nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job \"job-0000-nope\""));
}

/// `longshot render --duration 20 --fps 16` gives exactly 320 frames (the model renders 321, the
/// 4k+1 grid above), the same clip with 1 and 3 workers, and a quiet terminal.
#[test]
fn longshot_render_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut clips = Vec::new();
    for workers in ["1", "3"] {
        let clip = dir.path().join(format!("clip-{workers}.mp4"));
        let args = [
            "render",
            "--prompt",
            PROMPT,
            "--duration",
            "20",
            "--fps",
            "16",
            "--width",
            "96",
            "--height",
            "64",
            "--steps",
            "4",
            "--seed",
            "5",
        ];
        let out = Command::new(BIN)
            .args(args)
            .args(["--workers", workers, "-o"])
            .arg(&clip)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "render failed: {stderr}");
        assert!(
            stderr.contains("wrote") && stderr.contains("320 frames (rendered 321 = 81 latent frames"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("OpenH264"),
            "the encoder's own log reached the terminal:\n{stderr}"
        );
        let probe = ffprobe(&clip);
        assert_eq!(probe["streams"][0]["nb_read_frames"], "320");
        assert_eq!(probe["streams"][0]["codec_name"], "h264");
        let duration: f64 = probe["format"]["duration"]
            .as_str()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0.0);
        assert!((duration - 20.0).abs() < 0.01, "duration {duration}");
        clips.push(std::fs::read(&clip).unwrap());
    }
    assert!(clips[0] == clips[1], "the MP4 differs between 1 and 3 workers");
    // No worker outlives the render (render's workers are the only ones with `local-` ids).
    let leftovers = Command::new("pgrep")
        .args(["-f", "worker .*--id local-"])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&leftovers.stdout);
    assert!(pids.trim().is_empty(), "left-over worker processes: {pids}");
}

/// `--json` reports the requested and the rendered frame counts.
#[test]
fn status_reports_requested_and_rendered_frames() {
    let c = Cluster::start(1, 30.0);
    let job = submit(
        &c,
        &[
            "--prompt", PROMPT, "--frames", "50", "--width", "64", "--height", "64", "--steps", "3",
        ],
    );
    let s = c.wait_state(&job, TERMINAL, Duration::from_secs(120));
    assert_eq!(s["state"], "done", "{s}");
    assert_eq!(
        (
            s["plan"]["output_frames"].as_u64(),
            s["plan"]["rendered_frames"].as_u64()
        ),
        (Some(50), Some(53)),
        "{s}"
    );
    let line = c.ok(&["status", &job]);
    assert!(line.contains("50 frames (53 rendered)"), "{line}");
}

#[test]
fn models_workers_and_watch_report_the_cluster() {
    let c = Cluster::start(2, 30.0);
    let models = c.ok(&["models"]);
    assert!(
        models.contains("procedural") && models.contains("window 21 latent frames (81 video frames)"),
        "{models}"
    );
    let workers = c.workers();
    assert_eq!(workers.len(), 2);
    assert!(
        workers
            .iter()
            .all(|w| w["device_kind"] == "cpu" && w["models"][0]["name"] == "procedural"),
        "{workers:?}"
    );
    let job = submit(
        &c,
        &[
            "--prompt", PROMPT, "--frames", "129", "--width", "64", "--height", "64", "--steps", "4",
        ],
    );
    // `watch --json` follows the job to its end: the last event is `done`, with the outputs.
    let out = c.ok(&["--json", "watch", &job]);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let last = &events.last().expect("events")["event"];
    assert_eq!(last["event"], "done", "{out}");
    assert_eq!(last["outputs"][0]["format"], "mp4");
    // Watching a finished job answers at once with its final state.
    let again = c.ok(&["--json", "watch", &job]);
    assert_eq!(again.lines().count(), 1, "{again}");
}
