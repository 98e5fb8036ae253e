//! The lockstep co-denoising loop of one partition: a contiguous range of windows run by one
//! worker (docs/long-clips.md §2).
//!
//! Per step: every window's post-CFG velocity → overlap exchange with the neighbour partitions →
//! the fixed-order f32 blend (identical on both copies) → the scheduler step per window. Latents
//! are never sent: identical inputs give identical copies, which is checked by hashes every
//! `hash_every` steps. Edge windows are computed first so their overlaps are on the wire while
//! interior windows compute. After the last step the partition decodes the frames it owns, with a
//! causal warm-up halo taken from the owner of the preceding frames.

use crate::checkpoint::{check_resume, CheckpointError, Checkpointing, WindowState};
use crate::denoiser::{Branch, DenoiseError, Denoiser, FrameDecoder, RgbFrame, StepPoint, WindowContext};
use crate::exchange::{Exchange, ExchangeError, OverlapMessage, Payload, Side};
use crate::hash::hash_f32;
use crate::noise::{NoiseError, NoiseKeys};
use crate::plan::WindowPlan;
use crate::preview::x0_prediction;
use crate::repaint::RepaintMask;
use crate::scheduler::strength::noise_to;
use crate::scheduler::{new_state_at, restore_state, Schedule, SchedulerState};
use crate::seam::overlap_disagreement;
use crate::tensor::{LatentShape, Latents};
use longshot_kernels::cpu::{blend_overlap, cfg_combine};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Whether neighbouring windows are coupled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlendMode {
    /// Exchange and blend overlap velocities every step (the product).
    #[default]
    CoDenoise,
    /// Ablation: independent windows, hard cut at the owner boundary.
    Independent,
}

/// Everything a partition needs; identical on every worker except `windows`.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionConfig {
    pub plan: WindowPlan,
    /// The windows this partition runs.
    pub windows: Range<usize>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub schedule: Schedule,
    /// CFG scale; CFG runs iff `guidance > 1` (as in diffusers).
    pub guidance: f32,
    /// The initial noise's keys: the job's seed, or per shot ([`crate::shots`]).
    pub noise: NoiseKeys,
    pub mode: BlendMode,
    /// Compare overlap-latent hashes with the neighbours every this many steps (0: only at the end).
    pub hash_every: usize,
    /// Output frames of the clip. The model renders the smallest `c·k + 1` frames covering them;
    /// decoded frames from this index on are that grid's tail and are dropped, never emitted.
    pub output_frames: usize,
    /// The first step that runs (video-to-video skips the steps before it; 0 otherwise).
    pub first_step: usize,
    /// A rerender: the frames kept from the original job and how the new ones join them
    /// ([`crate::repaint`]); the loop then needs every window's known latents.
    pub repaint: Option<RepaintMask>,
}

impl PartitionConfig {
    fn window_shape(&self) -> LatentShape {
        LatentShape::new(self.plan.window(), self.channels, self.height, self.width)
    }
    fn has_left(&self) -> bool {
        self.windows.start > 0
    }
    fn has_right(&self) -> bool {
        self.windows.end < self.plan.windows()
    }
}

/// Progress reported while the loop runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// Window `window` finished step `step` (0-based) of `steps`.
    Step { window: usize, step: usize, steps: usize },
    /// A window's state for a checkpoint ([`Checkpointing::every`]); taken after the step's
    /// overlap hashes were checked, when that step checks them.
    Checkpoint(WindowState),
    /// The x0 prediction of the partition's owned latent frames from global latent frame
    /// `first_frame` on, at the step that makes `step` steps done
    /// ([`Checkpointing::preview_every`]).
    Preview {
        step: usize,
        first_frame: usize,
        x0: Latents,
    },
}

