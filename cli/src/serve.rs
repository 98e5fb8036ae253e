//! The cluster's processes: `longshot coordinator` and `longshot worker`.

use crate::metrics_http;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use longshot_coordinator::admission::AdmissionLimits;
use longshot_coordinator::etcd_registry::EtcdRegistry;
use longshot_coordinator::job_store::{EmbeddedJobStore, EtcdJobStore, JobRecord, JobStore, NoJobStore};
use longshot_coordinator::leader::{self, Gate, DEFAULT_LEADER_TTL};
use longshot_coordinator::metrics::leader_gauge;
use longshot_coordinator::{Coordinator, CoordinatorConfig, InMemoryRegistry, OverlapTransport, Registry};
use longshot_core::api::{ApiError, BoxFuture, ExchangeApi, ExchangeConnector, RegistryApi, WorkerApi};
use longshot_etcd::CONNECT_PATIENCE;
use longshot_proto::auth::Tokens;
use longshot_proto::client::{GrpcExchangeConnector, GrpcWorkerConnector, RegistryClient};
use longshot_proto::connections::ConnectionLimits;
use longshot_proto::server::ServeOptions;
use longshot_proto::submit_rate::SubmitRate;
use longshot_proto::tls::{self, MemberTls};
use longshot_worker::device::DeviceRequest;
use longshot_worker::models::ModelSource;
use longshot_worker::transport::ServerError;
use longshot_worker::{Membership, ServeConfig, WorkerTransport};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A member's TLS flags (the CA is the global `--ca`).
#[derive(Args, Debug, Clone, Default)]
pub struct MemberTlsArgs {
    /// This member's certificate (PEM), signed by the cluster's CA (--ca): `longshot certs issue`.
    #[arg(long, value_name = "FILE", env = "LONGSHOT_CERT")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "FILE", env = "LONGSHOT_KEY")]
    pub key: Option<PathBuf>,
    /// Serve and connect in plaintext, without certificates. Only on a network you trust: any
    /// process that reaches the ports can then register workers, run and cancel shards, and read
    /// every job.
    #[arg(long, conflicts_with_all = ["cert", "key"])]
    pub insecure: bool,
}

/// `--health-listen`, a coordinator's and a worker's.
#[derive(Args, Debug, Clone, Default)]
pub struct HealthListenArgs {
    /// Also serve the gRPC health service alone, in plaintext, on this address (for probes that
    /// cannot speak TLS, such as Kubernetes' gRPC probes).
    #[arg(long = "health-listen", value_name = "ADDR")]
    pub addr: Option<String>,
}

impl HealthListenArgs {
    /// Binds the address, if given.
    async fn bind(&self) -> Result<Option<TcpListener>> {
        match &self.addr {
            None => Ok(None),
            Some(a) => {
                let listener = TcpListener::bind(a).await;
                Ok(Some(listener.with_context(|| {
                    format!("--health-listen {a}: cannot listen there")
                })?))
            }
        }
    }
}

impl MemberTlsArgs {
    /// The member's TLS material (installed for its outgoing connections too), or `None` with
    /// `--insecure`; without either, an error naming what is missing.
    pub fn load(&self, ca: Option<&Path>, role: &str) -> Result<Option<MemberTls>> {
        if self.insecure {
            tracing::warn!("--insecure: this {role} serves and connects in plaintext, without certificates");
            return Ok(None);
        }
        let (Some(ca), Some(cert), Some(key)) = (ca, &self.cert, &self.key) else {
            let missing: Vec<&str> = [
                ("--ca", ca.is_none()),
                ("--cert", self.cert.is_none()),
                ("--key", self.key.is_none()),
            ]
            .into_iter()
            .filter_map(|(flag, absent)| absent.then_some(flag))
            .collect();
            bail!(
                "a {role} uses TLS with a certificate of the cluster's CA: {} missing (make them with \
                 `longshot certs init` and `longshot certs issue`), or pass --insecure to use plaintext on a \
                 trusted network",
                missing.join(", ")
            );
        };
        let tls = MemberTls::load(ca, cert, key)?;
        tls::use_member_tls(&tls);
        Ok(Some(tls))
    }
}

