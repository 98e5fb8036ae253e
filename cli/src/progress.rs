//! Following a job: indicatif progress bars for people, JSON lines for scripts.

use anyhow::{anyhow, Result};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use longshot_core::api::{JobApi, JobEvent, JobStatus};
use longshot_proto::client::JobClient;

fn bar(m: &MultiProgress, len: u64, what: &str) -> ProgressBar {
    let b = m.add(ProgressBar::new(len));
    let style = ProgressStyle::with_template("{prefix:>9} [{bar:40}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    b.set_style(style);
    b.set_prefix(what.to_string());
    b
}

/// Follows `job_id` until it ends; returns its final status.
pub async fn follow(client: &JobClient, job_id: &str, json: bool) -> Result<JobStatus> {
    let mut events = client.watch(job_id.to_string()).await.map_err(|e| anyhow!("{e}"))?;
    let status = client.get(job_id.to_string()).await.map_err(|e| anyhow!("{e}"))?;
    let m = MultiProgress::new();
    if json {
        m.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let steps = bar(&m, status.steps_total, "denoising");
    steps.set_position(status.steps_done);
    let frames_total = status.plan.map_or(0, |p| p.output_frames) as u64;
    let decode = bar(&m, frames_total, "decoding");
    while let Some(e) = events.next().await {
        if json {
            println!("{}", serde_json::json!({"job_id": job_id, "event": e}));
        }
        match &e {
            JobEvent::Queued { position } => steps.set_message(format!("queued (position {position})")),
            JobEvent::Planned(p) => steps.set_message(format!("{} windows on {} workers", p.windows, p.workers)),
            JobEvent::StepProgress { .. } => steps.inc(1),
            JobEvent::Decoding { frames_done, .. } => decode.set_position(*frames_done as u64),
            JobEvent::Done { .. } => {
                steps.finish();
                decode.finish();
            }
            JobEvent::Resuming { reason, from_step } => {
                let windows = status.plan.map_or(0, |p| u64::from(p.windows));
                steps.set_position(u64::from(*from_step) * windows);
                decode.set_position(0);
                steps.set_message(format!("resuming from step {from_step}: {reason}"));
            }
            JobEvent::Failed { reason } => steps.abandon_with_message(format!("failed: {reason}")),
            JobEvent::Cancelled => steps.abandon_with_message("cancelled"),
        }
        if e.is_terminal() {
            break;
        }
    }
    client.get(job_id.to_string()).await.map_err(|e| anyhow!("{e}"))
}
