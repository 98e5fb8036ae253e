//! `longshot estimate`: a job's run predicted from how finished runs spent their time.
//!
//! A worker steps its windows in lockstep with its take's other shards (the overlap exchange
//! waits for the slowest), then decodes the frames it owns. So a shard takes `a · W · S + b · F`:
//! `W` the widest shard of its take in the wave (windows), `S` the steps that run, `F` its output
//! frames; a run takes `o + Σ over waves of its slowest shard`. Each finished run records its
//! sums ([`RunTiming`]); the rates `a = Σ denoise / Σ W·S`, `b = Σ decode / Σ F` and the mean
//! overhead `o` come from the most recent runs of the same model, size and device kind.

use longshot_core::api::{JobCost, Prediction};
use longshot_core::denoiser::ModelInfo;
use longshot_core::job::ResolvedJob;
use longshot_core::seam::output_frames_of;
use longshot_core::takes::{Shard, Take};
use serde::{Deserialize, Serialize};

/// Runs a prediction averages over (the most recent first).
pub const RECENT_RUNS: usize = 8;

/// How one successful run of a job spent its time, summed over its shards.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunTiming {
    /// `cuda` or `cpu`.
    pub device_kind: String,
    /// Lockstep window-steps (`W · S` per shard) and the seconds from accepting a shard to its
    /// last step.
    pub window_steps: u64,
    pub denoise_seconds: f64,
    /// Output frames decoded, and the seconds from a shard's last step to its end.
    pub frames: u64,
    pub decode_seconds: f64,
    /// The run's wall time less the sum over its waves of the slowest shard.
    pub overhead_seconds: f64,
}

/// One shard's load: lockstep window-steps and output frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLoad {
    pub window_steps: u64,
    pub frames: u64,
}

/// The load of every shard of `shards` (run in waves of `workers`) of a job with takes `takes`.
pub fn loads(job: &ResolvedJob, model: &ModelInfo, takes: &[Take], shards: &[Shard], workers: usize) -> Vec<ShardLoad> {
    let steps = job.schedule.steps().saturating_sub(job.first_step) as u64;
    let c = model.temporal_compression;
    let workers = workers.max(1);
    shards
        .iter()
        .enumerate()
        .map(|(j, s)| {
            let widest = widest(shards, j, workers) as u64;
            let take = &takes[s.take];
            let plan = &take.job.plan;
            let latents = plan.owned_range(s.windows.start).start..plan.owned_range(s.windows.end - 1).end;
            let frames = output_frames_of(latents, c);
            let take_frames = take.frames.len();
            ShardLoad {
                window_steps: widest * steps,
                frames: frames.end.min(take_frames).saturating_sub(frames.start) as u64,
            }
        })
        .collect()
}

/// Windows of the widest shard that shard `j` steps in lockstep with: its take's shards in its
/// wave (waves of `workers`).
pub fn widest(shards: &[Shard], j: usize, workers: usize) -> usize {
    let workers = workers.max(1);
    let wave = (j / workers) * workers..((j / workers + 1) * workers).min(shards.len());
    shards[wave]
        .iter()
        .filter(|o| o.take == shards[j].take)
        .map(|o| o.windows.len())
        .max()
        .unwrap_or(0)
}

