//! `EtcdRegistry` against a real etcd server, with workers registered by the worker crate's own
//! `EtcdMembership` (so the key and value formats of both sides are checked together): joins and
//! graceful leaves, lease expiry, gRPC registration refused, garbage ignored, compaction during a
//! watch, an etcd restart, and an unreachable etcd at start-up.

use etcd_client::{Client, CompactionOptions, PutOptions};
use longshot_coordinator::etcd_registry::EtcdRegistry;
use longshot_coordinator::{Registry, RegistryError};
use longshot_core::api::{WorkerInfo, WorkerState};
use longshot_etcd::schema::{encode_worker, worker_key};
use longshot_tests::etcd_server::{eventually, free_port, EtcdServer};
use longshot_tests::fixtures::worker_info;
use longshot_worker::etcd_membership::{EtcdMembership, EtcdMembershipConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(5);
const CONVERGE: Duration = Duration::from_secs(10);

fn info(id: &str, port: u16) -> WorkerInfo {
    let models = longshot_worker::models::ModelSet::builtin().served();
    WorkerInfo {
        address: format!("127.0.0.1:{port}"),
        models,
        ..worker_info(id)
    }
}

async fn join(etcd: &EtcdServer, id: &str, port: u16) -> EtcdMembership {
    let mut cfg = EtcdMembershipConfig::new(vec![etcd.endpoint()]);
    cfg.lease_ttl = Duration::from_secs(3);
    EtcdMembership::start(cfg, info(id, port), Arc::new(|| WorkerState::Idle))
        .await
        .expect("worker registers")
}

async fn ids(r: &EtcdRegistry) -> Vec<String> {
    r.list().await.expect("list").into_iter().map(|w| w.id).collect()
}

/// Waits until the registry lists exactly `want`.
async fn wait_for(r: &EtcdRegistry, want: &[&str]) {
    eventually(CONVERGE, &format!("the registry to list {want:?}"), || async {
        (ids(r).await == want).then_some(())
    })
    .await
}

async fn client(etcd: &EtcdServer) -> Client {
    Client::connect([etcd.endpoint()], None).await.expect("etcd client")
}

/// Registers `id` the way a worker does, but under a lease nobody renews.
async fn register_unrenewed(c: &mut Client, id: &str, port: u16, ttl: i64) {
    let lease = c.lease_grant(ttl, None).await.expect("lease").id();
    let value = encode_worker(&info(id, port)).expect("a worker record");
    c.put(worker_key(id), value, Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_joins_leaves_and_lease_expiry() {
    let etcd = EtcdServer::start();
    let early = join(&etcd, "w0", 7000).await;
    let r = EtcdRegistry::start(vec![etcd.endpoint()], PATIENCE)
        .await
        .expect("registry");
    assert_eq!(
        ids(&r).await,
        ["w0"],
        "workers registered before the coordinator are listed at once"
    );
    let w1 = join(&etcd, "w1", 7001).await;
    wait_for(&r, &["w0", "w1"]).await;
    assert_eq!(r.list().await.unwrap()[1], info("w1", 7001));
    early.shutdown().await;
    wait_for(&r, &["w1"]).await;
    // A worker that stops renewing disappears when its lease expires (2 s here).
    let mut c = client(&etcd).await;
    register_unrenewed(&mut c, "w9", 7009, 2).await;
    wait_for(&r, &["w1", "w9"]).await;
    let t = Instant::now();
    wait_for(&r, &["w1"]).await;
    assert!(t.elapsed() < Duration::from_secs(5), "expiry took {:?}", t.elapsed());
    w1.shutdown().await;
    wait_for(&r, &[]).await;
    assert_eq!(r.resyncs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_registration_is_refused_with_a_clear_error() {
    let etcd = EtcdServer::start();
    let r = EtcdRegistry::start(vec![etcd.endpoint()], PATIENCE)
        .await
        .expect("registry");
    let e = r.register(info("w1", 7001)).await.unwrap_err();
    assert!(matches!(e, RegistryError::EtcdMembership { .. }));
    assert_eq!(
        e.to_string(),
        format!("this coordinator uses etcd membership; start workers with --etcd {} (they register in etcd, not with the coordinator)", etcd.endpoint())
    );
    assert!(r.heartbeat("w1", WorkerState::Idle).await.is_err());
    assert!(r.deregister("w1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_are_not_workers_are_ignored() {
    let etcd = EtcdServer::start();
    let mut c = client(&etcd).await;
    c.put(worker_key("junk"), "{not json", None).await.unwrap();
    c.put(
        worker_key("liar"),
        encode_worker(&info("someone-else", 1)).unwrap(),
        None,
    )
    .await
    .unwrap();
    let future = r#"{"record_version": 2, "id": "future", "address": "127.0.0.1:1"}"#;
    c.put(worker_key("future"), future, None).await.unwrap();
    let r = EtcdRegistry::start(vec![etcd.endpoint()], PATIENCE)
        .await
        .expect("registry");
    assert!(ids(&r).await.is_empty());
    c.put(worker_key("junk2"), "[]", None).await.unwrap();
    let w1 = join(&etcd, "w1", 7001).await;
    wait_for(&r, &["w1"]).await;
    w1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_survives_compaction() {
    let etcd = EtcdServer::start();
    let mut c = client(&etcd).await;
    let r = EtcdRegistry::start(vec![etcd.endpoint()], PATIENCE)
        .await
        .expect("registry");
    // Compact while the watch runs, then change membership: the watch must still see it all.
    register_unrenewed(&mut c, "w1", 7001, 30).await;
    wait_for(&r, &["w1"]).await;
    let rev = c
        .put("/longshot/other", "x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.compact(rev, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    register_unrenewed(&mut c, "w2", 7002, 30).await;
    c.delete(worker_key("w1"), None).await.unwrap();
    wait_for(&r, &["w2"]).await;
    // A watch that needs a compacted revision is cancelled by etcd with the compaction revision:
    // the registry lists again, and keeps watching from there.
    let behind = EtcdRegistry::start_watching_from(vec![etcd.endpoint()], PATIENCE, 2)
        .await
        .expect("registry");
    eventually(CONVERGE, "a resync after the compaction", || async {
        (behind.resyncs() >= 1).then_some(())
    })
    .await;
    wait_for(&behind, &["w2"]).await;
    register_unrenewed(&mut c, "w3", 7003, 30).await;
    wait_for(&behind, &["w2", "w3"]).await;
    wait_for(&r, &["w2", "w3"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_reconnects_after_an_etcd_restart() {
    let mut etcd = EtcdServer::start();
    let r = EtcdRegistry::start(vec![etcd.endpoint()], PATIENCE)
        .await
        .expect("registry");
    let mut c = client(&etcd).await;
    register_unrenewed(&mut c, "w1", 7001, 60).await;
    wait_for(&r, &["w1"]).await;
    etcd.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // While etcd is down the last known workers are still served.
    assert_eq!(ids(&r).await, ["w1"]);
    etcd.restart();
    let mut c = client(&etcd).await;
    register_unrenewed(&mut c, "w2", 7002, 60).await;
    wait_for(&r, &["w1", "w2"]).await;
    assert!(r.connected());
    c.delete(worker_key("w1"), None).await.unwrap();
    wait_for(&r, &["w2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_fails_start_up_within_the_bound() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let t = Instant::now();
    let e = EtcdRegistry::start(vec![endpoint.clone()], Duration::from_secs(2))
        .await
        .err()
        .expect("nothing listens there");
    let took = t.elapsed();
    assert!(
        e.to_string()
            .starts_with(&format!("etcd at {endpoint} is unreachable after")),
        "{e}"
    );
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(3),
        "gave up after {took:?}"
    );
    let e = EtcdRegistry::start(vec!["localhost:2379".into()], Duration::from_secs(2))
        .await
        .err()
        .expect("bad endpoint");
    assert_eq!(
        e.to_string(),
        "etcd endpoint \"localhost:2379\" is not http://host:port or https://host:port"
    );
}
