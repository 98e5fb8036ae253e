//! Job-control commands against a running coordinator.

use crate::args::JobArgs;
use crate::progress::follow_at;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use longshot_core::api::{ApiError, JobApi, JobFilter, JobState, JobStatus, WorkerState};
use longshot_core::job::{defaults, OutputKind};
use longshot_core::shots::Transition;
use longshot_proto::client::JobClient;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Follow the job until it ends (exit status 1 unless it is done).
    #[arg(long)]
    pub wait: bool,
}

/// How long a client waits for a leader while coordinators fail over.
const FAILOVER_PATIENCE: Duration = Duration::from_secs(30);

/// A client of the leading coordinator among `coordinators` (comma-separated addresses). A standby
/// names the leader, which is tried next; with several addresses, or once a standby answered (an
/// election under way), every address is tried again for up to [`FAILOVER_PATIENCE`].
pub async fn connect(coordinators: &str) -> Result<JobClient> {
    let mut candidates: Vec<String> = coordinators
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    let deadline = Instant::now() + FAILOVER_PATIENCE;
    loop {
        let (mut last, mut standby) = (None, false);
        let mut i = 0;
        while i < candidates.len() {
            let address = candidates[i].clone();
            i += 1;
            match leader_client(&address).await {
                Ok(c) => return Ok(c),
                Err(ApiError::NotLeader { leader }) => {
                    standby = true;
                    if let Some(l) = leader.filter(|l| !candidates.contains(l)) {
                        candidates.insert(i, l);
                    }
                    last = Some(ApiError::NotLeader { leader: None }.to_string());
                }
                Err(ApiError::Unavailable(m)) => last = Some(m),
                Err(e) => return Err(anyhow!("{e}")),
            }
        }
        let last = last.unwrap_or_else(|| "no coordinator address given".into());
        if !(standby || candidates.len() > 1) || Instant::now() >= deadline {
            bail!("{last}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `--timeout` and `--token`, set once before any client command runs (process-wide CLI
/// settings).
static TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub fn set_client_options(timeout: Duration, token: Option<String>) {
    let _ = TIMEOUT.set(timeout);
    if let Some(t) = token {
        let _ = TOKEN.set(t);
    }
}

/// A client of `address` if it leads (a cheap call: a standby answers `NotLeader`, a coordinator
/// that requires tokens checks this one).
async fn leader_client(address: &str) -> Result<JobClient, ApiError> {
    let mut c = JobClient::connect_with_timeout(address, TIMEOUT.get().copied()).await?;
    if let Some(token) = TOKEN.get() {
        c = c.with_token(token)?;
    }
    c.list(JobFilter {
        limit: 1,
        ..Default::default()
    })
    .await?;
    Ok(c)
}

pub async fn submit(coordinator: &str, a: SubmitArgs, json: bool) -> Result<()> {
    // The root of the job's trace when traces are exported: the coordinator's job span and
    // everything under it continue it (the client sends it as `traceparent`).
    let span = tracing::info_span!("submit", job_id = tracing::field::Empty, wait = a.wait);
    submit_in(coordinator, a, json, &span).instrument(span.clone()).await
}

async fn submit_in(coordinator: &str, a: SubmitArgs, json: bool, span: &tracing::Span) -> Result<()> {
    let inputs = a.job.inputs()?;
    let spec = a.job.to_spec(&[defaults::OUTPUT], &inputs)?;
    inputs.check(spec.width, spec.height, spec.requested_frames())?;
    let client = connect(coordinator).await?;
    inputs.upload(&client).await?;
    let r = client.submit(spec, String::new()).await.map_err(|e| anyhow!("{e}"))?;
    span.record("job_id", r.job_id.as_str());
    if json {
        println!(
            "{}",
            serde_json::json!({"job_id": r.job_id, "seed": r.seed, "plan": r.plan})
        );
    } else {
        println!("{}", r.job_id);
    }
    if a.wait {
        wait_done(coordinator, &r.job_id, json).await?;
    }
    Ok(())
}

/// Follows a job to its end (`--wait`); an error unless it is done.
pub async fn wait_done(coordinator: &str, job_id: &str, json: bool) -> Result<()> {
    let status = follow_at(coordinator, job_id, json).await?;
    if status.state != JobState::Done {
        bail!(
            "job {job_id} ended {}{}",
            status.state,
            status.error.map(|e| format!(": {e}")).unwrap_or_default()
        );
    }
    Ok(())
}

pub fn print_status(s: &JobStatus, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).unwrap_or_default());
        return;
    }
    let plan = s
        .plan
        .map(|p| {
            let takes = match longshot_core::takes::take_ranges(&s.spec.shots).len() {
                1 => String::new(),
                n => format!(" in {n} takes"),
            };
            format!(
                "{} windows{takes} / {} frames ({} rendered) on {} workers",
                p.windows, p.output_frames, p.rendered_frames, p.workers
            )
        })
        .unwrap_or_default();
    let owner = if s.owner.is_empty() {
        String::new()
    } else {
        format!("  owner {}", s.owner)
    };
    println!(
        "{}  {:<9}  {}/{} steps  {}  seed {}{owner}  {:?}",
        s.job_id,
        s.state.as_str(),
        s.steps_done,
        s.steps_total,
        plan,
        s.seed,
        if s.spec.shots.is_empty() {
            s.spec.prompt.clone()
        } else {
            format!("{} shots", s.spec.shots.len())
        }
    );
    if let Some(e) = &s.error {
        println!("    error: {e}");
    }
    if let Some(d) = &s.spec.draft {
        println!(
            "    draft of {}x{} at {} steps: `longshot promote {}` renders it",
            d.width, d.height, d.steps, s.job_id
        );
    }
    for (name, d) in [
        ("image", &s.spec.inputs.image),
        ("last image", &s.spec.inputs.last_image),
        ("video", &s.spec.inputs.video),
    ] {
        if let Some(d) = d {
            println!("    {name} sha256:{d}");
        }
    }
    if let Some(t) = s.spec.shot_timeline(s.seed) {
        for (i, (shot, span)) in s.spec.shots.iter().zip(&t.shots).enumerate() {
            let blend = match (&span.blend_out, shot.transition) {
                (_, Some(Transition::Cut)) => format!(", cut to shot {}", i + 1),
                (b, _) if b.is_empty() => String::new(),
                (b, _) => format!(", blends into shot {} over frames {}..{}", i + 1, b.start, b.end),
            };
            println!(
                "    shot {i}: frames {}..{}  seed {}{blend}  {:?}",
                span.frames.start, span.frames.end, span.seed, shot.prompt
            );
        }
    }
    if let Some(r) = &s.spec.rerender {
        println!(
            "    rerender of {}: frames {}..{} re-rendered, the rest kept from it",
            r.source, r.from_frame, r.to_frame
        );
    }
    if s.spec.inputs.video.is_some() {
        let strength = s.spec.strength.unwrap_or(longshot_core::job::DEFAULT_STRENGTH);
        let first = s.spec.first_step().unwrap_or(0);
        println!(
            "    video-to-video at strength {strength}: steps {first}..{} of {} run",
            s.spec.steps, s.spec.steps
        );
    }
    let cost = &s.cost;
    if cost.gpu_seconds > 0.0 || cost.cpu_seconds > 0.0 {
        println!(
            "    cost: {:.1} GPU-seconds, {:.1} CPU-seconds (device time summed over its workers)",
            cost.gpu_seconds, cost.cpu_seconds
        );
    }
    let r = &s.recovery;
    if r.resumes > 0 || r.checkpoint_step > 0 {
        println!(
            "    checkpoint at step {}; resumed {} times{}",
            r.checkpoint_step,
            r.resumes,
            r.last_interruption
                .as_ref()
                .map(|w| format!(" (last: {w})"))
                .unwrap_or_default()
        );
    }
    if !r.excluded_workers.is_empty() {
        println!(
            "    left out (failed this job twice): {}",
            r.excluded_workers.join(", ")
        );
    }
    // The figures of longshot_job_duration_seconds and longshot_job_realtime_factor.
    if let Some(wall) = s.wall_seconds() {
        let video = s.video_seconds();
        match s.realtime_factor() {
            Some(f) => println!("    took {wall:.1} s for {video:.1} s of video (realtime factor {f:.2})"),
            None => println!("    ended after {wall:.1} s"),
        }
    }
    for o in &s.outputs {
        println!("    output {} ({}, {} bytes)", o.name, o.format, o.size_bytes);
    }
}

pub async fn status(coordinator: &str, job_id: &str, json: bool) -> Result<()> {
    let s = connect(coordinator)
        .await?
        .get(job_id.to_string())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    print_status(&s, json);
    Ok(())
}

pub fn parse_state(s: &str) -> Result<JobState> {
    Ok(match s {
        "queued" => JobState::Queued,
        "running" => JobState::Running,
        "decoding" => JobState::Decoding,
        "done" => JobState::Done,
        "failed" => JobState::Failed,
        "cancelled" => JobState::Cancelled,
        other => bail!("state {other:?} is not one of: queued, running, decoding, done, failed, cancelled"),
    })
}

pub async fn list(
    coordinator: &str,
    state: Option<&str>,
    owner: Option<String>,
    limit: usize,
    json: bool,
) -> Result<()> {
    let state = state.map(parse_state).transpose()?;
    let jobs = connect(coordinator)
        .await?
        .list(JobFilter { state, owner, limit })
        .await
        .map_err(|e| anyhow!("{e}"))?;
    for j in &jobs {
        print_status(j, json);
    }
    if jobs.is_empty() && !json {
        println!("no jobs");
    }
    Ok(())
}

pub async fn watch(coordinator: &str, job_id: &str, preview: Option<&Path>, json: bool) -> Result<()> {
    let s = match preview {
        None => follow_at(coordinator, job_id, json).await?,
        Some(dir) => crate::progress::follow_previews(coordinator, job_id, dir, json).await?,
    };
    if s.state != JobState::Done {
        bail!(
            "job {job_id} ended {}{}",
            s.state,
            s.error.map(|e| format!(": {e}")).unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn cancel(coordinator: &str, job_id: &str, json: bool) -> Result<()> {
    let state = connect(coordinator)
        .await?
        .cancel(job_id.to_string())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if json {
        println!("{}", serde_json::json!({"job_id": job_id, "state": state}));
    } else {
        println!(
            "{job_id}: {state}{}",
            if state.is_terminal() { "" } else { " (cancelling)" }
        );
    }
    Ok(())
}

/// Writes output `kind` of a finished job to `output` (a directory for png). Returns bytes written.
/// With `shot`, that shot's own file of the output (jobs with `split_shots`).
pub async fn fetch_to(
    client: &JobClient,
    job_id: &str,
    kind: OutputKind,
    shot: Option<u32>,
    output: &Path,
) -> Result<u64> {
    let png = kind == OutputKind::Png;
    if !png && output.is_dir() {
        bail!(
            "{} is a directory; name the file to write (e.g. {}/{job_id}.{})",
            output.display(),
            output.display(),
            kind.extension().unwrap_or_default()
        );
    }
    let mut stream = client
        .fetch(job_id.to_string(), kind, shot)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if png {
        tokio::fs::create_dir_all(output)
            .await
            .with_context(|| format!("creating {}", output.display()))?;
    }
    // Each file goes to a hidden temporary file beside it, renamed into place once complete: a
    // failed download never looks complete, and its temporary file is removed (dropped) on error.
    let mut current: Option<(tempfile::TempPath, PathBuf, tokio::fs::File)> = None;
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| anyhow!("{e}"))?;
        if chunk.offset == 0 {
            if let Some(file) = current.take() {
                finish(file).await?;
            }
            let dst = if png {
                let name = Path::new(&chunk.name)
                    .file_name()
                    .ok_or_else(|| anyhow!("server sent a bad file name {:?}", chunk.name))?;
                output.join(name)
            } else {
                output.to_path_buf()
            };
            let dir = match dst.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let name = dst
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (file, tmp) = tempfile::Builder::new()
                .prefix(&format!(".{name}."))
                .suffix(".part")
                .tempfile_in(&dir)
                .with_context(|| format!("creating a temporary file in {}", dir.display()))?
                .into_parts();
            current = Some((tmp, dst, tokio::fs::File::from_std(file)));
        }
        let (_, _, f) = current
            .as_mut()
            .ok_or_else(|| anyhow!("server sent data before the start of a file"))?;
        f.write_all(&chunk.data).await?;
        total += chunk.data.len() as u64;
    }
    if let Some(file) = current.take() {
        finish(file).await?;
    }
    Ok(total)
}

/// Flushes a downloaded file and renames it to its destination.
async fn finish((tmp, dst, mut f): (tempfile::TempPath, PathBuf, tokio::fs::File)) -> Result<()> {
    f.flush().await?;
    drop(f);
    tmp.persist(&dst)
        .map_err(|e| anyhow!("cannot write {}: {}", dst.display(), e.error))?;
    Ok(())
}

pub async fn fetch(
    coordinator: &str,
    job_id: &str,
    output: &Path,
    format: Option<OutputKind>,
    shot: Option<u32>,
    json: bool,
) -> Result<()> {
    let kind = match format.or_else(|| OutputKind::from_path(output)) {
        Some(kind) => kind,
        None => bail!(
            "cannot tell the format from {}; pass --format mp4|prores|png|latents",
            output.display()
        ),
    };
    let client = connect(coordinator).await?;
    let bytes = fetch_to(&client, job_id, kind, shot, output).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"job_id": job_id, "format": kind, "path": output, "bytes": bytes})
        );
    } else {
        println!("wrote {} ({bytes} bytes)", output.display());
    }
    Ok(())
}

