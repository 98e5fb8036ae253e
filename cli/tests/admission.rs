//! Admission at submit, with real processes: a job the cluster cannot hold is refused before it is
//! created, every limit it breaks named (the workers' memory budgets, the output bytes, the
//! configured caps), and the coordinator neither grows nor stops serving. The largest job the
//! field validation allows (4096×4096, an hour at 120 fps, latents) once made the coordinator
//! abort trying to allocate 1.8 TB.

mod harness;

use harness::{submit, Cluster, ClusterOptions};
use std::time::Duration;

const TERMINAL: &[&str] = &["done", "failed", "cancelled"];

fn cluster() -> Cluster {
    let options = ClusterOptions {
        coordinator_args: [
            "--max-frames",
            "2000",
            "--max-steps",
            "500",
            "--max-output-bytes",
            "10M",
        ]
        .map(String::from)
        .to_vec(),
        worker_args: vec!["--memory-budget".into(), "64M".into()],
        ..Default::default()
    };
    Cluster::start_with(2, 30.0, options)
}

/// Submits `args`, which must be refused; returns the error text.
fn refused(c: &Cluster, args: &[&str]) -> String {
    let mut all = vec!["submit", "--prompt", "a long take of a harbour at dawn"];
    all.extend_from_slice(args);
    let out = c.cli(&all);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} was accepted");
    err
}

#[test]
fn jobs_beyond_what_the_cluster_holds_are_refused_at_submit_naming_the_limit() {
    let c = cluster();
    let rss_before = c.coordinator_rss();

    let err = refused(
        &c,
        &[
            "--width",
            "4096",
            "--height",
            "4096",
            "--duration",
            "3600",
            "--fps",
            "120",
            "--format",
            "latents",
        ],
    );
    for part in [
        "width: a 4096×4096 window needs 2.8 GB of state; the largest budget among the 2 workers serving procedural is 67.1 MB (their --memory-budget)",
        "duration: 432000 frames is more than this cluster's limit of 2000 (--max-frames)",
        "outputs: need about 1.8 TB; 10.5 MB is this cluster's limit (--max-output-bytes)",
    ] {
        assert!(err.contains(part), "{part:?} not in {err:?}");
    }

    // Small windows, but more of them than the two workers' budgets hold together.
    let err = refused(
        &c,
        &[
            "--width", "256", "--height", "256", "--frames", "1000", "--format", "latents",
        ],
    );
    assert!(
        err.contains("frames: 1000 frames make 16 windows needing 176.2 MB of state; the 2 workers serving procedural hold at most 12 such windows"),
        "{err}"
    );
    let err = refused(
        &c,
        &[
            "--width", "256", "--height", "256", "--frames", "200", "--format", "png",
        ],
    );
    assert!(
        err.contains("outputs: need about 59.0 MB; 10.5 MB is this cluster's limit"),
        "{err}"
    );
    let err = refused(
        &c,
        &["--width", "64", "--height", "64", "--frames", "49", "--steps", "600"],
    );
    assert!(
        err.contains("steps: 600 is more than this cluster's limit of 500 (--max-steps)"),
        "{err}"
    );

    // Nothing was created, the coordinator did not grow, and a job within the limits runs.
    assert_eq!(c.ok(&["--json", "list"]).trim(), "");
    let grown = c.coordinator_rss().saturating_sub(rss_before);
    assert!(grown < 64 << 20, "the coordinator grew by {grown} bytes refusing jobs");
    let job = submit(
        &c,
        &[
            "--prompt",
            "a harbour",
            "--width",
            "256",
            "--height",
            "256",
            "--frames",
            "49",
            "--steps",
            "3",
            "--format",
            "latents",
        ],
    );
    let s = c.wait_state(&job, TERMINAL, Duration::from_secs(120));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
}

#[test]
fn a_client_submitting_too_fast_is_refused_saying_when_to_retry_and_others_are_not() {
    let options = ClusterOptions {
        coordinator_args: ["--max-submits-per-minute", "6", "--submit-burst", "2"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    let c = Cluster::start_with(1, 30.0, options);
    let job = [
        "--prompt", "x", "--frames", "49", "--width", "64", "--height", "64", "--steps", "2",
    ];
    let first = submit(&c, &job);
    submit(&c, &job);
    let mut args = vec!["submit"];
    args.extend_from_slice(&job);
    let out = c.cli(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a third submit within the burst of 2 succeeded");
    assert!(
        err.contains("too many jobs submitted from 127.0.0.1: at most 6 a minute in bursts of 2")
            && err.contains("retry in"),
        "{err}"
    );
    // Nothing was created by the refused submit; reads are not limited.
    let listed = c.ok(&["--json", "list"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert_eq!(c.wait_state(&first, TERMINAL, Duration::from_secs(60))["state"], "done");
}
