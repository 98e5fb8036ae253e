//! An in-process cluster: a clip's windows split into partitions, each on its own thread, coupled by
//! [`ChannelExchange`]. Used by tests, benchmarks and single-process renders; the worker runs the
//! same [`denoise_partition`] / [`decode_partition`] with a network exchange.

use crate::checkpoint::{Checkpointing, WindowState};
use crate::codenoise::{
    decode_partition, denoise_partition_checkpointed, CoDenoiseError, LoopTimings, PartitionConfig, PartitionOutput,
    Progress,
};
use crate::denoiser::{Denoiser, FrameDecoder, RgbFrame};
use crate::exchange::{ChannelExchange, Exchange};
use crate::preview::PreviewFrames;
use crate::tensor::Latents;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;

/// Result of a local render: the clip's latents (trimmed to L frames) and its decoded frames.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalRender {
    pub latents: Latents,
    pub frames: Vec<RgbFrame>,
    /// Per-boundary, per-step overlap disagreement δ, sorted by boundary.
    pub disagreement: Vec<(usize, Vec<f32>)>,
    /// Loop phase timings of each partition, in partition order.
    pub timings: Vec<LoopTimings>,
}

/// Renders `base.plan` split over `partitions` partitions (`base.windows` is ignored).
/// `make_denoiser` is called once per partition, on the calling thread.
pub fn render_local(
    base: &PartitionConfig,
    partitions: usize,
    make_denoiser: &dyn Fn() -> Box<dyn Denoiser>,
    decoder: &dyn FrameDecoder,
    exchange_timeout: Duration,
) -> Result<LocalRender, CoDenoiseError> {
    render_local_with(base, partitions, make_denoiser, decoder, |n| {
        ChannelExchange::chain(n, exchange_timeout)
    })
}

/// One partition's denoised latents and its decoded frames (global index, frame).
type PartitionResult = Result<(PartitionOutput, Vec<(usize, RgbFrame)>), CoDenoiseError>;

/// [`render_local`] with checkpoints every `every` steps (returned with the render, in emission
/// order), starting from `resume` (every window's state at one step) when given.
pub fn render_local_resumable(
    base: &PartitionConfig,
    partitions: usize,
    make_denoiser: &dyn Fn() -> Box<dyn Denoiser>,
    decoder: &dyn FrameDecoder,
    exchange_timeout: Duration,
    every: usize,
    resume: Option<&[WindowState]>,
) -> Result<(LocalRender, Vec<WindowState>), CoDenoiseError> {
    render_local_from_video(
        base,
        partitions,
        make_denoiser,
        decoder,
        exchange_timeout,
        every,
        resume,
        None,
    )
}

/// [`render_local_resumable`], and for a video-to-video job (`base.first_step > 0`) `clean(k)`
/// gives window `k`'s latents of the input video (a resumed run needs none); for a rerender
/// (`base.repaint`) window `k`'s known latents, from the job it edits.
#[allow(clippy::too_many_arguments)]
pub fn render_local_from_video(
    base: &PartitionConfig,
    partitions: usize,
    make_denoiser: &dyn Fn() -> Box<dyn Denoiser>,
    decoder: &dyn FrameDecoder,
    exchange_timeout: Duration,
    every: usize,
    resume: Option<&[WindowState]>,
    clean: Option<&(dyn Fn(usize) -> Latents + Sync)>,
) -> Result<(LocalRender, Vec<WindowState>), CoDenoiseError> {
    let taken = Mutex::new(Vec::new());
    let render = render_partitions(
        base,
        partitions,
        make_denoiser,
        decoder,
        |n| ChannelExchange::chain(n, exchange_timeout),
        &|windows| {
            let resume: Option<Vec<WindowState>> =
                resume.map(|r| r.iter().filter(|w| windows.contains(&w.window)).cloned().collect());
            // A rerender holds frames to its known latents at every step, so also on resume.
            let clean = match clean {
                Some(c) if resume.is_none() || base.repaint.is_some() => Some(windows.clone().map(c).collect()),
                _ => None,
            };
            let ckpt = Checkpointing {
                every,
                resume,
                ..Default::default()
            };
            (ckpt, clean)
        },
        &|p| {
            if let Progress::Checkpoint(w) = p {
                taken.lock().unwrap_or_else(|p| p.into_inner()).push(w)
            }
        },
    )?;
    Ok((render, taken.into_inner().unwrap_or_else(|p| p.into_inner())))
}

