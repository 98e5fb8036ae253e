//! `WorkerService` messages: the shard assignment (everything that decides output bits travels as
//! exact bits and is re-validated on arrival with the same checks the coordinator used) and the
//! events a worker streams back.

use super::{duration_to_ms, invalid, ms_to_duration, nest, non_empty, required, to_u32, to_usize};
use crate::pb::{self, shard_event};
use crate::wire;
use longshot_core::api::{ApiError, NcclGroup, ShardAssignment, ShardEvent, NCCL_UNIQUE_ID_BYTES};
use longshot_core::checkpoint::{SolverState, WindowState};
use longshot_core::codenoise::BlendMode;
use longshot_core::denoiser::Conditioning;
use longshot_core::inputs::{VideoSpan, MAX_VIDEO_SIDE};
use longshot_core::noise::{NoiseKeys, NoiseSegment};
use longshot_core::plan::{PlanError, WindowPlan};
use longshot_core::preview::PreviewFrames;
use longshot_core::prompt_schedule::{PromptSchedule, ScheduledPrompt};
use longshot_core::repaint::{KnownLatents, RepaintMask};
use longshot_core::scheduler::{Schedule, ScheduleError, Solver};
use longshot_core::shots::WindowPrompt;
use longshot_core::tensor::{LatentShape, Latents};
use std::sync::Arc;

// ---- ShardAssignment ------------------------------------------------------------------------

/// `emit_frames` and `emit_latents` are set: the domain assignment has no such switches, a
/// worker streams both and the coordinator keeps what the job's outputs need.
impl From<ShardAssignment> for pb::ShardAssignment {
    fn from(a: ShardAssignment) -> Self {
        pb::ShardAssignment {
            job_id: a.job_id,
            plan_id: a.plan_id,
            model: a.model,
            conditioning: Some(a.conditioning.into()),
            seed: a.noise.segments.first().map_or(0, |s| s.seed),
            // One segment from frame 0 is the plain seed.
            noise: match a.noise.segments[..] {
                [NoiseSegment { first_latent: 0, .. }] => Vec::new(),
                _ => a
                    .noise
                    .segments
                    .iter()
                    .map(|s| pb::NoiseSegment {
                        first_latent: s.first_latent as u64,
                        seed: s.seed,
                    })
                    .collect(),
            },
            noise_pool: a.noise.pool,
            prompts: a.prompts.map(|s| prompt_schedule_to_pb(&s)),
            latent: Some(pb::LatentShape {
                channels: to_u32(a.channels),
                height: to_u32(a.height),
                width: to_u32(a.width),
            }),
            plan: Some(pb::WindowGrid {
                latent_frames: to_u32(a.plan.latent_frames()),
                window: to_u32(a.plan.window()),
                overlap: to_u32(a.plan.overlap()),
            }),
            schedule: Some(pb::Schedule {
                solver: a.schedule.solver().to_string(),
                sigma_bits: wire::to_bits(a.schedule.sigmas()),
                timestep_bits: wire::to_bits(a.schedule.timesteps()),
            }),
            guidance_bits: a.guidance.to_bits(),
            first_window: to_u32(a.windows.start),
            end_window: to_u32(a.windows.end),
            left_exchange_address: a.left_address.unwrap_or_default(),
            right_exchange_address: a.right_address.unwrap_or_default(),
            exchange_timeout_ms: duration_to_ms(a.exchange_timeout),
            hash_every: to_u32(a.hash_every),
            output_frames: to_u32(a.output_frames),
            disable_exchange: a.blend == BlendMode::Independent,
            emit_frames: true,
            emit_latents: true,
            nccl: a.nccl.map(|g| pb::NcclGroup {
                unique_id: g.unique_id.into(),
                rank: to_u32(g.rank),
                ranks: to_u32(g.ranks),
            }),
            checkpoint_every: to_u32(a.checkpoint_every),
            preview_every: to_u32(a.preview_every),
            // The states themselves travel as `ResumeShard`'s later messages.
            resume_step: a.resume.as_ref().and_then(|r| r.first()).map_or(0, |w| to_u32(w.step)),
            first_step: to_u32(a.first_step),
            // So do the frames.
            video: a.video.as_deref().map(|v| pb::VideoSpan {
                first_frame: to_u32(v.first_frame),
                frames: to_u32(v.frames()),
                video_frames: to_u32(v.video_frames),
                width: v.width,
                height: v.height,
            }),
            repaint: a.repaint.map(|m| pb::RepaintMask {
                free_start: to_u32(m.free.start),
                free_end: to_u32(m.free.end),
                margin: to_u32(m.margin),
            }),
            // And the known latents.
            known: a.known.as_deref().map(|k| pb::KnownSpan {
                first_frame: to_u32(k.first),
                frames: to_u32(k.latents.shape().frames),
            }),
        }
    }
}