/// The prediction from `runs` (most recent first; at most [`RECENT_RUNS`] are used) for shards
/// `loads` in waves of `workers` on `device_kind` workers; `None` without a run to go by.
pub fn predict(runs: &[RunTiming], loads: &[ShardLoad], workers: usize, device_kind: &str) -> Option<Prediction> {
    let runs = &runs[..runs.len().min(RECENT_RUNS)];
    if runs.is_empty() {
        return None;
    }
    let sum = |f: fn(&RunTiming) -> f64| runs.iter().map(f).sum::<f64>();
    let rate = |seconds: f64, units: f64| if units > 0.0 { seconds / units } else { 0.0 };
    let a = rate(sum(|r| r.denoise_seconds), sum(|r| r.window_steps as f64));
    let b = rate(sum(|r| r.decode_seconds), sum(|r| r.frames as f64));
    let overhead = sum(|r| r.overhead_seconds) / runs.len() as f64;
    let shard = |l: &ShardLoad| a * l.window_steps as f64 + b * l.frames as f64;
    let waves: f64 = loads
        .chunks(workers.max(1))
        .map(|wave| wave.iter().map(shard).fold(0.0, f64::max))
        .sum();
    let mut cost = JobCost::default();
    cost.add(device_kind, loads.iter().map(shard).sum());
    Some(Prediction {
        wall_seconds: overhead + waves,
        cost,
        jobs: runs.len() as u32,
        window_step_seconds: a,
        frame_seconds: b,
        overhead_seconds: overhead,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(window_steps: u64, denoise: f64, frames: u64, decode: f64, overhead: f64) -> RunTiming {
        RunTiming {
            device_kind: "cpu".into(),
            window_steps,
            denoise_seconds: denoise,
            frames,
            decode_seconds: decode,
            overhead_seconds: overhead,
        }
    }

    #[test]
    fn rates_are_ratios_of_sums_and_waves_add_their_slowest_shard() {
        // a = (10 + 30) / (100 + 300) = 0.1 s per window-step; b = (2 + 2) / (20 + 20) = 0.1 s
        // per frame; overhead (1 + 3) / 2 = 2 s.
        let runs = [run(100, 10.0, 20, 2.0, 1.0), run(300, 30.0, 20, 2.0, 3.0)];
        let loads = [
            ShardLoad {
                window_steps: 40,
                frames: 10,
            },
            ShardLoad {
                window_steps: 20,
                frames: 30,
            },
            ShardLoad {
                window_steps: 10,
                frames: 0,
            },
        ];
        let p = predict(&runs, &loads, 2, "cuda").unwrap();
        assert!((p.window_step_seconds - 0.1).abs() < 1e-12);
        assert!((p.frame_seconds - 0.1).abs() < 1e-12);
        assert!((p.overhead_seconds - 2.0).abs() < 1e-12);
        // Shards take 5, 5 and 1 s; waves [5, 5] and [1]: 2 + 5 + 1.
        assert!((p.wall_seconds - 8.0).abs() < 1e-9, "{p:?}");
        assert!(
            (p.cost.gpu_seconds - 11.0).abs() < 1e-9 && p.cost.cpu_seconds == 0.0,
            "{p:?}"
        );
        assert_eq!(p.jobs, 2);
    }

    /// Two takes (2 and 1 windows) on 1, 2 and 3 workers: a shard's window-steps are its take's
    /// widest shard's, and every output frame is exactly one shard's.
    #[test]
    fn loads_follow_the_lockstep_and_own_every_frame_once() {
        use longshot_core::job::JobSpec;
        use longshot_core::shots::{Shot, Transition};
        use longshot_core::takes::assign;
        let model = longshot_worker::models::ModelSet::builtin().served().remove(0);
        let spec = JobSpec {
            shots: vec![Shot::new("a", 130, Some(Transition::Cut)), Shot::new("b", 41, None)],
            prompt: String::new(),
            steps: 3,
            ..crate::test_spec::spec(&model.name, 171)
        };
        let job = spec.resolve(&model, 1).unwrap();
        let takes = job.take_list();
        let windows: Vec<usize> = takes.iter().map(|t| t.job.plan.windows()).collect();
        assert_eq!(windows, [2, 1]);
        let shards = assign(&job.take_plans(), 1).unwrap();
        let one = loads(&job, &model, &takes, &shards, 1);
        assert_eq!(one.iter().map(|l| l.window_steps).collect::<Vec<_>>(), [6, 3]);
        assert_eq!(one.iter().map(|l| l.frames).collect::<Vec<_>>(), [130, 41]);
        let shards = assign(&job.take_plans(), 2).unwrap();
        let two = loads(&job, &model, &takes, &shards, 2);
        // Two workers: one shard per take, side by side.
        assert_eq!(two.iter().map(|l| l.frames).sum::<u64>(), 171);
        assert_eq!(two.iter().map(|l| l.window_steps).collect::<Vec<_>>(), [6, 3]);
        let shards = assign(&job.take_plans(), 3).unwrap();
        let three = loads(&job, &model, &takes, &shards, 3);
        assert_eq!(three.iter().map(|l| l.window_steps).collect::<Vec<_>>(), [3, 3, 3]);
        assert_eq!(three.iter().map(|l| l.frames).sum::<u64>(), 171);
    }

    #[test]
    fn no_run_no_prediction_and_only_recent_runs_count() {
        assert_eq!(predict(&[], &[], 1, "cpu"), None);
        let mut runs = vec![run(10, 1.0, 0, 0.0, 0.0); RECENT_RUNS];
        runs.push(run(10, 1000.0, 0, 0.0, 0.0));
        let p = predict(
            &runs,
            &[ShardLoad {
                window_steps: 10,
                frames: 0,
            }],
            1,
            "cpu",
        )
        .unwrap();
        assert_eq!(p.jobs as usize, RECENT_RUNS);
        assert!((p.wall_seconds - 1.0).abs() < 1e-9 && (p.cost.cpu_seconds - 1.0).abs() < 1e-9);
    }
}
