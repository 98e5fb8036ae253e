//! Coordinator faults with real processes: a coordinator killed (SIGKILL) mid-job and restarted,
//! without etcd (job records in `<data dir>/jobs.redb`) and with etcd, and a leader killed with a
//! standby ready. Each interrupted job must finish with latents bit-identical to the same job
//! undisturbed; the extra wall time is printed.

mod harness;

use harness::{submit, Cluster, ClusterOptions, BIN};
use longshot_tests::etcd_server::{free_port, EtcdServer};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TERMINAL: &[&str] = &["done", "failed", "cancelled"];
const INTERRUPTED: &str = "the coordinator restarted while this job was running";

/// 3 windows, 300 steps: several seconds on two workers of the test build.
const JOB: &[&str] = &[
    "--prompt",
    "a slow red sunset over the sea",
    "--frames",
    "209",
    "--width",
    "96",
    "--height",
    "64",
    "--steps",
    "300",
    "--seed",
    "7",
    "--format",
    "latents",
];

/// A job of a second or two.
const SMALL: &[&str] = &[
    "--prompt",
    "a small blue boat",
    "--frames",
    "49",
    "--width",
    "64",
    "--height",
    "64",
    "--steps",
    "3",
    "--seed",
    "3",
    "--format",
    "latents",
];

/// Polls `endpoint`'s health service `longshot.v1.Leader` (what the Helm chart's readiness probe
/// checks) until it is `want` ("Serving" or "NotServing"), for up to 5 s.
fn leader_health_becomes(c: &Cluster, endpoint: &str, want: &str) {
    // The coordinator serves TLS with the cluster's CA (the harness's default).
    let ca = std::fs::read_to_string(c.dir.path().join("certs/ca.pem")).expect("the cluster's CA");
    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca));
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let got = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = match tonic::transport::Endpoint::from_shared(endpoint.to_string())
                .expect("endpoint")
                .tls_config(tls.clone())
                .expect("tls")
                .connect()
                .await
            {
                Ok(ch) => {
                    let request = HealthCheckRequest {
                        service: "longshot.v1.Leader".into(),
                    };
                    match HealthClient::new(ch).check(request).await {
                        Ok(r) => format!("{:?}", r.into_inner().status()),
                        Err(e) => format!("error {e}"),
                    }
                }
                Err(e) => format!("cannot connect: {e}"),
            };
            if got == want || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(got, want, "{endpoint}: leader health");
}

fn wall_ms(s: &serde_json::Value) -> i64 {
    s["finished_unix_ms"].as_i64().unwrap_or(0) - s["submitted_unix_ms"].as_i64().unwrap_or(0)
}

fn done(c: &Cluster, job: &str, timeout: Duration) -> serde_json::Value {
    let s = c.wait_state(job, TERMINAL, timeout);
    assert_eq!(s["state"], "done", "{job}: {s}\n{}", c.logs());
    s
}

fn fetch_latents(c: &Cluster, job: &str, name: &str) -> Vec<u8> {
    let path = c.dir.path().join(name);
    c.ok(&["fetch", job, "--format", "latents", "-o", path.to_str().unwrap()]);
    let bytes = std::fs::read(&path).expect("fetched");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    st.tensor("latents").expect("latents").data().to_vec()
}

/// The undisturbed reference: (latents, wall ms).
fn reference(c: &Cluster) -> (Vec<u8>, i64) {
    let job = submit(c, JOB);
    let s = done(c, &job, Duration::from_secs(300));
    (fetch_latents(c, &job, "reference.safetensors"), wall_ms(&s))
}

/// Submits the job, a queued one behind it, kills and restarts the coordinator mid-job, and checks
/// that everything finishes as if nothing happened.
fn restart_mid_job(mut c: Cluster, what: &str) {
    let small = submit(&c, SMALL);
    done(&c, &small, Duration::from_secs(120));
    let small_before = fetch_latents(&c, &small, "small-before.safetensors");
    let (expected, undisturbed_ms) = reference(&c);
    let job = submit(&c, JOB);
    c.wait_steps(&job, 90);
    let queued = submit(&c, SMALL);
    c.restart_coordinator();
    let restarted = Instant::now();
    let s = c.status(&job);
    assert_eq!(s["recovery"]["resumes"], 1, "{s}");
    assert_eq!(s["recovery"]["last_interruption"], INTERRUPTED, "{s}");
    assert!(
        s["recovery"]["checkpoint_step"].as_u64().unwrap_or(0) > 0,
        "the job resumes from a checkpoint, not from noise: {s}"
    );
    assert!(
        ["queued", "running", "decoding", "done"].contains(&s["state"].as_str().unwrap_or("")),
        "{s}"
    );
    let back_ms = restarted.elapsed().as_millis();
    assert_eq!(
        fetch_latents(&c, &small, "small-after.safetensors"),
        small_before,
        "a job finished before the restart is fetchable, unchanged"
    );
    let s = done(&c, &job, Duration::from_secs(300));
    assert!(
        fetch_latents(&c, &job, "resumed.safetensors") == expected,
        "the interrupted job's latents differ from the undisturbed job's"
    );
    done(&c, &queued, Duration::from_secs(120));
    eprintln!(
        "{what}: undisturbed {undisturbed_ms} ms, interrupted {} ms: {} ms extra (the coordinator answered {back_ms} ms after its restart)",
        wall_ms(&s),
        wall_ms(&s) - undisturbed_ms
    );
}

