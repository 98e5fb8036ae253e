//! Checkpoints of the co-denoising loop resume bit-identically on any partition of the windows
//! (docs/long-clips.md §10), for both solvers.

use longshot_core::checkpoint::{SolverState, WindowState};
use longshot_core::codenoise::{BlendMode, CoDenoiseError, PartitionConfig};
use longshot_core::local::{render_local_resumable, LocalRender};
use longshot_core::scheduler::{Schedule, Solver};
use longshot_models::ProceduralModel;
use longshot_tests::{conditioning, procedural_config, render_procedural};
use std::time::Duration;

const PROMPT: &str = "a red lighthouse on a cliff at dusk, slow pan";

fn config(solver: Solver) -> PartitionConfig {
    let mut cfg = procedural_config(5, (6, 8), 12, BlendMode::CoDenoise);
    cfg.schedule = Schedule::new(solver, 12, 3.0).unwrap();
    cfg
}

fn resumable(
    cfg: &PartitionConfig,
    parts: usize,
    every: usize,
    resume: Option<&[WindowState]>,
) -> Result<(LocalRender, Vec<WindowState>), CoDenoiseError> {
    let model = ProceduralModel::new();
    let cond = conditioning(PROMPT);
    let (h, w) = (cfg.height, cfg.width);
    render_local_resumable(
        cfg,
        parts,
        &|| model.denoiser(&cond, h, w),
        model.decoder().as_ref(),
        Duration::from_secs(30),
        every,
        resume,
    )
}

/// Same latents and frames, bit for bit (timings differ; a diff of the values is too long to print).
fn same(a: &LocalRender, b: &LocalRender) -> bool {
    let bits = |r: &LocalRender| r.latents.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    bits(a) == bits(b) && a.frames == b.frames
}

/// Every window's state at `step`, in window order.
fn at_step(states: &[WindowState], step: usize) -> Vec<WindowState> {
    let mut s: Vec<WindowState> = states.iter().filter(|w| w.step == step).cloned().collect();
    s.sort_by_key(|w| w.window);
    s
}

#[test]
fn every_checkpoint_resumes_bit_identically_on_any_partition() {
    for solver in [Solver::UniPc, Solver::Euler] {
        let cfg = config(solver);
        let windows = cfg.plan.windows();
        let undisturbed = render_procedural(&cfg, 1, PROMPT);
        let (render, states) = resumable(&cfg, 3, 5, None).unwrap();
        assert!(same(&render, &undisturbed), "{solver}: checkpointing changes nothing");
        // Every 5 steps and after the last: 5, 10, 12.
        let steps: Vec<usize> = {
            let mut s: Vec<usize> = states.iter().map(|w| w.step).collect();
            s.dedup();
            s.sort();
            s.dedup();
            s
        };
        assert_eq!(steps, vec![5, 10, 12], "{solver}");
        // A checkpoint does not depend on the partition that took it.
        let (_, from_two) = resumable(&cfg, 2, 5, None).unwrap();
        for step in [5, 10, 12] {
            let ckpt = at_step(&states, step);
            assert_eq!(ckpt.len(), windows, "{solver}: complete at step {step}");
            assert!(ckpt == at_step(&from_two, step), "{solver}: step {step}");
            if solver == Solver::UniPc {
                assert!(matches!(
                    &ckpt[0].solver,
                    SolverState::UniPc {
                        history: [Some(_), Some(_)],
                        ..
                    }
                ));
            }
            for parts in [1, 2, 4] {
                let (resumed, _) = resumable(&cfg, parts, 0, Some(&ckpt)).unwrap();
                assert!(same(&resumed, &undisturbed), "{solver}: step {step} on {parts}");
            }
        }
    }
}

#[test]
fn a_resume_state_that_does_not_fit_is_refused_by_name() {
    let cfg = config(Solver::UniPc);
    let (_, states) = resumable(&cfg, 1, 5, None).unwrap();
    let mut mixed = at_step(&states, 5);
    mixed[2] = at_step(&states, 10)[2].clone();
    let err = resumable(&cfg, 1, 0, Some(&mixed)).unwrap_err().to_string();
    assert!(err.contains("window 2 is at step 10"), "{err}");

    let mut short = at_step(&states, 5);
    short[1].latents.pop();
    let err = resumable(&cfg, 1, 0, Some(&short)).unwrap_err().to_string();
    assert!(err.contains("window 1 has"), "{err}");

    let euler = config(Solver::Euler);
    let err = resumable(&euler, 1, 0, Some(&at_step(&states, 5)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds unipc state, the schedule uses euler"), "{err}");

    let missing = &at_step(&states, 5)[1..];
    let err = resumable(&cfg, 1, 0, Some(missing)).unwrap_err().to_string();
    assert!(
        err.contains("windows [1, 2, 3, 4] given, the shard runs [0, 1, 2, 3, 4]"),
        "{err}"
    );
}
