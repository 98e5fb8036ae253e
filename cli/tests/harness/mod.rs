//! Harness for cluster tests: real `longshot` processes (a coordinator and workers) on loopback,
//! and the CLI run as a user would run it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_longshot");

/// Extra arguments for a cluster's processes (`--etcd …` for both, `--lease-ttl` for workers),
/// and extra environment variables for all of them (`OTEL_…` for the traces test).
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// The coordinator's listen address (default `127.0.0.1:0`); a fixed port lets workers
    /// without etcd find a restarted coordinator.
    pub listen: Option<String>,
    pub coordinator_args: Vec<String>,
    pub worker_args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The address the coordinator and the workers listen on (default 127.0.0.1).
    pub host: Option<String>,
    /// The coordinator's data dir; `dir/data` when `None`.
    pub data_dir: Option<PathBuf>,
    /// Plaintext (`--insecure`) instead of TLS with a CA made for the cluster in `dir/certs`.
    pub insecure: bool,
    /// The client token [`Cluster::cli`] sends (`LONGSHOT_TOKEN`), for a coordinator run with
    /// `--tokens`.
    pub token: Option<String>,
}

/// A coordinator process and its worker processes. Everything is killed on drop.
pub struct Cluster {
    pub endpoint: String,
    pub dir: tempfile::TempDir,
    coordinator: Child,
    /// More coordinators on the same data dir (standbys, with etcd).
    standbys: Vec<Child>,
    workers: Vec<(Child, Option<ChildStdin>)>,
    options: ClusterOptions,
    exchange_timeout_s: f64,
    coordinator_starts: usize,
}

impl Cluster {
    /// Starts a coordinator (heartbeat 1 s, so a 3 s registration TTL that a loaded CI machine does
    /// not trip; the given exchange timeout) and `workers` workers, and waits until all registered.
    pub fn start(workers: usize, exchange_timeout_s: f64) -> Cluster {
        Self::start_with(workers, exchange_timeout_s, ClusterOptions::default())
    }

