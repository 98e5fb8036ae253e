//! `longshot estimate` against a real coordinator and workers on the built-in model: no
//! prediction before the cluster has measured anything at that size, then a prediction from one
//! finished job that lands within 25% of a different job's actual wall time and CPU-seconds;
//! nothing is queued by asking, the measurements survive a coordinator restart, and a bad
//! request is refused by field.

mod harness;

use harness::{Cluster, ClusterOptions};
use longshot_tests::etcd_server::free_port;
use serde_json::Value;
use std::time::Duration;

const SIZE: &[&str] = &["--width", "128", "--height", "96", "--seed", "5"];

fn estimate(c: &Cluster, args: &[&str]) -> Value {
    estimate_at(c, args, SIZE)
}

fn estimate_at(c: &Cluster, args: &[&str], size: &[&str]) -> Value {
    let mut all = vec!["--json", "estimate"];
    all.extend_from_slice(args);
    all.extend_from_slice(size);
    serde_json::from_str(c.ok(&all).trim()).expect("estimate json")
}

/// Submits, waits, and returns the job's wall time (submitted to finished) and CPU-seconds.
fn run(c: &Cluster, args: &[&str]) -> (f64, f64) {
    let mut all = vec!["submit"];
    all.extend_from_slice(args);
    all.extend_from_slice(SIZE);
    let job = c.ok(&all).trim().to_string();
    let s = c.wait_state(&job, &["done", "failed"], Duration::from_secs(600));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    let ms = |k: &str| s[k].as_f64().unwrap();
    let wall = (ms("finished_unix_ms") - ms("submitted_unix_ms")) / 1000.0;
    (wall, s["cost"]["cpu_seconds"].as_f64().unwrap())
}

fn within(what: &str, predicted: f64, actual: f64, tolerance: f64) {
    let err = (predicted - actual).abs() / actual;
    eprintln!(
        "{what}: predicted {predicted:.2} s, actual {actual:.2} s ({:+.1}%)",
        100.0 * (predicted - actual) / actual
    );
    assert!(
        err <= tolerance,
        "{what}: predicted {predicted:.2} s, actual {actual:.2} s: {:.0}% off (at most {:.0}%)",
        100.0 * err,
        100.0 * tolerance
    );
}

#[test]
fn estimates_come_from_measured_jobs_and_match_the_next_job() {
    // A fixed port, so the workers find the restarted coordinator.
    let options = ClusterOptions {
        listen: Some(format!("127.0.0.1:{}", free_port())),
        ..Default::default()
    };
    let mut c = Cluster::start_with(2, 30.0, options);
    // Job B: 5 windows on the 2 workers (3 + 2), 300 steps.
    let b: &[&str] = &[
        "--frames",
        "281",
        "--steps",
        "300",
        "--prompt",
        "a slow tide under a pale moon",
    ];

    // Nothing measured yet: the plan, and no prediction.
    let e = estimate(&c, b);
    assert_eq!(e["prediction"], Value::Null, "{e}");
    assert_eq!(
        (e["plan"]["windows"].as_u64(), e["plan"]["workers"].as_u64()),
        (Some(5), Some(2)),
        "{e}"
    );
    assert_eq!(e["device_kind"], "cpu");
    let mut text_args = vec!["estimate"];
    text_args.extend_from_slice(b);
    text_args.extend_from_slice(SIZE);
    let text = c.ok(&text_args);
    assert!(
        text.contains("no measurements: this coordinator knows no finished job of"),
        "{text}"
    );
    assert!(text.contains("at 128x96 on cpu workers yet"), "{text}");

    // Job A measures the cluster: a different length, step count and prompt.
    run(
        &c,
        &[
            "--frames",
            "161",
            "--steps",
            "200",
            "--prompt",
            "a red kite over a windy beach",
        ],
    );
    let e = estimate(&c, b);
    let p = &e["prediction"];
    assert_eq!(p["jobs"], 1, "{e}");
    assert_eq!(e["jobs_ahead"], 0, "{e}");
    let (wall, cost) = (
        p["wall_seconds"].as_f64().unwrap(),
        p["cost"]["cpu_seconds"].as_f64().unwrap(),
    );
    assert_eq!(p["cost"]["gpu_seconds"], 0.0, "{e}");
    // Another size has no measurements.
    let other = estimate_at(
        &c,
        &["--frames", "81", "--prompt", "p"],
        &["--width", "64", "--height", "48"],
    );
    assert_eq!(other["prediction"], Value::Null, "{other}");

    let (actual_wall, actual_cost) = run(&c, b);
    within("wall time", wall, actual_wall, 0.25);
    within("CPU-seconds", cost, actual_cost, 0.25);

    // Asking queued nothing: only jobs A and B exist.
    let listed = c.ok(&["--json", "list"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");

    // The measurements are kept with the job records: a restarted coordinator still has both.
    c.restart_coordinator();
    c.wait_for_workers(2);
    let e = estimate(&c, b);
    assert_eq!(e["prediction"]["jobs"], 2, "{e}");
    let text = c.ok(&text_args);
    eprintln!("{text}");
    assert!(text.contains("once it starts (the cluster is free)"), "{text}");
    assert!(text.contains("from 2 finished jobs: "), "{text}");

    // A bad request is refused by field, before anything runs.
    let out = c.cli(&["estimate", "--frames", "81", "--steps", "0", "--prompt", "p"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("steps"), "{err}");
}