/// How a member reaches a secured etcd (TLS, client certificates, etcd's auth).
#[derive(Args, Debug, Clone, Default)]
pub struct EtcdAccessArgs {
    /// With --etcd https://…: the CA certificate (PEM) that signed etcd's certificate (default:
    /// the system's roots).
    #[arg(long, value_name = "FILE", env = "LONGSHOT_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// A client certificate (PEM) for an etcd run with --client-cert-auth.
    #[arg(long, value_name = "FILE", env = "LONGSHOT_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The private key of --etcd-cert (PEM).
    #[arg(long, value_name = "FILE", env = "LONGSHOT_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// An etcd user (etcd's authentication); the password comes from LONGSHOT_ETCD_PASSWORD, so
    /// it never shows in a process list.
    #[arg(long, value_name = "NAME", env = "LONGSHOT_ETCD_USER")]
    pub etcd_user: Option<String>,
}

impl EtcdAccessArgs {
    /// Makes every etcd client of this process use these settings.
    pub fn install(&self) -> Result<()> {
        let read =
            |flag: &str, p: &Path| std::fs::read(p).with_context(|| format!("{flag} {}: cannot read it", p.display()));
        let ca_pem = self.etcd_ca.as_deref().map(|p| read("--etcd-ca", p)).transpose()?;
        let identity = match (&self.etcd_cert, &self.etcd_key) {
            (Some(c), Some(k)) => Some((read("--etcd-cert", c)?, read("--etcd-key", k)?)),
            _ => None,
        };
        let user = match &self.etcd_user {
            None => None,
            Some(u) => Some((
                u.clone(),
                std::env::var("LONGSHOT_ETCD_PASSWORD")
                    .map_err(|_| anyhow!("--etcd-user {u}: set its password in LONGSHOT_ETCD_PASSWORD"))?,
            )),
        };
        longshot_etcd::set_access(longshot_etcd::EtcdAccess { ca_pem, identity, user });
        Ok(())
    }

    /// The same settings as flags, for a child process.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, path) in [
            ("--etcd-ca", &self.etcd_ca),
            ("--etcd-cert", &self.etcd_cert),
            ("--etcd-key", &self.etcd_key),
        ] {
            if let Some(p) = path {
                args.extend([flag.to_string(), p.display().to_string()]);
            }
        }
        if let Some(u) = &self.etcd_user {
            args.extend(["--etcd-user".to_string(), u.clone()]);
        }
        args
    }
}

