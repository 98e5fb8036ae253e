//! A job's state machine: which moves are legal and what each one does to the job's status.
//!
//! ```text
//!            Start                Decode               Finish
//!   Queued ─────────▶ Running ─────────▶ Decoding ─────────▶ Done
//!     ▲  │              │  │                 │
//!     │  │   Requeue,   │  │ Finish/Fail/    │ Fail/Cancel
//!     │  │   Interrupt  │  │ Cancel          ▼
//!     └──┼──────────────┘  │  (Decoding ──Interrupt──▶ Queued too)
//!        │ Cancel          └──────────▶ Failed / Cancelled
//!        ▼
//!    Cancelled
//! ```
//!
//! Pure: [`apply`] is the only code that changes a job's state once it exists. The job table
//! ([`crate::job_table`]) calls it and then persists and publishes; recovery
//! ([`crate::job_store::recover`]) calls it on loaded records.

use longshot_core::api::{JobState, JobStatus, OutputInfo, PlanSummary};
use thiserror::Error;

/// Why a job's state changes.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// Queued → Running: a gang was placed; the summary names how many workers it has.
    Start(PlanSummary),
    /// Running → Queued: a worker refused its shard before any work began.
    Requeue(PlanSummary),
    /// Running | Decoding → Queued: the run was interrupted (a lost worker, a coordinator
    /// restart); the job resumes from its last complete checkpoint. Counted in `recovery`.
    Interrupt(String),
    /// Running → Decoding: the first frame arrived.
    Decode,
    /// Running | Decoding → Done (a latents-only job never decodes).
    Finish(Vec<OutputInfo>),
    /// Running | Decoding → Failed.
    Fail(String),
    /// Queued | Running | Decoding → Cancelled.
    Cancel,
}

/// A move the state machine does not allow.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("job {job_id} is {from}: {transition} is not allowed (it needs {allowed})")]
pub struct IllegalTransition {
    pub job_id: String,
    pub from: JobState,
    pub transition: &'static str,
    pub allowed: String,
}

impl Transition {
    pub fn name(&self) -> &'static str {
        match self {
            Transition::Start(_) => "start",
            Transition::Requeue(_) => "requeue",
            Transition::Interrupt(_) => "interrupt",
            Transition::Decode => "decode",
            Transition::Finish(_) => "finish",
            Transition::Fail(_) => "fail",
            Transition::Cancel => "cancel",
        }
    }

    /// The state the move leads to.
    pub fn target(&self) -> JobState {
        match self {
            Transition::Start(_) => JobState::Running,
            Transition::Requeue(_) | Transition::Interrupt(_) => JobState::Queued,
            Transition::Decode => JobState::Decoding,
            Transition::Finish(_) => JobState::Done,
            Transition::Fail(_) => JobState::Failed,
            Transition::Cancel => JobState::Cancelled,
        }
    }

    /// The states the move may start from.
    pub fn sources(&self) -> &'static [JobState] {
        use JobState::*;
        match self {
            Transition::Start(_) => &[Queued],
            Transition::Requeue(_) | Transition::Decode => &[Running],
            Transition::Finish(_) | Transition::Fail(_) | Transition::Interrupt(_) => &[Running, Decoding],
            Transition::Cancel => &[Queued, Running, Decoding],
        }
    }
}

