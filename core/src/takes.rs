//! Hard cuts: a shot list split at its `cut` transitions into takes (docs/long-clips.md §10).
//!
//! Each take is rendered as a job of its own: its own window grid, noise, prompt schedule and a
//! causal decode that starts at its first frame, so nothing crosses a cut. The takes run side by
//! side on the cluster (a gang's workers are shared out among them, [`assign`]) and their frames
//! and latents are concatenated in take order. A take's bits depend only on its own shots, so a
//! cut job is bit-identical on any number of workers, and editing one take leaves the others'
//! frames untouched.

use crate::job::{ClipLength, JobSpec, ResolvedJob};
use crate::plan::{PlanError, WindowPlan};
use crate::shots::{shot_seed, Transition};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// One take of a job with cuts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Take {
    /// Its shots, as indices into the job's shot list.
    pub shots: Range<usize>,
    /// The job's output frames it renders.
    pub frames: Range<u32>,
    /// The job's latent frames (the latents output) its latents fill.
    pub latents: Range<usize>,
    /// Its windows in the job's numbering across takes (progress, checkpoints).
    pub windows: Range<usize>,
    /// The take as a job of its own: a shot list of its shots, each with its seed written out.
    pub job: ResolvedJob,
}

impl Take {
    /// A job without cuts as its one take.
    pub fn whole(job: &ResolvedJob) -> Take {
        Take {
            shots: 0..job.spec.shots.len(),
            frames: 0..job.frames,
            latents: 0..job.latent_frames,
            windows: 0..job.plan.windows(),
            job: job.clone(),
        }
    }
}

/// One shard of a job: windows `windows` (numbered within the take) of take `take`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub take: usize,
    pub windows: Range<usize>,
}