#[derive(Args, Debug, Clone)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub tls: MemberTlsArgs,
    #[command(flatten)]
    pub etcd_access: EtcdAccessArgs,
    #[command(flatten)]
    pub health_listen: HealthListenArgs,
    /// Address to serve the JobService and RegistryService on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Require a client token on every job-control call, checked against this file of token
    /// hashes and roles (`longshot tokens new` makes its lines; edits apply within 2 s, no
    /// restart). Without it any client that reaches the port may do anything.
    #[arg(long, env = "LONGSHOT_TOKENS_FILE", value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Where job outputs (and, without --etcd, the job records: jobs.redb) are kept. Coordinators
    /// that fail over with --etcd must share it (the same path on a shared volume).
    #[arg(long, default_value = "longshot-data")]
    pub data_dir: PathBuf,
    /// Finished jobs, their records and their outputs are removed this long after they finished
    /// (e.g. 7d, 12h, 30m, 90s).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    pub retain_finished: Duration,
    /// Refuse jobs of more frames than this (besides what the workers' memory can hold).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_frames: Option<u32>,
    /// Refuse jobs of more denoising steps than this.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_steps: Option<u32>,
    /// Refuse jobs whose outputs would take more than this (besides the data dir's free space):
    /// bytes, or with a unit (`200G`; powers of 1024).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_output_bytes: Option<u64>,
    /// The largest input a client may upload (a reference image, a decoded input video: ~1.2 MB
    /// a frame at 832x480): bytes, or with a unit (`64M`; powers of 1024).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "2G")]
    pub max_input_bytes: u64,
    /// Jobs one client address may submit a minute (0: no limit); more are refused, saying when
    /// to retry.
    #[arg(long, value_name = "N", default_value_t = 600)]
    pub max_submits_per_minute: u32,
    /// Jobs one client address may submit at once within --max-submits-per-minute.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub submit_burst: u32,
    /// Open client connections at most (more are closed at once).
    #[arg(long, value_name = "N", default_value_t = ConnectionLimits::default().max_connections, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// Open connections from one client address at most.
    #[arg(long, value_name = "N", default_value_t = ConnectionLimits::default().max_per_client, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections_per_client: usize,
    /// Seconds a client connection may stay silent (a live client answers the coordinator's
    /// pings every 30 s) before it is closed; a new one must speak within 10 s.
    #[arg(long, value_name = "SECS", default_value_t = ConnectionLimits::default().idle_timeout.as_secs_f64())]
    pub idle_timeout: f64,
    /// With --etcd: the address clients should use to reach this coordinator, told to them by a
    /// standby (default: http:// and the bound listen address).
    #[arg(long, value_name = "URL")]
    pub advertise: Option<String>,
    /// With --etcd: seconds the leader's lease outlives its last renewal (renewed every third of
    /// it): a killed leader is replaced within about this long.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_LEADER_TTL.as_secs(), value_parser = clap::value_parser!(u64).range(2..=300))]
    pub leader_ttl: u64,
    /// Seconds a worker waits for a neighbour's overlap before failing its shard.
    #[arg(long, default_value_t = 120.0)]
    pub exchange_timeout: f64,
    /// Seconds the worker asked to encode a job's prompts may take before the job fails.
    #[arg(long, default_value_t = 1800.0)]
    pub encode_timeout: f64,
    /// How gangs exchange overlap velocities: `tcp`, or `nccl` (NCCL where every worker of the
    /// gang can join it and no two share a GPU, TCP otherwise; not yet run across two GPUs).
    #[arg(long, default_value = "tcp", value_parser = parse_transport)]
    pub overlap_transport: OverlapTransport,
    /// Compare overlap hashes between neighbours every this many steps.
    #[arg(long, default_value_t = 5)]
    pub hash_every: usize,
    /// Checkpoint every window's state every N denoising steps and after the last, so a job
    /// resumes where it was after a lost worker or a coordinator restart. `auto`: every
    /// max(1, steps/25) steps (an interruption then costs ≤ ~2% of the job's steps); 0: never.
    #[arg(long, value_name = "N|auto", default_value = "auto", value_parser = parse_checkpoint_every)]
    pub checkpoint_every: CheckpointEvery,
    /// Seconds between worker heartbeats; a worker silent for 3 intervals is dropped.
    #[arg(long, default_value_t = 2.0)]
    pub heartbeat: f64,
    /// Keep worker membership and job records in etcd (http://host:port; repeat the flag or
    /// separate with commas for several members). Workers then need --etcd too.
    #[arg(long = "etcd", value_name = "URL", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (`off`: none).
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:9464", value_parser = metrics_http::parse_listen)]
    pub metrics_listen: metrics_http::Listen,
}

fn parse_transport(s: &str) -> Result<OverlapTransport, String> {
    s.parse()
}

/// `--checkpoint-every`: a number of steps, or `None` for the per-job default.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointEvery(pub Option<usize>);

fn parse_checkpoint_every(s: &str) -> Result<CheckpointEvery, String> {
    match s {
        "auto" => Ok(CheckpointEvery(None)),
        n => n
            .parse::<usize>()
            .map(|n| CheckpointEvery(Some(n)))
            .map_err(|_| format!("{n:?} is not a number of steps (0: never) or `auto`")),
    }
}

/// `24G`, `512M`, `64k` (powers of 1024; `GiB`-style units too) or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 24G, 512M or 1048576"))?;
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "k" | "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{s:?}: the unit must be K, M, G or T (powers of 1024)")),
    };
    n.checked_mul(1 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{s:?} is not a size in 1 B..16 EiB"))
}

/// `7d`, `12h`, `30m`, `90s`, `500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 7d, 12h, 30m or 90s"))?;
    let scale = match unit {
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("{s:?}: the unit must be ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{s:?}: {e}"))
}

