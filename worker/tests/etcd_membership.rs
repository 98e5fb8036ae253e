//! A worker's etcd registration against a real etcd server: put-if-absent under a lease, renewals
//! over several TTLs, revocation on shutdown, duplicate ids, re-registration after the lease is
//! lost, state updates, an etcd restart, and an unreachable etcd at start-up.

use etcd_client::Client;
use longshot_core::api::{WorkerInfo, WorkerState};
use longshot_etcd::schema::{decode_worker, worker_key};
use longshot_etcd::EtcdError;
use longshot_tests::etcd_server::{eventually, free_port, EtcdServer};
use longshot_tests::fixtures::worker_info;
use longshot_worker::etcd_membership::{EtcdMembership, EtcdMembershipConfig, MembershipError, StateFn};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn info(id: &str, port: u16) -> WorkerInfo {
    let models = longshot_worker::models::ModelSet::builtin().served();
    WorkerInfo {
        address: format!("127.0.0.1:{port}"),
        models,
        ..worker_info(id)
    }
}

fn config(etcd: &EtcdServer, ttl_s: u64) -> EtcdMembershipConfig {
    let mut cfg = EtcdMembershipConfig::new(vec![etcd.endpoint()]);
    cfg.lease_ttl = Duration::from_secs(ttl_s);
    cfg
}

fn idle() -> StateFn {
    Arc::new(|| WorkerState::Idle)
}

/// The stored record of worker `id` and the lease it is bound to.
async fn record(client: &mut Client, id: &str) -> Option<(WorkerInfo, i64)> {
    let resp = client.get(worker_key(id), None).await.expect("etcd get");
    let kv = resp.kvs().first()?;
    Some((decode_worker(kv.value()).expect("a worker record"), kv.lease()))
}

async fn client(etcd: &EtcdServer) -> Client {
    Client::connect([etcd.endpoint()], None).await.expect("etcd client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_renews_for_several_ttls_and_revokes_on_shutdown() {
    let etcd = EtcdServer::start();
    let me = info("w1", 7001);
    let m = EtcdMembership::start(config(&etcd, 2), me.clone(), idle())
        .await
        .expect("register");
    let mut c = client(&etcd).await;
    let (stored, lease) = record(&mut c, "w1").await.expect("registered");
    assert_eq!(stored, me);
    assert_eq!(lease, m.lease_id());
    // Three TTLs later the same lease still holds the key: renewals reach etcd.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        record(&mut c, "w1").await.map(|r| r.1),
        Some(lease),
        "the registration lapsed\n{}",
        etcd.log_tail()
    );
    let ttl = c.lease_time_to_live(lease, None).await.expect("ttl").ttl();
    assert!(ttl > 0, "lease ttl {ttl}");
    m.shutdown().await;
    assert!(record(&mut c, "w1").await.is_none(), "shutdown must revoke the lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_id_is_refused_and_freed_by_shutdown() {
    let etcd = EtcdServer::start();
    let first = EtcdMembership::start(config(&etcd, 5), info("w1", 7001), idle())
        .await
        .expect("first");
    let e = EtcdMembership::start(config(&etcd, 5), info("w1", 7002), idle())
        .await
        .err()
        .expect("a second w1 must be refused");
    assert!(
        matches!(&e, MembershipError::Duplicate { address, .. } if address == "127.0.0.1:7001"),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(
            "worker id \"w1\" is already registered in etcd by a live worker at 127.0.0.1:7001; pick another --id"
        ),
        "{e}"
    );
    let mut c = client(&etcd).await;
    assert_eq!(
        record(&mut c, "w1").await.map(|r| r.1),
        Some(first.lease_id()),
        "the refusal must not touch the first registration"
    );
    first.shutdown().await;
    let second = EtcdMembership::start(config(&etcd, 5), info("w1", 7002), idle())
        .await
        .expect("the id is free again");
    assert_eq!(
        record(&mut c, "w1").await.map(|r| r.0.address),
        Some("127.0.0.1:7002".into())
    );
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_replaced_by_a_new_registration() {
    let etcd = EtcdServer::start();
    let m = EtcdMembership::start(config(&etcd, 3), info("w1", 7001), idle())
        .await
        .expect("register");
    let old = m.lease_id();
    let mut c = client(&etcd).await;
    // What etcd does when a lease expires: the lease and every key bound to it are gone.
    c.lease_revoke(old).await.expect("revoke");
    assert!(record(&mut c, "w1").await.is_none());
    let t = Instant::now();
    let new = eventually(Duration::from_secs(10), "w1 to register again", || {
        let mut c = c.clone();
        async move { record(&mut c, "w1").await.map(|r| r.1).filter(|l| *l != old) }
    })
    .await;
    assert_eq!(m.lease_id(), new);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "re-registration took {:?} (renewals run every ttl/3 = 1 s)",
        t.elapsed()
    );
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_are_published() {
    let etcd = EtcdServer::start();
    let busy = Arc::new(AtomicBool::new(false));
    let b = busy.clone();
    let state: StateFn = Arc::new(move || {
        if b.load(Ordering::Relaxed) {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        }
    });
    let m = EtcdMembership::start(config(&etcd, 3), info("w1", 7001), state)
        .await
        .expect("register");
    let c = client(&etcd).await;
    busy.store(true, Ordering::Relaxed);
    // Well within the lease ttl (3 s): coordinators must see a shard's start and end quickly.
    eventually(Duration::from_millis(1500), "w1 to be busy in etcd", || {
        let mut c = c.clone();
        async move { record(&mut c, "w1").await.filter(|r| r.0.state == WorkerState::Busy) }
    })
    .await;
    busy.store(false, Ordering::Relaxed);
    eventually(Duration::from_millis(1500), "w1 to be idle in etcd", || {
        let mut c = c.clone();
        async move { record(&mut c, "w1").await.filter(|r| r.0.state == WorkerState::Idle) }
    })
    .await;
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registration_survives_an_etcd_restart() {
    let mut etcd = EtcdServer::start();
    let m = EtcdMembership::start(config(&etcd, 10), info("w1", 7001), idle())
        .await
        .expect("register");
    let lease = m.lease_id();
    etcd.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    etcd.restart();
    // etcd extends every lease by its TTL when it elects a leader, so the worker has 10 s to renew;
    // after three renewal periods the same lease must still be alive.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut c = client(&etcd).await;
    assert_eq!(
        record(&mut c, "w1").await.map(|r| r.1),
        Some(lease),
        "lost after the restart\n{}",
        etcd.log_tail()
    );
    let ttl = c.lease_time_to_live(lease, None).await.expect("ttl").ttl();
    assert!(ttl > 5, "the lease is not being renewed (ttl {ttl})");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_fails_start_up_within_the_bound() {
    let mut cfg = EtcdMembershipConfig::new(vec![format!("http://127.0.0.1:{}", free_port())]);
    cfg.connect_patience = Duration::from_secs(2);
    let t = Instant::now();
    let e = EtcdMembership::start(cfg, info("w1", 7001), idle())
        .await
        .err()
        .expect("nothing listens there");
    let took = t.elapsed();
    assert!(
        matches!(e, MembershipError::Etcd(EtcdError::Unreachable { .. })),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("etcd at http://127.0.0.1:"), "{e}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(3),
        "gave up after {took:?}"
    );
}