/// The shot ranges of the takes of `shots`: a new take after every `cut`.
pub fn take_ranges(shots: &[crate::shots::Shot]) -> Vec<Range<usize>> {
    let mut takes = Vec::new();
    let mut start = 0;
    for (i, s) in shots.iter().enumerate() {
        if s.transition == Some(Transition::Cut) {
            takes.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < shots.len() || takes.is_empty() {
        takes.push(start..shots.len());
    }
    takes
}

/// The output frames of each take of `shots` at `fps` (one range for a list without cuts or
/// no list); empty when a shot's length is invalid.
pub fn take_frames(shots: &[crate::shots::Shot], fps: u32) -> Vec<Range<u32>> {
    let mut start = 0u32;
    let mut out = Vec::new();
    for r in take_ranges(shots) {
        let Some(len) = crate::shots::total_frames(&shots[r], fps) else {
            return Vec::new();
        };
        out.push(start..start.saturating_add(len));
        start = start.saturating_add(len);
    }
    out
}

/// Whether a shot list has a cut.
pub fn has_cut(shots: &[crate::shots::Shot]) -> bool {
    shots.iter().any(|s| s.transition == Some(Transition::Cut))
}

/// The spec of the take made of `shots` of `spec`'s list: those shots alone, each with the seed
/// it has in the whole list (so a take renders the same bits whichever takes surround it), and
/// their total length.
pub fn take_spec(spec: &JobSpec, seed: u64, shots: Range<usize>) -> JobSpec {
    let mut list: Vec<_> = spec.shots[shots.clone()].to_vec();
    for (s, i) in list.iter_mut().zip(shots) {
        s.seed = Some(s.seed.unwrap_or_else(|| shot_seed(seed, i)));
    }
    if let Some(last) = list.last_mut() {
        last.transition = None;
    }
    let frames = crate::shots::total_frames(&list, spec.fps).unwrap_or(1);
    // A rerender's range is the job's; each take's part of it is `ResolvedJob::take_repaint`.
    JobSpec {
        shots: list,
        seed: Some(seed),
        length: ClipLength::Frames(frames),
        split_shots: false,
        rerender: None,
        ..spec.clone()
    }
}

/// Shares `workers` workers out among takes with grids `plans`: every take gets at least one
/// worker and the rest go, one at a time, to the take with the most windows per worker (the
/// first such take on a tie), never more workers than a take has windows; each take's windows
/// are then split as [`WindowPlan::assign`] does. With fewer workers than takes every take is one
/// shard and the shards run in waves of `workers`. A pure function: the shards never change the
/// bits, only who computes them.
pub fn assign(plans: &[WindowPlan], workers: usize) -> Result<Vec<Shard>, PlanError> {
    if workers == 0 {
        return Err(PlanError::NoWorkers);
    }
    let mut per_take = vec![1usize; plans.len()];
    let mut spare = workers.saturating_sub(plans.len());
    while spare > 0 {
        // windows/k compared as a cross product: a/k_a > b/k_b ⇔ a·k_b > b·k_a.
        let best =
            (0..plans.len())
                .filter(|&t| per_take[t] < plans[t].windows())
                .fold(None, |best: Option<usize>, t| match best {
                    Some(b) if plans[b].windows() * per_take[t] >= plans[t].windows() * per_take[b] => Some(b),
                    _ => Some(t),
                });
        let Some(t) = best else { break };
        per_take[t] += 1;
        spare -= 1;
    }
    let mut shards = Vec::new();
    for (t, (plan, &k)) in plans.iter().zip(&per_take).enumerate() {
        for windows in plan.assign(k)? {
            shards.push(Shard { take: t, windows });
        }
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shots::Shot;

    fn shot(frames: u32, transition: Option<Transition>) -> Shot {
        Shot::new("p", frames, transition)
    }

    #[test]
    fn cuts_split_the_list_and_blends_do_not() {
        let list = [
            shot(10, Some(Transition::Blend(1.0))),
            shot(10, Some(Transition::Cut)),
            shot(10, Some(Transition::Cut)),
            shot(10, None),
        ];
        assert_eq!(take_ranges(&list), vec![0..2, 2..3, 3..4]);
        assert!(has_cut(&list));
        assert_eq!(take_ranges(&list[..1]), vec![0..1]);
        assert!(!has_cut(&list[..1]));
        // A cut after the last shot (which validation refuses) makes no empty take.
        assert_eq!(take_ranges(&list[..2]), vec![0..2]);
    }

    #[test]
    fn workers_go_where_the_windows_are() {
        let plans = [
            WindowPlan::new(50, 10, 2).unwrap(), // 6 windows
            WindowPlan::new(10, 10, 2).unwrap(), // 1 window
            WindowPlan::new(26, 10, 2).unwrap(), // 3 windows
        ];
        let shards = |n| assign(&plans, n).unwrap();
        // Fewer workers than takes: one shard per take.
        let one: Vec<_> = shards(1).iter().map(|s| (s.take, s.windows.clone())).collect();
        assert_eq!(one, vec![(0, 0..6), (1, 0..1), (2, 0..3)]);
        assert_eq!(shards(2).len(), 3);
        // 5 workers: 1 each, then take 0 (6/1), then take 0 again (6/2 = 3 ≥ 3/1, first wins).
        let five: Vec<_> = shards(5).iter().map(|s| (s.take, s.windows.clone())).collect();
        assert_eq!(five, vec![(0, 0..2), (0, 2..4), (0, 4..6), (1, 0..1), (2, 0..3)]);
        // More workers than windows: one window each, the rest idle.
        assert_eq!(shards(40).len(), 10);
        assert!(shards(40).iter().all(|s| s.windows.len() == 1));
        assert_eq!(assign(&plans, 0), Err(PlanError::NoWorkers));
    }

    #[test]
    fn every_window_is_in_exactly_one_shard() {
        let plans: Vec<WindowPlan> = [7, 30, 12, 61]
            .iter()
            .map(|&l| WindowPlan::new(l, 8, 2).unwrap())
            .collect();
        for n in 1..30 {
            let shards = assign(&plans, n).unwrap();
            assert!(shards.len() <= n.max(plans.len()));
            for (t, plan) in plans.iter().enumerate() {
                let mine: Vec<_> = shards.iter().filter(|s| s.take == t).collect();
                assert!(!mine.is_empty());
                let mut next = 0;
                for s in mine {
                    assert_eq!(s.windows.start, next);
                    next = s.windows.end;
                }
                assert_eq!(next, plan.windows());
            }
        }
    }
}
