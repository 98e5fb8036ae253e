//! Cluster tests with etcd: real `longshot` coordinator and worker processes started with
//! `--etcd`, a real etcd server (`longshot_tests::etcd_server`), driven through the CLI.

mod harness;

use harness::{submit, Cluster, ClusterOptions, BIN};
use longshot_tests::etcd_server::{free_port, EtcdServer, EtcdTls};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROMPT: &str = "a slow red sunset over the sea";
const TERMINAL: &[&str] = &["done", "failed", "cancelled"];
const INTERRUPTED: &str = "the coordinator restarted while this job was running";

fn options(etcd: &EtcdServer, lease_ttl_s: u64) -> ClusterOptions {
    ClusterOptions {
        coordinator_args: vec!["--etcd".into(), etcd.endpoint()],
        worker_args: vec![
            "--etcd".into(),
            etcd.endpoint(),
            "--lease-ttl".into(),
            lease_ttl_s.to_string(),
        ],
        ..Default::default()
    }
}

/// A job of a second or two.
fn small_job(c: &Cluster, priority: i32) -> String {
    let p = priority.to_string();
    submit(
        c,
        &[
            "--prompt",
            PROMPT,
            "--frames",
            "49",
            "--width",
            "64",
            "--height",
            "64",
            "--steps",
            "3",
            "--format",
            "mp4",
            "--priority",
            &p,
        ],
    )
}

/// A job that runs until it is stopped: 1000 steps over 3 windows at 128×128.
fn long_job(c: &Cluster) -> String {
    submit(
        c,
        &[
            "--prompt", PROMPT, "--frames", "209", "--width", "128", "--height", "128", "--steps", "1000", "--format",
            "mp4",
        ],
    )
}

fn finished_ms(c: &Cluster, job: &str) -> u64 {
    c.status(job)["finished_unix_ms"].as_u64().unwrap_or(0)
}

#[test]
fn a_restarted_coordinator_keeps_the_queue_and_the_history() {
    let etcd = EtcdServer::start();
    let mut c = Cluster::start_with(1, 30.0, options(&etcd, 3));
    let done = small_job(&c, 0);
    assert_eq!(
        c.wait_state(&done, TERMINAL, Duration::from_secs(120))["state"],
        "done",
        "{}",
        c.logs()
    );
    let out = c.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    c.ok(&["fetch", &done, "-o", out.join("before.mp4").to_str().unwrap()]);
    let running = long_job(&c);
    c.wait_steps(&running, 3);
    // The only worker is busy: these wait in the queue (priority first, then submission order).
    let (q1, q2, q3) = (small_job(&c, 0), small_job(&c, 5), small_job(&c, 0));
    let cancelled = small_job(&c, 0);
    c.ok(&["cancel", &cancelled]);
    let before_restart = c.status(&done);

    c.restart_coordinator();

    assert_eq!(c.status(&done), before_restart, "a done job is reported as it was");
    c.ok(&["fetch", &done, "-o", out.join("after.mp4").to_str().unwrap()]);
    assert!(
        std::fs::read(out.join("before.mp4")).unwrap() == std::fs::read(out.join("after.mp4")).unwrap(),
        "the output changed"
    );
    // The interrupted job is queued again to resume; it would hold the only worker for long.
    let s = c.status(&running);
    assert_eq!(
        (
            s["recovery"]["resumes"].as_u64(),
            s["recovery"]["last_interruption"].as_str()
        ),
        (Some(1), Some(INTERRUPTED)),
        "{s}"
    );
    c.ok(&["cancel", &running]);
    assert_eq!(c.status(&cancelled)["state"], "cancelled");
    for q in [&q1, &q2, &q3] {
        let s = c.wait_state(q, TERMINAL, Duration::from_secs(120));
        assert_eq!(
            s["state"],
            "done",
            "queued job {q} after the restart: {s}\n{}",
            c.logs()
        );
    }
    // One worker runs them one after another, in the original queue order.
    let order = [finished_ms(&c, &q2), finished_ms(&c, &q1), finished_ms(&c, &q3)];
    assert!(
        order[0] < order[1] && order[1] < order[2],
        "finish times {order:?} (expected q2, q1, q3)"
    );
    // Numbering continues after the loaded jobs; nothing was lost.
    let next = small_job(&c, 0);
    assert!(next.starts_with("job-0007-"), "{next}");
    let listed = c.ok(&["--json", "list"]);
    assert_eq!(listed.lines().count(), 7, "{listed}");
}

