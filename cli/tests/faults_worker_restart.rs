//! A worker restarting under its own id and address (after kill -9, before its old registration
//! expired) takes that registration over and gets work at once; a different live worker claiming
//! the id is still refused. With etcd membership and with the coordinator's own registry.

mod harness;

use harness::{submit, Cluster, ClusterOptions, BIN};
use longshot_tests::etcd_server::{free_port, EtcdServer};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TERMINAL: &[&str] = &["done", "failed", "cancelled"];
/// The etcd lease of the killed worker outlives the whole restart by far.
const LEASE_TTL_S: u64 = 30;

fn spawn_worker(c: &Cluster, id: &str, port: u16, extra: &[String], log: &str) -> Child {
    Command::new(BIN)
        .args(["--coordinator", &c.endpoint, "worker", "--exit-on-stdin-close"])
        .args(c.member_args())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--id",
            id,
            "--metrics-listen",
            "off",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(c.dir.path().join(log)).expect("log"))
        .spawn()
        .expect("start worker")
}

/// Waits until the worker's log says it serves (it registered), failing if it exits.
fn wait_serving(c: &Cluster, child: &mut Child, log: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(c.dir.path().join(log)).unwrap_or_default();
        if text.contains("serving on") {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("worker exited ({status}):\n{text}");
        }
        assert!(Instant::now() < deadline, "worker did not register:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn restart_takes_over(options: ClusterOptions, worker_args: &[String]) {
    let c = Cluster::start_with(0, 30.0, options);
    let port = free_port();
    let mut first = spawn_worker(&c, "w0", port, worker_args, "w0-first.log");
    wait_serving(&c, &mut first, "w0-first.log");
    c.wait_for_workers(1);
    let _ = first.kill();
    let _ = first.wait();

    let restarted_at = Instant::now();
    let mut second = spawn_worker(&c, "w0", port, worker_args, "w0-second.log");
    wait_serving(&c, &mut second, "w0-second.log");
    let registered = restarted_at.elapsed();
    let job = submit(
        &c,
        &[
            "--prompt",
            "a slow red sunset over the sea",
            "--frames",
            "17",
            "--width",
            "64",
            "--height",
            "64",
            "--steps",
            "2",
        ],
    );
    let s = c.wait_state(&job, TERMINAL, Duration::from_secs(60));
    let served = restarted_at.elapsed();
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    println!("restarted worker registered after {registered:.1?}, its first job done after {served:.1?}");
    assert!(
        served < Duration::from_secs(LEASE_TTL_S / 2),
        "the restarted worker waited {served:?} for work"
    );

    // A different process claiming the live id from another address is refused.
    let mut dup = spawn_worker(&c, "w0", free_port(), worker_args, "w0-dup.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = dup.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the duplicate worker was not refused");
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(c.dir.path().join("w0-dup.log")).unwrap_or_default();
    assert!(!status.success(), "{text}");
    let owner = format!("127.0.0.1:{port}");
    assert!(
        text.contains("\"w0\" is already registered") && text.contains(&owner),
        "no clear refusal naming the live worker:\n{text}"
    );
    let workers = c.workers();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0]["address"], owner, "{workers:?}");
    drop(second.stdin.take());
    let _ = second.kill();
    let _ = second.wait();
}

#[test]
fn with_etcd_a_restarted_worker_takes_over_its_registration() {
    let etcd = EtcdServer::start();
    let options = ClusterOptions {
        coordinator_args: vec!["--etcd".into(), etcd.endpoint()],
        ..Default::default()
    };
    let args = [
        "--etcd".into(),
        etcd.endpoint(),
        "--lease-ttl".into(),
        LEASE_TTL_S.to_string(),
    ];
    restart_takes_over(options, &args);
}

#[test]
fn with_the_coordinators_registry_a_restarted_worker_takes_over_its_registration() {
    restart_takes_over(ClusterOptions::default(), &[]);
}