#[derive(Debug, Error)]
pub enum CoDenoiseError {
    #[error(transparent)]
    Denoise(#[from] DenoiseError),
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    #[error(transparent)]
    Noise(#[from] NoiseError),
    #[error("overlap copies diverged at boundary {boundary} after step {step}: the two windows no longer agree bit for bit (mismatched model, library or schedule between workers?)")]
    Divergence { boundary: usize, step: usize },
    #[error("unexpected message from the {side} neighbour: {reason}")]
    Protocol { side: Side, reason: String },
    #[error("invalid partition: {0}")]
    Config(String),
    #[error(transparent)]
    Resume(#[from] CheckpointError),
    #[error("cancelled")]
    Cancelled,
}

impl CoDenoiseError {
    /// Whether running the same work again may succeed: the exchange with a neighbour timed out
    /// or broke off (a network partition, a stalled or lost peer). Protocol errors, divergence,
    /// model and configuration errors would recur.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CoDenoiseError::Exchange(
                ExchangeError::Timeout { .. } | ExchangeError::Disconnected { .. } | ExchangeError::GroupTimeout { .. }
            )
        )
    }
}

/// Wall time spent in each phase of the loop, summed over steps and windows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoopTimings {
    /// Model forwards and the CFG combine.
    pub model: Duration,
    /// Sending overlaps and waiting for the neighbours' (includes waiting on a slower neighbour).
    pub exchange: Duration,
    /// The overlap blend.
    pub blend: Duration,
    /// Scheduler updates.
    pub scheduler: Duration,
    /// Hash checks of the overlap copies.
    pub verify: Duration,
    /// Live previews: the x0 prediction and whatever the progress sink does with it.
    pub preview: Duration,
}

impl LoopTimings {
    pub fn total(&self) -> Duration {
        self.model + self.exchange + self.blend + self.scheduler + self.verify + self.preview
    }
}

/// Denoised latents of the frames a partition owns, plus per-boundary overlap disagreement.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionOutput {
    /// Global latent frame of `owned`'s first frame.
    pub owned_start: usize,
    pub owned: Latents,
    /// δ = ‖v_left − v_right‖ / mean(‖v_left‖, ‖v_right‖) per step, for each boundary whose left
    /// window is in this partition (so each boundary is reported once).
    pub disagreement: Vec<(usize, Vec<f32>)>,
    pub timings: LoopTimings,
}