#[test]
fn a_render_survives_an_etcd_restart() {
    let mut etcd = EtcdServer::start();
    let mut c = Cluster::start_with(2, 30.0, options(&etcd, 10));
    let args = [
        "--prompt",
        PROMPT,
        "--frames",
        "209",
        "--width",
        "128",
        "--height",
        "128",
        "--steps",
        "500",
        "--format",
        "png,latents",
        "--seed",
        "7",
    ];
    let t = Instant::now();
    let reference = submit(&c, &args);
    let s = c.wait_state(&reference, TERMINAL, Duration::from_secs(300));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    let undisturbed = t.elapsed();
    let shape = [53, 16, 16, 16];
    let want = harness::fetch_render(&c, &reference, "reference", &shape);
    let t = Instant::now();
    let job = submit(&c, &args);
    c.wait_steps(&job, 3);
    etcd.stop();
    std::thread::sleep(Duration::from_secs(2));
    // Meanwhile the coordinator still answers and the job runs on: membership is served from the
    // last known state, and records are written once etcd is back.
    let s = c.status(&job);
    assert!(
        !TERMINAL.contains(&s["state"].as_str().unwrap_or("")),
        "the job must outlive the outage: {s}"
    );
    etcd.restart();
    let during = c.status(&job);
    assert!(
        !TERMINAL.contains(&during["state"].as_str().unwrap_or("")),
        "the job ended before etcd came back; make it longer: {during}"
    );
    let s = c.wait_state(&job, TERMINAL, Duration::from_secs(300));
    assert_eq!(s["state"], "done", "{s}\n{}\n{}", c.logs(), etcd.log_tail());
    let disturbed = t.elapsed();
    let got = harness::fetch_render(&c, &job, "disturbed", &shape);
    assert!(got == want, "outputs differ from the same job without the etcd restart");
    println!(
        "etcd restart mid-job: {:.1} s vs {:.1} s undisturbed (+{:.1} s)",
        disturbed.as_secs_f64(),
        undisturbed.as_secs_f64(),
        disturbed.as_secs_f64() - undisturbed.as_secs_f64()
    );
    // Leases outlive a short etcd restart (etcd extends them when it elects a leader).
    assert_eq!(c.workers().len(), 2);
    // The final record reached etcd: a new coordinator reports the job done.
    c.restart_coordinator();
    assert_eq!(c.status(&job)["state"], "done");
}