impl CoordinatorArgs {
    /// The client connection limits (`--max-connections`, `--max-connections-per-client`,
    /// `--idle-timeout`).
    pub fn connection_limits(&self) -> ConnectionLimits {
        let idle = Duration::try_from_secs_f64(self.idle_timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .unwrap_or(ConnectionLimits::default().idle_timeout);
        ConnectionLimits {
            max_connections: self.max_connections,
            max_per_client: self.max_connections_per_client,
            handshake_timeout: ConnectionLimits::default().handshake_timeout.min(idle),
            idle_timeout: idle,
        }
    }

    /// `--tokens`, loaded (a bad file stops startup) and re-read while the process runs.
    pub fn client_tokens(&self) -> Result<Option<Arc<Tokens>>> {
        let Some(path) = &self.tokens else {
            return Ok(None);
        };
        let tokens = Tokens::load(path).context("--tokens")?;
        let n = tokens.set().len();
        if n == 0 {
            tracing::warn!(
                "{} lists no tokens: every job-control call will be refused",
                path.display()
            );
        }
        tracing::info!(path = %path.display(), tokens = n, "job-control calls need a client token");
        tokens.watch();
        Ok(Some(tokens))
    }

    /// `--max-submits-per-minute` and `--submit-burst` (`None`: no limit).
    pub fn submit_rate(&self) -> Option<SubmitRate> {
        Some(SubmitRate {
            per_minute: std::num::NonZeroU32::new(self.max_submits_per_minute)?,
            burst: std::num::NonZeroU32::new(self.submit_burst)?,
        })
    }

    pub fn config(&self) -> Result<CoordinatorConfig> {
        let secs = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 86_400.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(anyhow!("--{name} {v} is not in (0, 86400] seconds"))
            }
        };
        let mut cfg = CoordinatorConfig::new(self.data_dir.clone());
        cfg.exchange_timeout = secs("exchange-timeout", self.exchange_timeout)?;
        cfg.heartbeat_interval = secs("heartbeat", self.heartbeat)?;
        cfg.encode_timeout = secs("encode-timeout", self.encode_timeout)?;
        cfg.hash_every = self.hash_every;
        cfg.checkpoint_every = self.checkpoint_every.0;
        cfg.overlap_transport = self.overlap_transport;
        cfg.retain_finished = self.retain_finished;
        cfg.limits = AdmissionLimits {
            max_frames: self.max_frames,
            max_steps: self.max_steps,
            max_output_bytes: self.max_output_bytes,
            max_input_bytes: self.max_input_bytes,
        };
        cfg.version = env!("LONGSHOT_BUILD").into();
        cfg.metrics = self.metrics_listen.0.is_some().then(prometheus::Registry::new);
        Ok(cfg)
    }

    /// Serves the coordinator's metrics when `--metrics-listen` is not `off`.
    pub async fn serve_metrics(&self, cfg: &CoordinatorConfig) -> Result<Option<std::net::SocketAddr>> {
        match (&self.metrics_listen.0, &cfg.metrics) {
            (Some(listen), Some(registry)) => Ok(Some(metrics_http::serve(listen, registry.clone()).await?)),
            _ => Ok(None),
        }
    }

    /// Membership and job records: in memory with job records in `<data dir>/jobs.redb` when
    /// `durable` (else none: local clusters), or in etcd with `--etcd` (retrying an unreachable
    /// etcd for a bounded time). The data dir is made absolute, because job records name their
    /// output directories and a restart may run from another working directory.
    pub async fn backend(&self, cfg: &mut CoordinatorConfig, durable: bool) -> Result<Backend> {
        if self.etcd.is_empty() && !durable {
            let registry = Arc::new(InMemoryRegistry::new(cfg.heartbeat_interval * 3));
            return Ok(Backend {
                registry,
                store: Arc::new(NoJobStore),
                records: Vec::new(),
            });
        }
        absolute_data_dir(cfg).await?;
        if self.etcd.is_empty() {
            let store = EmbeddedJobStore::open(&cfg.data_dir).await?;
            let records = store.load().await.context("cannot load the job records")?;
            tracing::info!("{} job records in {}", records.len(), cfg.data_dir.display());
            return Ok(Backend {
                registry: Arc::new(InMemoryRegistry::new(cfg.heartbeat_interval * 3)),
                store: Arc::new(store),
                records,
            });
        }
        let registry = EtcdRegistry::start(self.etcd.clone(), CONNECT_PATIENCE)
            .await
            .context("cannot use etcd")?;
        let store = EtcdJobStore::open(self.etcd.clone(), cfg.data_dir.clone(), CONNECT_PATIENCE)
            .await
            .context("cannot use etcd")?;
        let records = store.load().await.context("cannot load the job records from etcd")?;
        tracing::info!(
            "etcd {}: {} job records of data dir {}",
            self.etcd.join(","),
            records.len(),
            cfg.data_dir.display()
        );
        Ok(Backend {
            registry: Arc::new(registry),
            store: Arc::new(store),
            records,
        })
    }
}

async fn absolute_data_dir(cfg: &mut CoordinatorConfig) -> Result<()> {
    let dir = &cfg.data_dir;
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    cfg.data_dir = tokio::fs::canonicalize(dir)
        .await
        .with_context(|| format!("cannot resolve the data dir {}", dir.display()))?;
    Ok(())
}