/// [`render_local`] with live previews every `every` steps, projected with the decoder's
/// [`FrameDecoder::preview_map`]; returned in emission order (per partition, by step).
pub fn render_local_previewed(
    base: &PartitionConfig,
    partitions: usize,
    make_denoiser: &dyn Fn() -> Box<dyn Denoiser>,
    decoder: &dyn FrameDecoder,
    exchange_timeout: Duration,
    every: usize,
) -> Result<(LocalRender, Vec<PreviewFrames>), CoDenoiseError> {
    let map = decoder.preview_map()?;
    let previews = Mutex::new(Vec::new());
    let failed = Mutex::new(None);
    let render = render_partitions(
        base,
        partitions,
        make_denoiser,
        decoder,
        |n| ChannelExchange::chain(n, exchange_timeout),
        &|_| {
            let ckpt = Checkpointing {
                preview_every: every,
                ..Default::default()
            };
            (ckpt, None)
        },
        &|p| {
            if let Progress::Preview { step, first_frame, x0 } = p {
                match map.project(&x0, step as u32, first_frame as u32) {
                    Ok(f) => previews.lock().unwrap_or_else(|p| p.into_inner()).push(f),
                    Err(e) => *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e),
                }
            }
        },
    )?;
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(CoDenoiseError::Config(format!("preview: {e}")));
    }
    Ok((render, previews.into_inner().unwrap_or_else(|p| p.into_inner())))
}

/// [`render_local`] over exchanges of the caller's making: `exchanges(n)` returns the `n`
/// partitions' exchanges, element `i` linked to `i − 1` and `i + 1`.
pub fn render_local_with<E: Exchange>(
    base: &PartitionConfig,
    partitions: usize,
    make_denoiser: &dyn Fn() -> Box<dyn Denoiser>,
    decoder: &dyn FrameDecoder,
    exchanges: impl FnOnce(usize) -> Vec<E>,
) -> Result<LocalRender, CoDenoiseError> {
    render_partitions(
        base,
        partitions,
        make_denoiser,
        decoder,
        exchanges,
        &|_| (Checkpointing::default(), None),
        &|_| {},
    )
}

fn render_partitions<E: Exchange>(
    base: &PartitionConfig,
    partitions: usize,
    make_denoiser: &dyn Fn() -> Box<dyn Denoiser>,
    decoder: &dyn FrameDecoder,
    exchanges: impl FnOnce(usize) -> Vec<E>,
    // How each partition (by its windows) starts: checkpoints and resume, clean latents.
    start: &(dyn Fn(std::ops::Range<usize>) -> (Checkpointing, Option<Vec<Latents>>) + Sync),
    // Checkpoints and previews, as the loop emits them.
    on_progress: &(dyn Fn(Progress) + Sync),
) -> Result<LocalRender, CoDenoiseError> {
    let ranges = base
        .plan
        .assign(partitions)
        .map_err(|e| CoDenoiseError::Config(e.to_string()))?;
    let exchanges = exchanges(ranges.len());
    if exchanges.len() != ranges.len() {
        return Err(CoDenoiseError::Config(format!(
            "{} exchanges for {} partitions",
            exchanges.len(),
            ranges.len()
        )));
    }
    let cancel = AtomicBool::new(false);
    let results: Vec<PartitionResult> = std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .into_iter()
            .zip(exchanges)
            .map(|(windows, mut exchange)| {
                let cfg = PartitionConfig {
                    windows,
                    ..base.clone()
                };
                let mut denoiser = make_denoiser();
                let cancel = &cancel;
                let (ckpt, clean) = start(cfg.windows.clone());
                s.spawn(move || {
                    let mut progress = |p: Progress| {
                        if !matches!(p, Progress::Step { .. }) {
                            on_progress(p)
                        }
                    };
                    let out = denoise_partition_checkpointed(
                        &cfg,
                        ckpt,
                        clean,
                        denoiser.as_mut(),
                        &mut exchange,
                        cancel,
                        &mut progress,
                    )?;
                    let mut frames = Vec::new();
                    decode_partition(&cfg, &out, decoder, &mut exchange, &mut |i, f| frames.push((i, f)))?;
                    Ok((out, frames))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(CoDenoiseError::Config("partition thread panicked".into())))
            })
            .collect()
    });
    let mut outputs = Vec::new();
    let mut frames = Vec::new();
    for r in results {
        let (o, f) = r?;
        outputs.push(o);
        frames.extend(f);
    }
    let shape = outputs[0].owned.shape().with_frames(base.plan.latent_frames());
    let mut latents = Latents::zeros(shape);
    let mut disagreement = Vec::new();
    let timings = outputs.iter().map(|o| o.timings).collect();
    for o in outputs {
        latents.write_frames(o.owned_start, o.owned.as_slice());
        disagreement.extend(o.disagreement);
    }
    disagreement.sort_by_key(|(b, _)| *b);
    frames.sort_by_key(|(i, _)| *i);
    if let Some(gap) = frames.iter().enumerate().find(|(n, (i, _))| n != i) {
        return Err(CoDenoiseError::Config(format!(
            "decoded frames are not contiguous at output frame {}",
            gap.0
        )));
    }
    Ok(LocalRender {
        latents,
        frames: frames.into_iter().map(|(_, f)| f).collect(),
        disagreement,
        timings,
    })
}