/// The proto field of `pb::Schedule` a schedule error is about.
fn schedule_field(e: &ScheduleError) -> &'static str {
    match e {
        ScheduleError::UnknownSolver(_) => "solver",
        ScheduleError::Steps(_) | ScheduleError::TimestepsLen { .. } => "timestep_bits",
        ScheduleError::NotFinite { field: "timesteps", .. } => "timestep_bits",
        _ => "sigma_bits",
    }
}

/// The schedule from its bits, validated by `Schedule::from_parts` (decreasing σ in range, one
/// timestep per step, finite values), so a corrupted schedule fails here and not mid-render.
fn schedule_from_pb(s: pb::Schedule) -> Result<Schedule, ApiError> {
    let solver: Solver = s
        .solver
        .parse()
        .map_err(|e: ScheduleError| invalid("solver", e.to_string()))?;
    Schedule::from_parts(
        solver,
        wire::from_bits(&s.sigma_bits),
        wire::from_bits(&s.timestep_bits),
    )
    .map_err(|e| invalid(schedule_field(&e), e.to_string()))
}

fn plan_from_pb(g: pb::WindowGrid) -> Result<WindowPlan, ApiError> {
    WindowPlan::new(
        to_usize(g.latent_frames, "latent_frames")?,
        to_usize(g.window, "window")?,
        to_usize(g.overlap, "overlap")?,
    )
    .map_err(|e| invalid("", e.to_string()))
}

impl TryFrom<pb::ShardAssignment> for ShardAssignment {
    type Error = ApiError;