/// Where a coordinator keeps membership and job records (see [`CoordinatorArgs::backend`]).
pub struct Backend {
    registry: Arc<dyn Registry>,
    pub store: Arc<dyn JobStore>,
    records: Vec<JobRecord>,
}

/// Starts a coordinator on `listener`; returns it and the server task.
pub fn start_coordinator(
    listener: TcpListener,
    cfg: CoordinatorConfig,
    backend: Backend,
    options: ServeOptions,
    shutdown: watch::Receiver<bool>,
) -> (Coordinator, tokio::task::JoinHandle<Result<()>>) {
    let Backend {
        registry,
        store,
        records,
    } = backend;
    let coordinator = Coordinator::start_with(cfg, registry, Arc::new(GrpcWorkerConnector), store, records);
    let c = coordinator.clone();
    // Without etcd the only coordinator leads.
    let (_, leading) = watch::channel(true);
    let server = tokio::spawn(async move {
        let (jobs, registry) = (Arc::new(c.clone()), Arc::new(c));
        longshot_proto::server::serve_coordinator(listener, jobs, registry, leading, options, wait_for(shutdown))
            .await
            .map_err(|e| anyhow!("{e}"))
    });
    (coordinator, server)
}

/// `https` with TLS, `http` without.
pub fn scheme(tls: &Option<MemberTls>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

pub async fn coordinator(a: CoordinatorArgs, ca: Option<PathBuf>) -> Result<()> {
    let tls = a.tls.load(ca.as_deref(), "coordinator")?;
    a.etcd_access.install()?;
    let mut cfg = a.config()?;
    let listener = TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    a.serve_metrics(&cfg).await?;
    let leading = leader_gauge(cfg.metrics.as_ref());
    if !a.etcd.is_empty() {
        return coordinator_with_etcd(a, cfg, listener, tls, leading).await;
    }
    let backend = a.backend(&mut cfg, true).await?;
    let store = backend.store.clone();
    let data_dir = cfg.data_dir.clone();
    let (tx, rx) = watch::channel(false);
    let scheme = scheme(&tls);
    let options = ServeOptions {
        limits: a.connection_limits(),
        tls,
        health: a.health_listen.bind().await?,
        submit_rate: a.submit_rate(),
        tokens: a.client_tokens()?,
        max_request_bytes: None,
    };
    let (_c, server) = start_coordinator(listener, cfg, backend, options, rx);
    leading.set(1);
    tracing::info!(
        "coordinator listening on {scheme}://{addr} (data in {})",
        data_dir.display()
    );
    println!("coordinator listening on {addr}");
    tokio::select! {
        _ = interrupted() => tracing::info!("shutting down"),
        r = server => return r.map_err(|e| anyhow!("server task: {e}"))?,
    }
    let _ = tx.send(true);
    if !store.flush(Duration::from_secs(5)).await {
        tracing::warn!("some job records were not stored before shutdown");
    }
    Ok(())
}

/// With etcd: serves at once (a standby's answers), campaigns, and once elected loads the
/// records and runs the coordinator until shutdown or until the leadership is lost (then it exits
/// with an error, so a supervisor restarts it as a standby).
async fn coordinator_with_etcd(
    a: CoordinatorArgs,
    mut cfg: CoordinatorConfig,
    listener: TcpListener,
    tls: Option<MemberTls>,
    leading: prometheus::IntGauge,
) -> Result<()> {
    let addr = listener.local_addr()?;
    let scheme = scheme(&tls);
    absolute_data_dir(&mut cfg).await?;
    let registry = EtcdRegistry::start(a.etcd.clone(), CONNECT_PATIENCE)
        .await
        .context("cannot use etcd")?;
    let gate = Arc::new(Gate::new(a.etcd.clone()));
    let (tx, rx) = watch::channel(false);
    let (lead_tx, lead_rx) = watch::channel(false);
    let limits = a.connection_limits();
    let health = a.health_listen.bind().await?;
    let submit_rate = a.submit_rate();
    let tokens = a.client_tokens()?;
    let g = gate.clone();
    let mut server = tokio::spawn(async move {
        longshot_proto::server::serve_coordinator(
            listener,
            g.clone(),
            g,
            lead_rx,
            ServeOptions {
                limits,
                tls,
                health,
                submit_rate,
                tokens,
                max_request_bytes: None,
            },
            wait_for(rx),
        )
        .await
        .map_err(|e| anyhow!("{e}"))
    });
    tracing::info!(
        "coordinator listening on {scheme}://{addr} (data in {})",
        cfg.data_dir.display()
    );
    println!("coordinator listening on {addr}");
    let advertise = a.advertise.clone().unwrap_or_else(|| format!("{scheme}://{addr}"));
    let ttl = Duration::from_secs(a.leader_ttl);
    let mut leadership = tokio::select! {
        l = leader::campaign(&a.etcd, &advertise, ttl) => l,
        _ = interrupted() => return Ok(()),
        r = &mut server => return r.map_err(|e| anyhow!("server task: {e}"))?,
    };
    let store = EtcdJobStore::open_guarded(
        a.etcd.clone(),
        cfg.data_dir.clone(),
        CONNECT_PATIENCE,
        Some(leadership.guard.clone()),
    )
    .await
    .context("cannot use etcd")?;
    let records = store.load().await.context("cannot load the job records from etcd")?;
    tracing::info!(
        "leading: {} job records of data dir {}",
        records.len(),
        cfg.data_dir.display()
    );
    let mut fenced = store.fenced();
    let store = Arc::new(store);
    let coordinator = Coordinator::start_with(
        cfg,
        Arc::new(registry),
        Arc::new(GrpcWorkerConnector),
        store.clone(),
        records,
    );
    gate.lead(coordinator);
    leading.set(1);
    let _ = lead_tx.send(true);
    let outcome = tokio::select! {
        _ = interrupted() => Ok(()),
        r = server => r.map_err(|e| anyhow!("server task: {e}")).and_then(|r| r),
        why = leadership.lost() => Err(anyhow!("lost the leadership ({why}); exiting")),
        _ = fenced.wait_for(|f| f.is_some()) => Err(anyhow!("another coordinator leads now; exiting")),
    };
    let _ = tx.send(true);
    if outcome.is_ok() {
        tracing::info!("shutting down");
        if !store.flush(Duration::from_secs(5)).await {
            tracing::warn!("some job records did not reach etcd before shutdown");
        }
        leadership.resign().await;
    }
    outcome
}

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub tls: MemberTlsArgs,
    #[command(flatten)]
    pub etcd_access: EtcdAccessArgs,
    #[command(flatten)]
    pub health_listen: HealthListenArgs,
    /// Address to serve the WorkerService and ExchangeService on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Address other processes use to reach this worker (default: the bound listen address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Worker id, unique in the cluster (default: hostname-pid).
    #[arg(long)]
    pub id: Option<String>,
    /// Seconds to keep retrying an unreachable coordinator (default 30) or etcd (default 10) at
    /// start-up.
    #[arg(long)]
    pub connect_timeout: Option<f64>,
    /// Register in etcd instead of with a coordinator (http://host:port; repeat the flag or
    /// separate with commas for several members).
    #[arg(long = "etcd", value_name = "URL", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Seconds the etcd registration outlives the last renewal (renewed every third of it).
    #[arg(long, default_value_t = 10)]
    pub lease_ttl: u64,
    /// Serve a Wan2.1 pipeline directory (diffusers layout, with model_index.json), as DIR or
    /// NAME=DIR; repeat for several. Default name: wan2.1-t2v-1.3b or wan2.1-t2v-14b by the
    /// transformer's shape, else wan2.1-<directory name>. The procedural model is always served.
    #[arg(long = "model", value_name = "[NAME=]DIR")]
    pub models: Vec<ModelSource>,
    /// Where models compute: auto (the GPU when this build has CUDA support and one is usable,
    /// else the CPU, saying why in one log line), cpu, or cuda (refuse to start without a GPU).
    #[arg(long, default_value = "auto", value_name = "auto|cpu|cuda")]
    pub device: DeviceRequest,
    /// Also serve `standin`, a stand-in for a GPU model whose forward waits MS milliseconds and
    /// computes nothing: measures the cluster's own costs without GPUs (benches/cluster_scaling.sh).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub standin_forward_ms: Option<u64>,
    /// Serve Prometheus metrics on http://ADDR/metrics (`off`: none).
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:9465", value_parser = metrics_http::parse_listen)]
    pub metrics_listen: metrics_http::Listen,
    /// With traces exported (OTEL_EXPORTER_OTLP_ENDPOINT): every Nth denoising step of a shard is
    /// a span, the first included (0: none). One span per step is too many for long jobs.
    #[arg(long, value_name = "N", env = "LONGSHOT_TRACE_STEPS", default_value_t = longshot_worker::trace::DEFAULT_TRACE_STEPS)]
    pub trace_steps: usize,
    /// Exit when standard input closes (used by `longshot render` and `up` for their children).
    #[arg(long, hide = true)]
    pub exit_on_stdin_close: bool,
    /// Memory for job state (the latents of the windows a shard holds): bytes, or with a unit
    /// (`24G`, `512M`; powers of 1024). Default: three quarters of the device's memory (host
    /// memory on the CPU). The coordinator never assigns more; the worker refuses more.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_budget: Option<u64>,
    /// Worker processes sharing this machine's memory (set by `render` and `up`).
    #[arg(long, hide = true, default_value_t = 1)]
    pub host_share: usize,
}

