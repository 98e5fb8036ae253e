//! The coordinator's worker watch against an etcd with its default settings (notably
//! `--grpc-keepalive-min-time` 5 s): the client's HTTP/2 keepalive must fit etcd's ping policy,
//! or etcd answers GOAWAY (ENHANCE_YOUR_CALM, "too_many_pings") and the watch breaks every few
//! seconds. `EtcdServer` passes no keepalive flags, so this is etcd's default policy.

use longshot_coordinator::etcd_registry::EtcdRegistry;
use longshot_coordinator::Registry;
use longshot_core::api::{WorkerInfo, WorkerState};
use longshot_tests::etcd_server::{eventually, free_port, EtcdServer};
use longshot_tests::fixtures::worker_info;
use longshot_worker::etcd_membership::{EtcdMembership, EtcdMembershipConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Long enough for many keepalive intervals and for etcd's strike limit to be reached several
/// times over by a client that pings too often (it broke every ~12 s with a 3 s keepalive).
const WATCH_FOR: Duration = Duration::from_secs(125);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_watch_never_breaks_against_etcd_defaults() {
    let etcd = EtcdServer::start();
    let registry = EtcdRegistry::start(vec![etcd.endpoint()], Duration::from_secs(5))
        .await
        .expect("registry starts");
    let worker = WorkerInfo {
        address: format!("127.0.0.1:{}", free_port()),
        models: longshot_worker::models::ModelSet::builtin().served(),
        ..worker_info("w1")
    };
    let mut cfg = EtcdMembershipConfig::new(vec![etcd.endpoint()]);
    cfg.lease_ttl = Duration::from_secs(10);
    let membership = EtcdMembership::start(cfg, worker, Arc::new(|| WorkerState::Idle))
        .await
        .expect("worker registers");
    let lease = membership.lease_id();
    eventually(Duration::from_secs(10), "the registry to list w1", || async {
        (registry.list().await.expect("list").len() == 1).then_some(())
    })
    .await;

    let start = Instant::now();
    while start.elapsed() < WATCH_FOR {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let restarts = registry.watch_restarts();
        assert_eq!(
            restarts,
            0,
            "the worker watch broke {restarts} times within {:?}; etcd log:\n{}",
            start.elapsed(),
            etcd.log_tail()
        );
    }
    assert!(registry.connected());
    assert_eq!(registry.list().await.expect("list").len(), 1, "w1 is still listed");
    assert_eq!(membership.lease_id(), lease, "the worker kept its first lease");
    let log = std::fs::read_to_string(etcd.dir().join("etcd.log")).unwrap_or_default();
    assert!(!log.contains("too_many_pings"), "etcd complained about pings:\n{log}");
    membership.shutdown().await;
}