/// Applies `t` to `status` if the state machine allows it from `status.state`: the new state,
/// and with it the plan, the outputs, the error and the finish time. `now_ms` is the wall clock.
pub fn apply(status: &mut JobStatus, t: Transition, now_ms: u64) -> Result<(), IllegalTransition> {
    if !t.sources().contains(&status.state) {
        let allowed: Vec<&str> = t.sources().iter().map(|s| s.as_str()).collect();
        return Err(IllegalTransition {
            job_id: status.job_id.clone(),
            from: status.state,
            transition: t.name(),
            allowed: allowed.join(" or "),
        });
    }
    status.state = t.target();
    if status.state.is_terminal() {
        status.finished_unix_ms = now_ms;
    }
    match t {
        Transition::Start(plan) | Transition::Requeue(plan) => status.plan = Some(plan),
        Transition::Finish(outputs) => status.outputs = outputs,
        Transition::Fail(reason) => status.error = Some(reason),
        Transition::Interrupt(reason) => {
            status.recovery.resumes += 1;
            status.recovery.last_interruption = Some(reason);
            // Work after the checkpoint is lost and done again (video-to-video's skipped steps
            // count as done).
            let windows = status.plan.map_or(0, |p| u64::from(p.windows));
            let first = status.spec.first_step().unwrap_or(0) as u64;
            status.steps_done = u64::from(status.recovery.checkpoint_step).max(first) * windows;
        }
        Transition::Decode | Transition::Cancel => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use longshot_core::job::{defaults, ClipLength, JobSpec, OutputKind};

    const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Decoding,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ];

    fn status(state: JobState) -> JobStatus {
        let spec = JobSpec {
            seed: None,
            length: ClipLength::Frames(1),
            width: defaults::WIDTH,
            height: defaults::HEIGHT,
            steps: defaults::STEPS,
            ..crate::test_spec::spec("m", 1)
        };
        JobStatus {
            job_id: "job-1".into(),
            state,
            spec,
            seed: 0,
            plan: None,
            queue_position: 0,
            steps_done: 0,
            steps_total: 0,
            outputs: Vec::new(),
            error: None,
            submitted_unix_ms: 0,
            finished_unix_ms: 0,
            recovery: Default::default(),
            owner: String::new(),
            cost: Default::default(),
        }
    }

    fn every_transition() -> Vec<Transition> {
        let plan = PlanSummary {
            windows: 3,
            workers: 2,
            ..PlanSummary::default()
        };
        let output = OutputInfo {
            name: "clip.mp4".into(),
            format: OutputKind::Mp4,
            size_bytes: 1,
        };
        vec![
            Transition::Start(plan),
            Transition::Requeue(plan),
            Transition::Interrupt("worker w1 was lost".into()),
            Transition::Decode,
            Transition::Finish(vec![output]),
            Transition::Fail("boom".into()),
            Transition::Cancel,
        ]
    }

    /// The whole table: every (state, transition) pair is either the documented move or refused
    /// without touching the status.
    #[test]
    fn every_pair_is_the_documented_move_or_refused() {
        use JobState::*;
        let legal: &[(JobState, &str, JobState)] = &[
            (Queued, "start", Running),
            (Queued, "cancel", Cancelled),
            (Running, "requeue", Queued),
            (Running, "interrupt", Queued),
            (Decoding, "interrupt", Queued),
            (Running, "decode", Decoding),
            (Running, "finish", Done),
            (Running, "fail", Failed),
            (Running, "cancel", Cancelled),
            (Decoding, "finish", Done),
            (Decoding, "fail", Failed),
            (Decoding, "cancel", Cancelled),
        ];
        for from in ALL {
            for t in every_transition() {
                let name = t.name();
                let mut s = status(from);
                let before = s.clone();
                let result = apply(&mut s, t, 42);
                match legal.iter().find(|(f, n, _)| *f == from && *n == name) {
                    Some((_, _, to)) => {
                        assert_eq!(result, Ok(()), "{from} --{name}-->");
                        assert_eq!(s.state, *to, "{from} --{name}-->");
                        assert_eq!(
                            s.finished_unix_ms,
                            if to.is_terminal() { 42 } else { 0 },
                            "{from} --{name}-->"
                        );
                    }
                    None => {
                        let e = result.expect_err(&format!("{from} --{name}--> must be refused"));
                        assert_eq!((e.from, e.transition), (from, name));
                        assert_eq!(s, before, "a refused move leaves the status as it was");
                    }
                }
            }
        }
    }

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in ALL.into_iter().filter(|s| s.is_terminal()) {
            for t in every_transition() {
                assert!(apply(&mut status(from), t, 0).is_err(), "{from} is terminal");
            }
        }
    }

    #[test]
    fn moves_carry_their_data() {
        let mut s = status(JobState::Queued);
        let plan = PlanSummary {
            windows: 4,
            workers: 2,
            ..PlanSummary::default()
        };
        apply(&mut s, Transition::Start(plan), 1).unwrap();
        assert_eq!(s.plan, Some(plan));
        apply(&mut s, Transition::Fail("worker w1 was lost".into()), 7).unwrap();
        assert_eq!(
            (s.error.as_deref(), s.finished_unix_ms),
            (Some("worker w1 was lost"), 7)
        );
        let mut r = status(JobState::Decoding);
        apply(&mut r, Transition::Interrupt("the coordinator restarted".into()), 3).unwrap();
        assert_eq!(
            (r.state, r.finished_unix_ms, r.recovery.resumes),
            (JobState::Queued, 0, 1)
        );
        assert_eq!(
            r.recovery.last_interruption.as_deref(),
            Some("the coordinator restarted")
        );
        let e = apply(&mut s, Transition::Cancel, 9).unwrap_err();
        assert_eq!(
            e.to_string(),
            "job job-1 is failed: cancel is not allowed (it needs queued or running or decoding)"
        );
    }
}
