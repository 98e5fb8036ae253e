//! [`serve`]: a worker process's life. Pick the device and load the models, describe the machine,
//! serve the worker and exchange APIs, join the cluster (a coordinator's registry or etcd), and on
//! shutdown cancel the running shard and leave the cluster.

use crate::device::{self, DeviceError, DeviceRequest};
use crate::etcd_membership::{EtcdMembership, EtcdMembershipConfig, MembershipError, StateFn};
use crate::machine;
use crate::metrics::WorkerMetrics;
use crate::models::{ModelError, ModelSet, ModelSource};
use crate::nccl::NcclSupport;
use crate::transport::WorkerTransport;
use crate::{membership, WorkerNode};
use longshot_core::api::{WorkerInfo, WorkerState};
use longshot_models::StandinModel;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How a worker joins its cluster.
#[derive(Clone, Debug)]
pub enum Membership {
    /// Registers with the coordinator at this endpoint and heartbeats; deregisters on shutdown.
    Coordinator(String),
    /// Registers in etcd under a lease of `lease_ttl`; revokes it on shutdown.
    Etcd {
        endpoints: Vec<String>,
        lease_ttl: Duration,
    },
}

/// What [`serve`] needs besides its listener.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Unique in the cluster; default [`machine::default_id`].
    pub id: Option<String>,
    /// The address others reach this worker at; default the listener's address.
    pub advertise: Option<String>,
    /// Wan2.1 pipelines to serve besides the built-in models.
    pub models: Vec<ModelSource>,
    pub device: DeviceRequest,
    pub membership: Membership,
    /// How long to retry an unreachable coordinator (default 30 s) or etcd (default 10 s).
    pub connect_timeout: Option<Duration>,
    /// The build this worker runs; the coordinator gangs only workers of one version.
    pub version: String,
    /// Also serve the stand-in model with this forward time (`longshot_models::standin`).
    pub standin_forward: Option<Duration>,
    /// Where the worker's metrics are registered (`None`: kept, not exported).
    pub metrics: Option<prometheus::Registry>,
    /// Every how many denoising steps a shard's step is a trace span (0: none;
    /// [`crate::trace::DEFAULT_TRACE_STEPS`]).
    pub trace_steps: usize,
    /// Bytes of job state (windows' latents) this worker takes on; default
    /// [`default_budget`] of its device memory.
    pub memory_budget: Option<u64>,
    /// Workers on this machine sharing its host memory (`render`/`up`): a CPU worker's default
    /// budget is its share.
    pub host_share: usize,
}