/// Runs the partition's windows through all steps.
pub fn denoise_partition(
    cfg: &PartitionConfig,
    denoiser: &mut dyn Denoiser,
    exchange: &mut dyn Exchange,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<PartitionOutput, CoDenoiseError> {
    denoise_partition_checkpointed(
        cfg,
        Checkpointing::default(),
        None,
        denoiser,
        exchange,
        cancel,
        progress,
    )
}

/// [`denoise_partition`], emitting checkpoints and possibly resuming from one (`ckpt`). A resumed
/// run takes the same steps from the checkpoint's step on as an undisturbed one, so its result is
/// bit-identical.
///
/// Video-to-video starts from `clean`, the partition's windows' latents of the input video, in
/// window order (needed when `cfg.first_step > 0`; ignored on resume): window `k` starts at step
/// `first_step` from `noise_to(σ_first, clean_k, noise_k)`, `noise_k` being the same Philox noise,
/// keyed by global latent frame, that a text-to-video window starts from. So overlapping windows
/// start from identical copies of their shared frames, as in text-to-video. A rerender
/// (`cfg.repaint`) takes the original job's final latents as `clean`, on resume too, and holds
/// its kept frames to them at every step.
pub fn denoise_partition_checkpointed(
    cfg: &PartitionConfig,
    mut ckpt: Checkpointing,
    clean: Option<Vec<Latents>>,
    denoiser: &mut dyn Denoiser,
    exchange: &mut dyn Exchange,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<PartitionOutput, CoDenoiseError> {
    cfg.plan
        .check_windows(&cfg.windows)
        .map_err(|e| CoDenoiseError::Config(e.to_string()))?;
    let (first, end) = (cfg.windows.start, cfg.windows.end);
    let shape = cfg.window_shape();
    let first_step = cfg.first_step;
    if first_step >= cfg.schedule.steps() {
        return Err(CoDenoiseError::Config(format!(
            "first step {first_step} is not below the schedule's {} steps",
            cfg.schedule.steps()
        )));
    }
    if let Some(clean) = &clean {
        if clean.len() != cfg.windows.len() || clean.iter().any(|c| c.shape() != shape) {
            return Err(CoDenoiseError::Config(format!(
                "clean latents: {} windows, expected {} of {shape:?}",
                clean.len(),
                cfg.windows.len()
            )));
        }
    }
    let noise_of = |k: usize| cfg.noise.latents(cfg.plan.window_range(k).start, shape);
    // A rerender replaces the kept frames after every step: it needs the known latents always,
    // also on resume, and each window's noise to re-noise them.
    let repaint = match (&cfg.repaint, &clean) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(CoDenoiseError::Config(
                "a rerender needs its windows' known latents".into(),
            ))
        }
        (Some(mask), Some(known)) => {
            let noise: Vec<Latents> = cfg.windows.clone().map(noise_of).collect::<Result<_, _>>()?;
            Some((mask, known, noise))
        }
    };
    let (start, mut x, mut states) = match ckpt.resume.take() {
        Some(resume) => {
            let step = check_resume(&resume, cfg.windows.clone(), shape, &cfg.schedule, first_step)?;
            let mut x = Vec::with_capacity(resume.len());
            let mut states: Vec<Box<dyn SchedulerState>> = Vec::with_capacity(resume.len());
            for w in resume {
                states.push(restore_state(first_step, step, &w.solver));
                x.push(Latents::from_vec(shape, w.latents).expect("checked size"));
            }
            (step, x, states)
        }
        None => {
            let mut x: Vec<Latents> = cfg.windows.clone().map(noise_of).collect::<Result<_, _>>()?;
            match (first_step, &clean) {
                (0, _) => {}
                (_, None) => {
                    return Err(CoDenoiseError::Config(format!(
                        "a run from step {first_step} needs its windows' clean latents"
                    )))
                }
                (_, Some(clean)) => {
                    let sigma = cfg.schedule.sigma(first_step);
                    for (xk, ck) in x.iter_mut().zip(clean) {
                        let noise = xk.as_slice().to_vec();
                        noise_to(sigma, ck.as_slice(), &noise, xk.as_mut_slice());
                    }
                }
            }
            if let Some((mask, known, noise)) = &repaint {
                let sigma = cfg.schedule.sigma(first_step);
                for (j, k) in cfg.windows.clone().enumerate() {
                    let start = cfg.plan.window_range(k).start;
                    mask.apply(
                        start,
                        shape.frame_len(),
                        sigma,
                        known[j].as_slice(),
                        noise[j].as_slice(),
                        x[j].as_mut_slice(),
                    );
                }
            }
            let states = cfg
                .windows
                .clone()
                .map(|_| new_state_at(&cfg.schedule, first_step))
                .collect();
            (first_step, x, states)
        }
    };
    // Held windows of a rerender run no model: their frames are all replaced after each step.
    let runs: Vec<bool> = cfg
        .windows
        .clone()
        .map(|k| cfg.repaint.as_ref().is_none_or(|m| m.runs(&cfg.plan.window_range(k))))
        .collect();
    let mut v: Vec<Latents> = cfg.windows.clone().map(|_| Latents::zeros(shape)).collect();
    let mut uncond = Latents::zeros(shape);
    let last = end - 1;
    // Edge windows first: their overlaps go on the wire while the interior computes.
    let mut order = vec![first];
    if last != first {
        order.push(last);
    }
    order.extend(first + 1..last);
    let coupled = cfg.mode == BlendMode::CoDenoise;
    let local_boundaries = first..last; // boundary k joins windows k and k+1
    let reported: Vec<usize> = (first..end).filter(|&k| k + 1 < cfg.plan.windows()).collect();
    let mut disagreement: Vec<(usize, Vec<f32>)> = reported.iter().map(|&b| (b, Vec::new())).collect();
    let steps = cfg.schedule.steps();
    let (o, fl, w) = (cfg.plan.overlap(), shape.frame_len(), cfg.plan.window());
    let mut t = LoopTimings::default();

    for i in start..steps {
        let point = StepPoint {
            index: i,
            sigma: cfg.schedule.sigma(i),
            timestep: cfg.schedule.timestep(i),
        };
        for &k in &order {
            if cancel.load(Ordering::Relaxed) {
                return Err(CoDenoiseError::Cancelled);
            }
            let ctx = WindowContext {
                index: k,
                first_frame: cfg.plan.window_range(k).start,
            };
            let j = k - first;
            let t0 = Instant::now();
            if !runs[j] {
                v[j].as_mut_slice().fill(0.0);
            } else {
                denoiser.predict(&x[j], ctx, point, Branch::Conditional, &mut v[j])?;
                if cfg.guidance > 1.0 {
                    denoiser.predict(&x[j], ctx, point, Branch::Unconditional, &mut uncond)?;
                    cfg_combine(v[j].as_mut_slice(), uncond.as_slice(), cfg.guidance);
                }
            }
            let t1 = Instant::now();
            t.model += t1 - t0;
            if coupled && o > 0 {
                if k == first && cfg.has_left() {
                    let msg = velocity_msg(i, k - 1, v[j].frames(0..o));
                    exchange.send(Side::Left, msg)?;
                }
                if k == last && cfg.has_right() {
                    exchange.send(Side::Right, velocity_msg(i, k, v[j].frames(w - o..w)))?;
                }
            }
            t.exchange += t1.elapsed();
        }
        if coupled && o > 0 {
            let t0 = Instant::now();
            for b in local_boundaries.clone() {
                let (lo, hi) = v.split_at_mut(b + 1 - first);
                let left = lo[b - first].frames_mut(w - o..w);
                let right = hi[0].frames_mut(0..o);
                record(&mut disagreement, b, left, right);
                blend_overlap(left, right, o, fl);
            }
            t.blend += t0.elapsed();
            if cfg.has_left() {
                let t0 = Instant::now();
                let mut remote = recv_velocity(exchange, Side::Left, i, first - 1, o * fl)?;
                let t1 = Instant::now();
                blend_overlap(&mut remote, v[0].frames_mut(0..o), o, fl);
                t.exchange += t1 - t0;
                t.blend += t1.elapsed();
            }
            if cfg.has_right() {
                let t0 = Instant::now();
                let mut remote = recv_velocity(exchange, Side::Right, i, last, o * fl)?;
                let t1 = Instant::now();
                let local = v[last - first].frames_mut(w - o..w);
                record(&mut disagreement, last, local, &remote);
                blend_overlap(local, &mut remote, o, fl);
                t.exchange += t1 - t0;
                t.blend += t1.elapsed();
            }
        }
        if ckpt.preview_due(i + 1, steps) {
            let t0 = Instant::now();
            progress(preview(cfg, &x, &v, point.sigma, i + 1));
            t.preview += t0.elapsed();
        }
        let t0 = Instant::now();
        for (j, k) in cfg.windows.clone().enumerate() {
            states[j].step(&cfg.schedule, i, &v[j], &mut x[j]);
            if let Some((mask, known, noise)) = &repaint {
                let start = cfg.plan.window_range(k).start;
                let sigma = cfg.schedule.sigma(i + 1);
                mask.apply(
                    start,
                    fl,
                    sigma,
                    known[j].as_slice(),
                    noise[j].as_slice(),
                    x[j].as_mut_slice(),
                );
            }
            progress(Progress::Step {
                window: k,
                step: i,
                steps,
            });
        }
        t.scheduler += t0.elapsed();
        let check_now = (cfg.hash_every > 0 && (i + 1) % cfg.hash_every == 0) || i + 1 == steps;
        if coupled && o > 0 && check_now {
            let t0 = Instant::now();
            verify_overlaps(cfg, &x, exchange, i)?;
            t.verify += t0.elapsed();
        }
        if ckpt.due(i + 1, steps) {
            for (j, k) in cfg.windows.clone().enumerate() {
                progress(Progress::Checkpoint(WindowState {
                    window: k,
                    step: i + 1,
                    latents: x[j].as_slice().to_vec(),
                    solver: states[j].snapshot(),
                }));
            }
        }
    }
    Ok(assemble_owned(cfg, &x, disagreement, t))
}