async fn stdin_closed() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

impl WorkerArgs {
    /// What `longshot_worker::serve` runs, registering with `coordinator` unless `--etcd` is given.
    pub fn config(&self, coordinator: String) -> ServeConfig {
        let membership = if self.etcd.is_empty() {
            Membership::Coordinator(coordinator)
        } else {
            Membership::Etcd {
                endpoints: self.etcd.clone(),
                lease_ttl: Duration::from_secs(self.lease_ttl),
            }
        };
        ServeConfig {
            id: self.id.clone(),
            advertise: self.advertise.clone(),
            models: self.models.clone(),
            device: self.device,
            membership,
            connect_timeout: self
                .connect_timeout
                .map(|s| Duration::from_secs_f64(s.clamp(0.1, 3600.0))),
            version: env!("LONGSHOT_BUILD").into(),
            standin_forward: self.standin_forward_ms.map(Duration::from_millis),
            metrics: self.metrics_listen.0.is_some().then(prometheus::Registry::new),
            trace_steps: self.trace_steps,
            memory_budget: self.memory_budget,
            host_share: self.host_share,
        }
    }
}

/// The worker over gRPC (`longshot_proto`), with TLS when it has a member certificate.
struct GrpcTransport {
    tls: Option<MemberTls>,
    /// `--health-listen`, taken by the first (only) serve.
    health: std::sync::Mutex<Option<TcpListener>>,
}

