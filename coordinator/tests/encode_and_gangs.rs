//! The coordinator's side of text encoding (once per job, on the gang's first worker: cancel,
//! timeout and failure while it runs) and of ganging (only workers with equal builds, device
//! models and model weights render one job together), and the choice of NCCL or TCP for a gang's
//! overlaps, against in-process fake workers.

use longshot_coordinator::{Coordinator, CoordinatorConfig, InMemoryRegistry, OverlapTransport, Registry};
use longshot_core::api::*;
use longshot_core::codenoise::BlendMode;
use longshot_core::denoiser::ModelInfo;
use longshot_core::job::OutputKind;
use longshot_core::job::{ClipLength, JobSpec};
use longshot_core::scheduler::Solver;
use longshot_tests::fixtures::{worker_info, Answer, FakeConnector, FakeWorker};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A worker that "renders" black frames at once. Its encode answers by prompt: "hang" never
/// answers, "fail" fails, anything else returns no embeddings; its NCCL ids repeat the job id.
fn fake_worker() -> FakeWorker {
    FakeWorker::new()
        .with_encoder(|r| match r.prompt.as_str() {
            "hang" => Answer::Never,
            "fail" => Err(ApiError::Internal("the text encoder ran out of memory".into())).into(),
            _ => Ok(None).into(),
        })
        .with_nccl_ids(|job_id, _| Ok(job_id.bytes().cycle().take(NCCL_UNIQUE_ID_BYTES).collect()))
}

fn procedural(weights: &str) -> ModelInfo {
    let mut m = longshot_worker::models::ModelSet::builtin().served().remove(0);
    m.weights = weights.into();
    m
}

fn worker(i: usize, device_name: &str, weights: &str) -> WorkerInfo {
    WorkerInfo {
        address: format!("10.0.0.{i}:7000"),
        device_name: device_name.into(),
        memory_bytes: 1,
        models: vec![procedural(weights)],
        version: "0.1.0+test".into(),
        ..worker_info(&format!("w{i}"))
    }
}

struct Cluster {
    c: Coordinator,
    fakes: Vec<Arc<FakeWorker>>,
}

async fn cluster(workers: Vec<WorkerInfo>, encode_timeout: Duration) -> Cluster {
    cluster_with(workers, |cfg| cfg.encode_timeout = encode_timeout).await
}

