//! The embedded job store (`<data dir>/jobs.redb`, a coordinator without etcd) under a real
//! coordinator with a fake worker: records survive a restart exactly, the file is locked to one
//! coordinator, and retention removes finished jobs from the table, the store and the disk.

use longshot_coordinator::job_store::{EmbeddedJobStore, JobStore};
use longshot_coordinator::{Coordinator, CoordinatorConfig, InMemoryRegistry, Registry};
use longshot_core::api::*;
use longshot_core::codenoise::BlendMode;
use longshot_core::job::{ClipLength, JobSpec, OutputKind};
use longshot_core::scheduler::Solver;
use longshot_tests::etcd_server::eventually;
use longshot_tests::fixtures::{worker_info, FakeConnector, FakeWorker};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn spec(seed: u64) -> JobSpec {
    JobSpec {
        shots: Vec::new(),
        rerender: None,
        split_shots: false,
        strength: None,
        draft: None,
        preview_every: 0,
        model: "procedural".into(),
        prompt: "a slow red sunset".into(),
        negative_prompt: String::new(),
        seed: Some(seed),
        length: ClipLength::Frames(49),
        fps: 16,
        width: 64,
        height: 64,
        steps: 3,
        guidance: 5.0,
        shift: 3.0,
        solver: Solver::UniPc,
        overlap: None,
        outputs: vec![OutputKind::Latents],
        priority: 0,
        blend: BlendMode::CoDenoise,
        inputs: Default::default(),
    }
}

async fn coordinator(cfg: CoordinatorConfig, store: Arc<dyn JobStore>) -> Coordinator {
    let registry = Arc::new(InMemoryRegistry::new(Duration::from_secs(60)));
    let info = WorkerInfo {
        address: "127.0.0.1:9".into(),
        models: longshot_worker::models::ModelSet::builtin().served(),
        ..worker_info("f0")
    };
    let workers = Arc::new(FakeConnector::new([(
        info.address.clone(),
        Arc::new(FakeWorker::new()),
    )]));
    registry.register(info).await.unwrap();
    let records = store.load().await.expect("load");
    Coordinator::start_with(cfg, registry, workers, store, records)
}

async fn wait_done(c: &Coordinator, job: &str) -> JobStatus {
    eventually(Duration::from_secs(30), &format!("{job} to finish"), || async {
        c.get(job.to_string()).await.ok().filter(|s| s.state.is_terminal())
    })
    .await
}

async fn reopen(data: &Path) -> EmbeddedJobStore {
    // The old store's writer task lets go of the file on its next poll.
    eventually(Duration::from_secs(10), "the database to be free", || async {
        EmbeddedJobStore::open(data).await.ok()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_restart_and_the_file_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let store = Arc::new(EmbeddedJobStore::open(data).await.expect("open"));
    assert!(
        EmbeddedJobStore::open(data).await.is_err(),
        "a second coordinator on the same data dir must be refused"
    );
    let c = coordinator(CoordinatorConfig::new(data.to_path_buf()), store.clone()).await;
    let job = c.submit(spec(1), String::new()).await.expect("submit").job_id;
    let finished = wait_done(&c, &job).await;
    assert_eq!(finished.state, JobState::Done);
    assert!(store.flush(Duration::from_secs(5)).await);
    drop((c, store));
    let store = Arc::new(reopen(data).await);
    let loaded = store.load().await.expect("load");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].status, finished, "the record comes back exactly");
    let c = coordinator(CoordinatorConfig::new(data.to_path_buf()), store).await;
    assert_eq!(c.get(job.clone()).await.expect("restored"), finished);
    let next = c.submit(spec(2), String::new()).await.expect("submit").job_id;
    assert!(next.starts_with("job-0002-"), "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_finished_jobs_their_records_and_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let store = Arc::new(EmbeddedJobStore::open(data).await.expect("open"));
    let mut cfg = CoordinatorConfig::new(data.to_path_buf());
    cfg.retain_finished = Duration::from_millis(1500);
    let c = coordinator(cfg, store.clone()).await;
    let job = c.submit(spec(1), String::new()).await.expect("submit").job_id;
    assert_eq!(wait_done(&c, &job).await.state, JobState::Done);
    let outputs = data.join("jobs").join(&job);
    std::fs::create_dir_all(&outputs).unwrap();
    std::fs::write(outputs.join("clip.safetensors"), b"x").unwrap();
    // Still there within the retention.
    assert!(c.get(job.clone()).await.is_ok());
    let e = eventually(Duration::from_secs(10), "the job to expire", || async {
        c.get(job.clone()).await.err()
    })
    .await;
    assert!(
        matches!(&e, ApiError::NotFound(m) if m.contains("expired") && m.contains("--retain-finished")),
        "{e}"
    );
    assert!(!outputs.exists(), "the outputs must be removed");
    assert!(c.list(JobFilter::default()).await.unwrap().is_empty());
    assert!(store.flush(Duration::from_secs(5)).await);
    assert!(store.load().await.unwrap().is_empty(), "the record must be removed");
}
