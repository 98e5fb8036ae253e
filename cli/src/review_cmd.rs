//! `longshot review JOB -o DIR`: fetch a finished job's video (and latents, when kept), measure
//! it (`longshot_core::review`), and write a contact sheet, the metrics and an HTML page.

use crate::client_cmds::{connect, fetch_to};
use crate::inputs::{decode_video, read_png_dir};
use crate::review_page;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use longshot_core::api::{JobApi, JobState, JobStatus};
use longshot_core::job::{OutputKind, ResolvedJob};
use longshot_core::output::LATENTS_TENSOR;
use longshot_core::review::{self, Frames, Layout, Review, ShotSpan, Stored, ANALYSIS_WIDTH};
use longshot_core::seam::{output_frames_of, placebo_zones, seam_zones, SeamGeometry};
use longshot_core::shots::{total_frames, Transition};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ReviewArgs {
    pub job_id: String,
    /// Directory to write the review into (created; its review files are replaced).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// One contact-sheet thumbnail per this many frames [default: one per second].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub every: Option<u32>,
}

/// Thumbnails per contact-sheet row.
const COLUMNS: usize = 8;
/// Seed of the placebo positions (any fixed value: they only need to be repeatable).
const PLACEBO_SEED: u64 = 7;

pub async fn review(coordinator: &str, a: ReviewArgs, json: bool) -> Result<()> {
    let client = connect(coordinator).await?;
    let status = client.get(a.job_id.clone()).await.map_err(|e| anyhow!("{e}"))?;
    if status.state != JobState::Done {
        bail!(
            "job {} is {}: only a finished (done) job can be reviewed",
            a.job_id,
            status.state
        );
    }
    let kinds: Vec<OutputKind> = status.outputs.iter().map(|o| o.format).collect();
    // Lossless frames first; a PNG sequence has no frame rate to check.
    let video = [OutputKind::Png, OutputKind::Mp4, OutputKind::Prores]
        .into_iter()
        .find(|k| kinds.contains(k))
        .ok_or_else(|| {
            let have: Vec<String> = kinds.iter().map(ToString::to_string).collect();
            anyhow!(
                "job {} has no video to review (its outputs: {}); render with mp4, prores or png",
                a.job_id,
                have.join(", ")
            )
        })?;
    let model = client
        .models()
        .await
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .find(|m| m.name == status.spec.model)
        .ok_or_else(|| {
            anyhow!(
                "reviewing job {} needs its model {:?}'s window layout, and no worker serves it now",
                a.job_id,
                status.spec.model
            )
        })?;
    let resolved = status
        .spec
        .clone()
        .validated()
        .and_then(|v| v.resolve(&model, status.seed))
        .map_err(|e| anyhow!("job {}'s spec no longer resolves: {e:?}", a.job_id))?;

    std::fs::create_dir_all(&a.output).with_context(|| format!("creating {}", a.output.display()))?;
    let source = a.output.join(match video {
        OutputKind::Png => "frames".to_string(),
        k => format!("clip.{}", k.extension().unwrap_or_default()),
    });
    if !json {
        eprintln!("fetching {video} of {} …", a.job_id);
    }
    fetch_to(&client, &a.job_id, video, None, &source).await?;
    let latents = if kinds.contains(&OutputKind::Latents) {
        let path = a.output.join("latents.safetensors");
        fetch_to(&client, &a.job_id, OutputKind::Latents, None, &path).await?;
        Some(path)
    } else {
        None
    };
    let model_shape = (model.temporal_compression, model.latent_channels);
    let dir = a.output.clone();
    let every = a.every.map_or(status.spec.fps.max(1) as usize, |e| e as usize);
    let (report, status) = tokio::task::spawn_blocking(move || -> Result<(Review, JobStatus)> {
        let r = measure(&source, video, latents.as_deref(), &resolved, model_shape, &dir, every)?;
        review_page::write(&dir, &status, &r)?;
        Ok((r, status))
    })
    .await
    .map_err(|e| anyhow!("review task: {e}"))??;
    std::fs::write(a.output.join("review.json"), serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", a.output.join("review.json").display()))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for ch in &report.checks {
            let mark = match ch.passed {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "n/a ",
            };
            println!("{mark}  {:<22} {}", ch.name, ch.detail);
        }
        println!("wrote {}", a.output.join("review.html").display());
    }
    if !report.passed {
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.passed == Some(false))
            .map(|c| c.name.as_str())
            .collect();
        bail!("job {} failed review: {}", status.job_id, failed.join(", "));
    }
    Ok(())
}

