//! The coordinator's port under abuse, with real processes: a flood of idle connections from one
//! address is capped per client (the excess closed at once) and timed out, oversize requests are
//! refused from their length prefix, and other clients are served throughout without the
//! coordinator's descriptors or memory growing with the attack.

mod harness;

use harness::{submit, Cluster, ClusterOptions};
use longshot_proto::pb;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

const TERMINAL: &[&str] = &["done", "failed", "cancelled"];

/// Whether the peer closed `s` (a read returns end of file or an error), waiting up to `wait`.
async fn closed(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // The server's HTTP/2 preface: keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

#[test]
fn idle_floods_and_oversize_requests_leave_the_coordinator_serving() {
    let options = ClusterOptions {
        coordinator_args: ["--max-connections-per-client", "50", "--idle-timeout", "3"]
            .map(String::from)
            .to_vec(),
        // The oversize requests below come from a bare tonic client, without TLS.
        insecure: true,
        ..Default::default()
    };
    let c = Cluster::start_with(1, 30.0, options);
    let addr: SocketAddr = c.address().parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fds_before = c.coordinator_fds();

    // 300 silent connections from 127.0.0.2 (the CLI below comes from 127.0.0.1).
    let mut flood = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..300 {
            let s = TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            v.push(s.connect(addr).await.expect("connect"));
        }
        v
    });
    let started = Instant::now();
    let open_now = rt.block_on(async {
        let mut open = 0;
        for s in flood.iter_mut() {
            if !closed(s, Duration::from_millis(20)).await {
                open += 1;
            }
        }
        open
    });
    assert_eq!(open_now, 50, "connections over the per-client cap are closed at once");
    let fds = c.coordinator_fds();
    assert!(
        fds < fds_before + 60,
        "{fds} descriptors open (before the flood: {fds_before})"
    );
    // Other clients are served meanwhile.
    let t = Instant::now();
    c.ok(&["list"]);
    assert!(t.elapsed() < Duration::from_secs(5), "list took {:?}", t.elapsed());

    // Oversize requests are refused from their length prefix, eight at once.
    let rss_before = c.coordinator_rss();
    let codes = rt.block_on(async {
        let mut calls = Vec::new();
        for _ in 0..8 {
            let endpoint = c.endpoint.clone();
            calls.push(tokio::spawn(async move {
                let mut client = pb::job_service_client::JobServiceClient::connect(endpoint)
                    .await
                    .unwrap()
                    .max_encoding_message_size(64 << 20);
                let spec = pb::JobSpec {
                    prompt: "x".repeat(30 << 20),
                    ..Default::default()
                };
                let r = client.submit_job(pb::SubmitJobRequest { spec: Some(spec) }).await;
                r.expect_err("a 30 MiB request must be refused")
            }));
        }
        let mut out = Vec::new();
        for call in calls {
            out.push(call.await.unwrap());
        }
        out
    });
    for status in &codes {
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
        assert!(status.message().contains("message length too large"), "{status:?}");
    }
    let grown = c.coordinator_rss().saturating_sub(rss_before);
    assert!(
        grown < 100 << 20,
        "eight refused 30 MiB requests grew the coordinator by {grown} bytes"
    );

    // The silent connections are closed after the idle timeout (3 s here).
    let still_open = rt.block_on(async {
        let mut open = 0;
        for s in flood.iter_mut() {
            let left = Duration::from_secs(8).saturating_sub(started.elapsed());
            if !closed(s, left.max(Duration::from_millis(10))).await {
                open += 1;
            }
        }
        open
    });
    assert_eq!(still_open, 0, "silent connections outlived the idle timeout");
    // Jobs still run, and a quiet client keeps its connection: `watch` of a job queued behind a
    // longer one gets no events for a while, but answers the coordinator's pings (every second
    // with a 3 s idle timeout) and follows the job to its end.
    let long = submit(
        &c,
        &[
            "--prompt",
            "a harbour",
            "--frames",
            "209",
            "--width",
            "96",
            "--height",
            "64",
            "--steps",
            "600",
        ],
    );
    let small = [
        "--prompt",
        "a harbour",
        "--frames",
        "49",
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "3",
    ];
    let queued = submit(&c, &small);
    let t = Instant::now();
    c.ok(&["watch", &queued]);
    println!("watch followed a queued job for {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(c.wait_state(&long, TERMINAL, Duration::from_secs(120))["state"], "done");
    assert_eq!(c.status(&queued)["state"], "done");
}