/// Three quarters of `memory_bytes`: the rest is left to the model, its activations and the
/// process itself.
pub fn default_budget(memory_bytes: u64) -> u64 {
    memory_bytes / 4 * 3
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Models(#[from] ModelError),
    #[error("{what} task: {reason}")]
    Task { what: &'static str, reason: String },
    #[error("cannot read the listener's address: {0}")]
    Address(std::io::Error),
    #[error("{0}")]
    Connect(String),
    #[error("worker {id} could not register with the coordinator at {endpoint}: {reason}")]
    Register {
        id: String,
        endpoint: String,
        reason: String,
    },
    #[error("worker {id} could not register in etcd: {reason}")]
    Etcd { id: String, reason: MembershipError },
    #[error("{0}")]
    Server(String),
    #[error("worker metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Runs a worker on `listener` until `shutdown` resolves (or the server fails). The device is
/// picked and the models loaded before the worker joins the cluster, so a worker that registers
/// can run what it advertises.
pub async fn serve(
    config: ServeConfig,
    transport: Arc<dyn WorkerTransport>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let task = |what| {
        move |e: tokio::task::JoinError| ServeError::Task {
            what,
            reason: e.to_string(),
        }
    };
    let request = config.device;
    let dev = tokio::task::spawn_blocking(move || device::select(request))
        .await
        .map_err(task("device probe"))??;
    let sources = config.models.clone();
    for s in &sources {
        tracing::info!("loading the model at {}", s.dir.display());
    }
    let d = dev.clone();
    let models = tokio::task::spawn_blocking(move || ModelSet::load(&sources, &d));
    let mut models = models.await.map_err(task("model loading"))??;
    if let Some(forward) = config.standin_forward {
        models.add(Arc::new(StandinModel::new(forward)))?;
        tracing::info!(
            "serving the stand-in model {} (forward {forward:?})",
            StandinModel::NAME
        );
    }
    let models = Arc::new(models);
    let address = match config.advertise.clone() {
        Some(a) => a,
        None => listener.local_addr().map_err(ServeError::Address)?.to_string(),
    };
    let id = config.id.clone().unwrap_or_else(machine::default_id);
    let nccl = NcclSupport::detect(&dev);
    let metrics = match &config.metrics {
        Some(registry) => {
            let probed = dev.clone();
            WorkerMetrics::watch_device_memory(registry, move || machine::memory_in_use(&probed))?;
            WorkerMetrics::register(registry, &config.version, &id, dev.kind())?
        }
        None => WorkerMetrics::unregistered(),
    };
    let node = WorkerNode::with_metrics(
        id.clone(),
        transport.exchange_connector(),
        models.clone(),
        nccl.clone(),
        metrics,
    );
    node.set_trace_steps(config.trace_steps);
    let memory_bytes = machine::memory_bytes(&dev);
    let share = if dev.kind() == "cpu" {
        config.host_share.max(1) as u64
    } else {
        1
    };
    let budget_bytes = config
        .memory_budget
        .unwrap_or_else(|| default_budget(memory_bytes) / share);
    node.set_budget(budget_bytes);
    let info = WorkerInfo {
        id: id.clone(),
        address: address.clone(),
        device_kind: dev.kind().into(),
        device_name: machine::device_name(&dev),
        memory_bytes,
        budget_bytes,
        models: models.served(),
        version: config.version.clone(),
        state: WorkerState::Idle,
        nccl_gpu: nccl.gpu().map(Into::into),
    };
    let (tx, rx) = watch::channel(false);
    let served = transport.serve(
        listener,
        longshot_core::admission::largest_worker_message(budget_bytes),
        Arc::new(node.clone()),
        Arc::new(node.clone()),
        Box::pin(wait_for(rx)),
    );
    let server = tokio::spawn(served);
    let patience = |default: f64| config.connect_timeout.unwrap_or(Duration::from_secs_f64(default));
    let joined = match &config.membership {
        Membership::Coordinator(endpoint) => {
            let registry = transport
                .registry(endpoint)
                .map_err(|e| ServeError::Connect(e.to_string()))?;
            let registered = membership::register(registry.as_ref(), &info, patience(30.0)).await;
            let ack = registered.map_err(|e| ServeError::Register {
                id: id.clone(),
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
            tracing::info!("worker {id} serving on {address}, registered with {endpoint}");
            let interval = ack.heartbeat_interval;
            let heartbeat = membership::heartbeat_loop(registry, info, node.clone(), interval, tx.subscribe());
            Joined::Coordinator(tokio::spawn(heartbeat))
        }
        Membership::Etcd { endpoints, lease_ttl } => {
            let connect_patience = patience(10.0);
            let cfg = EtcdMembershipConfig {
                endpoints: endpoints.clone(),
                lease_ttl: *lease_ttl,
                connect_patience,
            };
            let n = node.clone();
            let state: StateFn = Arc::new(move || {
                if n.busy_job().is_some() {
                    WorkerState::Busy
                } else {
                    WorkerState::Idle
                }
            });
            let started = EtcdMembership::start(cfg, info, state).await;
            let m = started.map_err(|reason| ServeError::Etcd { id: id.clone(), reason })?;
            tracing::info!(
                "worker {id} serving on {address}, registered in etcd at {}",
                endpoints.join(",")
            );
            Joined::Etcd(m)
        }
    };
    tokio::select! {
        _ = shutdown => {}
        r = server => return r.map_err(task("server"))?.map_err(|e| ServeError::Server(e.to_string())),
    }
    tracing::info!("worker {id} shutting down");
    node.cancel_all();
    let _ = tx.send(true);
    match joined {
        Joined::Coordinator(heartbeat) => drop(tokio::time::timeout(Duration::from_secs(5), heartbeat).await),
        Joined::Etcd(m) => m.shutdown().await,
    }
    Ok(())
}

/// How a worker is a member of its cluster.
enum Joined {
    /// Registered with a coordinator; the heartbeat task deregisters on shutdown.
    Coordinator(tokio::task::JoinHandle<()>),
    /// Registered in etcd; shutting the membership down revokes its lease.
    Etcd(EtcdMembership),
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use longshot_core::api::{
        ApiError, BoxFuture, BoxStream, ExchangeApi, ExchangeConnector, OverlapEnvelope, RegisterAck, RegistryApi,
        WorkerApi,
    };
    use longshot_models::ProceduralModel;
    use std::sync::Mutex;

    /// Records what the worker tells its coordinator.
    #[derive(Default)]
    struct Registry {
        registered: Mutex<Vec<WorkerInfo>>,
        deregistered: Mutex<Vec<String>>,
    }

    impl RegistryApi for Registry {
        fn register(&self, worker: WorkerInfo) -> BoxFuture<'_, Result<RegisterAck, ApiError>> {
            let ack = RegisterAck {
                worker_id: worker.id.clone(),
                heartbeat_interval: Duration::from_secs(60),
            };
            self.registered.lock().unwrap().push(worker);
            Box::pin(async move { Ok(ack) })
        }
        fn heartbeat(&self, _: String, _: WorkerState, _: Option<String>) -> BoxFuture<'_, Result<bool, ApiError>> {
            Box::pin(async { Ok(true) })
        }
        fn deregister(&self, worker_id: String) -> BoxFuture<'_, Result<(), ApiError>> {
            self.deregistered.lock().unwrap().push(worker_id);
            Box::pin(async { Ok(()) })
        }
    }

    /// Serves nothing until shutdown; no neighbour is ever dialled.
    struct Transport(Arc<Registry>);

    impl ExchangeConnector for Transport {
        fn open(
            &self,
            address: String,
            _: BoxStream<OverlapEnvelope>,
        ) -> BoxFuture<'static, Result<BoxStream<Result<OverlapEnvelope, ApiError>>, ApiError>> {
            Box::pin(async move { Err(ApiError::Unavailable(format!("no exchange at {address} in this test"))) })
        }
    }

    impl WorkerTransport for Transport {
        fn exchange_connector(&self) -> Arc<dyn ExchangeConnector> {
            Arc::new(Transport(self.0.clone()))
        }
        fn registry(&self, _: &str) -> Result<Arc<dyn RegistryApi>, ApiError> {
            Ok(self.0.clone())
        }
        fn serve(
            &self,
            _: TcpListener,
            _: u64,
            _: Arc<dyn WorkerApi>,
            _: Arc<dyn ExchangeApi>,
            shutdown: BoxFuture<'static, ()>,
        ) -> BoxFuture<'static, Result<(), crate::transport::ServerError>> {
            Box::pin(async move {
                shutdown.await;
                Ok(())
            })
        }
    }

    fn config(id: &str) -> ServeConfig {
        ServeConfig {
            id: Some(id.into()),
            advertise: None,
            models: Vec::new(),
            device: DeviceRequest::Cpu,
            membership: Membership::Coordinator("coordinator".into()),
            connect_timeout: None,
            version: "test-version".into(),
            standin_forward: None,
            metrics: None,
            trace_steps: 0,
            memory_budget: None,
            host_share: 1,
        }
    }

    /// Serves `config` on `listener` until the worker has registered, then shuts it down.
    async fn serve_until_registered(config: ServeConfig, listener: TcpListener) -> Arc<Registry> {
        let registry = Arc::new(Registry::default());
        let r = registry.clone();
        let shutdown = async move {
            while r.registered.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        serve(config, Arc::new(Transport(registry.clone())), listener, shutdown)
            .await
            .unwrap();
        registry
    }

    #[tokio::test]
    async fn a_worker_describes_itself_registers_and_deregisters_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let registry = serve_until_registered(config("w-serve"), listener).await;
        let registered = registry.registered.lock().unwrap().clone();
        assert_eq!(registered.len(), 1);
        let info = &registered[0];
        assert_eq!((info.id.as_str(), info.address.as_str()), ("w-serve", address.as_str()));
        assert_eq!(
            (info.device_kind.as_str(), info.version.as_str()),
            ("cpu", "test-version")
        );
        assert!(!info.device_name.is_empty());
        assert_eq!(
            info.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            [ProceduralModel::NAME]
        );
        assert_eq!(*registry.deregistered.lock().unwrap(), ["w-serve"]);
    }

    #[tokio::test]
    async fn the_stand_in_model_is_served_only_when_asked() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = ServeConfig {
            standin_forward: Some(Duration::from_millis(350)),
            ..config("w-standin")
        };
        let registry = serve_until_registered(config, listener).await;
        let registered = registry.registered.lock().unwrap().clone();
        let models: Vec<(&str, &str)> = registered[0]
            .models
            .iter()
            .map(|m| (m.name.as_str(), m.weights.as_str()))
            .collect();
        assert_eq!(
            models,
            [
                (ProceduralModel::NAME, ""),
                (StandinModel::NAME, "standin, forward 350000 µs")
            ]
        );
    }

    #[tokio::test]
    async fn an_exporting_worker_reports_its_device_memory() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = prometheus::Registry::new();
        let config = ServeConfig {
            metrics: Some(metrics.clone()),
            ..config("w-metrics")
        };
        serve_until_registered(config, listener).await;
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&metrics.gather())
            .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("longshot_worker_device_memory_used_bytes "))
            .unwrap_or_else(|| panic!("no device memory gauge in:\n{text}"));
        let bytes: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(bytes > 1e6, "{line}");
        assert!(
            text.contains("longshot_build_info{component=\"worker\",device=\"cpu\""),
            "{text}"
        );
    }
}
