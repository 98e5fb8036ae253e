//! `longshot rerender` through the real CLI and cluster processes on the built-in model: a
//! middle range of a finished 6-window job re-rendered in place keeps every latent and frame
//! outside the range plus its margin bit for bit, gives the same bits on 3 workers and on 1, and
//! every bad request is refused by name before a job is created.

mod harness;

use harness::{fetch_render, submit, Cluster};
use std::time::Duration;

/// 401 frames = 101 latent frames: six windows of 21 (overlap 5, stride 16), 64×48.
const SHAPE: [usize; 4] = [101, 16, 6, 8];
const CLIP: &[&str] = &[
    "--prompt",
    "a calm slow red sunset over the sea",
    "--frames",
    "401",
    "--width",
    "64",
    "--height",
    "48",
    "--steps",
    "4",
    "--seed",
    "11",
];
/// Frames 180..220 (11.25 s..13.75 s at 16 fps) are latent frames 45..56; with the default margin
/// of three overlaps (15 latent frames) latents 30..71 may change, and the decoder's causal halo
/// of one latent frame carries a change one latent further: output frames 117..285.
const FROM: &str = "11.25";
const TO: &str = "13.75";
const TOUCHED_LATENTS: std::ops::Range<usize> = 30..71;
const MAY_DIFFER_FRAMES: std::ops::Range<usize> = 117..285;

fn frame_len() -> usize {
    SHAPE[1] * SHAPE[2] * SHAPE[3] * 4
}

#[test]
fn a_rerendered_range_keeps_the_rest_bit_for_bit_on_any_worker_count() {
    let c = Cluster::start(3, 30.0);
    c.wait_for_workers(3);
    let mut args = CLIP.to_vec();
    args.extend(["--format", "png,latents"]);
    let source = submit(&c, &args);
    c.wait_state(&source, &["done"], Duration::from_secs(120));
    let (src_latents, src_frames) = fetch_render(&c, &source, "source", &SHAPE);

    let edit = |tag: &str| {
        let job = c.ok(&[
            "rerender",
            &source,
            "--from",
            FROM,
            "--to",
            TO,
            "--prompt",
            "a calm slow blue lagoon under the sky",
        ]);
        let job = job.trim().to_string();
        let s = c.wait_state(&job, &["done", "failed"], Duration::from_secs(120));
        assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
        let workers = s["plan"]["workers"].as_u64().unwrap();
        (job.clone(), workers, fetch_render(&c, &job, tag, &SHAPE))
    };
    let (job3, workers3, (lat3, frames3)) = edit("three");
    assert_eq!(workers3, 3, "the first rerender runs on all three workers");
    let fl = frame_len();
    for l in 0..SHAPE[0] {
        let same = src_latents[l * fl..(l + 1) * fl] == lat3[l * fl..(l + 1) * fl];
        assert!(
            same || TOUCHED_LATENTS.contains(&l),
            "latent frame {l} changed outside the range and margin"
        );
    }
    let changed: Vec<usize> = (0..src_frames.len()).filter(|&i| src_frames[i] != frames3[i]).collect();
    assert_eq!(frames3.len(), 401);
    assert!(
        !changed.is_empty() && changed.iter().all(|i| MAY_DIFFER_FRAMES.contains(i)),
        "frames changed: {changed:?}"
    );
    assert!(
        (180..220).all(|i| changed.contains(&i)),
        "the range itself is re-rendered"
    );

    let status = c.ok(&["status", &job3]);
    let want = format!("rerender of {source}: frames 180..220 re-rendered, the rest kept from it");
    assert!(status.contains(&want), "status lacks {want:?}:\n{status}");

    // The same edit on one worker: the other two drained.
    let ids: Vec<String> = c
        .workers()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids[1..] {
        c.ok(&["drain", id]);
    }
    let (_, workers1, (lat1, frames1)) = edit("one");
    assert_eq!(workers1, 1);
    assert!(
        lat1 == lat3 && frames1 == frames3,
        "the rerender differs between 3 workers and 1"
    );
}

