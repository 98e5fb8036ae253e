//! Job records and coordinator restarts. `recover` and a coordinator started from records
//! (`Coordinator::start_with`, in process with a fake worker): queue order, interrupted jobs,
//! numbering, and a shard refused as busy sending its job back to the queue. `EtcdJobStore` against
//! a real etcd server: exact round trips, one data dir's records only, paging, progress throttling,
//! writes made while etcd is down landing once it is back, and a deposed leader's writes refused.

use etcd_client::Client;
use longshot_coordinator::estimate::RunTiming;
use longshot_coordinator::job_store::{recover, Change, EtcdJobStore, JobRecord, JobStore, NoJobStore, INTERRUPTED};
use longshot_coordinator::leader;
use longshot_coordinator::{Coordinator, CoordinatorConfig, InMemoryRegistry, Registry};
use longshot_core::api::*;
use longshot_core::codenoise::BlendMode;
use longshot_core::job::{ClipLength, JobSpec, OutputKind};
use longshot_core::scheduler::Solver;
use longshot_etcd::schema::job_key;
use longshot_tests::etcd_server::{eventually, EtcdServer};
use longshot_tests::fixtures::{worker_info, FakeConnector, FakeWorker};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(5);

/// A resolved job of the procedural model in `state`, with outputs in `data_dir`.
fn record(seq: u64, state: JobState, priority: i32, data_dir: &Path) -> JobRecord {
    record_of(seq, state, priority, data_dir, 209, 1000)
}

