//! Gang placement, alone: properties over random queues and worker pools, and worked examples.

use longshot_coordinator::placement::{place, run_order, Gang, PlacementConfig, QueuedJob};
use longshot_core::api::{WorkerInfo, WorkerState};
use longshot_core::denoiser::ModelInfo;
use longshot_core::plan::WindowPlan;
use proptest::prelude::*;
use std::collections::HashSet;

/// Three models: `a`, `a` with other weights (a fine-tune under the same name), and `b`.
fn model(k: usize) -> ModelInfo {
    let (name, weights) = [("a", "base"), ("a", "finetune"), ("b", "")][k];
    ModelInfo {
        video_warmup: None,
        name: name.into(),
        window_frames: 5,
        latent_channels: 4,
        temporal_compression: 4,
        spatial_compression: 8,
        default_overlap: 1,
        weights: weights.into(),
        reference_images: 0,
    }
}

fn worker(i: usize, build: usize, models: &[usize]) -> WorkerInfo {
    WorkerInfo {
        id: format!("w{i:02}"),
        address: format!("127.0.0.1:{}", 7000 + i),
        device_kind: ["cpu", "cuda"][build % 2].into(),
        device_name: ["x86", "H100"][(build / 2) % 2].into(),
        memory_bytes: 1,
        budget_bytes: 0,
        models: models.iter().map(|&k| model(k)).collect(),
        version: ["0.1.0", "0.2.0"][build / 4].into(),
        state: WorkerState::Idle,
        nccl_gpu: None,
    }
}

fn job(id: &str, priority: i32, seq: u64, model_k: usize, latent_frames: usize) -> QueuedJob {
    QueuedJob {
        job_id: id.into(),
        priority,
        seq,
        model: model(model_k),
        plans: vec![WindowPlan::new(latent_frames, 5, 1).unwrap()],
        excluded: Vec::new(),
        window_bytes: 0,
    }
}

/// Whether `w` may render `j`: it serves the job's model and weights and was not left out of it.
fn eligible(w: &WorkerInfo, j: &QueuedJob) -> bool {
    w.models.contains(&j.model) && !j.excluded.contains(&w.id)
}

fn build(w: &WorkerInfo) -> (&str, &str, &str) {
    (&w.version, &w.device_kind, &w.device_name)
}

fn check(
    queue: &[QueuedJob],
    idle: &[WorkerInfo],
    config: PlacementConfig,
    gangs: &[Gang],
) -> Result<(), TestCaseError> {
    let by_id = |id: &str| queue.iter().find(|j| j.job_id == id).unwrap();
    let mut placed = HashSet::new();
    for g in gangs {
        let job = by_id(&g.job_id);
        prop_assert!(!g.workers.is_empty());
        let windows: usize = job.plans.iter().map(WindowPlan::windows).sum();
        let cap = if config.max_workers_per_job == 0 {
            windows
        } else {
            config.max_workers_per_job
        };
        prop_assert!(
            g.workers.len() <= cap.min(windows),
            "gang of {} over the cap {cap}",
            g.workers.len()
        );
        for w in &g.workers {
            prop_assert!(placed.insert(w.id.clone()), "worker {} placed twice", w.id);
            prop_assert!(idle.iter().any(|i| i.id == w.id), "worker {} is not idle", w.id);
            prop_assert!(
                eligible(w, job),
                "worker {} does not serve the job's model and weights, or was left out of it",
                w.id
            );
            prop_assert_eq!(build(w), build(&g.workers[0]), "one build and device per gang");
        }
        prop_assert!(g.workers.windows(2).all(|p| p[0].id < p[1].id), "workers sorted by id");
        // Per take, contiguous ranges covering its windows, in order; one shard per worker, or
        // with fewer workers than takes one shard per take (run in waves).
        prop_assert_eq!(g.shards.len(), g.workers.len().max(job.plans.len()));
        for (t, plan) in job.plans.iter().enumerate() {
            let ranges: Vec<_> = g
                .shards
                .iter()
                .filter(|s| s.take == t)
                .map(|s| s.windows.clone())
                .collect();
            prop_assert_eq!(ranges.first().map(|r| r.start), Some(0));
            prop_assert_eq!(ranges.last().map(|r| r.end), Some(plan.windows()));
            prop_assert!(ranges.iter().all(|r| !r.is_empty()));
            prop_assert!(ranges.windows(2).all(|p| p[0].end == p[1].start));
        }
        prop_assert!(
            g.shards.windows(2).all(|p| p[0].take <= p[1].take),
            "shards in take order"
        );
    }
    // Gangs in run order: priority first, then submission order.
    let keys: Vec<_> = gangs
        .iter()
        .map(|g| by_id(&g.job_id))
        .map(|j| run_order(j.priority, j.seq))
        .collect();
    prop_assert!(keys.windows(2).all(|p| p[0] < p[1]), "gangs out of run order: {keys:?}");
    // A job left waiting had no eligible worker at its turn: none is left idle now, and no job
    // after it in run order took one.
    for j in queue.iter().filter(|j| !gangs.iter().any(|g| g.job_id == j.job_id)) {
        for w in idle.iter().filter(|w| !placed.contains(&w.id)) {
            prop_assert!(!eligible(w, j), "{} waits while {} idles", j.job_id, w.id);
        }
        for g in gangs.iter().filter(|g| {
            let other = by_id(&g.job_id);
            run_order(other.priority, other.seq) > run_order(j.priority, j.seq)
        }) {
            for w in &g.workers {
                prop_assert!(
                    !eligible(w, j),
                    "{} jumped ahead of {} with {}",
                    g.job_id,
                    j.job_id,
                    w.id
                );
            }
        }
    }
    Ok(())
}