    /// Like [`Cluster::start`], with extra coordinator and worker arguments.
    pub fn start_with(workers: usize, exchange_timeout_s: f64, options: ClusterOptions) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        if !options.insecure {
            // The CLI verifies the coordinator by the host it dials.
            let mut hosts = vec!["localhost", "127.0.0.1"];
            hosts.extend(options.host.as_deref());
            make_certs(&dir.path().join("certs"), "member", &hosts);
        }
        let (coordinator, endpoint) = spawn_coordinator(dir.path(), exchange_timeout_s, &options, "coordinator.log");
        let mut c = Cluster {
            endpoint,
            dir,
            coordinator,
            standbys: Vec::new(),
            workers: Vec::new(),
            options,
            exchange_timeout_s,
            coordinator_starts: 1,
        };
        for _ in 0..workers {
            c.add_worker();
        }
        c.wait_for_workers(workers);
        c
    }

    /// Kills the coordinator (SIGKILL: no clean shutdown) and starts a new one with the same
    /// arguments and data dir, on a new port; the workers keep running.
    pub fn restart_coordinator(&mut self) {
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
        self.coordinator_starts += 1;
        let log = format!("coordinator-{}.log", self.coordinator_starts);
        let (coordinator, endpoint) = spawn_coordinator(self.dir.path(), self.exchange_timeout_s, &self.options, &log);
        self.coordinator = coordinator;
        self.endpoint = endpoint;
    }

    /// Sends a signal (`STOP`, `CONT`, …) to the coordinator.
    pub fn signal_coordinator(&self, sig: &str) {
        signal(self.coordinator.id(), sig);
    }

    /// The coordinator's open file descriptors.
    pub fn coordinator_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.coordinator.id()))
            .expect("proc fd")
            .count()
    }

    /// The coordinator's resident memory, in bytes (`VmRSS` in /proc).
    pub fn coordinator_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.coordinator.id())).expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// Starts another coordinator with the same arguments and data dir (a standby with etcd);
    /// returns its address. The CLI keeps using [`Cluster::endpoint`] (set it to several).
    pub fn add_coordinator(&mut self) -> String {
        let log = format!("standby-{}.log", self.standbys.len());
        let (child, endpoint) = spawn_coordinator(self.dir.path(), self.exchange_timeout_s, &self.options, &log);
        self.standbys.push(child);
        endpoint
    }

    /// Kills the first coordinator (SIGKILL) and starts none.
    pub fn kill_coordinator(&mut self) {
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
    }

    /// Sends a signal (`STOP`, `CONT`, …) to worker `i`.
    pub fn signal_worker(&self, i: usize, sig: &str) {
        signal(self.workers[i].0.id(), sig);
    }

    pub fn add_worker(&mut self) {
        let host = self.options.host.clone().unwrap_or("127.0.0.1".into());
        self.add_worker_in(&[], &host);
    }

    /// Adds a worker listening on `host`, started through `prefix` (e.g. `ip netns exec NS`).
    pub fn add_worker_in(&mut self, prefix: &[&str], host: &str) {
        let i = self.workers.len();
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = cmd
            .args([
                "--coordinator",
                &self.endpoint,
                "worker",
                "--listen",
                &format!("{host}:0"),
                "--exit-on-stdin-close",
            ])
            .args(["--id", &format!("w{i}"), "--metrics-listen", "127.0.0.1:0"])
            .args(self.member_args())
            .args(&self.options.worker_args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join(format!("worker-{i}.log"))).expect("log"))
            .spawn()
            .expect("start worker");
        let stdin = child.stdin.take();
        self.workers.push((child, stdin));
    }

    /// The flags that make a process a member of this cluster: `--ca`, `--cert` and `--key`
    /// with TLS, `--insecure` without.
    pub fn member_args(&self) -> Vec<String> {
        member_args(self.dir.path(), &self.options)
    }

    /// The flags a client of this cluster needs: `--ca` with TLS, none without.
    pub fn client_args(&self) -> Vec<String> {
        if self.options.insecure {
            Vec::new()
        } else {
            vec![
                "--ca".into(),
                self.dir.path().join("certs/ca.pem").display().to_string(),
            ]
        }
    }

    /// The coordinator's `host:port`, without the scheme.
    pub fn address(&self) -> String {
        self.endpoint.rsplit("://").next().unwrap_or_default().to_string()
    }

    /// Runs `longshot --coordinator <this> args…` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(self.options.token.as_deref(), args)
    }

    /// Like `cli`, sending `token` (none: no token).
    pub fn cli_as(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut command = Command::new(BIN);
        command.env_remove("LONGSHOT_TOKEN");
        if let Some(t) = token {
            command.env("LONGSHOT_TOKEN", t);
        }
        command
            .arg("--coordinator")
            .arg(&self.endpoint)
            .args(self.client_args())
            .args(args)
            .output()
            .expect("run longshot")
    }

    /// Like `cli`, but the command must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "longshot {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `longshot workers --json`, one value per worker.
    pub fn workers(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["--json", "workers"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn wait_for_workers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.workers().len() != n {
            assert!(
                Instant::now() < deadline,
                "{n} workers did not register\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `n` workers are registered and all of them idle.
    pub fn wait_for_idle_workers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let w = self.workers();
            if w.len() == n && w.iter().all(|w| w["state"] == "idle") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} idle workers expected, got {w:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills worker `i` with SIGKILL (no clean deregistration).
    pub fn kill_worker(&mut self, i: usize) {
        let _ = self.workers[i].0.kill();
        let _ = self.workers[i].0.wait();
    }

    /// `longshot status --json` of a job.
    pub fn status(&self, job: &str) -> serde_json::Value {
        serde_json::from_str(self.ok(&["--json", "status", job]).trim()).expect("status json")
    }

    /// Waits until the job is in one of `states`; returns its status.
    pub fn wait_state(&self, job: &str, states: &[&str], timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status(job);
            if states.contains(&s["state"].as_str().unwrap_or("")) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} did not reach {states:?}: {s}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the job has done at least `steps` denoising steps.
    pub fn wait_steps(&self, job: &str, steps: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.status(job)["steps_done"].as_u64().unwrap_or(0) < steps {
            assert!(Instant::now() < deadline, "no progress on {job}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out += &format!(
                    "--- {} ---\n{}\n",
                    p.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (c, stdin) in &mut self.workers {
            drop(stdin.take());
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.coordinator.kill();
        let _ = self.coordinator.wait();
        for c in &mut self.standbys {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `kill -<signal> <pid>`, which must succeed.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{signal} {pid} failed");
}

/// Starts a coordinator with its data in `options.data_dir` or `dir/data` and waits for its
/// address.
fn spawn_coordinator(dir: &Path, exchange_timeout_s: f64, options: &ClusterOptions, log: &str) -> (Child, String) {
    let host = options.host.as_deref().unwrap_or("127.0.0.1");
    let listen = options.listen.clone().unwrap_or_else(|| format!("{host}:0"));
    let log = dir.join(log);
    let mut coordinator = Command::new(BIN)
        .args([
            "coordinator",
            "--listen",
            &listen,
            "--heartbeat",
            "1",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--exchange-timeout",
            &exchange_timeout_s.to_string(),
            "--hash-every",
            "2",
        ])
        .arg("--data-dir")
        .arg(options.data_dir.clone().unwrap_or_else(|| dir.join("data")))
        .args(member_args(dir, options))
        .args(&options.coordinator_args)
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start coordinator");
    let mut line = String::new();
    BufReader::new(coordinator.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("coordinator prints its address");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        line.starts_with("coordinator listening on"),
        "unexpected first line {line:?}; log:\n{text}"
    );
    let addr = line.trim().rsplit(' ').next().expect("address").to_string();
    let scheme = if options.insecure { "http" } else { "https" };
    (coordinator, format!("{scheme}://{addr}"))
}

/// See [`Cluster::member_args`].
fn member_args(dir: &Path, options: &ClusterOptions) -> Vec<String> {
    if options.insecure {
        return vec!["--insecure".into()];
    }
    let certs = dir.join("certs");
    [("--ca", "ca.pem"), ("--cert", "member.pem"), ("--key", "member.key")]
        .into_iter()
        .flat_map(|(flag, file)| [flag.to_string(), certs.join(file).display().to_string()])
        .collect()
}

/// `longshot certs init` in `dir` (unless it has a CA) and `longshot certs issue NAME` for
/// `hosts` (none: the default, loopback).
pub fn make_certs(dir: &Path, name: &str, hosts: &[&str]) {
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["certs"])
            .args(args)
            .args(["--dir", dir.to_str().expect("utf-8 path")])
            .output()
            .expect("run longshot certs");
        assert!(
            out.status.success(),
            "longshot certs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !dir.join("ca.pem").exists() {
        run(&["init"]);
    }
    let mut issue = vec!["issue", name];
    for h in hosts {
        issue.extend(["--host", h]);
    }
    run(&issue);
}

/// Runs `longshot render` with `base` then `args`; returns its output and how long it took.
pub fn render_timed(base: &[&str], args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(BIN)
        .arg("render")
        .args(base)
        .args(args)
        .output()
        .expect("run longshot");
    (out, start.elapsed())
}

/// [`render_timed`], which must succeed.
#[track_caller]
pub fn render_ok(base: &[&str], args: &[&str]) {
    let (out, _) = render_timed(base, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Submits a job with `args` and returns its id.
pub fn submit(c: &Cluster, args: &[&str]) -> String {
    let mut all = vec!["submit"];
    all.extend_from_slice(args);
    c.ok(&all).trim().to_string()
}

/// Writes `rgb` (`[height, width, 3]` 8-bit) as an RGB PNG.
pub fn write_rgb_png(path: &Path, width: u32, height: u32, rgb: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut e = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    e.set_color(png::ColorType::Rgb);
    e.write_header().unwrap().write_image_data(rgb).unwrap();
}

/// Decodes a PNG sequence directory into raw RGB frames, in order.
pub fn read_png_dir(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("png dir")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).expect("png")));
            let mut reader = decoder.read_info().expect("png header");
            let mut buf = vec![0; reader.output_buffer_size()];
            let info = reader.next_frame(&mut buf).expect("png frame");
            buf.truncate(info.buffer_size());
            buf
        })
        .collect()
}

/// What ffprobe says about the first video stream (frames counted by decoding).
pub fn ffprobe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,r_frame_rate,nb_read_frames,pix_fmt:format=duration",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe must be installed (scripts/test.sh installs Debian's ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

/// The raw bytes of the `latents` tensor of a fetched latents file, after checking its shape.
pub fn latent_bytes(path: &Path, shape: &[usize]) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("latents file");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let t = st.tensor("latents").expect("latents tensor");
    assert_eq!(t.shape(), shape, "{}", path.display());
    t.data().to_vec()
}

/// The job the fault tests interrupt: 209 frames = 53 latent frames = 3 windows at 96×64, 400
/// steps, a few seconds on 3 debug workers; its latents' shape is [`FAULT_JOB_LATENTS`].
pub const FAULT_JOB: &[&str] = &[
    "--prompt",
    "a lighthouse in a storm, waves breaking",
    "--frames",
    "209",
    "--width",
    "96",
    "--height",
    "64",
    "--steps",
    "400",
    "--seed",
    "31",
    "--format",
    "png,latents",
];
pub const FAULT_JOB_LATENTS: &[usize] = &[53, 16, 8, 12];

/// A finished job's latents (raw tensor bytes, checked against `shape`) and PNG frames, fetched
/// through the CLI into `<cluster dir>/<tag>/`: what a bit-identity check compares.
pub fn fetch_render(c: &Cluster, job: &str, tag: &str, shape: &[usize]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let out = c.dir.path().join(tag);
    let (png, lat) = (out.join("frames"), out.join("clip.safetensors"));
    c.ok(&["fetch", job, "-o", png.to_str().unwrap(), "--format", "png"]);
    c.ok(&["fetch", job, "-o", lat.to_str().unwrap(), "--format", "latents"]);
    (latent_bytes(&lat, shape), read_png_dir(&png))
}