/// Decodes the clip small, reads the latents for non-finite values, reviews it against the job's
/// layout and writes the contact sheet. Blocking.
fn measure(
    source: &Path,
    kind: OutputKind,
    latents: Option<&Path>,
    job: &ResolvedJob,
    (c, channels): (usize, usize),
    dir: &Path,
    every: usize,
) -> Result<Review> {
    let flag = format!("{kind} output {}", source.display());
    let (rgb, width, height, stored) = if kind == OutputKind::Png {
        let (h, rgb) = read_png_dir(source, &flag)?;
        let full = Frames {
            rgb: &rgb,
            width: h.width as usize,
            height: h.height as usize,
        };
        let (small, w, h) = review::downscale(&full, ANALYSIS_WIDTH as usize);
        (small, w, h, Stored::default())
    } else {
        let v = decode_video(source, &flag, Some(ANALYSIS_WIDTH))?;
        let stored = Stored {
            fps: v.fps,
            keyframes: keyframes(source, &flag)?,
        };
        (v.rgb, v.header.width as usize, v.header.height as usize, stored)
    };
    let frames = Frames {
        rgb: &rgb,
        width,
        height,
    };
    let layout = layout(job, c);
    let nonfinite = latents.map(|p| nonfinite_frames(p, job, c, channels)).transpose()?;
    let report = review::review(&frames, &layout, &stored, nonfinite.as_deref());
    let sheet = review::contact_sheet(&frames, &layout, every, COLUMNS);
    let path = dir.join("contact-sheet.png");
    longshot_media::write_png(&path, sheet.width as u32, sheet.height as u32, &sheet.rgb)
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::write(
        dir.join("contact-sheet.json"),
        serde_json::to_vec(&serde_json::json!({ "every": every, "columns": COLUMNS, "thumbnails": sheet.thumbnails }))?,
    )?;
    Ok(report)
}

/// The keyframes of a video file's first video stream, from its packets' flags (no decoding;
/// Longshot's MP4 and ProRes have no reordered frames, so packet order is frame order).
fn keyframes(path: &Path, flag: &str) -> Result<Vec<usize>> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=flags",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .map_err(|e| anyhow!("{flag}: reviewing a video file needs ffprobe on PATH ({e})"))?;
    if !out.status.success() {
        bail!(
            "{flag}: ffprobe cannot list its packets: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with('K'))
        .map(|(i, _)| i)
        .collect())
}

/// Where the job's shots, window seams, placebo positions and cuts lie, in output frames.
fn layout(job: &ResolvedJob, c: usize) -> Layout {
    let g = SeamGeometry::FRAMES;
    let mut seams = Vec::new();
    let mut placebos = Vec::new();
    let mut cuts = Vec::new();
    for (t, take) in job.take_list().iter().enumerate() {
        let (start, len) = (take.frames.start as usize, take.frames.len());
        let plan = &take.job.plan;
        let shift = |z: std::ops::Range<usize>| z.start + start..z.end + start;
        seams.extend(seam_zones(plan, Some(c), len, g).into_iter().map(|z| (t, shift(z))));
        placebos.extend(
            placebo_zones(plan, Some(c), len, g, PLACEBO_SEED)
                .into_iter()
                .map(shift),
        );
        if t > 0 {
            cuts.push(start);
        }
    }
    let mut blends = Vec::new();
    let shots = if job.spec.shots.is_empty() {
        vec![ShotSpan {
            frames: 0..job.frames as usize,
            prompt: job.spec.prompt.clone(),
        }]
    } else {
        let mut at = 0usize;
        job.spec
            .shots
            .iter()
            .map(|s| {
                let n = total_frames(std::slice::from_ref(s), job.spec.fps).unwrap_or(0) as usize;
                at += n;
                // A blend is centred on the boundary (`longshot_core::shots::timeline`).
                if let Some(Transition::Blend(seconds)) = s.transition {
                    let half = (seconds * f64::from(job.spec.fps) / 2.0).ceil() as usize;
                    blends.push(at.saturating_sub(half)..at + half);
                }
                ShotSpan {
                    frames: at - n..at,
                    prompt: s.prompt.clone(),
                }
            })
            .collect()
    };
    Layout {
        frames: job.frames,
        fps: job.spec.fps,
        shots,
        seams,
        placebos,
        cuts,
        blends,
    }
}

/// Output frames decoded from latent frames holding NaN or infinity; read a few latent frames at
/// a time, so a long clip's latents are never whole in memory.
fn nonfinite_frames(path: &Path, job: &ResolvedJob, c: usize, channels: usize) -> Result<Vec<usize>> {
    const CHUNK: usize = 8;
    let shape = job.latent_shape(channels);
    let mut bad = Vec::new();
    for take in job.take_list() {
        for first in (take.latents.start..take.latents.end).step_by(CHUNK) {
            let range = first..(first + CHUNK).min(take.latents.end);
            let data = longshot_media::read_latent_frames(path, LATENTS_TENSOR, &shape, range.clone())
                .with_context(|| format!("reading {}", path.display()))?;
            let per = data.len() / range.len().max(1);
            for (k, l) in range.enumerate() {
                if data[k * per..(k + 1) * per].iter().any(|v| !v.is_finite()) {
                    let local = l - take.latents.start;
                    let out = output_frames_of(local..local + 1, c);
                    let end = out.end.min(take.frames.len());
                    bad.extend((out.start..end).map(|f| f + take.frames.start as usize));
                }
            }
        }
    }
    Ok(bad)
}