pub async fn drain(coordinator: &str, worker_id: &str, undo: bool, json: bool) -> Result<()> {
    let state = connect(coordinator)
        .await?
        .drain(worker_id.to_string(), !undo)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if json {
        println!("{}", serde_json::json!({"worker_id": worker_id, "state": state}));
    } else {
        let s = format!("{state:?}").to_lowercase();
        if undo {
            println!("{worker_id}: {s}: takes new jobs again");
        } else {
            println!("{worker_id}: {s}: no new jobs are placed on it; a job running there finishes");
        }
    }
    Ok(())
}

pub async fn workers(coordinator: &str, json: bool) -> Result<()> {
    let ws = connect(coordinator)
        .await?
        .workers()
        .await
        .map_err(|e| anyhow!("{e}"))?;
    for w in &ws {
        if json {
            println!("{}", serde_json::to_string(w)?);
        } else {
            let models: Vec<&str> = w.models.iter().map(|m| m.name.as_str()).collect();
            let nccl = w
                .nccl_gpu
                .as_deref()
                .map(|g| format!("  nccl: {g}"))
                .unwrap_or_default();
            println!(
                "{:<16} {:<22} {:?}  {} ({})  models: {}{nccl}",
                w.id,
                w.address,
                w.state,
                w.device_kind,
                w.device_name,
                models.join(", ")
            );
        }
    }
    if ws.is_empty() && !json {
        println!("no workers");
    } else if !json {
        // The figures of longshot_workers{state}.
        let busy = ws.iter().filter(|w| w.state == WorkerState::Busy).count();
        println!("{} workers: {} idle, {busy} busy", ws.len(), ws.len() - busy);
    }
    Ok(())
}

pub async fn models(coordinator: &str, json: bool) -> Result<()> {
    for m in connect(coordinator).await?.models().await.map_err(|e| anyhow!("{e}"))? {
        if json {
            println!("{}", serde_json::to_string(&m)?);
        } else {
            let takes = match (m.reference_images, m.video_warmup) {
                (0, Some(_)) => "text-to-video, video-to-video (--video)",
                (0, None) => "text-to-video",
                (1, _) => "image-to-video (--image)",
                _ => "first-and-last-frame (--image, --last-image)",
            };
            println!(
                "{:<20} {takes}, window {} latent frames ({} video frames), overlap {}, {} channels, {}x spatial / {}x temporal compression",
                m.name,
                m.window_frames,
                m.output_frames_for(m.window_frames),
                m.default_overlap,
                m.latent_channels,
                m.spatial_compression,
                m.temporal_compression
            );
        }
    }
    Ok(())
}
