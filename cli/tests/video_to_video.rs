//! Video-to-video on the built-in procedural model (`longshot render --video`), the laptop path:
//! the clip keeps the input's frame count and size, is bit-identical on 1 and 3 worker processes,
//! and stays closer to the input at a lower strength; bad inputs fail before any process starts.

mod harness;

use harness::{ffprobe, latent_bytes, read_png_dir, render_ok, render_timed, write_rgb_png};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// Writes `frames` PNG frames of `width × height` into `dir`: a gradient drifting to the right.
fn write_frames(dir: &Path, frames: usize, width: u32, height: u32) -> Vec<Vec<u8>> {
    std::fs::create_dir_all(dir).unwrap();
    (0..frames)
        .map(|f| {
            let data: Vec<u8> = (0..height)
                .flat_map(|y| (0..width).flat_map(move |x| [((x * 4 + f as u32 * 2) % 256) as u8, (y * 5) as u8, 200]))
                .collect();
            write_rgb_png(&dir.join(format!("{f:04}.png")), width, height, &data);
            data
        })
        .collect()
}

/// Every render's flags before its own.
const BASE: &[&str] = &["--prompt", "a calm green meadow", "--steps", "4", "--seed", "11"];

fn render(args: &[&str]) -> (Output, Duration) {
    render_timed(BASE, args)
}

fn ok(args: &[&str]) {
    render_ok(BASE, args)
}

/// Mean absolute difference of two clips' pixels, in [0, 255].
fn distance(a: &[Vec<u8>], b: &[Vec<u8>]) -> f64 {
    let (sum, n) = a.iter().zip(b).fold((0u64, 0u64), |(s, n), (x, y)| {
        let d: u64 = x.iter().zip(y).map(|(p, q)| u64::from(p.abs_diff(*q))).sum();
        (s + d, n + x.len() as u64)
    });
    sum as f64 / n as f64
}

#[test]
fn a_procedural_v2v_render_keeps_the_input_and_is_bit_identical_on_any_worker_count() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // 161 frames = 41 latents: three windows of 21 (overlap 5).
    let long = t.join("long");
    write_frames(&long, 161, 64, 48);
    let lat = |n: usize| t.join(format!("w{n}.safetensors"));
    for workers in ["1", "3"] {
        let out = lat(workers.parse().unwrap());
        ok(&[
            "--video",
            long.to_str().unwrap(),
            "--strength",
            "0.6",
            "--workers",
            workers,
            "-o",
            out.to_str().unwrap(),
        ]);
    }
    let shape = [41, 16, 6, 8];
    assert!(
        latent_bytes(&lat(1), &shape) == latent_bytes(&lat(3), &shape),
        "video-to-video latents differ between 1 and 3 workers"
    );

    // 50 frames (not 4k + 1): the clip has exactly the input's frame count and size.
    let short = t.join("short");
    let input = write_frames(&short, 50, 64, 48);
    let mp4 = t.join("clip.mp4");
    ok(&[
        "--video",
        short.to_str().unwrap(),
        "--workers",
        "1",
        "-o",
        mp4.to_str().unwrap(),
    ]);
    let probe = ffprobe(&mp4);
    let s = &probe["streams"][0];
    assert_eq!(
        (s["nb_read_frames"].as_str(), s["width"].as_u64(), s["height"].as_u64()),
        (Some("50"), Some(64), Some(48)),
        "{probe}"
    );
    // A lower strength keeps more of the input.
    let frames_at = |strength: &str| {
        let dir = t.join(format!("png-{strength}"));
        ok(&[
            "--video",
            short.to_str().unwrap(),
            "--strength",
            strength,
            "--workers",
            "1",
            "--format",
            "png",
            "-o",
            dir.to_str().unwrap(),
        ]);
        read_png_dir(&dir)
    };
    let (light, full) = (distance(&frames_at("0.25"), &input), distance(&frames_at("1"), &input));
    assert!(
        light < 0.7 * full,
        "strength 0.25 is {light} from the input, strength 1 {full}"
    );
}

#[test]
fn bad_video_inputs_fail_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let frames = t.join("frames");
    write_frames(&frames, 9, 64, 48);
    let v = frames.to_str().unwrap();
    let out = t.join("a.mp4");
    let o = out.to_str().unwrap();
    let empty = t.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let text = t.join("notes.txt");
    std::fs::write(&text, "not a video").unwrap();
    for (args, want) in [
        (
            vec!["--video", v, "--strength", "0"],
            "strength: strength 0 is not in (0, 1]",
        ),
        (
            vec!["--video", v, "--strength", "0.1"],
            "strength 0.1 runs no step of 4",
        ),
        (
            vec!["--video", v, "--frames", "17"],
            "the video has 9 frames, but the clip asks for 17",
        ),
        (
            vec!["--video", v, "--width", "96"],
            "the video is 64x48, but the clip is 96x48",
        ),
        (
            vec!["--video", empty.to_str().unwrap()],
            "the directory holds no .png frames",
        ),
        (vec!["--video", text.to_str().unwrap()], "not a video ffmpeg can read"),
        (vec!["--strength", "0.5"], "--video"),
    ] {
        let mut all = args.clone();
        all.extend(["--workers", "1", "-o", o]);
        let (res, took) = render(&all);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success() && stderr.contains(want), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("starting a local cluster"),
            "{args:?} started a cluster: {stderr}"
        );
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
    assert!(!out.exists());
}

/// A shot list over an input video: the video gives the frames, the shots the prompts.
#[test]
fn a_shot_list_over_a_video_is_bit_identical_on_any_worker_count() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let video = t.join("video");
    write_frames(&video, 161, 64, 48);
    let shots = t.join("shots.yaml");
    std::fs::write(
        &shots,
        "shots:\n  - prompt: a calm slow red sunset over the sea\n    frames: 80\n    transition: {blend: 3}\n  - prompt: a calm slow blue lagoon under the sky\n    frames: 81\n",
    )
    .unwrap();
    let base = [
        "--steps",
        "4",
        "--seed",
        "11",
        "--strength",
        "0.7",
        "--video",
        video.to_str().unwrap(),
    ];
    let lat = |name: &str| t.join(format!("{name}.safetensors"));
    for workers in ["1", "3"] {
        let out = lat(&format!("w{workers}"));
        let args = [
            "--shots",
            shots.to_str().unwrap(),
            "--workers",
            workers,
            "-o",
            out.to_str().unwrap(),
        ];
        render_ok(&base, &args);
    }
    let shape = [41, 16, 6, 8];
    let one = latent_bytes(&lat("w1"), &shape);
    assert!(
        one == latent_bytes(&lat("w3"), &shape),
        "shots over a video differ between 1 and 3 workers"
    );
    let plain = lat("plain");
    render_ok(
        &base,
        &[
            "--prompt",
            "a calm slow red sunset over the sea",
            "-o",
            plain.to_str().unwrap(),
        ],
    );
    assert!(one != latent_bytes(&plain, &shape), "the second shot changed nothing");
    // The shots must add up to the video's frames.
    let short = t.join("short.yaml");
    std::fs::write(
        &short,
        "shots:\n  - prompt: a calm slow red sunset over the sea\n    frames: 100\n",
    )
    .unwrap();
    let (out, _) = render_timed(
        &base,
        &["--shots", short.to_str().unwrap(), "-o", plain.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("make the shots add up to 161 frames"),
        "{stderr}"
    );
}