fn record_of(seq: u64, state: JobState, priority: i32, data_dir: &Path, frames: u32, steps: u32) -> JobRecord {
    let model = longshot_worker::models::ModelSet::builtin()
        .served()
        .into_iter()
        .next()
        .expect("the procedural model");
    let spec = JobSpec {
        shots: Vec::new(),
        rerender: None,
        split_shots: false,
        strength: None,
        draft: None,
        preview_every: 0,
        model: model.name.clone(),
        prompt: format!("clip number {seq}, a slow red sunset"),
        negative_prompt: String::new(),
        seed: Some(seq),
        length: ClipLength::Frames(frames),
        fps: 16,
        width: 96,
        height: 64,
        steps,
        guidance: 5.0,
        shift: 3.0,
        solver: Solver::UniPc,
        overlap: None,
        outputs: vec![OutputKind::Mp4],
        priority,
        blend: BlendMode::CoDenoise,
        inputs: Default::default(),
    };
    let resolved = spec.resolve(&model, seq * 7919).expect("a valid job");
    let job_id = format!("job-{seq:04}-0000beef");
    let done = state == JobState::Done;
    let status = JobStatus {
        job_id: job_id.clone(),
        state,
        spec: resolved.spec.clone(),
        seed: resolved.seed,
        plan: None,
        queue_position: 0,
        steps_done: if done { 3 * steps as u64 } else { 0 },
        steps_total: 3 * steps as u64,
        outputs: if done {
            vec![OutputInfo {
                name: "clip.mp4".into(),
                format: OutputKind::Mp4,
                size_bytes: 1234,
            }]
        } else {
            vec![]
        },
        error: (state == JobState::Failed).then(|| "worker w1 failed".to_string()),
        submitted_unix_ms: 1_700_000_000_000 + seq,
        owner: format!("user-{}", seq % 2),
        cost: Default::default(),
        // Recent, so retention (7 days by default) keeps finished jobs.
        finished_unix_ms: if state.is_terminal() { now_ms() } else { 0 },
        recovery: Default::default(),
    };
    JobRecord {
        seq,
        status,
        resolved,
        model,
        dir: data_dir.join("jobs").join(job_id),
        checkpoint: None,
        // A finished job carries its run's timing (what `longshot estimate` reads back).
        timing: (state == JobState::Done).then(|| RunTiming {
            device_kind: "cpu".into(),
            window_steps: 30 * u64::from(steps),
            denoise_seconds: 1.5 + seq as f64,
            frames: u64::from(frames),
            decode_seconds: 0.25,
            overhead_seconds: 0.5,
        }),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn data_dir(name: &str) -> PathBuf {
    PathBuf::from("/srv/longshot").join(name)
}

async fn store(etcd: &EtcdServer, dir: &Path) -> EtcdJobStore {
    EtcdJobStore::open(vec![etcd.endpoint()], dir.to_path_buf(), PATIENCE)
        .await
        .expect("job store")
}

/// How many times the record of `job_id` was written (etcd's per-key version).
async fn writes(etcd: &EtcdServer, job_id: &str) -> i64 {
    let mut c = Client::connect([etcd.endpoint()], None).await.expect("etcd client");
    let resp = c.get(job_key(job_id), None).await.expect("get");
    resp.kvs().first().map_or(0, |kv| kv.version())
}

#[test]
fn recovery_requeues_interrupted_jobs_and_keeps_the_rest() {
    let dir = data_dir("a");
    let states = [
        JobState::Done,
        JobState::Running,
        JobState::Queued,
        JobState::Decoding,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Queued,
    ];
    // Loaded in key order, not submission order.
    let records: Vec<JobRecord> = states
        .iter()
        .enumerate()
        .rev()
        .map(|(i, s)| record(i as u64 + 1, *s, 0, &dir))
        .collect();
    let r = recover(records.clone(), 42);
    assert_eq!(r.max_seq, 7);
    assert_eq!(r.jobs.iter().map(|j| j.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(r.interrupted, ["job-0002-0000beef", "job-0004-0000beef"]);
    for (job, state) in r.jobs.iter().zip(states) {
        let original = records.iter().find(|o| o.seq == job.seq).unwrap();
        if matches!(state, JobState::Running | JobState::Decoding) {
            assert_eq!(job.status.state, JobState::Queued);
            assert_eq!(job.status.recovery.resumes, 1);
            assert_eq!(job.status.recovery.last_interruption.as_deref(), Some(INTERRUPTED));
            assert_eq!((job.status.error.as_deref(), job.status.finished_unix_ms), (None, 0));
            assert_eq!((&job.resolved, &job.dir), (&original.resolved, &original.dir));
        } else {
            assert_eq!(job, original, "{state} jobs are kept as they were");
        }
    }
    assert_eq!(recover(Vec::new(), 1).max_seq, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_exactly_and_only_to_their_data_dir() {
    let etcd = EtcdServer::start();
    let (a, b) = (data_dir("a"), data_dir("b"));
    let mine: Vec<JobRecord> = (1..=70)
        .map(|s| {
            record(
                s,
                [JobState::Queued, JobState::Done, JobState::Failed][s as usize % 3],
                (s % 5) as i32,
                &a,
            )
        })
        .collect();
    let s = store(&etcd, &a).await;
    for r in &mine {
        s.save(&r.status.job_id, Change::State, &|| r.clone());
    }
    let other = store(&etcd, &b).await;
    let theirs = record(500, JobState::Queued, 0, &b);
    other.save(&theirs.status.job_id, Change::State, &|| theirs.clone());
    assert!(s.flush(Duration::from_secs(10)).await && other.flush(Duration::from_secs(10)).await);
    let mut c = Client::connect([etcd.endpoint()], None).await.unwrap();
    c.put(job_key("job-9999-garbage"), "{not a record", None).await.unwrap();
    drop(s);
    // A new coordinator with the same data dir reads back exactly what was saved (floats included),
    // over several pages; the other data dir's record and the garbage are left alone.
    let loaded = store(&etcd, &a).await.load().await.expect("load");
    assert_eq!(loaded.len(), mine.len());
    assert!(loaded == mine, "records changed on the way through etcd");
    assert_eq!(store(&etcd, &b).await.load().await.expect("load"), [theirs]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_writes_are_throttled_and_state_changes_are_not() {
    let etcd = EtcdServer::start();
    let dir = data_dir("a");
    let s = store(&etcd, &dir).await;
    let mut r = record(1, JobState::Running, 0, &dir);
    let id = r.status.job_id.clone();
    s.save(&id, Change::State, &|| r.clone());
    for step in 1..=50 {
        r.status.steps_done = step;
        s.save(&id, Change::Progress, &|| r.clone());
    }
    assert!(s.flush(Duration::from_secs(5)).await);
    assert_eq!(
        writes(&etcd, &id).await,
        1,
        "progress right after a state change is not written"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    s.save(&id, Change::Progress, &|| r.clone());
    s.save(&id, Change::Progress, &|| r.clone());
    r.status.state = JobState::Done;
    s.save(&id, Change::State, &|| r.clone());
    assert!(s.flush(Duration::from_secs(5)).await);
    assert!(
        matches!(writes(&etcd, &id).await, 2 | 3),
        "one progress write, then the state change (coalesced or not)"
    );
    assert_eq!(s.load().await.unwrap(), [r]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_saved_while_etcd_is_down_land_when_it_is_back() {
    let mut etcd = EtcdServer::start();
    let dir = data_dir("a");
    let s = store(&etcd, &dir).await;
    let queued = record(1, JobState::Queued, 0, &dir);
    s.save(&queued.status.job_id, Change::State, &|| queued.clone());
    assert!(s.flush(Duration::from_secs(5)).await);
    etcd.stop();
    let mut done = queued.clone();
    done.status.state = JobState::Done;
    s.save(&done.status.job_id, Change::State, &|| done.clone());
    let second = record(2, JobState::Queued, 0, &dir);
    s.save(&second.status.job_id, Change::State, &|| second.clone());
    assert!(
        !s.flush(Duration::from_millis(500)).await,
        "nothing can be written while etcd is down"
    );
    // A new job cannot be accepted meanwhile: its record must be stored before anyone hears of it.
    let refused = record(3, JobState::Queued, 0, &dir);
    let e = s.create(refused).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the job record could not be stored within 5s (is etcd reachable?)"
    );
    etcd.restart();
    assert!(
        s.flush(Duration::from_secs(15)).await,
        "the writes must land once etcd is back\n{}",
        etcd.log_tail()
    );
    assert_eq!(
        store(&etcd, &dir).await.load().await.unwrap(),
        [done, second],
        "the refused job must not appear"
    );
}

/// A coordinator with one fake worker, started from `records`.
async fn coordinator(data: &Path, worker: Arc<FakeWorker>, records: Vec<JobRecord>) -> Coordinator {
    let registry = Arc::new(InMemoryRegistry::new(Duration::from_secs(60)));
    let models = longshot_worker::models::ModelSet::builtin().served();
    let info = WorkerInfo {
        address: "127.0.0.1:9".into(),
        models,
        ..worker_info("f0")
    };
    let workers = Arc::new(FakeConnector::new([(info.address.clone(), worker)]));
    registry.register(info).await.unwrap();
    let cfg = CoordinatorConfig::new(data.to_path_buf());
    Coordinator::start_with(cfg, registry, workers, Arc::new(NoJobStore), records)
}

async fn wait_done(c: &Coordinator, job: &str) -> JobStatus {
    eventually(Duration::from_secs(30), &format!("{job} to finish"), || async {
        c.get(job.to_string()).await.ok().filter(|s| s.state.is_terminal())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_coordinator_runs_the_old_queue_in_order_and_numbers_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // Loaded out of order: a done job, an interrupted one, and three queued (one high priority).
    let records = vec![
        record_of(5, JobState::Queued, 0, data, 49, 3),
        record_of(1, JobState::Done, 0, data, 49, 3),
        record_of(3, JobState::Queued, 0, data, 49, 3),
        record_of(2, JobState::Running, 0, data, 49, 3),
        record_of(4, JobState::Queued, 9, data, 49, 3),
    ];
    let worker = Arc::new(FakeWorker::new());
    let c = coordinator(data, worker.clone(), records).await;
    let interrupted = c.get("job-0002-0000beef".into()).await.unwrap();
    assert_eq!(
        (
            interrupted.recovery.resumes,
            interrupted.recovery.last_interruption.as_deref()
        ),
        (1, Some(INTERRUPTED))
    );
    assert_eq!(c.get("job-0001-0000beef".into()).await.unwrap().state, JobState::Done);
    for id in [
        "job-0002-0000beef",
        "job-0003-0000beef",
        "job-0004-0000beef",
        "job-0005-0000beef",
    ] {
        assert_eq!(wait_done(&c, id).await.state, JobState::Done);
    }
    // The interrupted job kept its place in the queue.
    assert_eq!(
        worker.shards(),
        [
            "job-0004-0000beef",
            "job-0002-0000beef",
            "job-0003-0000beef",
            "job-0005-0000beef"
        ]
    );
    let spec = record_of(9, JobState::Queued, 0, data, 49, 3).status.spec;
    let next = c.submit(spec, String::new()).await.expect("submit");
    assert!(next.job_id.starts_with("job-0006-"), "{}", next.job_id);
    assert_eq!(c.list(JobFilter::default()).await.unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_refused_as_busy_sends_the_job_back_to_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let worker = Arc::new(FakeWorker::new());
    worker.refuse_shards(2);
    let c = coordinator(dir.path(), worker.clone(), Vec::new()).await;
    let spec = record_of(1, JobState::Queued, 0, dir.path(), 49, 3).status.spec;
    let job = c.submit(spec, String::new()).await.expect("submit").job_id;
    let s = wait_done(&c, &job).await;
    assert_eq!((s.state, s.error), (JobState::Done, None));
    assert_eq!(worker.refusals_left(), 0, "both refusals were retried");
    assert_eq!(worker.shards(), [job]);
}

/// Two coordinators on one etcd: once the leader's key is gone (as when its lease expires while it
/// is paused) and the other is elected, the old leader's writes fail their transaction (the leader
/// key's create revision no longer matches), nothing of them lands, and its store reports that it
/// is fenced (the coordinator then exits); the new leader writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_writes_are_refused_and_it_learns_it_is_fenced() {
    let etcd = EtcdServer::start();
    let endpoints = vec![etcd.endpoint()];
    let dir = data_dir("shared");
    let ttl = Duration::from_secs(5);
    let old = leader::campaign(&endpoints, "http://old:50051", ttl).await;
    let guarded = |g: &leader::Leadership| {
        EtcdJobStore::open_guarded(endpoints.clone(), dir.clone(), PATIENCE, Some(g.guard.clone()))
    };
    let old_store = guarded(&old).await.expect("store");
    let mut r = record(1, JobState::Queued, 0, &dir);
    let id = r.status.job_id.clone();
    old_store.create(r.clone()).await.expect("the leader writes");
    assert_eq!(writes(&etcd, &id).await, 1);

    let mut c = Client::connect([etcd.endpoint()], None).await.expect("etcd client");
    c.delete(old.guard.key.clone(), None)
        .await
        .expect("delete the old leader's key");
    let new = tokio::time::timeout(
        Duration::from_secs(10),
        leader::campaign(&endpoints, "http://new:50051", ttl),
    )
    .await
    .expect("the other candidate is elected once the old key is gone");
    assert_ne!(new.guard.create_revision, old.guard.create_revision);

    let queued = r.clone();
    r.status.state = JobState::Cancelled;
    old_store.save(&id, Change::State, &|| r.clone());
    let mut fenced = old_store.fenced();
    let why = tokio::time::timeout(Duration::from_secs(10), fenced.wait_for(|f| f.is_some()))
        .await
        .expect("the deposed store learns it is fenced")
        .expect("fence channel")
        .clone();
    println!("fenced: {why:?}");
    assert_eq!(writes(&etcd, &id).await, 1, "the deposed leader's write must not land");
    assert_eq!(store(&etcd, &dir).await.load().await.unwrap(), [queued]);

    let new_store = guarded(&new).await.expect("store");
    new_store.save(&id, Change::State, &|| r.clone());
    assert!(new_store.flush(Duration::from_secs(5)).await);
    assert_eq!(writes(&etcd, &id).await, 2, "the new leader writes");
    assert_eq!(store(&etcd, &dir).await.load().await.unwrap(), [r]);
}