    fn try_from(a: pb::ShardAssignment) -> Result<Self, ApiError> {
        let conditioning =
            Conditioning::try_from(required(a.conditioning, "conditioning")?).map_err(|e| nest("conditioning", e))?;
        let latent = required(a.latent, "latent")?;
        for (field, v) in [
            ("latent.channels", latent.channels),
            ("latent.height", latent.height),
            ("latent.width", latent.width),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        let plan = plan_from_pb(required(a.plan, "plan")?).map_err(|e| nest("plan", e))?;
        let schedule = schedule_from_pb(required(a.schedule, "schedule")?).map_err(|e| nest("schedule", e))?;
        let guidance = f32::from_bits(a.guidance_bits);
        if !guidance.is_finite() {
            return Err(invalid(
                "guidance_bits",
                format!("{:#010x} is {guidance}, not a finite f32", a.guidance_bits),
            ));
        }
        let windows = to_usize(a.first_window, "first_window")?..to_usize(a.end_window, "end_window")?;
        plan.check_windows(&windows).map_err(|e| match e {
            PlanError::NoWindows { .. } => invalid("first_window", e.to_string()),
            _ => invalid("end_window", e.to_string()),
        })?;
        if a.output_frames == 0 {
            return Err(invalid("output_frames", "0: a clip has at least 1 frame"));
        }
        if a.video.is_some() {
            return Err(invalid("video", "a video's frames travel only on ResumeShard"));
        }
        if a.known.is_some() {
            return Err(invalid("known", "known latents travel only on ResumeShard"));
        }
        let repaint = a
            .repaint
            .map(|m| {
                let free = to_usize(m.free_start, "free_start")?..to_usize(m.free_end, "free_end")?;
                RepaintMask::new(free, to_usize(m.margin, "margin")?, plan.latent_frames())
                    .map_err(|e| invalid("free_end", e.to_string()))
            })
            .transpose()
            .map_err(|e| nest("repaint", e))?;
        let noise = noise_keys_from_pb(a.seed, &a.noise)?.pooled(a.noise_pool.max(1));
        noise.validate().map_err(|m| invalid("noise_pool", m))?;
        let prompts = a
            .prompts
            .map(|s| prompt_schedule_from_pb(s, plan.windows()))
            .transpose()
            .map_err(|e| nest("prompts", e))?
            .map(Arc::new);
        Ok(ShardAssignment {
            first_step: to_usize(a.first_step, "first_step")?,
            // Filled from `ResumeShard`'s frame messages by the server adapter.
            video: None,
            known: None,
            repaint,
            job_id: a.job_id,
            plan_id: a.plan_id,
            model: a.model,
            conditioning,
            noise,
            prompts,
            channels: to_usize(latent.channels, "latent.channels")?,
            height: to_usize(latent.height, "latent.height")?,
            width: to_usize(latent.width, "latent.width")?,
            plan,
            schedule,
            guidance,
            windows,
            left_address: non_empty(a.left_exchange_address),
            right_address: non_empty(a.right_exchange_address),
            exchange_timeout: ms_to_duration(a.exchange_timeout_ms),
            hash_every: to_usize(a.hash_every, "hash_every")?,
            output_frames: to_usize(a.output_frames, "output_frames")?,
            blend: if a.disable_exchange {
                BlendMode::Independent
            } else {
                BlendMode::CoDenoise
            },
            nccl: a
                .nccl
                .map(nccl_group_from_pb)
                .transpose()
                .map_err(|e| nest("nccl", e))?,
            checkpoint_every: to_usize(a.checkpoint_every, "checkpoint_every")?,
            preview_every: to_usize(a.preview_every, "preview_every")?,
            // Filled from `ResumeShard`'s window messages by the server adapter.
            resume: None,
        })
    }
}

fn noise_keys_from_pb(seed: u64, segments: &[pb::NoiseSegment]) -> Result<NoiseKeys, ApiError> {
    if segments.is_empty() {
        return Ok(NoiseKeys::single(seed));
    }
    let keys = NoiseKeys {
        segments: segments
            .iter()
            .map(|s| {
                Ok(NoiseSegment {
                    first_latent: usize::try_from(s.first_latent)
                        .map_err(|_| invalid("noise", format!("first_latent {} is out of range", s.first_latent)))?,
                    seed: s.seed,
                })
            })
            .collect::<Result<_, ApiError>>()?,
        pool: 1,
    };
    keys.validate().map_err(|m| invalid("noise", m))?;
    if keys.segments[0].seed != seed {
        return Err(invalid(
            "seed",
            format!("{seed} is not the first noise segment's seed {}", keys.segments[0].seed),
        ));
    }
    Ok(keys)
}

fn prompt_schedule_to_pb(s: &PromptSchedule) -> pb::PromptSchedule {
    pb::PromptSchedule {
        prompts: s
            .prompts
            .iter()
            .map(|p| {
                Conditioning {
                    embeddings: p.embeddings.clone(),
                    ..Conditioning::new(p.prompt.clone(), p.negative_prompt.clone())
                }
                .into()
            })
            .collect(),
        windows: s
            .windows
            .iter()
            .map(|w| pb::WindowPrompt {
                from: w.from,
                to: w.to,
                weight: w.weight,
            })
            .collect(),
    }
}

/// Checked whole ([`PromptSchedule::validate`]) against a plan of `windows` windows.
fn prompt_schedule_from_pb(s: pb::PromptSchedule, windows: usize) -> Result<PromptSchedule, ApiError> {
    let prompts = s
        .prompts
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let field = format!("prompts[{i}]");
            let c = Conditioning::try_from(c).map_err(|e| nest(&field, e))?;
            if c.reference.is_some() || c.image_embeddings.is_some() {
                return Err(invalid(&field, "carries images: only the job's conditioning does"));
            }
            Ok(ScheduledPrompt {
                prompt: c.prompt,
                negative_prompt: c.negative_prompt,
                embeddings: c.embeddings,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let s = PromptSchedule {
        prompts,
        windows: s
            .windows
            .into_iter()
            .map(|w| WindowPrompt {
                from: w.from,
                to: w.to,
                weight: w.weight,
            })
            .collect(),
    };
    s.validate(windows).map_err(|m| invalid("windows", m))?;
    Ok(s)
}

// ---- PreviewFrames -------------------------------------------------------------------------

impl From<PreviewFrames> for pb::PreviewFrames {
    fn from(p: PreviewFrames) -> Self {
        pb::PreviewFrames {
            step: p.step,
            first_frame: p.first_frame,
            frame_count: p.frames,
            width: p.width,
            height: p.height,
            rgb8: p.rgb8.into(),
        }
    }
}

impl TryFrom<pb::PreviewFrames> for PreviewFrames {
    type Error = ApiError;

    fn try_from(p: pb::PreviewFrames) -> Result<Self, ApiError> {
        let frames = PreviewFrames {
            step: p.step,
            first_frame: p.first_frame,
            frames: p.frame_count,
            width: p.width,
            height: p.height,
            rgb8: p.rgb8.into(),
        };
        frames.check().map_err(|e| invalid("rgb8", e.to_string()))?;
        Ok(frames)
    }
}

// ---- WindowCheckpoint -----------------------------------------------------------------------

impl From<WindowState> for pb::WindowCheckpoint {
    fn from(w: WindowState) -> Self {
        use pb::window_checkpoint::Solver;
        let solver = match w.solver {
            SolverState::Euler => Solver::Euler(pb::EulerState {}),
            SolverState::UniPc {
                history: [m0, m1],
                last_sample,
                last_order,
            } => Solver::Unipc(pb::UniPcState {
                m0: wire::encode_f32_le(m0.as_deref().unwrap_or_default()),
                m1: m1.as_deref().map(wire::encode_f32_le),
                last_sample: wire::encode_f32_le(&last_sample),
                last_order: to_u32(last_order),
            }),
        };
        pb::WindowCheckpoint {
            window: to_u32(w.window),
            step: w.step as u32,
            latents: wire::encode_f32_le(&w.latents),
            solver: Some(solver),
        }
    }
}

/// Sizes and steps are checked where the state is used (`core::checkpoint::check_resume`, and
/// the coordinator's checkpoint store); here only the encoding.
impl TryFrom<pb::WindowCheckpoint> for WindowState {
    type Error = ApiError;

    fn try_from(w: pb::WindowCheckpoint) -> Result<Self, ApiError> {
        use pb::window_checkpoint::Solver;
        let f32s = |b: &[u8], field: &str| wire::decode_f32_le(b).map_err(|e| invalid(field, e.to_string()));
        let solver = match required(w.solver, "solver")? {
            Solver::Euler(_) => SolverState::Euler,
            Solver::Unipc(u) => SolverState::UniPc {
                history: [
                    Some(f32s(&u.m0, "unipc.m0")?),
                    u.m1.as_deref().map(|m| f32s(m, "unipc.m1")).transpose()?,
                ],
                last_sample: f32s(&u.last_sample, "unipc.last_sample")?,
                last_order: to_usize(u.last_order, "unipc.last_order")?,
            },
        };
        Ok(WindowState {
            window: to_usize(w.window, "window")?,
            step: to_usize(w.step, "step")?,
            latents: f32s(&w.latents, "latents")?,
            solver,
        })
    }
}

/// An `ncclUniqueId` from the wire: exactly [`NCCL_UNIQUE_ID_BYTES`] bytes.
pub fn nccl_unique_id_from_pb(id: Vec<u8>, field: &str) -> Result<Vec<u8>, ApiError> {
    if id.len() != NCCL_UNIQUE_ID_BYTES {
        return Err(invalid(
            field,
            format!(
                "{} bytes given, an ncclUniqueId has exactly {NCCL_UNIQUE_ID_BYTES}",
                id.len()
            ),
        ));
    }
    Ok(id)
}

fn nccl_group_from_pb(g: pb::NcclGroup) -> Result<NcclGroup, ApiError> {
    let unique_id = nccl_unique_id_from_pb(g.unique_id.to_vec(), "unique_id")?;
    let (rank, ranks) = (to_usize(g.rank, "rank")?, to_usize(g.ranks, "ranks")?);
    if ranks < 2 {
        return Err(invalid(
            "ranks",
            format!("{ranks}: a communicator needs at least 2 ranks (one has no neighbours)"),
        ));
    }
    if rank >= ranks {
        return Err(invalid(
            "rank",
            format!("{rank} is not below ranks ({ranks}): allowed 0..{ranks}"),
        ));
    }
    Ok(NcclGroup { unique_id, rank, ranks })
}

// ---- ShardEvent -----------------------------------------------------------------------------

impl From<ShardEvent> for pb::ShardEvent {
    fn from(e: ShardEvent) -> Self {
        use shard_event::Event;
        let event = match e {
            ShardEvent::StepDone { window, step } => Event::StepDone(pb::StepDone { window, step }),
            ShardEvent::Frame {
                index,
                width,
                height,
                rgb8,
            } => Event::Frame(pb::Frame {
                index,
                width,
                height,
                rgb8: rgb8.into(),
            }),
            ShardEvent::Latents {
                first_frame,
                frames,
                data,
            } => Event::Latents(pb::Latents {
                first_frame,
                frame_count: frames,
                data: wire::encode_f32_le(&data),
            }),
            ShardEvent::Checkpoint(w) => Event::Checkpoint(w.into()),
            ShardEvent::Preview(p) => Event::Preview(p.into()),
            ShardEvent::Finished => Event::Finished(pb::ShardFinished {}),
            // `Lost` is observed by a client, never sent; if it is forwarded it is a failure.
            ShardEvent::Failed { reason, transient } => Event::Failed(pb::ShardFailed { reason, transient }),
            ShardEvent::Lost { reason } => Event::Failed(pb::ShardFailed {
                reason,
                transient: true,
            }),
        };
        pb::ShardEvent { event: Some(event) }
    }
}

impl TryFrom<pb::ShardEvent> for ShardEvent {
    type Error = ApiError;

    fn try_from(e: pb::ShardEvent) -> Result<Self, ApiError> {
        use shard_event::Event;
        Ok(match required(e.event, "event")? {
            Event::StepDone(s) => ShardEvent::StepDone {
                window: s.window,
                step: s.step,
            },
            Event::Frame(f) => {
                // u64: width · height · 3 cannot overflow it for u32 sides.
                let expected = u64::from(f.width) * u64::from(f.height) * 3;
                if f.rgb8.len() as u64 != expected {
                    return Err(invalid(
                        "frame.rgb8",
                        format!(
                            "{} bytes, expected width {} × height {} × 3 = {expected}",
                            f.rgb8.len(),
                            f.width,
                            f.height
                        ),
                    ));
                }
                ShardEvent::Frame {
                    index: f.index,
                    width: f.width,
                    height: f.height,
                    rgb8: f.rgb8.into(),
                }
            }
            Event::Latents(l) => {
                let data = wire::decode_f32_le(&l.data).map_err(|e| invalid("latents.data", e.to_string()))?;
                let whole_frames = if l.frame_count == 0 {
                    data.is_empty()
                } else {
                    data.len() % l.frame_count as usize == 0
                };
                if !whole_frames {
                    return Err(invalid(
                        "latents.frame_count",
                        format!("{} values do not split into {} equal frames", data.len(), l.frame_count),
                    ));
                }
                ShardEvent::Latents {
                    first_frame: l.first_frame,
                    frames: l.frame_count,
                    data,
                }
            }
            Event::Checkpoint(w) => {
                ShardEvent::Checkpoint(WindowState::try_from(w).map_err(|e| nest("checkpoint", e))?)
            }
            Event::Preview(p) => ShardEvent::Preview(p.try_into().map_err(|e| nest("preview", e))?),
            Event::Finished(_) => ShardEvent::Finished,
            Event::Failed(f) => ShardEvent::Failed {
                reason: f.reason,
                transient: f.transient,
            },
        })
    }
}

/// Reads a `ResumeShard` request stream: the assignment, then one frame per frame of its video
/// span (if it has one), then (with `resume_step` set) exactly one window state per window of the
/// shard, in order and at that step.
pub async fn read_resume<S>(mut inbound: S) -> Result<ShardAssignment, ApiError>
where
    S: futures::Stream<Item = Result<pb::ResumeShardRequest, tonic::Status>> + Unpin,
{
    use futures::StreamExt;
    use pb::resume_shard_request::Part;
    let mut next = async || match inbound.next().await {
        Some(Ok(m)) => required(m.part, "part"),
        Some(Err(status)) => Err(ApiError::Unavailable(format!(
            "the shard's input stream broke: {}",
            status.message()
        ))),
        None => Err(invalid(
            "part",
            "the stream ended before every frame and window state arrived",
        )),
    };
    let Part::Assignment(mut a) = next().await? else {
        return Err(invalid("part", "the first message must be the assignment"));
    };
    let step = a.resume_step as usize;
    let video = a.video.take();
    let known = a.known.take();
    if step == 0 && video.is_none() && known.is_none() {
        return Err(invalid(
            "assignment.resume_step",
            "0 and no video or known latents: ResumeShard carries a checkpoint, a video or a rerender's latents (else use RunShard)",
        ));
    }
    let mut assignment = ShardAssignment::try_from(a).map_err(|e| nest("assignment", e))?;
    if let Some(v) = video {
        let span = video_span_header(&v).map_err(|e| nest("assignment.video", e))?;
        let (fb, frames) = (span.frame_bytes(), v.frames as usize);
        let mut span = VideoSpan {
            // Grows as frames arrive: a header alone never reserves memory.
            rgb: Vec::with_capacity(fb * frames.min(16)),
            ..span
        };
        for i in 0..frames {
            let Part::VideoFrame(f) = next().await? else {
                return Err(invalid("part", format!("expected video frame {i} of {frames}")));
            };
            if f.rgb.len() != fb {
                return Err(invalid(
                    "video_frame.rgb",
                    format!(
                        "frame {i} holds {} bytes, not {}x{}x3 = {fb}",
                        f.rgb.len(),
                        span.width,
                        span.height
                    ),
                ));
            }
            span.rgb.extend_from_slice(&f.rgb);
        }
        assignment.video = Some(std::sync::Arc::new(span));
    }
    if let Some(k) = known {
        let shape = LatentShape::new(0, assignment.channels, assignment.height, assignment.width);
        let (first, frames) = (k.first_frame as usize, k.frames as usize);
        if frames == 0 || first + frames > assignment.plan.latent_frames() {
            return Err(invalid(
                "assignment.known",
                format!(
                    "latent frames {first}..{} are not inside the clip's {}",
                    first + frames,
                    assignment.plan.latent_frames()
                ),
            ));
        }
        let fb = shape.frame_len() * 4;
        // Grows as frames arrive: a header alone never reserves memory.
        let mut data = Vec::with_capacity(shape.frame_len() * frames.min(4));
        for i in 0..frames {
            let Part::KnownFrame(f) = next().await? else {
                return Err(invalid("part", format!("expected known latent frame {i} of {frames}")));
            };
            if f.data.len() != fb {
                return Err(invalid(
                    "known_frame.data",
                    format!(
                        "frame {i} holds {} bytes, not {fb} (f32 [channels, height, width])",
                        f.data.len()
                    ),
                ));
            }
            data.extend(
                f.data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        let latents = Latents::from_vec(shape.with_frames(frames), data).expect("whole frames");
        assignment.known = Some(std::sync::Arc::new(KnownLatents { first, latents }));
    }
    if step == 0 {
        return Ok(assignment);
    }
    let mut states = Vec::with_capacity(assignment.windows.len());
    for want in assignment.windows.clone() {
        let Part::Window(w) = next().await? else {
            return Err(invalid(
                "part",
                format!("expected the state of window {want}, got another part"),
            ));
        };
        let w = WindowState::try_from(w).map_err(|e| nest("window", e))?;
        if w.window != want || w.step != step {
            return Err(invalid(
                "window",
                format!(
                    "got window {} at step {}, expected window {want} at step {step}",
                    w.window, w.step
                ),
            ));
        }
        states.push(w);
    }
    assignment.resume = Some(std::sync::Arc::new(states));
    Ok(assignment)
}

/// A video span's geometry (no frames yet), checked so that no size computed from it overflows.
fn video_span_header(v: &pb::VideoSpan) -> Result<VideoSpan, ApiError> {
    for (field, side) in [("width", v.width), ("height", v.height)] {
        if !(1..=MAX_VIDEO_SIDE).contains(&side) {
            return Err(invalid(field, format!("{side} is not in 1..={MAX_VIDEO_SIDE}")));
        }
    }
    if u64::from(v.first_frame) + u64::from(v.frames) > u64::from(v.video_frames) {
        return Err(invalid(
            "frames",
            format!(
                "frames {}..{} are past the video's {} frames",
                v.first_frame,
                u64::from(v.first_frame) + u64::from(v.frames),
                v.video_frames
            ),
        ));
    }
    Ok(VideoSpan {
        first_frame: to_usize(v.first_frame, "first_frame")?,
        width: v.width,
        height: v.height,
        video_frames: to_usize(v.video_frames, "video_frames")?,
        rgb: Vec::new(),
    })
}
