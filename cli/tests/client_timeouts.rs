//! The CLI against a peer that accepts connections and never answers (a hung coordinator, a
//! wrong port with something else behind it): every command fails within `--timeout`, saying so,
//! instead of hanging.

mod harness;

use harness::BIN;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_silent_peer_fails_the_command_within_its_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and holds every connection, reading and writing nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let endpoint = format!("http://{addr}");
    for (args, env) in [
        (vec!["--timeout", "2", "list"], None),
        (vec!["status", "job-0001-00000000"], Some("2")),
        (
            vec!["--timeout", "2", "submit", "--prompt", "a harbour", "--frames", "49"],
            None,
        ),
    ] {
        let started = Instant::now();
        let mut cmd = Command::new(BIN);
        cmd.args(["--coordinator", &endpoint]).args(&args);
        if let Some(t) = env {
            cmd.env("LONGSHOT_TIMEOUT", t);
        }
        let out = cmd.output().expect("run longshot");
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains(&format!("the coordinator at {endpoint} did not answer within 2s")),
            "{args:?}: {err}"
        );
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(10),
            "{args:?} took {took:?}"
        );
    }
    let out = Command::new(BIN).args(["--timeout", "0", "list"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("\"0\" is not a number of seconds in (0, 86400]"),
        "{err}"
    );
}
