//! Metrics against a real Prometheus: it scrapes a coordinator and two workers (and a stand-in
//! NVIDIA DCGM exporter serving fixed samples) while they render; then every PromQL expression of
//! the Grafana dashboard must return data with the labels its legend names, every alert rule
//! must evaluate without error on series that exist, and `promtool check metrics` must pass on
//! each exporter's output.

mod harness;

use harness::{submit, Cluster};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The dashboard and the alert rules, as the Helm chart ships them.
const CHART_FILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../helm/longshot/files");

/// A plain HTTP/1.0 GET; returns (status, body).
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `host:port` a process logged as "metrics on http://ADDR/metrics".
fn metrics_address(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.contains("metrics on http://"))
        .unwrap_or_else(|| panic!("{}: {text}", log.display()));
    let url = line.split("metrics on http://").nth(1).unwrap();
    url.trim_end_matches("/metrics").trim().to_string()
}

/// Serves fixed DCGM samples: one GPU labelled the way DCGM does with `honorLabels: false`
/// (`exported_pod`), one the way it does with `honorLabels: true` (`pod`).
fn fake_dcgm_exporter() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let body = "\
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-0\",exported_pod=\"longshot-worker-0\",exported_namespace=\"render\"} 87
DCGM_FI_DEV_GPU_UTIL{gpu=\"1\",UUID=\"GPU-1\",pod=\"longshot-worker-1\",namespace=\"render\"} 42
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu=\"0\",UUID=\"GPU-0\",exported_pod=\"longshot-worker-0\"} 30000
DCGM_FI_DEV_FB_USED{gpu=\"1\",UUID=\"GPU-1\",pod=\"longshot-worker-1\"} 12000
# TYPE DCGM_FI_DEV_POWER_USAGE gauge
DCGM_FI_DEV_POWER_USAGE{gpu=\"0\",UUID=\"GPU-0\",exported_pod=\"longshot-worker-0\"} 612.5
DCGM_FI_DEV_POWER_USAGE{gpu=\"1\",UUID=\"GPU-1\",pod=\"longshot-worker-1\"} 301.0
";
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

struct Prometheus {
    child: Child,
    addr: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, coordinator: &str, workers: &[String], dcgm: &str) -> Prometheus {
        let rules = Path::new(CHART_FILES).join("rules/longshot-alerts.yml");
        let worker_configs: String = workers
            .iter()
            .enumerate()
            .map(|(i, w)| format!("      - targets: ['{w}']\n        labels: {{ pod: longshot-worker-{i} }}\n"))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  \
             - job_name: longshot-coordinator\n    static_configs:\n      - targets: ['{coordinator}']\n  \
             - job_name: longshot-worker\n    static_configs:\n{worker_configs}  \
             - job_name: dcgm\n    static_configs:\n      - targets: ['{dcgm}']\n",
            rules.display()
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus must be installed (scripts/install-deps.sh test installs Debian's prometheus)");
        let p = Prometheus { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(http_get(&p.addr, "/-/ready"), Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready: {}",
                p.log(dir)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn log(&self, dir: &Path) -> String {
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's result vector.
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let (status, body) = http_get(&self.addr, &format!("/api/v1/query?query={}", urlencode(expr))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{expr}: {e}: {body}"));
        assert_eq!((status, v["status"].as_str()), (200, Some("success")), "{expr}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    fn wait_for(&self, expr: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.query(expr).is_empty() {
            assert!(Instant::now() < deadline, "no data for {expr} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Label names a legend format like `p95 {{model}}` refers to.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}"))
        .map(|(l, _)| l.trim().to_string())
        .collect()
}

#[test]
fn prometheus_scrapes_the_cluster_and_every_dashboard_and_alert_expression_has_data() {
    let c = Cluster::start(2, 30.0);
    let coordinator = metrics_address(&c.dir.path().join("coordinator.log"));
    let workers: Vec<String> = (0..2)
        .map(|i| metrics_address(&c.dir.path().join(format!("worker-{i}.log"))))
        .collect();

    // Every exporter's output passes promtool's lint (names, units, help, counter suffixes).
    for addr in std::iter::once(&coordinator).chain(&workers) {
        let (status, body) = http_get(addr, "/metrics").unwrap();
        assert_eq!(status, 200, "{addr}");
        assert!(body.contains("longshot_build_info{"), "{addr}: {body}");
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (Debian's prometheus package)");
        check.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = check.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool check metrics on {addr}: {said}\n{body}");
    }

    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(dir.path(), &coordinator, &workers, &fake_dcgm_exporter());
    prometheus.wait_for(r#"up{job="longshot-worker"} == 1"#, Duration::from_secs(30));
    // Two windows' worth of frames on two workers, so both render and exchange overlaps.
    let job = submit(
        &c,
        &[
            "--prompt",
            "a lighthouse at dusk",
            "--frames",
            "129",
            "--width",
            "64",
            "--height",
            "64",
            "--steps",
            "4",
            // So the live-preview series has data too.
            "--preview-every",
            "2",
        ],
    );
    let s = c.wait_state(&job, &["done", "failed", "cancelled"], Duration::from_secs(120));
    assert_eq!(s["state"], "done", "{s}");
    assert_eq!(s["plan"]["workers"], 2, "{s}");
    prometheus.wait_for("longshot_jobs_finished_total", Duration::from_secs(30));
    prometheus.wait_for(
        r#"sum(longshot_worker_shards_total{outcome="done"}) >= 2"#,
        Duration::from_secs(30),
    );
    // A few more scrapes after the job, so rates over the window have two points on each side.
    std::thread::sleep(Duration::from_secs(3));

    let done = prometheus.query(r#"sum(longshot_jobs_finished_total{outcome="done"})"#);
    assert_eq!(done[0]["value"][1], "1", "{done:?}");
    let frames = prometheus.query("sum(longshot_frames_rendered_total)");
    assert_eq!(frames[0]["value"][1], "129", "{frames:?}");
    let sent = prometheus.query(r#"sum(longshot_worker_exchange_bytes_total{direction="sent"}) > 0"#);
    assert!(!sent.is_empty(), "the workers exchanged no overlap bytes");
    // Each CPU worker reports its resident set (plausible bounds: over 1 MB, under 1 TB).
    let memory = prometheus.query("longshot_worker_device_memory_used_bytes > 1e6 < 1e12");
    assert_eq!(memory.len(), 2, "{memory:?}");

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(CHART_FILES).join("dashboards/longshot.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "1m");
            let result = prometheus.query(&expr);
            assert!(!result.is_empty(), "panel {:?}: no data for {expr}", panel["title"]);
            for label in legend_labels(target["legendFormat"].as_str().unwrap_or("")) {
                for series in &result {
                    let value = series["metric"][&label].as_str().unwrap_or("");
                    assert!(
                        !value.is_empty(),
                        "panel {:?}: {expr} has a series without {label}: {series}",
                        panel["title"]
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} dashboard expressions");
    // The DCGM row joins both labelling conventions to the worker in that pod.
    let util = prometheus.query(
        &dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"] == "GPU utilisation by worker")
            .unwrap()["targets"][0]["expr"]
            .as_str()
            .unwrap()
            .replace("$__rate_interval", "1m"),
    );
    let mut by_worker: Vec<(String, String)> = util
        .iter()
        .map(|s| {
            (
                s["metric"]["worker"].as_str().unwrap().to_string(),
                s["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    by_worker.sort();
    assert_eq!(
        by_worker,
        [
            ("w0".to_string(), "87".to_string()),
            ("w1".to_string(), "42".to_string())
        ]
    );

    // Every alert rule evaluates without error, over series that exist.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rules = loop {
        let (_, body) = http_get(&prometheus.addr, "/api/v1/rules").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let rules: Vec<serde_json::Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if rules
            .iter()
            .all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")))
            && !rules.is_empty()
        {
            break rules;
        }
        assert!(Instant::now() < deadline, "the alert rules were not evaluated: {body}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(rules.len(), 5, "{rules:?}");
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
        let query = r["query"].as_str().unwrap();
        let names: std::collections::BTreeSet<&str> = query
            .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .filter(|w| w.starts_with("longshot_"))
            .collect();
        for name in names {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
            let exists = !prometheus
                .query(&format!("{{__name__=~\"{base}(_bucket|_count|_sum)?\"}}"))
                .is_empty();
            assert!(exists, "alert {} uses {name}, which no exporter serves", r["name"]);
        }
    }
}