/// The owned frames' x0 prediction `x − σ·v`, from the blended velocities the step is about to
/// use: identical on every worker count, as they are.
fn preview(cfg: &PartitionConfig, x: &[Latents], v: &[Latents], sigma: f32, step: usize) -> Progress {
    let plan = &cfg.plan;
    let owned_start = plan.owned_range(cfg.windows.start).start;
    let owned_end = plan.owned_range(cfg.windows.end - 1).end;
    let mut x0 = Latents::zeros(x[0].shape().with_frames(owned_end - owned_start));
    for (j, k) in cfg.windows.clone().enumerate() {
        let (r, ws) = (plan.owned_range(k), plan.window_range(k).start);
        let at = r.start - owned_start;
        let frames = r.start - ws..r.end - ws;
        x0_prediction(
            x[j].frames(frames.clone()),
            v[j].frames(frames),
            sigma,
            x0.frames_mut(at..at + r.len()),
        );
    }
    Progress::Preview {
        step,
        first_frame: owned_start,
        x0,
    }
}

fn velocity_msg(step: usize, boundary: usize, data: &[f32]) -> OverlapMessage {
    OverlapMessage {
        step: step as u32,
        boundary: boundary as u32,
        payload: Payload::Velocity(data.to_vec()),
    }
}

fn record(d: &mut [(usize, Vec<f32>)], boundary: usize, left: &[f32], right: &[f32]) {
    if let Some((_, series)) = d.iter_mut().find(|(b, _)| *b == boundary) {
        series.push(overlap_disagreement(left, right) as f32);
    }
}

