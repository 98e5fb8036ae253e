//! `longshot estimate`: what a job would take, asked of the coordinator before submitting it.

use crate::args::JobArgs;
use crate::client_cmds::connect;
use anyhow::{anyhow, Result};
use longshot_core::api::{JobApi, JobEstimate};
use longshot_core::job::defaults;

/// Same flags as `submit`; nothing is uploaded or queued (the inputs are checked here only).
pub async fn estimate(coordinator: &str, job: JobArgs, json: bool) -> Result<()> {
    let inputs = job.inputs()?;
    let spec = job.to_spec(&[defaults::OUTPUT], &inputs)?;
    inputs.check(spec.width, spec.height, spec.requested_frames())?;
    let (model, width, height) = (spec.model.clone(), spec.width, spec.height);
    let e = connect(coordinator)
        .await?
        .estimate(spec)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if json {
        println!("{}", serde_json::to_string(&e)?);
    } else {
        print!("{}", report(&e, &model, width, height));
    }
    Ok(())
}

/// The estimate as text: the plan, then the prediction or why there is none.
fn report(e: &JobEstimate, model: &str, width: u32, height: u32) -> String {
    let p = e.plan;
    let mut out = format!(
        "{} windows / {} frames on {} {} worker{}\n",
        p.windows,
        p.output_frames,
        p.workers,
        e.device_kind,
        if p.workers == 1 { "" } else { "s" }
    );
    let ahead = match e.jobs_ahead {
        0 => "the cluster is free".to_string(),
        1 => "1 job queued or running ahead of it".to_string(),
        n => format!("{n} jobs queued or running ahead of it"),
    };
    match &e.prediction {
        Some(pr) => {
            let device = if e.device_kind == "cpu" { "CPU" } else { "GPU" };
            let seconds = pr.cost.gpu_seconds + pr.cost.cpu_seconds;
            out += &format!(
                "predicted: {:.1} s once it starts ({ahead}), {seconds:.1} {device}-seconds\n",
                pr.wall_seconds
            );
            out += &format!(
                "from {} finished job{}: {:.4} s per window-step, {:.4} s per decoded frame, {:.1} s per run\n",
                pr.jobs,
                if pr.jobs == 1 { "" } else { "s" },
                pr.window_step_seconds,
                pr.frame_seconds,
                pr.overhead_seconds
            );
        }
        None => {
            out += &format!(
                "no measurements: this coordinator knows no finished job of {model} at {width}x{height} on {} workers yet; render one (a short clip will do) and ask again ({ahead})\n",
                e.device_kind
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use longshot_core::api::{JobCost, PlanSummary, Prediction};

    fn estimate(prediction: Option<Prediction>) -> JobEstimate {
        JobEstimate {
            plan: PlanSummary {
                windows: 3,
                output_frames: 161,
                workers: 2,
                ..Default::default()
            },
            device_kind: "cuda".into(),
            jobs_ahead: 1,
            prediction,
        }
    }

    #[test]
    fn the_report_names_what_is_missing_or_what_it_rests_on() {
        let none = report(&estimate(None), "wan2.1-t2v-1.3b", 832, 480);
        assert!(none.starts_with("3 windows / 161 frames on 2 cuda workers\n"), "{none}");
        assert!(
            none.contains("no measurements: this coordinator knows no finished job of wan2.1-t2v-1.3b at 832x480 on cuda workers yet"),
            "{none}"
        );
        let some = report(
            &estimate(Some(Prediction {
                wall_seconds: 42.3,
                cost: JobCost {
                    gpu_seconds: 80.5,
                    cpu_seconds: 0.0,
                },
                jobs: 2,
                window_step_seconds: 0.5,
                frame_seconds: 0.02,
                overhead_seconds: 3.0,
            })),
            "m",
            1,
            1,
        );
        assert!(
            some.contains("predicted: 42.3 s once it starts (1 job queued or running ahead of it), 80.5 GPU-seconds"),
            "{some}"
        );
        assert!(
            some.contains("from 2 finished jobs: 0.5000 s per window-step"),
            "{some}"
        );
    }
}
