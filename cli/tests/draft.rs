//! `--draft` and `longshot promote` against a real coordinator and workers on the built-in model:
//! a draft renders at half the size with a quarter of the steps and records what it previews;
//! promoting it renders exactly the full job (same bits as submitting that job directly with the
//! draft's seed), whose frames, scaled down, are nearer the draft's than another seed's are; a
//! job that is not a draft, or a size that does not halve, is refused by name.

mod harness;

use harness::{fetch_render, Cluster};
use std::time::Duration;

const FULL: &[&str] = &[
    "--prompt",
    "a red kite over a windy beach",
    "--frames",
    "81",
    "--width",
    "128",
    "--height",
    "96",
    "--steps",
    "8",
    "--format",
    "png,latents",
];
const DRAFT_SHAPE: &[usize] = &[21, 16, 6, 8];
const FULL_SHAPE: &[usize] = &[21, 16, 12, 16];

fn submit(c: &Cluster, extra: &[&str]) -> String {
    let mut all = vec!["submit"];
    all.extend_from_slice(FULL);
    all.extend_from_slice(extra);
    c.ok(&all).trim().to_string()
}

fn wait(c: &Cluster, job: &str) -> serde_json::Value {
    let s = c.wait_state(job, &["done", "failed"], Duration::from_secs(300));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    s
}

/// Mean absolute difference between `draft` frames (w×h RGB) and `full` frames (2w×2h) box-
/// downscaled by 2, over all frames.
fn distance(draft: &[Vec<u8>], full: &[Vec<u8>], w: usize, h: usize) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for (d, f) in draft.iter().zip(full) {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..3 {
                    let at = |yy: usize, xx: usize| f64::from(f[(yy * 2 * w + xx) * 3 + ch]);
                    let pooled =
                        (at(2 * y, 2 * x) + at(2 * y, 2 * x + 1) + at(2 * y + 1, 2 * x) + at(2 * y + 1, 2 * x + 1))
                            / 4.0;
                    sum += (f64::from(d[(y * w + x) * 3 + ch]) - pooled).abs();
                    n += 1;
                }
            }
        }
    }
    sum / n as f64
}

#[test]
fn a_draft_previews_the_job_promote_renders() {
    let c = Cluster::start(2, 30.0);
    let draft = submit(&c, &["--draft", "--seed", "3"]);
    let s = wait(&c, &draft);
    assert_eq!(
        (
            s["spec"]["width"].as_u64(),
            s["spec"]["height"].as_u64(),
            s["spec"]["steps"].as_u64()
        ),
        (Some(64), Some(48), Some(2)),
        "{s}"
    );
    assert_eq!(
        s["spec"]["draft"],
        serde_json::json!({"width": 128, "height": 96, "steps": 8}),
        "{s}"
    );
    let status = c.ok(&["status", &draft]);
    assert!(status.contains("draft of 128x96 at 8 steps"), "{status}");
    let (draft_latents, draft_frames) = fetch_render(&c, &draft, "draft", DRAFT_SHAPE);

    let out = c.ok(&["--json", "promote", &draft]);
    let promoted: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let job = promoted["job_id"].as_str().unwrap().to_string();
    assert_eq!(promoted["seed"], 3);
    let s = wait(&c, &job);
    assert_eq!(
        (s["spec"]["width"].as_u64(), s["spec"]["steps"].as_u64()),
        (Some(128), Some(8))
    );
    assert!(s["spec"]["draft"].is_null(), "{s}");
    let (latents, frames) = fetch_render(&c, &job, "promoted", FULL_SHAPE);

    // Exactly the full job with the draft's seed.
    let direct = submit(&c, &["--seed", "3"]);
    wait(&c, &direct);
    let (direct_latents, direct_frames) = fetch_render(&c, &direct, "direct", FULL_SHAPE);
    assert!(
        latents == direct_latents && frames == direct_frames,
        "promote differs from the full job"
    );
    assert_eq!(draft_latents.len() * 4, latents.len());

    // The draft starts from its promoted job's noise, pooled (`core::noise`'s unit test checks
    // that bit for bit), so it is closer to it than to another seed's full job. On the built-in
    // model only a little (14.3 against 15.3 levels on the dev VM): its 2 draft steps and 8 full
    // steps land far apart whatever the noise; how well a draft previews a real model's
    // composition is not measured yet.
    let other = submit(&c, &["--seed", "4"]);
    wait(&c, &other);
    let (_, other_frames) = fetch_render(&c, &other, "other", FULL_SHAPE);
    let (same, different) = (
        distance(&draft_frames, &frames, 64, 48),
        distance(&draft_frames, &other_frames, 64, 48),
    );
    eprintln!("draft vs its promoted job: {same:.2} levels; vs another seed's: {different:.2}");
    assert!(
        same < different,
        "draft-to-promoted {same:.2} is not under draft-to-other-seed {different:.2}"
    );

    // Refusals, by name.
    let out = c.cli(&["promote", &direct]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is not a draft"), "{err}");
    let out = c.cli(&[
        "submit", "--prompt", "p", "--width", "840", "--height", "480", "--draft",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--draft: width: 840 does not halve to a multiple of 16"),
        "{err}"
    );
}