#[test]
fn a_coordinator_without_etcd_restarted_mid_job_finishes_it_identically() {
    let options = ClusterOptions {
        listen: Some(format!("127.0.0.1:{}", free_port())),
        ..Default::default()
    };
    let c = Cluster::start_with(2, 30.0, options);
    restart_mid_job(c, "restart without etcd");
}

#[test]
fn a_coordinator_with_etcd_restarted_mid_job_finishes_it_identically() {
    let etcd = EtcdServer::start();
    let options = ClusterOptions {
        coordinator_args: vec!["--etcd".into(), etcd.endpoint(), "--leader-ttl".into(), "3".into()],
        worker_args: vec!["--etcd".into(), etcd.endpoint(), "--lease-ttl".into(), "5".into()],
        ..Default::default()
    };
    let c = Cluster::start_with(2, 30.0, options);
    restart_mid_job(c, "restart with etcd");
}

#[test]
fn a_standby_takes_over_from_a_killed_leader_within_15_s() {
    let etcd = EtcdServer::start();
    let options = ClusterOptions {
        coordinator_args: vec!["--etcd".into(), etcd.endpoint()],
        worker_args: vec!["--etcd".into(), etcd.endpoint(), "--lease-ttl".into(), "5".into()],
        ..Default::default()
    };
    let mut c = Cluster::start_with(2, 30.0, options);
    let leader = c.endpoint.clone();
    let standby = c.add_coordinator();
    c.endpoint = format!("{leader},{standby}");
    let (expected, undisturbed_ms) = reference(&c);
    // The standby names the leader.
    let out = Command::new(BIN)
        .args(["--coordinator", &standby, "list"])
        .args(c.client_args())
        .output()
        .expect("run longshot");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("error"),
        "a CLI pointed at the standby alone follows it to the leader: {err}"
    );
    leader_health_becomes(&c, &leader, "Serving");
    leader_health_becomes(&c, &standby, "NotServing");
    let job = submit(&c, JOB);
    c.wait_steps(&job, 90);
    // Following the job through both addresses survives the fail-over.
    let watch = Command::new(BIN)
        .args(["--coordinator", &c.endpoint, "--json", "watch", &job])
        .args(c.client_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start watch");
    c.kill_coordinator();
    let killed = Instant::now();
    let s = c.status(&job);
    let failover = killed.elapsed();
    assert!(
        failover <= Duration::from_secs(15),
        "fail-over took {failover:?}\n{}",
        c.logs()
    );
    leader_health_becomes(&c, &standby, "Serving");
    assert_eq!(s["recovery"]["resumes"], 1, "{s}");
    assert!(
        s["recovery"]["checkpoint_step"].as_u64().unwrap_or(0) > 0,
        "the standby resumes the job from the leader's last checkpoint: {s}"
    );
    let s = done(&c, &job, Duration::from_secs(300));
    assert!(
        fetch_latents(&c, &job, "failed-over.safetensors") == expected,
        "the job's latents after the fail-over differ from the undisturbed job's"
    );
    let watched = watch.wait_with_output().expect("watch ends");
    assert!(
        watched.status.success(),
        "watch must follow the job through the fail-over to its end: {}\n{}",
        String::from_utf8_lossy(&watched.stdout),
        String::from_utf8_lossy(&watched.stderr)
    );
    eprintln!(
        "fail-over: the standby answered as leader {:.1} s after the leader was killed; undisturbed {undisturbed_ms} ms, failed over {} ms: {} ms extra",
        failover.as_secs_f64(),
        wall_ms(&s),
        wall_ms(&s) - undisturbed_ms
    );
}