#[test]
fn a_frozen_worker_expires_its_job_resumes_and_it_registers_again() {
    let etcd = EtcdServer::start();
    let c = Cluster::start_with(2, 30.0, options(&etcd, 2));
    let job = submit(
        &c,
        &[
            "--prompt", PROMPT, "--frames", "209", "--width", "96", "--height", "64", "--steps", "300", "--format",
            "latents",
        ],
    );
    c.wait_steps(&job, 30);
    let t = Instant::now();
    c.signal_worker(1, "STOP");
    // Lease ttl 2 s + the run loop's 1 s tick: the job is back in the queue, then runs on w0.
    let deadline = Instant::now() + Duration::from_secs(12);
    while c.status(&job)["recovery"]["resumes"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no resume within 12 s\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let noticed = t.elapsed();
    let s = c.wait_state(&job, TERMINAL, Duration::from_secs(300));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    let reason = s["recovery"]["last_interruption"].as_str().unwrap_or_default();
    assert!(
        reason.contains("worker w1") && reason.contains("left the cluster"),
        "{reason}"
    );
    assert_eq!(s["plan"]["workers"], 1, "{s}");
    println!("the frozen worker's job resumed after {noticed:?}");
    c.signal_worker(1, "CONT");
    // It registers again under a new lease, and reports idle once its orphaned shard has stopped.
    c.wait_for_idle_workers(2);
    let next = submit(
        &c,
        &[
            "--prompt", PROMPT, "--frames", "129", "--width", "64", "--height", "64", "--steps", "3",
        ],
    );
    let s = c.wait_state(&next, TERMINAL, Duration::from_secs(120));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    assert_eq!(s["plan"]["workers"], 2);
}

#[test]
fn duplicate_ids_and_grpc_registration_are_refused() {
    let etcd = EtcdServer::start();
    let c = Cluster::start_with(1, 30.0, options(&etcd, 10));
    let out = Command::new(BIN)
        .args([
            "worker",
            "--etcd",
            &etcd.endpoint(),
            "--id",
            "w0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(c.member_args())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("worker id \"w0\" is already registered in etcd by a live worker at 127.0.0.1:"),
        "{stderr}"
    );
    let out = Command::new(BIN)
        .args([
            "--coordinator",
            &c.endpoint,
            "worker",
            "--id",
            "grpc",
            "--connect-timeout",
            "5",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(c.member_args())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let expected = format!(
        "this coordinator uses etcd membership; start workers with --etcd {}",
        etcd.endpoint()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(c.workers().len(), 1);
}

#[test]
fn an_unreachable_etcd_fails_start_up_within_the_bound() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let data = dir.path().join("data");
    let coordinator = Command::new(BIN)
        .args([
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--etcd",
            &url,
            "--metrics-listen",
            "127.0.0.1:0",
            "--insecure",
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let worker = Command::new(BIN)
        .args([
            "worker",
            "--etcd",
            &url,
            "--id",
            "w0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--insecure",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for (name, child) in [("coordinator", coordinator), ("worker", worker)] {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} started without etcd");
        assert!(
            stderr.contains(&format!("etcd at {url} is unreachable after")),
            "{name}: {stderr}"
        );
    }
    // Both retry for 10 s (exponential backoff), then give up.
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(13),
        "gave up after {took:?}"
    );
}

#[test]
fn longshot_up_with_etcd_registers_its_workers_there() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut up = Command::new(BIN)
        .args([
            "up",
            "--workers",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--etcd",
            &etcd.endpoint(),
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("up.log")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(up.stdout.take().unwrap()).read_line(&mut line).unwrap();
    // A CA made for this cluster, in the data dir.
    let endpoint = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_string();
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .arg("--coordinator")
            .arg(&endpoint)
            .arg("--ca")
            .arg(data.join("tls/ca.pem"))
            .args(args)
            .output()
            .unwrap()
    };
    let workers = String::from_utf8_lossy(&cli(&["--json", "workers"]).stdout).into_owned();
    assert_eq!(workers.lines().count(), 2, "{workers}");
    let out = cli(&[
        "submit", "--wait", "--prompt", PROMPT, "--frames", "49", "--width", "64", "--height", "64", "--steps", "3",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pid = up.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = up.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default();
    assert!(status.success(), "longshot up exited with {status}:\n{log}");
    // Stopped workers revoked their leases; the job record stayed.
    let c = Cluster::start_with(
        0,
        30.0,
        ClusterOptions {
            coordinator_args: vec!["--etcd".into(), etcd.endpoint()],
            worker_args: vec![],
            ..Default::default()
        },
    );
    assert!(c.workers().is_empty());
    let listed = c.ok(&["--json", "list"]);
    assert_eq!(
        listed.lines().count(),
        0,
        "another data dir's jobs are not loaded: {listed}"
    );
}

#[test]
fn a_cluster_uses_an_etcd_with_tls_client_certificates_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path();
    harness::make_certs(certs, "etcd", &["127.0.0.1"]);
    harness::make_certs(certs, "member", &[]);
    let path = |f: &str| certs.join(f).display().to_string();
    let etcd = EtcdServer::start_tls(EtcdTls {
        ca: certs.join("ca.pem"),
        cert: certs.join("etcd.pem"),
        key: certs.join("etcd.key"),
    });
    // etcd's authentication: root, and a `longshot` user with the root role.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let read = |f: &str| std::fs::read(certs.join(f)).unwrap();
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read("ca.pem")))
            .identity(etcd_client::Identity::from_pem(read("member.pem"), read("member.key")));
        let opts = etcd_client::ConnectOptions::new().with_tls(tls);
        let mut c = etcd_client::Client::connect([etcd.endpoint()], Some(opts))
            .await
            .expect("etcd over TLS");
        c.user_add("root", "root-password", None).await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.user_add("longshot", "s3cret", None).await.unwrap();
        c.user_grant_role("longshot", "root").await.unwrap();
        c.auth_enable().await.unwrap();
    });
    let access: Vec<String> = [
        "--etcd",
        &etcd.endpoint(),
        "--etcd-ca",
        &path("ca.pem"),
        "--etcd-cert",
        &path("member.pem"),
        "--etcd-key",
        &path("member.key"),
        "--etcd-user",
        "longshot",
    ]
    .map(String::from)
    .to_vec();
    let password = ("LONGSHOT_ETCD_PASSWORD".to_string(), "s3cret".to_string());
    let c = Cluster::start_with(
        2,
        30.0,
        ClusterOptions {
            coordinator_args: access.clone(),
            worker_args: access
                .iter()
                .cloned()
                .chain(["--lease-ttl".into(), "10".into()])
                .collect(),
            env: vec![password],
            ..Default::default()
        },
    );
    let job = small_job(&c, 0);
    let s = c.wait_state(&job, TERMINAL, Duration::from_secs(60));
    assert_eq!(s["state"], "done", "{s}\n{}", c.logs());
    // A wrong password, or no client certificate, and the coordinator refuses to start, saying why.
    for (env, args, expect) in [
        ("wrong", &access[..], "authentication failed"),
        ("s3cret", &access[..4], "etcd at https://"),
    ] {
        let out = Command::new(BIN)
            .args([
                "coordinator",
                "--insecure",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "off",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .env("LONGSHOT_ETCD_PASSWORD", env)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(expect), "{args:?}: {err}");
    }
}
