//! `longshot render` and `longshot up`: a coordinator in this process and N worker processes on
//! loopback, talking real gRPC. Workers are children of this process and exit when it does (their
//! standard input closes).

use crate::args::JobArgs;
use crate::client_cmds::{connect, fetch_to};
use crate::progress::follow;
use crate::render_checks;
use crate::serve::{interrupted, scheme, start_coordinator, CoordinatorArgs, MemberTlsArgs};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use longshot_coordinator::job_store::JobStore;
use longshot_coordinator::Coordinator;
use longshot_core::api::{JobApi, JobState};
use longshot_core::job::OutputKind;
use longshot_proto::server::ServeOptions;
use longshot_proto::tls::MemberTls;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::watch;

#[derive(Args, Debug)]
pub struct RenderArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Worker processes to start.
    #[arg(long, short = 'w', default_value_t = 2)]
    pub workers: usize,
    /// Output path: .mp4, .mov (ProRes), .safetensors (latents), or a directory (PNG frames).
    #[arg(long, short = 'o', default_value = "clip.mp4")]
    pub output: PathBuf,
    /// Seconds a worker waits for a neighbour's overlap before failing.
    #[arg(long, default_value_t = 120.0)]
    pub exchange_timeout: f64,
    /// Keep the worker logs (per-step timings, exchange bytes) in this directory.
    #[arg(long)]
    pub logs: Option<PathBuf>,
    /// Run the local cluster in plaintext instead of TLS with a CA made for this render.
    #[arg(long)]
    pub insecure: bool,
    /// Keep the live preview in this directory while rendering (as `watch --preview`); needs
    /// --preview-every.
    #[arg(long, value_name = "DIR")]
    pub preview: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
    /// Worker processes to start.
    #[arg(long, short = 'w', default_value_t = 2)]
    pub workers: usize,
    /// A Wan2.1 pipeline directory every worker serves, as DIR or NAME=DIR (see `longshot worker
    /// --help`); repeatable.
    #[arg(long = "model", value_name = "[NAME=]DIR")]
    pub models: Vec<longshot_worker::models::ModelSource>,
}

/// How a local cluster's processes talk to each other.
pub enum LocalTls {
    /// Plaintext (`--insecure`).
    Insecure,
    /// TLS with these CA, certificate and key files (one certificate for every member).
    Files { ca: PathBuf, cert: PathBuf, key: PathBuf },
}

