//! The cluster's processes: `longshot coordinator` and `longshot worker`.

use anyhow::{anyhow, Context, Result};
use clap::Args;
use longshot_coordinator::{Coordinator, CoordinatorConfig, InMemoryRegistry};
use longshot_core::api::{RegistryApi, WorkerInfo, WorkerState};
use longshot_proto::client::{GrpcExchangeConnector, GrpcWorkerConnector, RegistryClient};
use longshot_worker::{membership, models, WorkerNode};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Args, Debug, Clone)]
pub struct CoordinatorArgs {
    /// Address to serve the JobService and RegistryService on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Where job outputs are kept.
    #[arg(long, default_value = "longshot-data")]
    pub data_dir: PathBuf,
    /// Seconds a worker waits for a neighbour's overlap before failing its shard.
    #[arg(long, default_value_t = 120.0)]
    pub exchange_timeout: f64,
    /// Compare overlap hashes between neighbours every this many steps.
    #[arg(long, default_value_t = 5)]
    pub hash_every: usize,
    /// Seconds between worker heartbeats; a worker silent for 3 intervals is dropped.
    #[arg(long, default_value_t = 2.0)]
    pub heartbeat: f64,
}

impl CoordinatorArgs {
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
        cfg.hash_every = self.hash_every;
        Ok(cfg)
    }
}

/// Starts a coordinator on `listener`; returns it and the server task.
pub fn start_coordinator(listener: TcpListener, cfg: CoordinatorConfig, shutdown: watch::Receiver<bool>) -> (Coordinator, tokio::task::JoinHandle<Result<()>>) {
    let registry = Arc::new(InMemoryRegistry::new(cfg.heartbeat_interval * 3));
    let coordinator = Coordinator::start(cfg, registry, Arc::new(GrpcWorkerConnector::default()));
    let c = coordinator.clone();
    let server = tokio::spawn(async move {
        longshot_proto::server::serve_coordinator(listener, Arc::new(c.clone()), Arc::new(c), wait_for(shutdown)).await.map_err(|e| anyhow!("{e}"))
    });
    (coordinator, server)
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

pub async fn coordinator(a: CoordinatorArgs) -> Result<()> {
    let cfg = a.config()?;
    let listener = TcpListener::bind(&a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let (_c, server) = start_coordinator(listener, cfg, rx);
    tracing::info!("coordinator listening on {addr} (data in {})", a.data_dir.display());
    println!("coordinator listening on {addr}");
    tokio::select! {
        _ = interrupted() => tracing::info!("shutting down"),
        r = server => return r.map_err(|e| anyhow!("server task: {e}"))?,
    }
    let _ = tx.send(true);
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Address to serve the WorkerService and ExchangeService on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Address other processes use to reach this worker (default: the bound listen address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Worker id, unique in the cluster (default: hostname-pid).
    #[arg(long)]
    pub id: Option<String>,
    /// Seconds to keep retrying an unreachable coordinator at start-up.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Exit when standard input closes (used by `longshot render` and `up` for their children).
    #[arg(long, hide = true)]
    pub exit_on_stdin_close: bool,
}

fn device_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
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

pub async fn worker_with(a: WorkerArgs, coordinator: String) -> Result<()> {
    let listener = TcpListener::bind(&a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
    let address = a.advertise.clone().unwrap_or(listener.local_addr()?.to_string());
    let id = a.id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    let node = WorkerNode::new(id.clone(), Arc::new(GrpcExchangeConnector::default()));
    let info = WorkerInfo {
        id: id.clone(),
        address: address.clone(),
        device_kind: "cpu".into(),
        device_name: device_name(),
        memory_bytes: memory_bytes(),
        models: models::served(),
        version: env!("CARGO_PKG_VERSION").into(),
        state: WorkerState::Idle,
    };
    let (tx, rx) = watch::channel(false);
    let n = node.clone();
    let server = tokio::spawn(async move {
        longshot_proto::server::serve_worker(listener, Arc::new(n.clone()), Arc::new(n), wait_for(rx)).await.map_err(|e| anyhow!("{e}"))
    });
    let registry: Arc<dyn RegistryApi> = Arc::new(RegistryClient::connect_lazy(&coordinator).map_err(|e| anyhow!("{e}"))?);
    let patience = Duration::from_secs_f64(a.connect_timeout.clamp(0.1, 3600.0));
    let ack = membership::register(registry.as_ref(), &info, patience)
        .await
        .map_err(|e| anyhow!("worker {id} could not register with the coordinator at {coordinator}: {e}"))?;
    tracing::info!("worker {id} serving on {address}, registered with {coordinator}");
    let heartbeat = tokio::spawn(membership::heartbeat_loop(registry, info, node.clone(), ack.heartbeat_interval, tx.subscribe()));
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
        r = server => return r.map_err(|e| anyhow!("server task: {e}"))?,
    }
    tracing::info!("worker {id} shutting down");
    node.cancel_all();
    let _ = tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), heartbeat).await;
    Ok(())
}