/// Receives the next message from `side` and checks it is what the lockstep expects now.
fn expect(exchange: &mut dyn Exchange, side: Side, step: usize, boundary: usize) -> Result<Payload, CoDenoiseError> {
    let msg = exchange.recv(side, step as u32)?;
    if msg.step as usize != step || msg.boundary as usize != boundary {
        return Err(CoDenoiseError::Protocol {
            side,
            reason: format!(
                "got step {} boundary {}, expected step {step} boundary {boundary}",
                msg.step, msg.boundary
            ),
        });
    }
    Ok(msg.payload)
}

fn recv_velocity(
    exchange: &mut dyn Exchange,
    side: Side,
    step: usize,
    boundary: usize,
    len: usize,
) -> Result<Vec<f32>, CoDenoiseError> {
    match expect(exchange, side, step, boundary)? {
        Payload::Velocity(v) if v.len() == len => Ok(v),
        Payload::Velocity(v) => Err(CoDenoiseError::Protocol {
            side,
            reason: format!("overlap has {} values, expected {len}", v.len()),
        }),
        other => Err(CoDenoiseError::Protocol {
            side,
            reason: format!("expected a velocity, got {other:?}"),
        }),
    }
}

/// Proves that every copy of every shared frame is bit-identical after step `step`.
fn verify_overlaps(
    cfg: &PartitionConfig,
    x: &[Latents],
    exchange: &mut dyn Exchange,
    step: usize,
) -> Result<(), CoDenoiseError> {
    let (o, w, first) = (cfg.plan.overlap(), cfg.plan.window(), cfg.windows.start);
    for j in 1..x.len() {
        if x[j - 1].frames(w - o..w) != x[j].frames(0..o) {
            return Err(CoDenoiseError::Divergence {
                boundary: first + j - 1,
                step,
            });
        }
    }
    let hash_msg = |b: usize, data: &[f32]| OverlapMessage {
        step: step as u32,
        boundary: b as u32,
        payload: Payload::LatentHash(hash_f32(data)),
    };
    let last = x.len() - 1;
    if cfg.has_left() {
        exchange.send(Side::Left, hash_msg(first - 1, x[0].frames(0..o)))?;
    }
    if cfg.has_right() {
        exchange.send(Side::Right, hash_msg(cfg.windows.end - 1, x[last].frames(w - o..w)))?;
    }
    for (side, b, mine) in [
        (
            Side::Left,
            first.wrapping_sub(1),
            cfg.has_left().then(|| x[0].frames(0..o)),
        ),
        (
            Side::Right,
            cfg.windows.end - 1,
            cfg.has_right().then(|| x[last].frames(w - o..w)),
        ),
    ] {
        let Some(mine) = mine else { continue };
        match expect(exchange, side, step, b)? {
            Payload::LatentHash(h) if h == hash_f32(mine) => {}
            Payload::LatentHash(_) => return Err(CoDenoiseError::Divergence { boundary: b, step }),
            other => {
                return Err(CoDenoiseError::Protocol {
                    side,
                    reason: format!("expected a hash, got {other:?}"),
                })
            }
        }
    }
    Ok(())
}

