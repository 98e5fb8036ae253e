//! `longshot promote JOB`: render a draft (`--draft`) at the full quality it previews.

use crate::client_cmds::{connect, wait_done};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use longshot_core::api::JobApi;

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// The draft job (rendered with `--draft`).
    pub job_id: String,
    /// Follow the new job until it ends (exit status 1 unless it is done).
    #[arg(long)]
    pub wait: bool,
}

/// Submits the draft's full-quality job: its width, height and steps, its seed (the one it was
/// rendered with, also when it was random), shots and everything else unchanged.
pub async fn promote(coordinator: &str, a: PromoteArgs, json: bool) -> Result<()> {
    let client = connect(coordinator).await?;
    let draft = client.get(a.job_id.clone()).await.map_err(|e| anyhow!("{e}"))?;
    let Some(spec) = draft.spec.promoted(draft.seed) else {
        bail!(
            "job {} is not a draft: render one with --draft, then promote it",
            a.job_id
        );
    };
    let (width, height, steps) = (spec.width, spec.height, spec.steps);
    let r = client.submit(spec, String::new()).await.map_err(|e| anyhow!("{e}"))?;
    if json {
        println!(
            "{}",
            serde_json::json!({"job_id": r.job_id, "draft": a.job_id, "seed": r.seed, "plan": r.plan})
        );
    } else {
        println!("{}", r.job_id);
        eprintln!(
            "promoted draft {} to {width}x{height} at {steps} steps, seed {}",
            a.job_id, r.seed
        );
    }
    if a.wait {
        wait_done(coordinator, &r.job_id, json).await?;
    }
    Ok(())
}
