//! Longshot's core: everything needed to render a long clip as overlapping windows, with no
//! networking and no GPU.
//!
//! Layout:
//! - [`api`]: the cluster API in domain types (the `proto` crate converts at its edge).
//! - [`plan`]: the window grid on the global latent timeline, ownership, assignment to workers.
//! - [`noise`]: Philox4x32-10 counter-based Gaussian noise keyed by global coordinates.
//! - [`scheduler`]: flow-matching Euler and UniPC, matching diffusers.
//! - [`tensor`]: the frame-major latent tensor.
//! - [`denoiser`]: the `Denoiser` / `FrameDecoder` traits models implement.
//! - [`exchange`]: the overlap exchange between partitions, with an in-process implementation.
//! - [`grouped_exchange`]: velocities over a grouped transport (NCCL), the rest over an inner exchange.
//! - [`codenoise`]: the lockstep co-denoising loop of one partition (a contiguous window range).
//! - [`local`]: an in-process cluster (partitions on threads) built on the same loop.
//! - [`prompt_schedule`]: a shot list's per-window text conditioning and the shard's denoisers.
//! - [`repaint`]: re-rendering a time range in place (RePaint along time).
//! - [`shots`]: shot lists: prompts that change along one take, per-shot noise.
//! - [`preview`]: live previews: the x0 prediction projected to RGB, assembled per clip.
//! - [`review`]: a finished clip's QC review (seams, flicker, frozen/black/white frames, length).
//! - [`seam`]: model-free seam metrics (seam jump ratio, placebo, ghosting, overlap disagreement).
//! - [`hash`]: stable hashes used to prove overlap copies are bit-identical.
//! - [`job`]: the job spec and its validation (every bad field named, with what is allowed).
//! - [`inputs`]: uploaded inputs (reference images), their content addresses and checks.
//! - [`output`]: the outputs a job can ask for (names, file names, extensions).
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod checkpoint;
pub mod codenoise;
pub mod denoiser;
pub mod exchange;
pub mod grouped_exchange;
pub mod hash;
pub mod inputs;
pub mod job;
pub mod local;
pub mod noise;
pub mod output;
pub mod plan;
pub mod preview;
pub mod prompt_parts;
pub mod prompt_schedule;
pub mod repaint;
pub mod review;
pub mod scheduler;
pub mod seam;
pub mod shots;
pub mod takes;
pub mod tensor;
