//! A real etcd server for tests: one `etcd` process on free loopback ports (client and peer), its
//! data in a temporary directory, stopped on drop. Used by the coordinator's and worker's etcd
//! tests and by the CLI's process-level cluster tests, so there is one way to run etcd in tests.
//!
//! A missing `etcd` binary is a loud failure, never a skip: `scripts/test.sh` installs Debian's
//! `etcd-server` (3.4) on fresh machines.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to answer `/health` after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped, to be restarted) single-member etcd.
pub struct EtcdServer {
    client_port: u16,
    peer_port: u16,
    /// TLS on the client port with client certificates required (`start_tls`); health is then
    /// read from the plaintext metrics port.
    tls: Option<EtcdTls>,
    metrics_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The PEM files of an etcd that serves TLS and requires client certificates signed by `ca`.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A loopback port that was free a moment ago (the OS picks it; the listener is closed again).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

/// The etcd binary: `$ETCD_BIN`, else `etcd` on the PATH, else Debian's `/usr/bin/etcd`.
fn etcd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ETCD_BIN") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file());
    let bin = on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(bin.is_file(), "etcd is not installed: these tests need a real etcd server (apt-get install etcd-server, or run scripts/test.sh)");
    bin
}

impl EtcdServer {
    /// Starts etcd on free ports and waits until it serves requests.
    pub fn start() -> EtcdServer {
        Self::start_with(None)
    }

    /// Starts etcd serving TLS with `tls` and requiring client certificates of its CA.
    pub fn start_tls(tls: EtcdTls) -> EtcdServer {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<EtcdTls>) -> EtcdServer {
        // Another process may take a port between our probe and etcd's bind: retry with new ones.
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("longshot-etcd-")
                .tempdir()
                .expect("tempdir");
            let mut server = EtcdServer {
                client_port: free_port(),
                peer_port: free_port(),
                tls: tls.clone(),
                metrics_port: free_port(),
                dir,
                child: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start: {last}");
    }

    /// `http://127.0.0.1:<client port>` (`https://` with TLS), as `--etcd` takes it.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Where etcd keeps its data and its log (`etcd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of etcd's log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills etcd (SIGKILL: no graceful leader handover, like a crash). Its data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("etcd did not restart: {e}");
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let client = self.endpoint();
        let tls_args: Vec<String> = match &self.tls {
            None => Vec::new(),
            Some(t) => vec![
                "--cert-file".into(),
                t.cert.display().to_string(),
                "--key-file".into(),
                t.key.display().to_string(),
                "--trusted-ca-file".into(),
                t.ca.display().to_string(),
                "--client-cert-auth".into(),
                "--listen-metrics-urls".into(),
                format!("http://127.0.0.1:{}", self.metrics_port),
            ],
        };
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .map_err(|e| format!("etcd log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("etcd log: {e}"))?;
        let mut child = Command::new(etcd_binary())
            .args(["--name", "longshot-test"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args([
                "--initial-cluster",
                &format!("longshot-test={peer}"),
                "--initial-cluster-state",
                "new",
            ])
            .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"])
            .args(&tls_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run etcd: {e}"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("etcd exited at start-up ({status}):\n{}", self.log_tail()));
            }
            let health_port = if self.tls.is_some() {
                self.metrics_port
            } else {
                self.client_port
            };
            if healthy(health_port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "etcd was not healthy within {READY_TIMEOUT:?}:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `GET /health` on the client port answers `{"health":"true"}` once etcd has a leader.
fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` every 50 ms until it returns `Some`, and panics naming `what` after `timeout`:
/// cluster state converges asynchronously (watches, lease expiry), so tests wait for it.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
