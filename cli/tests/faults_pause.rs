//! A coordinator that does not run for a while (SIGSTOP, a suspended VM) must not blame its
//! healthy workers: the job it was running finishes, bit-identical to the same job undisturbed.

mod harness;

use harness::{latent_bytes, submit, Cluster};
use std::time::{Duration, Instant};

const TERMINAL: &[&str] = &["done", "failed", "cancelled"];
/// 209 frames = 53 latent frames = 3 windows of 21 (overlap 5) at 192×128; about 15 s undisturbed.
const JOB: &[&str] = &[
    "--prompt",
    "a slow red sunset over the sea",
    "--frames",
    "209",
    "--width",
    "192",
    "--height",
    "128",
    "--steps",
    "1000",
    "--seed",
    "7",
    "--format",
    "latents",
];
/// Far beyond the 3 s heartbeat expiry of the harness's coordinator.
const PAUSE: Duration = Duration::from_secs(25);

/// Runs the job on a fresh coordinator and 2 workers, pausing the coordinator for `pause` once
/// the job has made progress; returns the latents and the job's wall time.
fn render(pause: Option<Duration>) -> (Vec<u8>, Duration) {
    let c = Cluster::start(2, 60.0);
    let start = Instant::now();
    let job = submit(&c, JOB);
    if let Some(pause) = pause {
        c.wait_steps(&job, 2);
        c.signal_coordinator("STOP");
        std::thread::sleep(pause);
        c.signal_coordinator("CONT");
        // The workers kept working meanwhile, but the job cannot have ended without the
        // coordinator: its view of them after the pause decides the job's fate.
        let s = c.status(&job);
        assert!(!TERMINAL.contains(&s["state"].as_str().unwrap_or("")), "{s}");
        println!(
            "after the pause: {}, {} of {} steps done",
            s["state"], s["steps_done"], s["steps_total"]
        );
    }
    let s = c.wait_state(&job, TERMINAL, Duration::from_secs(600));
    let took = start.elapsed();
    assert_eq!(s["state"], "done", "job failed: {s}\n{}", c.logs());
    assert_eq!(s["plan"]["workers"], 2, "{s}");
    let out = c.dir.path().join("clip.safetensors");
    c.ok(&["fetch", &job, "-o", out.to_str().unwrap()]);
    (latent_bytes(&out, &[53, 16, 16, 24]), took)
}

#[test]
fn a_paused_coordinator_keeps_its_workers_and_finishes_the_job_bit_identically() {
    let (undisturbed, plain) = render(None);
    let (paused, with_pause) = render(Some(PAUSE));
    assert!(
        paused == undisturbed,
        "the latents differ after the coordinator's pause"
    );
    println!(
        "undisturbed {plain:.1?}, with a {PAUSE:?} coordinator pause {with_pause:.1?}: {:.1?} extra",
        with_pause.saturating_sub(plain)
    );
}