fn arb_workers() -> impl Strategy<Value = Vec<WorkerInfo>> {
    prop::collection::vec((0usize..8, prop::collection::vec(0usize..3, 0..3)), 0..10).prop_map(|ws| {
        ws.into_iter()
            .enumerate()
            .map(|(i, (b, ms))| worker(i, b, &ms))
            .collect()
    })
}

fn arb_queue() -> impl Strategy<Value = Vec<QueuedJob>> {
    let excluded = prop::collection::vec(0usize..10, 0..3);
    // Some jobs have cuts: up to three takes.
    let takes = prop::collection::vec(1usize..30, 1..4);
    prop::collection::vec((-2i32..=2, 0usize..3, takes, excluded), 0..6).prop_flat_map(|js| {
        let n = js.len();
        (Just(js), Just((0..n as u64).collect::<Vec<u64>>()).prop_shuffle()).prop_map(|(js, seqs)| {
            js.into_iter()
                .zip(seqs)
                .enumerate()
                .map(|(i, ((prio, m, takes, out), seq))| QueuedJob {
                    excluded: out.into_iter().map(|w| format!("w{w:02}")).collect(),
                    plans: takes.iter().map(|&l| WindowPlan::new(l, 5, 1).unwrap()).collect(),
                    ..job(&format!("job-{i}"), prio, seq, m, 1)
                })
                .collect()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn placement_properties(queue in arb_queue(), idle in arb_workers(), max in 0usize..4) {
        let config = PlacementConfig { max_workers_per_job: max };
        let gangs = place(&queue, &idle, config);
        check(&queue, &idle, config, &gangs)?;
        // Pure and deterministic: the same inputs in another order give the same gangs.
        let mut reversed = idle.clone();
        reversed.reverse();
        let mut shuffled_queue = queue.clone();
        shuffled_queue.reverse();
        prop_assert_eq!(place(&shuffled_queue, &reversed, config), gangs);
    }
}

#[test]
fn higher_priority_first_then_fifo() {
    let idle: Vec<WorkerInfo> = (0..3).map(|i| worker(i, 0, &[0])).collect();
    let queue = [
        job("early", 0, 1, 0, 13),
        job("late", 0, 2, 0, 13),
        job("urgent", 5, 3, 0, 5),
    ];
    let gangs = place(&queue, &idle, PlacementConfig { max_workers_per_job: 2 });
    let got: Vec<(&str, Vec<&str>)> = gangs
        .iter()
        .map(|g| (g.job_id.as_str(), g.workers.iter().map(|w| w.id.as_str()).collect()))
        .collect();
    // "urgent" has one window, so one worker; "early" takes two; "late" waits.
    assert_eq!(got, vec![("urgent", vec!["w00"]), ("early", vec!["w01", "w02"])]);
    let shards: Vec<_> = gangs[1].shards.iter().map(|s| (s.take, s.windows.clone())).collect();
    assert_eq!(shards, vec![(0, 0..2), (0, 2..3)]);
}

#[test]
fn gangs_never_mix_builds_or_weights() {
    // Two CUDA workers on H100 with the base weights, three CPU workers, one H100 with a fine-tune.
    let idle = vec![
        worker(0, 3, &[0]),
        worker(1, 3, &[0]),
        worker(2, 0, &[0]),
        worker(3, 0, &[0]),
        worker(4, 0, &[0]),
        worker(5, 3, &[1]),
    ];
    let gangs = place(&[job("j", 0, 1, 0, 29)], &idle, PlacementConfig::default());
    assert_eq!(gangs.len(), 1);
    let ids: Vec<&str> = gangs[0].workers.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(
        ids,
        ["w02", "w03", "w04"],
        "the largest same-build group serving the exact weights"
    );
    // The fine-tune shares the name but not the weights: only w05 may render it.
    let gangs = place(&[job("f", 0, 1, 1, 29)], &idle, PlacementConfig::default());
    assert_eq!(
        gangs[0].workers.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        ["w05"]
    );
}

#[test]
fn no_workers_no_gangs() {
    assert!(place(&[job("j", 0, 1, 0, 9)], &[], PlacementConfig::default()).is_empty());
    assert!(place(&[], &[worker(0, 0, &[0])], PlacementConfig::default()).is_empty());
}

/// A gang forms only where every worker's share of windows fits its budget: with too few
/// workers the job waits (and a smaller job behind it may start); with enough, it is placed.
#[test]
fn a_gang_forms_only_where_every_share_fits_the_budget() {
    let budget = |w: WorkerInfo| WorkerInfo {
        budget_bytes: 3_000,
        ..w
    };
    // 21 latent frames, window 5, overlap 1: 5 windows of 1,000 bytes each.
    let big = QueuedJob {
        window_bytes: 1_000,
        ..job("big", 0, 1, 0, 21)
    };
    assert_eq!(big.plans[0].windows(), 5);
    let small = QueuedJob {
        window_bytes: 1_000,
        ..job("small", 0, 2, 0, 5)
    };
    let one = [budget(worker(0, 0, &[0]))];
    let gangs = place(&[big.clone(), small.clone()], &one, PlacementConfig::default());
    assert_eq!(gangs.len(), 1, "{gangs:?}");
    assert_eq!(
        gangs[0].job_id, "small",
        "5 windows do not fit a 3-window budget; the small job runs"
    );
    let two: Vec<_> = (0..2).map(|i| budget(worker(i, 0, &[0]))).collect();
    let gangs = place(std::slice::from_ref(&big), &two, PlacementConfig::default());
    assert_eq!(gangs.len(), 1, "{gangs:?}");
    assert!(gangs[0].shards.iter().all(|s| s.windows.len() <= 3), "{gangs:?}");
    // Workers that state no budget (0) are not limited.
    let unlimited = [worker(0, 0, &[0])];
    assert_eq!(place(&[big], &unlimited, PlacementConfig::default()).len(), 1);
}

/// A job with cuts on fewer workers than takes runs one shard per take, in waves; each shard
/// must fit the worker that runs it (`j mod n`).
#[test]
fn takes_beyond_the_gang_run_in_waves_on_workers_that_fit_them() {
    let budget = |w: WorkerInfo| WorkerInfo {
        budget_bytes: 3_000,
        ..w
    };
    // Takes of 3, 1 and 2 windows (window 5, overlap 1).
    let cut = QueuedJob {
        window_bytes: 1_000,
        plans: [13, 5, 9].iter().map(|&l| WindowPlan::new(l, 5, 1).unwrap()).collect(),
        ..job("cut", 0, 1, 0, 1)
    };
    assert_eq!(cut.plans.iter().map(WindowPlan::windows).collect::<Vec<_>>(), [3, 1, 2]);
    let two: Vec<_> = (0..2).map(|i| budget(worker(i, 0, &[0]))).collect();
    let gangs = place(std::slice::from_ref(&cut), &two, PlacementConfig::default());
    let shards: Vec<_> = gangs[0].shards.iter().map(|s| (s.take, s.windows.clone())).collect();
    assert_eq!(shards, vec![(0, 0..3), (1, 0..1), (2, 0..2)]);
    assert_eq!(gangs[0].workers.len(), 2);
    // A 4-window take does not fit a 3-window budget alone; with a worker per window it does.
    let long = QueuedJob {
        plans: [17, 5].iter().map(|&l| WindowPlan::new(l, 5, 1).unwrap()).collect(),
        ..cut.clone()
    };
    assert!(place(std::slice::from_ref(&long), &two[..1], PlacementConfig::default()).is_empty());
    let three: Vec<_> = (0..3).map(|i| budget(worker(i, 0, &[0]))).collect();
    let gangs = place(&[long], &three, PlacementConfig::default());
    let shards: Vec<_> = gangs[0].shards.iter().map(|s| (s.take, s.windows.clone())).collect();
    assert_eq!(shards, vec![(0, 0..2), (0, 2..4), (1, 0..1)]);
}