async fn cluster_with(workers: Vec<WorkerInfo>, configure: impl FnOnce(&mut CoordinatorConfig)) -> Cluster {
    let registry = Arc::new(InMemoryRegistry::new(Duration::from_secs(60)));
    let mut map = Vec::new();
    let mut fakes = Vec::new();
    for w in workers {
        let f = Arc::new(fake_worker());
        map.push((w.address.clone(), f.clone()));
        fakes.push(f);
        registry.register(w).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap().keep();
    let mut cfg = CoordinatorConfig::new(dir);
    configure(&mut cfg);
    Cluster {
        c: Coordinator::start(cfg, registry, Arc::new(FakeConnector::new(map))),
        fakes,
    }
}

/// 53 latent frames = 3 windows.
fn spec(prompt: &str) -> JobSpec {
    JobSpec {
        shots: Vec::new(),
        rerender: None,
        split_shots: false,
        strength: None,
        draft: None,
        preview_every: 0,
        model: "procedural".into(),
        prompt: prompt.into(),
        negative_prompt: String::new(),
        seed: Some(1),
        length: ClipLength::Frames(209),
        fps: 16,
        width: 32,
        height: 32,
        steps: 2,
        guidance: 5.0,
        shift: 3.0,
        solver: Solver::UniPc,
        overlap: None,
        outputs: vec![OutputKind::Png],
        priority: 0,
        blend: BlendMode::CoDenoise,
        inputs: Default::default(),
    }
}

async fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn finished(c: &Coordinator, job: &str) -> JobStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = c.get(job.to_string()).await.unwrap();
        if s.state.is_terminal() {
            return s;
        }
        assert!(Instant::now() < deadline, "{job} did not finish: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_encoding_cancels_the_job_and_frees_the_gang() {
    let k = cluster(
        vec![worker(0, "cpu-a", ""), worker(1, "cpu-a", "")],
        Duration::from_secs(600),
    )
    .await;
    let job = k.c.submit(spec("hang"), String::new()).await.unwrap().job_id;
    wait_until("the encode call", || k.fakes[0].encodes().first().cloned()).await;
    k.c.cancel(job.clone()).await.unwrap();
    assert_eq!(finished(&k.c, &job).await.state, JobState::Cancelled);
    assert!(
        k.fakes.iter().all(|f| f.shards().is_empty()),
        "no shard may start after a cancel during encoding"
    );
    // Both workers are free again: the next job runs on the pair and is encoded once, by w0.
    let next =
        k.c.submit(spec("a slow red sunset"), String::new())
            .await
            .unwrap()
            .job_id;
    let s = finished(&k.c, &next).await;
    assert_eq!((s.state, s.plan.map(|p| p.workers)), (JobState::Done, Some(2)), "{s:?}");
    assert_eq!(k.fakes[0].encodes(), [job, next.clone()]);
    assert!(k.fakes[1].encodes().is_empty());
    assert!(k.fakes.iter().all(|f| f.shards() == [next.clone()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encode_that_fails_or_never_answers_fails_the_job_naming_the_worker() {
    let k = cluster(vec![worker(0, "cpu-a", "")], Duration::from_millis(300)).await;
    let job = k.c.submit(spec("hang"), String::new()).await.unwrap().job_id;
    let s = finished(&k.c, &job).await;
    let e = s.error.unwrap_or_default();
    assert_eq!(s.state, JobState::Failed);
    assert!(
        e.starts_with(
            "worker w0 (10.0.0.0:7000) did not encode the prompts within 300ms (coordinator --encode-timeout)"
        ),
        "{e}"
    );
    let job = k.c.submit(spec("fail"), String::new()).await.unwrap().job_id;
    let s = finished(&k.c, &job).await;
    let e = s.error.unwrap_or_default();
    assert!(
        e.starts_with("worker w0 (10.0.0.0:7000) could not encode the prompts: ") && e.contains("ran out of memory"),
        "{e}"
    );
    assert!(k.fakes[0].shards().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_workers_with_equal_device_models_and_weights_are_ganged() {
    // Three idle workers, but no two share both device model and weights: each job gets one.
    let k = cluster(
        vec![
            worker(0, "cpu-a", ""),
            worker(1, "cpu-b", ""),
            worker(2, "cpu-a", "other-weights"),
        ],
        Duration::from_secs(60),
    )
    .await;
    let s = finished(&k.c, &k.c.submit(spec("one"), String::new()).await.unwrap().job_id).await;
    assert_eq!((s.state, s.plan.map(|p| p.workers)), (JobState::Done, Some(1)), "{s:?}");
    // Two that agree on both are ganged.
    let k = cluster(
        vec![
            worker(0, "cpu-a", "x"),
            worker(1, "cpu-a", "x"),
            worker(2, "cpu-b", "x"),
        ],
        Duration::from_secs(60),
    )
    .await;
    let job = k.c.submit(spec("two"), String::new()).await.unwrap().job_id;
    let s = finished(&k.c, &job).await;
    assert_eq!((s.state, s.plan.map(|p| p.workers)), (JobState::Done, Some(2)), "{s:?}");
    let ran: Vec<bool> = k.fakes.iter().map(|f| !f.shards().is_empty()).collect();
    assert_eq!(ran, [true, true, false]);
}

fn gpu_worker(i: usize, gpu: &str) -> WorkerInfo {
    WorkerInfo {
        nccl_gpu: Some(gpu.into()),
        ..worker(i, "gpu-a", "")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_on_distinct_nccl_gpus_gets_one_communicator_and_falls_back_to_tcp_otherwise() {
    let nccl = |cfg: &mut CoordinatorConfig| cfg.overlap_transport = OverlapTransport::Nccl;
    let k = cluster_with(
        vec![gpu_worker(0, "GPU-0"), gpu_worker(1, "GPU-1"), gpu_worker(2, "GPU-2")],
        nccl,
    )
    .await;
    let job = k.c.submit(spec("three windows"), String::new()).await.unwrap().job_id;
    let s = finished(&k.c, &job).await;
    assert_eq!((s.state, s.plan.map(|p| p.workers)), (JobState::Done, Some(3)), "{s:?}");
    // Rank 0 made the id once; every shard carries it with its own rank.
    assert_eq!(
        k.fakes.iter().map(|f| f.nccl_id_calls().len()).collect::<Vec<_>>(),
        [1, 0, 0]
    );
    let id: Vec<u8> = job.bytes().cycle().take(NCCL_UNIQUE_ID_BYTES).collect();
    for (rank, f) in k.fakes.iter().enumerate() {
        assert_eq!(
            f.nccl_groups(),
            [Some(NcclGroup {
                unique_id: id.clone(),
                rank,
                ranks: 3
            })]
        );
    }
    // Rank 0 cannot make an id: the job still runs, over TCP.
    k.fakes[0].refuse_nccl(true);
    let s = finished(&k.c, &k.c.submit(spec("again"), String::new()).await.unwrap().job_id).await;
    assert_eq!(s.state, JobState::Done, "{s:?}");
    assert!(k.fakes.iter().all(|f| f.nccl_groups()[1].is_none()));

    // Two workers on one GPU, a worker without NCCL, or the default transport: TCP, no id asked.
    for (workers, transport) in [
        (
            vec![gpu_worker(0, "GPU-0"), gpu_worker(1, "GPU-0")],
            OverlapTransport::Nccl,
        ),
        (
            vec![
                gpu_worker(0, "GPU-0"),
                WorkerInfo {
                    nccl_gpu: None,
                    ..gpu_worker(1, "GPU-1")
                },
            ],
            OverlapTransport::Nccl,
        ),
        (
            vec![gpu_worker(0, "GPU-0"), gpu_worker(1, "GPU-1")],
            OverlapTransport::Tcp,
        ),
    ] {
        let k = cluster_with(workers, |cfg| cfg.overlap_transport = transport).await;
        let s = finished(&k.c, &k.c.submit(spec("tcp"), String::new()).await.unwrap().job_id).await;
        assert_eq!((s.state, s.plan.map(|p| p.workers)), (JobState::Done, Some(2)), "{s:?}");
        assert!(
            k.fakes
                .iter()
                .all(|f| f.nccl_groups() == [None] && f.nccl_id_calls().is_empty()),
            "{transport:?}"
        );
    }
}

/// A refused plan queues the job again without opening its outputs, so the next plan writes them
/// alone (a refused plan's half-made clip.mp4.partial once replaced the real one's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_shard_requeues_the_job_and_its_outputs_are_written_once() {
    // One window, two idle workers: w0 refuses, the next plan starts on w1 at once.
    let k = cluster(
        vec![worker(0, "cpu-a", ""), worker(1, "cpu-a", "")],
        Duration::from_secs(60),
    )
    .await;
    k.fakes[0].refuse_shards(1);
    let one_window = JobSpec {
        outputs: vec![OutputKind::Mp4, OutputKind::Latents],
        length: ClipLength::Frames(49),
        ..spec("refused once")
    };
    let job = k.c.submit(one_window, String::new()).await.unwrap().job_id;
    let s = finished(&k.c, &job).await;
    assert_eq!(s.state, JobState::Done, "{s:?}");
    assert_eq!(s.outputs.len(), 2, "{s:?}");
    assert!(k.fakes[0].shards().is_empty());
    assert_eq!(k.fakes[1].shards(), [job]);
}
