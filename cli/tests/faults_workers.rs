//! Worker faults with real processes: a job whose worker is killed or frozen mid-run resumes from
//! its last checkpoint on the workers that are left and produces exactly the bits of the same job
//! undisturbed. Each test prints the extra wall time the fault cost.

mod harness;

use harness::{fetch_render, submit, Cluster, ClusterOptions, FAULT_JOB, FAULT_JOB_LATENTS};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TERMINAL: &[&str] = &["done", "failed", "cancelled"];

fn cluster(workers: usize) -> Cluster {
    // Checkpoints every 10 steps; neighbours wait 30 s for a frozen worker, far longer than the
    // 3 s its registration outlives its last heartbeat.
    let options = ClusterOptions {
        coordinator_args: vec!["--checkpoint-every".into(), "10".into()],
        ..Default::default()
    };
    Cluster::start_with(workers, 30.0, options)
}

/// Runs `FAULT_JOB` undisturbed: its outputs and wall time.
fn reference(c: &Cluster) -> ((Vec<u8>, Vec<Vec<u8>>), Duration) {
    let t = Instant::now();
    let job = submit(c, FAULT_JOB);
    let s = c.wait_state(&job, TERMINAL, Duration::from_secs(300));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    let wall = t.elapsed();
    (fetch_render(c, &job, "reference", FAULT_JOB_LATENTS), wall)
}

/// A step in the middle 20–70% of the job, different from run to run (printed, to reproduce).
fn random_fraction() -> f64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    0.2 + f64::from(nanos % 50) / 100.0
}

/// Waits until `job` has done `fraction` of its steps.
fn wait_fraction(c: &Cluster, job: &str, fraction: f64) -> u64 {
    let total = c.status(job)["steps_total"].as_u64().unwrap();
    let at = (total as f64 * fraction) as u64;
    c.wait_steps(job, at);
    at
}

fn assert_resumed_identically(c: &Cluster, job: &str, want: &(Vec<u8>, Vec<Vec<u8>>), fault: &str) {
    let s = c.wait_state(job, TERMINAL, Duration::from_secs(300));
    assert_eq!(s["state"], "done", "{fault}: {s}\n{}", c.logs());
    let r = &s["recovery"];
    assert!(r["resumes"].as_u64().unwrap() >= 1, "{fault}: {s}");
    assert!(
        r["last_interruption"].as_str().unwrap_or("").contains("w1"),
        "{fault}: the interruption must name the lost worker: {s}"
    );
    let got = fetch_render(c, job, "disturbed", FAULT_JOB_LATENTS);
    assert!(got.0 == want.0, "{fault}: latents differ from the undisturbed job");
    let differing = got.1.iter().zip(&want.1).filter(|(a, b)| a != b).count();
    assert_eq!((got.1.len(), differing), (want.1.len(), 0), "{fault}: frames differ");
}

#[test]
fn a_worker_killed_at_a_random_step_costs_only_the_steps_since_the_checkpoint() {
    let mut c = cluster(3);
    let (want, undisturbed) = reference(&c);
    let fraction = random_fraction();
    let t = Instant::now();
    let job = submit(&c, FAULT_JOB);
    let at = wait_fraction(&c, &job, fraction);
    c.kill_worker(1);
    assert_resumed_identically(&c, &job, &want, "SIGKILL");
    let s = c.status(&job);
    let disturbed = t.elapsed();
    // It went on with the two workers left, from a checkpoint, not from the start.
    assert_eq!(s["plan"]["workers"], 2, "{s}");
    assert!(s["recovery"]["checkpoint_step"].as_u64().unwrap() > 0, "{s}");
    let log = std::fs::read_to_string(c.dir.path().join("coordinator.log")).unwrap();
    assert!(log.contains("resuming from the checkpoint at step"), "{}", c.logs());
    println!(
        "SIGKILL of w1 after {at} window-steps ({:.0}%): {:.1} s vs {:.1} s undisturbed (+{:.1} s)",
        fraction * 100.0,
        disturbed.as_secs_f64(),
        undisturbed.as_secs_f64(),
        disturbed.as_secs_f64() - undisturbed.as_secs_f64()
    );
    // Checkpoints go when the job ends.
    let left = std::fs::read_dir(c.dir.path().join("data/checkpoints"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "checkpoints left behind");
}

#[test]
fn a_frozen_worker_is_left_behind_and_the_job_resumes_without_it() {
    let c = cluster(3);
    let (want, undisturbed) = reference(&c);
    let t = Instant::now();
    let job = submit(&c, FAULT_JOB);
    wait_fraction(&c, &job, 0.4);
    c.signal_worker(1, "STOP");
    assert_resumed_identically(&c, &job, &want, "SIGSTOP");
    let disturbed = t.elapsed();
    println!(
        "SIGSTOP of w1 at 40%: {:.1} s vs {:.1} s undisturbed (+{:.1} s)",
        disturbed.as_secs_f64(),
        undisturbed.as_secs_f64(),
        disturbed.as_secs_f64() - undisturbed.as_secs_f64()
    );
    // Thawed, it registers again and takes work.
    c.signal_worker(1, "CONT");
    c.wait_for_idle_workers(3);
    let next = submit(&c, FAULT_JOB);
    let s = c.wait_state(&next, TERMINAL, Duration::from_secs(300));
    assert_eq!(
        (s["state"].as_str(), s["plan"]["workers"].as_u64()),
        (Some("done"), Some(3)),
        "{s}"
    );
}