impl LocalTls {
    /// Plaintext with `--insecure`, the given files with `--ca`, `--cert` and `--key`, else a CA
    /// made for this run, its files written to `dir`.
    pub fn choose(args: &MemberTlsArgs, ca: Option<&Path>, dir: &Path) -> Result<Self> {
        if args.insecure {
            return Ok(LocalTls::Insecure);
        }
        match (ca, &args.cert, &args.key) {
            (Some(ca), Some(cert), Some(key)) => Ok(LocalTls::Files {
                ca: ca.to_path_buf(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None, None) => {
                let (ca, cert, key) = crate::certs::ephemeral(dir)
                    .with_context(|| format!("cannot make the local cluster's CA in {}", dir.display()))?;
                Ok(LocalTls::Files { ca, cert, key })
            }
            _ => bail!("give all of --ca, --cert and --key, none of them (a CA made for this run), or --insecure"),
        }
    }

    /// The flags that give a worker process the same setting.
    fn worker_args(&self) -> Vec<String> {
        match self {
            LocalTls::Insecure => vec!["--insecure".into()],
            LocalTls::Files { ca, cert, key } => [("--ca", ca), ("--cert", cert), ("--key", key)]
                .into_iter()
                .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
                .collect(),
        }
    }
}

/// A running local cluster.
pub struct LocalCluster {
    pub endpoint: String,
    pub coordinator: Coordinator,
    store: Arc<dyn JobStore>,
    children: Vec<Child>,
    stop: watch::Sender<bool>,
    logs: PathBuf,
}

impl LocalCluster {
    /// Starts the coordinator and `workers` worker processes, each serving `models` (`[NAME=]DIR`
    /// values of `longshot worker --model`) besides the built-in model.
    pub async fn start(
        args: &CoordinatorArgs,
        tls: &LocalTls,
        workers: usize,
        logs: &Path,
        models: &[String],
    ) -> Result<Self> {
        if !(1..=64).contains(&workers) {
            bail!("--workers {workers} is not in 1..=64");
        }
        let member = match tls {
            LocalTls::Insecure => None,
            LocalTls::Files { ca, cert, key } => {
                let member = MemberTls::load(ca, cert, key)?;
                longshot_proto::tls::use_member_tls(&member);
                Some(member)
            }
        };
        args.etcd_access.install()?;
        let mut cfg = args.config()?;
        let metrics = args.serve_metrics(&cfg).await?;
        let listener = TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let endpoint = format!("{}://{}", scheme(&member), listener.local_addr()?);
        let backend = args.backend(&mut cfg, false).await?;
        let store = backend.store.clone();
        let (stop, rx) = watch::channel(false);
        let (coordinator, _server) = start_coordinator(
            listener,
            cfg,
            backend,
            ServeOptions {
                limits: args.connection_limits(),
                tls: member,
                health: None,
                submit_rate: args.submit_rate(),
                tokens: args.client_tokens()?,
                max_request_bytes: None,
            },
            rx,
        );
        // With etcd the workers register there (the coordinator refuses gRPC registration).
        let etcd: Vec<String> = if args.etcd.is_empty() {
            Vec::new()
        } else {
            let mut v = vec!["--etcd".into(), args.etcd.join(",")];
            v.extend(args.etcd_access.to_args());
            v
        };
        std::fs::create_dir_all(logs)?;
        let exe = std::env::current_exe().context("cannot find the longshot executable")?;
        // All workers share this machine: give each an equal share of the cores instead of letting
        // every worker's thread pool take them all (oversubscription made 2 workers slower than 1).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| (cores / workers).max(1).to_string());
        let mut children = Vec::new();
        for i in 0..workers {
            let log = std::fs::File::create(logs.join(format!("worker-{i}.log")))?;
            // Workers' metrics on the ports after the coordinator's (9465, 9466, … by default), or
            // on any free port when the coordinator's was.
            let worker_metrics = match (metrics, args.metrics_listen.0.as_deref()) {
                (Some(_), Some(l)) if l.ends_with(":0") => l.to_string(),
                (Some(a), _) => std::net::SocketAddr::new(a.ip(), a.port().saturating_add(1 + i as u16)).to_string(),
                (None, _) => "off".into(),
            };
            let child = Command::new(&exe)
                .args([
                    "--coordinator",
                    &endpoint,
                    "worker",
                    "--listen",
                    "127.0.0.1:0",
                    "--exit-on-stdin-close",
                ])
                .args(["--id", &format!("local-{i}"), "--metrics-listen", &worker_metrics])
                .args(["--host-share", &workers.to_string()])
                .args(tls.worker_args())
                .env_remove("LONGSHOT_CERT")
                .env_remove("LONGSHOT_KEY")
                .env_remove("LONGSHOT_CA")
                .args(&etcd)
                .args(models.iter().flat_map(|m| ["--model", m.as_str()]))
                .env("RAYON_NUM_THREADS", &threads)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a worker process")?;
            children.push(child);
        }
        let mut cluster = Self {
            endpoint,
            coordinator,
            store,
            children,
            stop,
            logs: logs.to_path_buf(),
        };
        // Loading real checkpoints takes a while (gigabytes, upcast to f32).
        let patience = if models.is_empty() { 60 } else { 600 };
        cluster.wait_for_workers(workers, Duration::from_secs(patience)).await?;
        Ok(cluster)
    }

    async fn wait_for_workers(&mut self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let up = self.coordinator.workers().await.map_err(|e| anyhow!("{e}"))?.len();
            if up >= n {
                return Ok(());
            }
            for (i, c) in self.children.iter_mut().enumerate() {
                if let Some(status) = c.try_wait()? {
                    let log = std::fs::read_to_string(self.logs.join(format!("worker-{i}.log"))).unwrap_or_default();
                    bail!("worker {i} exited at start-up ({status}):\n{}", tail(&log, 20));
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "only {up} of {n} workers registered within {timeout:?} (logs in {})",
                    self.logs.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the workers (closing their stdin makes them deregister and exit) and the server.
    pub async fn shutdown(mut self) {
        for c in &mut self.children {
            drop(c.stdin.take());
        }
        for c in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(10), c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
        let _ = self.stop.send(true);
        if !self.store.flush(Duration::from_secs(5)).await {
            tracing::warn!("some job records did not reach etcd before shutdown");
        }
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Output formats to fetch and where: the `-o` path for `main` (its extension's format, else the
/// first `--format`), siblings for the others.
fn destinations(output: &Path, main: OutputKind, formats: &[OutputKind]) -> Vec<(OutputKind, PathBuf)> {
    formats
        .iter()
        .map(|&kind| {
            (
                kind,
                if kind == main {
                    output.to_path_buf()
                } else {
                    kind.beside(output)
                },
            )
        })
        .collect()
}

pub async fn render(a: RenderArgs, json: bool) -> Result<()> {
    // -o's extension (a directory: PNG frames) names its format; without a known one, the first
    // --format does.
    let named = OutputKind::from_path(&a.output).or(a.job.formats.first().copied());
    let main_format = named.ok_or_else(|| {
        anyhow!(
            "cannot tell the format from {}; use .mp4, .mov, .safetensors, a directory, or --format",
            a.output.display()
        )
    })?;
    match (&a.preview, a.job.preview_every) {
        (Some(_), 0) => bail!("--preview DIR needs --preview-every N: how often to make a preview"),
        (None, n) if n > 0 => bail!("--preview-every {n} needs --preview DIR: where render keeps the previews"),
        _ => {}
    }
    let inputs = a.job.inputs()?;
    let mut spec = a.job.to_spec(&[main_format], &inputs)?;
    // Everything that can be checked here is, before a process starts (`render_checks`).
    // `--model DIR`: serve that pipeline on the local workers, under its default name.
    let mut models = Vec::new();
    let model_dir = Path::new(&a.job.model);
    let mut served = None;
    if model_dir.is_dir() {
        let info =
            longshot_models::wan::served_info(model_dir).with_context(|| format!("--model {}", model_dir.display()))?;
        models.push(format!("{}={}", info.name, model_dir.display()));
        spec.model = info.name.clone();
        served = Some(info);
    }
    render_checks::check_spec(&spec, served.as_ref())?;
    inputs.check(spec.width, spec.height, spec.requested_frames())?;
    let targets = destinations(&a.output, main_format, &spec.outputs);
    render_checks::check_targets(&targets)?;
    // Owned for the whole render: every way out of this function removes it.
    let work = tempfile::Builder::new().prefix("longshot-render-").tempdir()?;
    let coord_args = CoordinatorArgs {
        tls: MemberTlsArgs::default(),
        etcd_access: Default::default(),
        health_listen: Default::default(),
        tokens: None,
        max_submits_per_minute: 0,
        submit_burst: 1,
        listen: "127.0.0.1:0".into(),
        data_dir: work.path().join("data"),
        exchange_timeout: a.exchange_timeout,
        hash_every: 5,
        checkpoint_every: crate::serve::CheckpointEvery(None),
        encode_timeout: 1800.0,
        overlap_transport: longshot_coordinator::OverlapTransport::Tcp,
        heartbeat: 1.0,
        etcd: Vec::new(),
        metrics_listen: crate::metrics_http::Listen(None),
        retain_finished: longshot_coordinator::DEFAULT_RETAIN_FINISHED,
        advertise: None,
        leader_ttl: longshot_coordinator::leader::DEFAULT_LEADER_TTL.as_secs(),
        max_frames: None,
        max_steps: None,
        max_output_bytes: None,
        max_input_bytes: longshot_core::inputs::DEFAULT_MAX_INPUT_BYTES.max(inputs.largest()),
        max_connections: 4096,
        max_connections_per_client: 256,
        idle_timeout: 120.0,
    };
    let started = Instant::now();
    if !json {
        eprintln!("starting a local cluster: coordinator + {} worker processes", a.workers);
    }
    let logs = a.logs.clone().unwrap_or_else(|| work.path().join("logs"));
    let kept_logs = a.logs.is_some();
    let tls = if a.insecure {
        LocalTls::Insecure
    } else {
        LocalTls::choose(&coord_args.tls, None, &work.path().join("tls"))?
    };
    let cluster = LocalCluster::start(&coord_args, &tls, a.workers, &logs, &models)
        .await
        .map_err(|e| with_worker_logs(e, &logs, kept_logs))?;
    let result = async {
        let client = connect(&cluster.endpoint).await?;
        inputs.upload(&client).await?;
        let takes = match longshot_core::takes::take_ranges(&spec.shots).len() {
            1 => String::new(),
            n => format!(" in {n} takes"),
        };
        let submitted = client.submit(spec, String::new()).await.map_err(|e| anyhow!("{e}"))?;
        if !json {
            let p = submitted.plan;
            eprintln!(
                "job {}: seed {}, {} frames (rendered {} = {} latent frames, in {} windows of {}, overlap {}{takes})",
                submitted.job_id,
                submitted.seed,
                p.output_frames,
                p.rendered_frames,
                p.latent_frames,
                p.windows,
                p.window,
                p.overlap
            );
        }
        let status = tokio::select! {
            s = follow(&client, &submitted.job_id, a.preview.as_deref(), json) => s?,
            _ = interrupted() => {
                let _ = client.cancel(submitted.job_id.clone()).await;
                bail!("interrupted: job {} cancelled", submitted.job_id);
            }
        };
        if status.state != JobState::Done {
            bail!(
                "job {} {}: {}",
                status.job_id,
                status.state,
                status.error.clone().unwrap_or_default()
            );
        }
        let mut written = Vec::new();
        let shots = if status.spec.split_shots {
            status.spec.shots.len()
        } else {
            0
        };
        for (kind, path) in &targets {
            let bytes = fetch_to(&client, &status.job_id, *kind, None, path).await?;
            written.push((kind.as_str(), path.clone(), bytes));
            for shot in (0..shots).filter(|_| kind.is_video()) {
                let path = kind.shot_path(path, shot);
                let bytes = fetch_to(&client, &status.job_id, *kind, Some(shot as u32), &path).await?;
                written.push((kind.as_str(), path, bytes));
            }
        }
        Ok::<_, anyhow::Error>((status, written))
    }
    .await;
    cluster.shutdown().await;
    let (status, written) = result.map_err(|e| with_worker_logs(e, &logs, kept_logs))?;
    let secs = started.elapsed().as_secs_f64();
    if json {
        let outputs: Vec<_> = written
            .iter()
            .map(|(f, p, b)| serde_json::json!({"format": f, "path": p, "bytes": b}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"job_id": status.job_id, "seed": status.seed, "plan": status.plan, "seconds": secs, "outputs": outputs})
        );
    } else {
        for (f, p, b) in &written {
            eprintln!("wrote {} ({f}, {b} bytes)", p.display());
        }
        eprintln!("done in {secs:.1} s (seed {})", status.seed);
    }
    Ok(())
}

/// Adds where the worker logs are (`--logs`) or, when they live in the work directory that is
/// about to be removed, their last lines.
fn with_worker_logs(e: anyhow::Error, logs: &Path, kept: bool) -> anyhow::Error {
    if kept {
        return anyhow!("{e:#} (worker logs in {})", logs.display());
    }
    let mut tails = String::new();
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if !text.trim().is_empty() {
            tails += &format!("\n--- {} ---\n{}", entry.file_name().to_string_lossy(), tail(&text, 10));
        }
    }
    if tails.is_empty() {
        return e;
    }
    anyhow!("{e:#}\nthe last worker log lines (keep them all with --logs DIR):{tails}")
}

pub async fn up(a: UpArgs, ca: Option<&Path>) -> Result<()> {
    let logs = a.coordinator.data_dir.join("logs");
    let models: Vec<String> = a.models.iter().map(|m| m.to_arg()).collect();
    let tls = LocalTls::choose(&a.coordinator.tls, ca, &a.coordinator.data_dir.join("tls"))?;
    let cluster = LocalCluster::start(&a.coordinator, &tls, a.workers, &logs, &models).await?;
    // One write (stdout flushes at each newline of a formatted print): a reader that takes the
    // first line and closes the pipe must not make a second write fail.
    let clients = match &tls {
        LocalTls::Files { ca, .. } => format!(
            "\nclients: export LONGSHOT_COORDINATOR={} LONGSHOT_CA={}",
            cluster.endpoint,
            std::fs::canonicalize(ca).unwrap_or_else(|_| ca.clone()).display()
        ),
        LocalTls::Insecure => String::new(),
    };
    let banner = format!(
        "local cluster up: coordinator {} with {} workers (logs in {}); Ctrl-C to stop{clients}\n",
        cluster.endpoint,
        a.workers,
        logs.display()
    );
    // A reader gone already is no reason to stop the cluster.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), banner.as_bytes());
    interrupted().await;
    cluster.shutdown().await;
    Ok(())
}