impl WorkerTransport for GrpcTransport {
    fn exchange_connector(&self) -> Arc<dyn ExchangeConnector> {
        Arc::new(GrpcExchangeConnector)
    }

    fn registry(&self, endpoint: &str) -> Result<Arc<dyn RegistryApi>, ApiError> {
        Ok(Arc::new(RegistryClient::connect_lazy(endpoint)?))
    }

    fn serve(
        &self,
        listener: TcpListener,
        max_request_bytes: u64,
        worker: Arc<dyn WorkerApi>,
        exchange: Arc<dyn ExchangeApi>,
        shutdown: BoxFuture<'static, ()>,
    ) -> BoxFuture<'static, Result<(), ServerError>> {
        let tls = self.tls.clone();
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner()).take();
        Box::pin(async move {
            let options = ServeOptions {
                tls,
                health,
                max_request_bytes: Some(usize::try_from(max_request_bytes).unwrap_or(usize::MAX)),
                ..Default::default()
            };
            Ok(longshot_proto::server::serve_worker(listener, worker, exchange, options, shutdown).await?)
        })
    }
}

pub async fn worker_with(a: WorkerArgs, coordinator: String, ca: Option<PathBuf>) -> Result<()> {
    let tls = a.tls.load(ca.as_deref(), "worker")?;
    a.etcd_access.install()?;
    let listener = TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let shutdown = async move {
        let stdin_watch = async {
            if a.exit_on_stdin_close {
                stdin_closed().await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = interrupted() => {}
            _ = stdin_watch => {}
        }
    };
    let config = a.config(coordinator);
    if let (Some(listen), Some(registry)) = (&a.metrics_listen.0, &config.metrics) {
        metrics_http::serve(listen, registry.clone()).await?;
    }
    let health = std::sync::Mutex::new(a.health_listen.bind().await?);
    Ok(longshot_worker::serve(config, Arc::new(GrpcTransport { tls, health }), listener, shutdown).await?)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("24G"), Ok(24 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").unwrap_err().contains("unit"));
        assert!(parse_size("99999999T").is_err(), "overflow is refused");
    }
}