/// A process that opens `count` TCP connections to `addr` from the loopback addresses
/// 127.0.x.y (250 per address), keeps them silent, prints `open N` and holds them until its
/// standard input closes. Four of them hold 20,000 between them.
fn flood_process(addr: &str, count: usize, first_host: usize) -> std::process::Child {
    let script = r#"
import resource, socket, sys
# Room for the connections whatever the soft limit the test runs under.
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = int(sys.argv[2]) + 64
if soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
host, port = sys.argv[1].rsplit(":", 1)
count, first = int(sys.argv[2]), int(sys.argv[3])
held, failed = [], 0
for i in range(count):
    s = socket.socket()
    s.bind((f"127.0.{1 + (first + i // 250) // 250}.{1 + (first + i // 250) % 250}", 0))
    try:
        s.connect((host, int(port)))
        held.append(s)
    except OSError:
        failed += 1
        s.close()
print(f"open {len(held)} failed {failed}", flush=True)
sys.stdin.read()
"#;
    std::process::Command::new("python3")
        .args(["-c", script, addr, &count.to_string(), &first_host.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the flood")
}

#[test]
fn twenty_thousand_idle_connections_leave_the_coordinator_serving() {
    let options = ClusterOptions {
        coordinator_args: ["--max-connections", "2048", "--idle-timeout", "30"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    let c = Cluster::start_with(1, 30.0, options);
    let rss_before = c.coordinator_rss();
    let fds_before = c.coordinator_fds();
    let started = Instant::now();
    let mut floods: Vec<_> = (0..4).map(|k| flood_process(&c.address(), 5_000, k * 20)).collect();
    // While the flood goes on, other clients are served: a list, and a job from submit to done.
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    c.ok(&["list"]);
    let job = submit(
        &c,
        &[
            "--prompt", "x", "--frames", "49", "--width", "64", "--height", "64", "--steps", "3",
        ],
    );
    let s = c.wait_state(&job, TERMINAL, Duration::from_secs(60));
    assert_eq!(s["state"], "done", "{s}");
    let served = t.elapsed();
    for f in &mut floods {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(f.stdout.take().unwrap()), &mut line).unwrap();
        // Connections over the caps are accepted and closed, so every connect succeeds.
        assert_eq!(line.trim(), "open 5000 failed 0", "{line}");
    }
    let flooded = started.elapsed();
    // The coordinator holds at most --max-connections of them (silent ones go after 10 s).
    let fds = c.coordinator_fds();
    assert!(fds < fds_before + 2048 + 64, "{fds} descriptors (before: {fds_before})");
    c.ok(&["list"]);
    let grown = c.coordinator_rss().saturating_sub(rss_before);
    assert!(
        grown < 200 << 20,
        "20,000 idle connections grew the coordinator by {grown} bytes"
    );
    eprintln!(
        "20,000 connections opened in {flooded:?}; {fds} descriptors then; during the flood a list and a job took {served:?}; RSS +{} MiB",
        grown >> 20
    );
    for mut f in floods {
        drop(f.stdin.take());
        let _ = f.wait();
    }
}

/// A worker's port refuses a request above the largest one its budget makes legitimate (from the
/// length prefix, before buffering it) and decodes one below it, and the worker goes on running
/// jobs.
#[test]
fn a_worker_port_refuses_messages_above_what_its_budget_admits() {
    let options = ClusterOptions {
        // 64 MiB of job state: windows of up to 8 MiB of latents, checkpoints of up to 32 MiB; a
        // shard's conditioning (prompts, reference images, their embeddings) may take up to
        // 114.5 MiB, so requests up to 115.5 MiB.
        worker_args: ["--memory-budget", "64M"].map(String::from).to_vec(),
        // The requests below come from a bare tonic client, without TLS.
        insecure: true,
        ..Default::default()
    };
    let c = Cluster::start_with(1, 30.0, options);
    let worker = c.workers()[0]["address"].as_str().expect("worker address").to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run_shard = |embedding_bytes: usize| {
        let endpoint = format!("http://{worker}");
        rt.block_on(async move {
            let mut client = pb::worker_service_client::WorkerServiceClient::connect(endpoint)
                .await
                .unwrap()
                .max_encoding_message_size(256 << 20);
            let assignment = pb::ShardAssignment {
                job_id: "oversize".into(),
                conditioning: Some(pb::Conditioning {
                    prompt_embedding: vec![0; embedding_bytes].into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            client
                .run_shard(assignment)
                .await
                .expect_err("a malformed assignment is refused")
        })
    };
    let over = run_shard(130 << 20);
    assert_eq!(over.code(), tonic::Code::OutOfRange, "{over:?}");
    assert!(over.message().contains("message length too large"), "{over:?}");
    // Below the cap the message is decoded, and refused for what it says.
    let under = run_shard(100 << 20);
    assert_ne!(under.code(), tonic::Code::OutOfRange, "{under:?}");
    assert_eq!(under.code(), tonic::Code::InvalidArgument, "{under:?}");
    let job = submit(
        &c,
        &[
            "--prompt", "x", "--frames", "49", "--width", "64", "--height", "64", "--steps", "3",
        ],
    );
    assert_eq!(c.wait_state(&job, TERMINAL, Duration::from_secs(60))["state"], "done");
}