#[test]
fn bad_rerenders_are_refused_by_name_and_create_no_job() {
    let c = Cluster::start(1, 30.0);
    c.wait_for_workers(1);
    let mut args = CLIP.to_vec();
    args.extend(["--format", "mp4"]);
    let no_latents = submit(&c, &args);
    c.wait_state(&no_latents, &["done"], Duration::from_secs(120));
    let jobs_before = c.ok(&["list"]);
    let cases: [(&[&str], &str); 5] = [
        (
            &["rerender", &no_latents, "--from", "1", "--to", "2"],
            "rerender.source: job \"",
        ),
        (&["rerender", &no_latents, "--from", "1", "--to", "2"], "did not keep its latents"),
        (&["rerender", "job-nope", "--from", "1", "--to", "2"], "no job \"job-nope\""),
        (
            &["rerender", &no_latents, "--from", "20", "--to", "30"],
            "--from/--to: 20..30 s (frames 320..480) is not a non-empty range inside the clip's 25.06 s (401 frames at 16 fps)",
        ),
        (&["rerender", &no_latents, "--from", "-1", "--to", "2"], "--from: -1 is not a time"),
    ];
    for (args, want) in cases {
        let out = c.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(want), "{args:?}: {stderr}");
    }
    assert_eq!(c.ok(&["list"]), jobs_before, "a refused rerender created a job");
}

const THREE_SHOTS: &str = "\
shots:
  - prompt: a calm slow red sunset over the sea
    frames: 160
    transition: {blend: 2}
  - prompt: PROMPT
    frames: 160
    transition: {blend: 2}
  - prompt: a calm slow green forest in the rain
    frames: 161
";

/// Editing one shot of a take: the middle shot's prompt changed and only its frames re-rendered.
/// Shots 0 and 2 keep their frames bit for bit outside the margin.
#[test]
fn changing_the_middle_shot_by_rerendering_it_keeps_the_other_shots() {
    let c = Cluster::start(2, 30.0);
    c.wait_for_workers(2);
    let dir = c.dir.path().to_path_buf();
    let write = |name: &str, prompt: &str| {
        let p = dir.join(name);
        std::fs::write(&p, THREE_SHOTS.replace("PROMPT", prompt)).unwrap();
        p.to_str().unwrap().to_string()
    };
    let before = write("before.yaml", "a calm slow blue lagoon under the sky");
    let after = write("after.yaml", "a calm slow yellow desert at noon");
    let source = submit(
        &c,
        &[
            "--shots",
            &before,
            "--width",
            "64",
            "--height",
            "48",
            "--steps",
            "4",
            "--seed",
            "3",
            "--format",
            "png,latents",
        ],
    );
    c.wait_state(&source, &["done"], Duration::from_secs(120));
    // 481 frames = 121 latent frames.
    let shape = [121, 16, 6, 8];
    let (_, src) = fetch_render(&c, &source, "shots-source", &shape);
    // Shot 1 is frames 160..320 = 10 s..20 s: latents 40..81, with the margin 25..96; the decoder's
    // halo reaches latent 97, so output frames 97..389 may change.
    let job = c.ok(&["rerender", &source, "--from", "10", "--to", "20", "--shots", &after]);
    let job = job.trim();
    let s = c.wait_state(job, &["done", "failed"], Duration::from_secs(120));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    let (_, edit) = fetch_render(&c, job, "shots-edit", &shape);
    let changed: Vec<usize> = (0..src.len()).filter(|&i| src[i] != edit[i]).collect();
    assert!(
        !changed.is_empty() && changed.iter().all(|i| (97..389).contains(i)),
        "frames changed: {changed:?}"
    );
    assert!(
        (160..320).all(|i| changed.contains(&i)),
        "the middle shot is re-rendered"
    );
    // A shot list of another length is not the same clip.
    let longer = dir.join("longer.yaml");
    std::fs::write(
        &longer,
        THREE_SHOTS.replace("PROMPT", "x").replace("frames: 161", "frames: 170"),
    )
    .unwrap();
    let out = c.cli(&[
        "rerender",
        &source,
        "--from",
        "10",
        "--to",
        "20",
        "--shots",
        longer.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("--shots: the shots add up to 490 frames, job job-")
            && stderr.contains("has 481: a rerender keeps its source's length"),
        "{stderr}"
    );
}
