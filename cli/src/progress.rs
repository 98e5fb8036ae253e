//! Following a job: indicatif progress bars for people, JSON lines for scripts.

use crate::client_cmds::connect;
use crate::preview_dir::PreviewDir;
use anyhow::{anyhow, bail, Result};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use longshot_core::api::{ApiError, JobApi, JobEvent, JobStatus};
use longshot_proto::client::JobClient;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn bar(m: &MultiProgress, len: u64, what: &str) -> ProgressBar {
    let b = m.add(ProgressBar::new(len));
    let style = ProgressStyle::with_template("{prefix:>9} [{bar:40}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    b.set_style(style);
    b.set_prefix(what.to_string());
    b
}

/// The bars (and the preview directory), kept across reconnections.
struct View {
    json: bool,
    m: MultiProgress,
    bars: Option<(ProgressBar, ProgressBar)>,
    /// `watch --preview DIR`: where the live preview goes, created with the first status.
    preview: Option<(PathBuf, Option<PreviewDir>)>,
}

impl View {
    fn new(json: bool) -> Self {
        let m = MultiProgress::new();
        if json {
            m.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        View {
            json,
            m,
            bars: None,
            preview: None,
        }
    }
}

/// Follows `job_id` until it ends, keeping its live preview in `preview` when given; returns its
/// final status.
pub async fn follow(client: &JobClient, job_id: &str, preview: Option<&Path>, json: bool) -> Result<JobStatus> {
    let mut view = View::new(json);
    view.preview = preview.map(|dir| (dir.to_path_buf(), None));
    match follow_with(client, job_id, &mut view).await? {
        Some(s) => Ok(s),
        None => bail!("lost the coordinator while following job {job_id}"),
    }
}

/// Like [`follow`], connecting again to the leader among `coordinators` whenever the connection
/// breaks (a coordinator fail-over or restart), until connecting fails.
pub async fn follow_at(coordinators: &str, job_id: &str, json: bool) -> Result<JobStatus> {
    follow_view(coordinators, job_id, View::new(json)).await
}

/// [`follow_at`], keeping the job's live preview in `dir` ([`PreviewDir`]).
pub async fn follow_previews(coordinators: &str, job_id: &str, dir: &Path, json: bool) -> Result<JobStatus> {
    let mut view = View::new(json);
    view.preview = Some((dir.to_path_buf(), None));
    follow_view(coordinators, job_id, view).await
}

async fn follow_view(coordinators: &str, job_id: &str, mut view: View) -> Result<JobStatus> {
    loop {
        let client = connect(coordinators).await?;
        if let Some(s) = follow_with(&client, job_id, &mut view).await? {
            return Ok(s);
        }
        tracing::warn!("lost the coordinator while following job {job_id}; reconnecting");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `None`: the coordinator went away before the job ended.
async fn follow_with(client: &JobClient, job_id: &str, view: &mut View) -> Result<Option<JobStatus>> {
    let gone = |e: ApiError| match e {
        ApiError::Unavailable(_) | ApiError::NotLeader { .. } => Ok(None),
        e => Err(anyhow!("{e}")),
    };
    let mut events = match client.watch(job_id.to_string()).await {
        Ok(s) => s,
        Err(e) => return gone(e),
    };
    let status = match client.get(job_id.to_string()).await {
        Ok(s) => s,
        Err(e) => return gone(e),
    };
    let (steps, decode) = view
        .bars
        .get_or_insert_with(|| {
            let frames_total = status.plan.map_or(0, |p| p.output_frames) as u64;
            (
                bar(&view.m, status.steps_total, "denoising"),
                bar(&view.m, frames_total, "decoding"),
            )
        })
        .clone();
    steps.set_position(status.steps_done);
    let mut ended = false;
    if let Some((dir, made @ None)) = &mut view.preview {
        if status.spec.preview_every == 0 && !status.state.is_terminal() {
            view.m.println(format!(
                "job {job_id} was submitted without --preview-every: no previews will come"
            ))?;
        }
        *made = Some(PreviewDir::create(dir, &status)?);
    }
    while let Some(e) = events.next().await {
        if view.json {
            match &e {
                // The pixels are in the preview directory, not on stdout.
                JobEvent::Preview {
                    total_steps, frames: f, ..
                } => println!(
                    "{}",
                    serde_json::json!({"job_id": job_id, "event": {"event": "preview",
                        "step": f.step, "total_steps": total_steps, "first_frame": f.first_frame,
                        "frames": f.frames, "width": f.width, "height": f.height}})
                ),
                e => println!("{}", serde_json::json!({"job_id": job_id, "event": e})),
            }
        }
        if let Some((path, Some(dir))) = &mut view.preview {
            let written = match &e {
                JobEvent::Preview {
                    total_steps,
                    clip_frames,
                    frames,
                } => dir.update(*total_steps, *clip_frames, frames).await,
                JobEvent::Resuming { .. } => {
                    dir.restart();
                    Ok(())
                }
                e if e.is_terminal() => dir.flush().await,
                _ => Ok(()),
            };
            // The job matters more than its preview: a preview that cannot be kept stops the
            // previews, not the watch (or the render).
            if let Err(err) = written {
                view.m
                    .println(format!("live preview in {} stopped: {err:#}", path.display()))?;
                view.preview = None;
            }
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
            JobEvent::Preview {
                frames, total_steps, ..
            } => steps.set_message(format!("preview at step {} of {total_steps}", frames.step)),
        }
        if e.is_terminal() {
            ended = true;
            break;
        }
    }
    match client.get(job_id.to_string()).await {
        Ok(s) if ended || s.state.is_terminal() => Ok(Some(s)),
        Ok(_) => Ok(None),
        Err(e) => gone(e),
    }
}
