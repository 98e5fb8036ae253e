//! `longshot rerender`: re-render a time range of a finished job in place.

use crate::client_cmds::{connect, wait_done};
use crate::inputs::read_shots;
use anyhow::{anyhow, bail, Result};
use clap::Args;
use longshot_core::api::JobApi;
use longshot_core::job::{JobSpec, Rerender};
use longshot_core::shots::total_frames;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct RerenderArgs {
    /// The job to edit. It must be done and have kept its latents (rendered with the latents
    /// output, e.g. `--format mp4,latents`).
    pub job_id: String,
    /// Start of the range to re-render, in seconds from the clip's start.
    #[arg(long, allow_negative_numbers = true)]
    pub from: f64,
    /// End of the range (exclusive), in seconds.
    #[arg(long, allow_negative_numbers = true)]
    pub to: f64,
    /// The range's new prompt [default: the job's].
    #[arg(long, short = 'p', conflicts_with = "shots")]
    pub prompt: Option<String>,
    /// A new shot list for the job (same total length); the range takes its prompts.
    #[arg(long)]
    pub shots: Option<PathBuf>,
    /// The new negative prompt [default: the job's].
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// A new seed [default: the job's]: another take of the range with the same prompt.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Follow the new job until it ends (exit status 1 unless it is done).
    #[arg(long)]
    pub wait: bool,
}

/// Frame index of `seconds` at `fps`, or what is wrong with it.
fn frame_at(flag: &str, seconds: f64, fps: u32) -> Result<u32> {
    if !(seconds.is_finite() && seconds >= 0.0) {
        bail!("{flag}: {seconds} is not a time in seconds from the clip's start (≥ 0)");
    }
    Ok((seconds * f64::from(fps)).round() as u32)
}

/// The source's spec with the edits and the range: everything that shapes the clip is kept.
fn rerender_spec(source: &JobSpec, source_id: &str, seed: u64, a: &RerenderArgs) -> Result<JobSpec> {
    let (from_frame, to_frame) = (
        frame_at("--from", a.from, source.fps)?,
        frame_at("--to", a.to, source.fps)?,
    );
    let frames = source.requested_frames();
    if from_frame >= to_frame || to_frame > frames {
        bail!(
            "--from/--to: {}..{} s (frames {from_frame}..{to_frame}) is not a non-empty range inside the clip's {:.2} s ({frames} frames at {} fps)",
            a.from,
            a.to,
            f64::from(frames) / f64::from(source.fps),
            source.fps
        );
    }
    let mut spec = source.clone();
    spec.seed = Some(a.seed.unwrap_or(seed));
    if let Some(p) = &a.prompt {
        spec.prompt = p.clone();
        spec.shots.clear();
        spec.split_shots = false;
    }
    if let Some(path) = &a.shots {
        spec.shots = read_shots(path)?;
        spec.prompt.clear();
        // Bad shots are named by the coordinator's check; only the length is a rerender's own.
        if let Some(total) = total_frames(&spec.shots, source.fps) {
            if total != frames {
                bail!("--shots: the shots add up to {total} frames, job {source_id} has {frames}: a rerender keeps its source's length");
            }
        }
    }
    if let Some(n) = &a.negative_prompt {
        spec.negative_prompt = n.clone();
    }
    // The range starts from noise beside the kept frames, never from the source's video.
    spec.inputs.video = None;
    spec.strength = None;
    spec.rerender = Some(Rerender {
        source: source_id.to_string(),
        from_frame,
        to_frame,
    });
    Ok(spec)
}

pub async fn rerender(coordinator: &str, a: RerenderArgs, json: bool) -> Result<()> {
    let client = connect(coordinator).await?;
    let source = client.get(a.job_id.clone()).await.map_err(|e| anyhow!("{e}"))?;
    let spec = rerender_spec(&source.spec, &source.job_id, source.seed, &a)?;
    let range = spec.rerender.clone().expect("set above");
    let r = client.submit(spec, String::new()).await.map_err(|e| anyhow!("{e}"))?;
    if json {
        println!(
            "{}",
            serde_json::json!({"job_id": r.job_id, "seed": r.seed, "plan": r.plan, "source": a.job_id, "from_frame": range.from_frame, "to_frame": range.to_frame})
        );
    } else {
        eprintln!(
            "re-rendering frames {}..{} of {} (the rest is kept from it)",
            range.from_frame, range.to_frame, a.job_id
        );
        println!("{}", r.job_id);
    }
    if a.wait {
        wait_done(coordinator, &r.job_id, json).await?;
    }
    Ok(())
}