fn assemble_owned(
    cfg: &PartitionConfig,
    x: &[Latents],
    disagreement: Vec<(usize, Vec<f32>)>,
    timings: LoopTimings,
) -> PartitionOutput {
    let plan = &cfg.plan;
    let owned_start = plan.owned_range(cfg.windows.start).start;
    let owned_end = plan.owned_range(cfg.windows.end - 1).end;
    let mut owned = Latents::zeros(x[0].shape().with_frames(owned_end - owned_start));
    for (j, k) in cfg.windows.clone().enumerate() {
        let r = plan.owned_range(k);
        let ws = plan.window_range(k).start;
        owned.write_frames(r.start - owned_start, x[j].frames(r.start - ws..r.end - ws));
    }
    PartitionOutput {
        owned_start,
        owned,
        disagreement,
        timings,
    }
}

/// Decodes the frames a partition owns. A causal decoder's warm-up frames are the final latents
/// of the `halo` frames before the partition's first owned frame; they may span several
/// partitions to the left (Wan2.1's VAE needs 38), so they travel as a chain: each partition
/// receives its halo from the left, then forwards the last `halo` frames of (halo ++ own frames)
/// to the right. The result equals a sequential decode of the assembled clip bit for bit, in both
/// blend modes.
pub fn decode_partition(
    cfg: &PartitionConfig,
    out: &PartitionOutput,
    decoder: &dyn FrameDecoder,
    exchange: &mut dyn Exchange,
    sink: &mut dyn FnMut(usize, RgbFrame),
) -> Result<(), CoDenoiseError> {
    let halo = decoder.halo();
    let (step, fl) = (cfg.schedule.steps(), out.owned.shape().frame_len());
    let want = halo.min(out.owned_start);
    let mut span = Vec::with_capacity((want + out.owned.shape().frames) * fl);
    if want > 0 {
        match expect(exchange, Side::Left, step, cfg.windows.start - 1)? {
            Payload::Halo(h) if h.len() == want * fl => span.extend_from_slice(&h),
            other => {
                return Err(CoDenoiseError::Protocol {
                    side: Side::Left,
                    reason: format!("expected {want} halo frames, got {}", describe(&other)),
                })
            }
        }
    }
    span.extend_from_slice(out.owned.as_slice());
    let frames = span.len() / fl;
    if cfg.has_right() && halo > 0 {
        // The right neighbour's first owned frame is our last owned frame + 1.
        let send = halo.min(out.owned_start + out.owned.shape().frames).min(frames);
        let msg = OverlapMessage {
            step: step as u32,
            boundary: (cfg.windows.end - 1) as u32,
            payload: Payload::Halo(span[(frames - send) * fl..].to_vec()),
        };
        exchange.send(Side::Right, msg)?;
    }
    let shape = out.owned.shape().with_frames(frames);
    let span = Latents::from_vec(shape, span).expect("span is whole frames");
    let keep = cfg.output_frames;
    decoder.decode(&span, out.owned_start - want, want, &mut |i, f| {
        if i < keep {
            sink(i, f)
        }
    })?;
    Ok(())
}

fn describe(p: &Payload) -> String {
    match p {
        Payload::Velocity(v) => format!("a velocity of {} values", v.len()),
        Payload::LatentHash(_) => "a hash".into(),
        Payload::Halo(h) => format!("{} halo values", h.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broken_exchange_is_transient() {
        let side = Side::Left;
        let transient = [
            CoDenoiseError::Exchange(ExchangeError::Timeout {
                side,
                step: 3,
                timeout: Duration::from_secs(1),
            }),
            CoDenoiseError::Exchange(ExchangeError::Disconnected {
                side,
                reason: "reset".into(),
            }),
            CoDenoiseError::Exchange(ExchangeError::GroupTimeout {
                peers: "both".into(),
                step: 3,
                timeout: Duration::from_secs(1),
            }),
        ];
        let lasting = [
            CoDenoiseError::Exchange(ExchangeError::Protocol {
                side,
                reason: "bad frame".into(),
            }),
            CoDenoiseError::Exchange(ExchangeError::Cancelled),
            CoDenoiseError::Divergence { boundary: 0, step: 1 },
            CoDenoiseError::Config("no windows".into()),
            CoDenoiseError::Cancelled,
        ];
        assert!(transient.iter().all(CoDenoiseError::is_transient));
        assert!(!lasting.iter().any(CoDenoiseError::is_transient));
    }
}
