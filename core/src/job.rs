//! A render job as the user describes it, and its validation.
//!
//! Validation is pure and happens before anything is created: every invalid field is reported with
//! its name and what is allowed, so a rejected job leaves no trace. Checks that need the cluster
//! (is the model served? which overlap does it allow?) are in [`JobSpec::resolve`], given the
//! model's [`ModelInfo`].

use crate::codenoise::BlendMode;
use crate::denoiser::ModelInfo;
use crate::inputs::InputDigest;
use crate::noise::NoiseKeys;
use crate::plan::WindowPlan;
use crate::prompt_schedule::{PromptSchedule, ScheduledPrompt};
use crate::repaint::{latents_of_output, RepaintMask, MARGIN_OVERLAPS};
use crate::scheduler::{Schedule, Solver};
use crate::shots::{Shot, ShotTimeline};
use crate::takes::{take_ranges, take_spec, Take};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::output::OutputKind;

/// Clip length, as the user gives it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClipLength {
    Seconds(f64),
    Frames(u32),
}

/// A job as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub model: String,
    pub prompt: String,
    pub negative_prompt: String,
    /// Random when unset; the seed used is reported back.
    pub seed: Option<u64>,
    pub length: ClipLength,
    pub fps: u32,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub guidance: f32,
    pub shift: f64,
    pub solver: Solver,
    /// Model default when unset.
    pub overlap: Option<u32>,
    /// At least one; duplicates are ignored.
    pub outputs: Vec<OutputKind>,
    pub priority: i32,
    pub blend: BlendMode,
    /// Uploaded inputs the job is conditioned on (image-to-video, video-to-video).
    #[serde(default)]
    pub inputs: JobInputs,
    /// Video-to-video: how much of the schedule runs, in (0, 1]; [`DEFAULT_STRENGTH`] when a
    /// video is given and this is unset.
    #[serde(default)]
    pub strength: Option<f64>,
    /// A shot list instead of one prompt ([`crate::shots`]): `prompt` is then empty,
    /// `negative_prompt` and `seed` are the shots' defaults, and the length is the shots' total.
    #[serde(default)]
    pub shots: Vec<Shot>,
    /// Re-render a time range of another job in place ([`crate::repaint`]).
    #[serde(default)]
    pub rerender: Option<Rerender>,
    /// With a shot list: also write each video output once per shot (its frames,
    /// [`OutputKind::shot_path`]).
    #[serde(default)]
    pub split_shots: bool,
    /// A draft (`--draft`): the full-quality settings it previews, which `longshot promote`
    /// renders ([`JobSpec::into_draft`]).
    #[serde(default)]
    pub draft: Option<DraftOf>,
    /// Live previews every this many steps ([`crate::preview`]); 0: none. Below `steps`. Changes
    /// no output bit.
    #[serde(default)]
    pub preview_every: u32,
}

/// The full-quality settings of a draft. A draft renders at 1/[`DRAFT_SCALE`] of their width and
/// height with 1/[`DRAFT_STEP_DIVISOR`] of their steps (rounded up), same seed, shots and
/// everything else, and draws its initial noise as [`DRAFT_SCALE`]² sums of theirs
/// ([`NoiseKeys::pool`]): the promoted job starts from the same noise in finer detail, so the
/// draft previews its composition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DraftOf {
    pub width: u32,
    pub height: u32,
    pub steps: u32,
}

pub const DRAFT_SCALE: u32 = 2;
/// Widths and heights are multiples of this.
pub const SIZE_STEP: u32 = 16;
pub const DRAFT_STEP_DIVISOR: u32 = 4;

/// A job that re-renders output frames `from_frame..to_frame` of job `source` in place: the
/// same plan and schedule, the frames outside the range plus a margin held to `source`'s final
/// latents. Prompt, negative prompt, seed, shots and guidance may differ from `source`'s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rerender {
    pub source: String,
    pub from_frame: u32,
    pub to_frame: u32,
}

/// Video-to-video's strength when a job gives none (diffusers' `WanVideoToVideoPipeline` default).
pub const DEFAULT_STRENGTH: f64 = 0.8;

/// A job's uploaded inputs, by content address ([`crate::inputs`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInputs {
    /// The clip's first frame (image-to-video).
    #[serde(default)]
    pub image: Option<InputDigest>,
    /// The clip's last frame (first-and-last-frame models; needs `image`).
    #[serde(default)]
    pub last_image: Option<InputDigest>,
    /// The video a video-to-video job starts from (a canonical frames file,
    /// [`crate::inputs::VideoHeader`]); the clip has its frame count and size.
    #[serde(default)]
    pub video: Option<InputDigest>,
}

impl JobInputs {
    /// Reference images the job gives: 0, 1 or 2.
    pub fn reference_images(&self) -> u32 {
        u32::from(self.image.is_some()) + u32::from(self.last_image.is_some())
    }
}

/// One invalid field.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn bad(field: &str, message: impl Into<String>) -> FieldError {
    FieldError::new(field, message)
}

pub const MAX_PROMPT_CHARS: usize = 10_000;
pub const MAX_SIDE: u32 = 4096;
pub const MAX_FPS: u32 = 120;
pub const MAX_SECONDS: f64 = 3600.0;
pub const MAX_STEPS: u32 = 1000;
pub const MAX_GUIDANCE: f32 = 50.0;
pub const MAX_SHIFT: f64 = 100.0;
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -100..=100;

/// A job that passed validation against a model: everything the coordinator needs to plan it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedJob {
    pub spec: JobSpec,
    pub seed: u64,
    pub outputs: Vec<OutputKind>,
    /// Output frames: exactly what the spec asks for (`round(duration · fps)`, or `frames`).
    pub frames: u32,
    /// Frames the model renders: the smallest `c·k + 1` that covers `frames`. The tail past
    /// `frames` is decoded by the last worker but never emitted.
    pub rendered_frames: u32,
    pub latent_frames: usize,
    pub latent_height: usize,
    pub latent_width: usize,
    /// The window grid. With cuts, the first take's: window and overlap are every take's, but
    /// count windows with [`ResolvedJob::windows`] and plan with [`ResolvedJob::take_list`].
    pub plan: WindowPlan,
    pub schedule: Schedule,
    /// A shot list with cuts: its takes, each rendered as a job of its own ([`crate::takes`]);
    /// empty for one continuous take.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub takes: Vec<Take>,
    /// The first step that runs: 0, or for video-to-video `steps − ⌊steps·strength⌋`, where the
    /// loop starts from the video's latents noised to that step's σ.
    pub first_step: usize,
}

impl JobSpec {
    /// Field checks that need no model. Returns every error, not just the first.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut e = Vec::new();
        if self.model.trim().is_empty() {
            e.push(bad("model", "must not be empty"));
        }
        if self.shots.is_empty() {
            if self.prompt.trim().is_empty() {
                e.push(bad("prompt", "must not be empty"));
            }
        } else {
            if !self.prompt.is_empty() {
                e.push(bad("prompt", "give the prompt in the shots, not both"));
            }
            match crate::shots::timeline(&self.shots, self.fps.max(1), &self.negative_prompt, 0, MAX_PROMPT_CHARS) {
                Err(errors) => e.extend(errors),
                Ok(t) if self.length != ClipLength::Frames(t.total_frames()) => e.push(bad(
                    "duration",
                    format!(
                        "the shots add up to {} frames: give that many frames, or no length",
                        t.total_frames()
                    ),
                )),
                Ok(_) => {}
            }
        }
        for (field, text) in [("prompt", &self.prompt), ("negative_prompt", &self.negative_prompt)] {
            if text.chars().count() > MAX_PROMPT_CHARS {
                e.push(bad(field, format!("is longer than {MAX_PROMPT_CHARS} characters")));
            }
        }
        if !(1..=MAX_FPS).contains(&self.fps) {
            e.push(bad("fps", format!("{} is not in 1..={MAX_FPS}", self.fps)));
        }
        match self.length {
            ClipLength::Seconds(s) if !(s.is_finite() && s > 0.0 && s <= MAX_SECONDS) => {
                e.push(bad("duration", format!("{s} seconds is not in (0, {MAX_SECONDS}]")))
            }
            ClipLength::Frames(0) => e.push(bad("frames", "must be at least 1")),
            ClipLength::Frames(f) if f64::from(f) > MAX_SECONDS * f64::from(MAX_FPS) => e.push(bad(
                "frames",
                format!("{f} is more than {}", MAX_SECONDS * f64::from(MAX_FPS)),
            )),
            _ => {}
        }
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if v == 0 || v % SIZE_STEP != 0 || v > MAX_SIDE {
                e.push(bad(
                    field,
                    format!("{v} is not a multiple of {SIZE_STEP} in {SIZE_STEP}..={MAX_SIDE}"),
                ));
            }
        }
        if !(1..=MAX_STEPS).contains(&self.steps) {
            e.push(bad("steps", format!("{} is not in 1..={MAX_STEPS}", self.steps)));
        }
        if !(self.guidance.is_finite() && (0.0..=MAX_GUIDANCE).contains(&self.guidance)) {
            e.push(bad(
                "guidance",
                format!("{} is not in 0..={MAX_GUIDANCE}", self.guidance),
            ));
        }
        if !(self.shift.is_finite() && self.shift > 0.0 && self.shift <= MAX_SHIFT) {
            e.push(bad("shift", format!("{} is not in (0, {MAX_SHIFT}]", self.shift)));
        }
        if self.outputs.is_empty() {
            e.push(bad("outputs", "at least one of mp4, prores, png, latents is required"));
        }
        if !PRIORITY_RANGE.contains(&self.priority) {
            e.push(bad("priority", format!("{} is not in -100..=100", self.priority)));
        }
        if self.inputs.last_image.is_some() && self.inputs.image.is_none() {
            e.push(bad(
                "last_image",
                "needs image too: first-and-last-frame takes the first frame and the last",
            ));
        }
        if self.inputs.video.is_some() && self.inputs.image.is_some() {
            e.push(bad(
                "video",
                "a job starts from a video (video-to-video) or from reference images (image-to-video), not both",
            ));
        }
        if self.split_shots && self.shots.is_empty() {
            e.push(bad(
                "split_shots",
                "needs a shot list (--shots): a plain prompt job is one shot",
            ));
        }
        if let Some(r) = &self.rerender {
            if r.source.trim().is_empty() {
                e.push(bad("rerender.source", "must name the job to re-render"));
            }
            let frames = self.requested_frames();
            if !(r.from_frame < r.to_frame && r.to_frame <= frames) {
                e.push(bad(
                    "rerender",
                    format!(
                        "frames {}..{} are not a non-empty range inside the clip's {frames} frames",
                        r.from_frame, r.to_frame
                    ),
                ));
            }
            if self.inputs.video.is_some() {
                e.push(bad(
                    "video",
                    "a rerender starts from its source job's latents, not from a video",
                ));
            }
        }
        if let Some(i) = self
            .shots
            .iter()
            .position(|s| s.transition == Some(crate::shots::Transition::Cut))
        {
            let with = [
                (self.inputs.video.is_some(), "an input video (--video)"),
                (self.inputs.image.is_some(), "a reference image (--image)"),
            ];
            for (_, what) in with.iter().filter(|(given, _)| *given) {
                e.push(bad(
                    &format!("shots[{i}].transition"),
                    format!("a cut is not supported with {what} yet: use blend transitions, or render each take as its own job"),
                ));
            }
        }
        if let Some(d) = self.draft {
            let steps = d.steps.div_ceil(DRAFT_STEP_DIVISOR).max(1);
            if (self.width, self.height, self.steps) != (d.width / DRAFT_SCALE, d.height / DRAFT_SCALE, steps)
                || d.width % DRAFT_SCALE != 0
                || d.height % DRAFT_SCALE != 0
            {
                e.push(bad(
                    "draft",
                    format!(
                        "a draft of {}x{} at {} steps renders {}x{} at {steps} steps (half the size, a quarter of the steps), not {}x{} at {}",
                        d.width, d.height, d.steps, d.width / DRAFT_SCALE, d.height / DRAFT_SCALE, self.width, self.height, self.steps
                    ),
                ));
            }
            if self.rerender.is_some()
                || self.inputs.video.is_some()
                || self.inputs.image.is_some()
                || self.inputs.last_image.is_some()
            {
                e.push(bad(
                    "draft",
                    "is for text-to-video jobs: a draft of a rerender, --video or --image is not supported yet",
                ));
            }
        }
        if self.preview_every >= self.steps && self.preview_every > 0 {
            e.push(bad(
                "preview_every",
                format!(
                    "{} is not below the job's {} steps: previews come every N steps and the last step is the real decode (0 turns them off)",
                    self.preview_every, self.steps
                ),
            ));
        }
        if self.strength.is_some() && self.inputs.video.is_none() {
            e.push(bad("strength", "is for video-to-video: give a video too (--video)"));
        } else if let Err(m) = self.first_step() {
            e.push(bad("strength", m.to_string()));
        }
        e
    }

    /// This full-quality spec as its draft ([`DraftOf`]); the error names the size that does
    /// not halve to a multiple of [`SIZE_STEP`].
    pub fn into_draft(self) -> Result<JobSpec, FieldError> {
        let step = DRAFT_SCALE * SIZE_STEP;
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if v % step != 0 {
                return Err(bad(
                    field,
                    format!("{v} does not halve to a multiple of {SIZE_STEP} for a draft: give a multiple of {step}"),
                ));
            }
        }
        Ok(JobSpec {
            width: self.width / DRAFT_SCALE,
            height: self.height / DRAFT_SCALE,
            steps: self.steps.div_ceil(DRAFT_STEP_DIVISOR).max(1),
            draft: Some(DraftOf {
                width: self.width,
                height: self.height,
                steps: self.steps,
            }),
            ..self
        })
    }

    /// The full-quality job a draft previews (`longshot promote`), with the draft's `seed`; `None`
    /// for a job that is not a draft.
    pub fn promoted(&self, seed: u64) -> Option<JobSpec> {
        let d = self.draft?;
        Some(JobSpec {
            width: d.width,
            height: d.height,
            steps: d.steps,
            seed: Some(seed),
            draft: None,
            ..self.clone()
        })
    }

    /// The first step that runs: 0, or for video-to-video `steps − ⌊steps·strength⌋`
    /// ([`DEFAULT_STRENGTH`] when unset). Errs on a strength [`JobSpec::validate`] refuses.
    pub fn first_step(&self) -> Result<usize, crate::scheduler::ScheduleError> {
        match self.inputs.video {
            None => Ok(0),
            Some(_) => {
                crate::scheduler::strength::first_step(self.steps as usize, self.strength.unwrap_or(DEFAULT_STRENGTH))
            }
        }
    }

    /// For a rerender of `source`: the first field that must equal `source`'s and does not
    /// (they shape the plan, the schedule and the latents). `None` when they all agree.
    pub fn rerender_mismatch(&self, source: &JobSpec) -> Option<FieldError> {
        let differs: [(&str, bool); 9] = [
            ("model", self.model != source.model),
            ("frames", self.requested_frames() != source.requested_frames()),
            ("fps", self.fps != source.fps),
            ("width", self.width != source.width),
            ("height", self.height != source.height),
            ("steps", self.steps != source.steps),
            ("shift", self.shift != source.shift),
            ("solver", self.solver != source.solver),
            ("overlap", self.overlap != source.overlap),
        ];
        // Each take has its own latent layout: the cuts must stay where the source has them.
        let cuts = |spec: &JobSpec| crate::takes::take_frames(&spec.shots, spec.fps);
        if differs.iter().all(|(_, d)| !d) && cuts(self) != cuts(source) {
            return Some(bad(
                "shots",
                format!(
                    "a rerender keeps its source job's cuts: job {} has takes of frames {:?}, this list {:?}",
                    self.rerender.as_ref().map_or("?", |r| r.source.as_str()),
                    cuts(source),
                    cuts(self)
                ),
            ));
        }
        differs.into_iter().find(|(_, d)| *d).map(|(field, _)| {
            bad(
                field,
                format!(
                    "a rerender keeps its source job's {field}; job {} has another",
                    self.rerender.as_ref().map_or("?", |r| r.source.as_str())
                ),
            )
        })
    }

    /// The shot list laid out at the job's fps with `seed` ([`crate::shots::timeline`]); `None`
    /// for a plain prompt job or shots [`JobSpec::validate`] refuses.
    pub fn shot_timeline(&self, seed: u64) -> Option<ShotTimeline> {
        if self.shots.is_empty() {
            return None;
        }
        crate::shots::timeline(&self.shots, self.fps, &self.negative_prompt, seed, MAX_PROMPT_CHARS).ok()
    }

    /// Output frames the job asks for: the clip has exactly this many.
    pub fn requested_frames(&self) -> u32 {
        match self.length {
            ClipLength::Frames(f) => f,
            ClipLength::Seconds(s) => ((s * f64::from(self.fps)).round() as u32).max(1),
        }
    }

    /// Checks every model-independent field once (see [`JobSpec::validate`]).
    pub fn validated(self) -> Result<ValidJobSpec, Vec<FieldError>> {
        let errors = self.validate();
        if errors.is_empty() {
            Ok(ValidJobSpec(self))
        } else {
            Err(errors)
        }
    }

    /// [`JobSpec::validated`], then [`ValidJobSpec::resolve`].
    pub fn resolve(self, model: &ModelInfo, seed: u64) -> Result<ResolvedJob, Vec<FieldError>> {
        self.validated()?.resolve(model, seed)
    }
}

impl ResolvedJob {
    /// The initial noise's keys for a model of temporal compression `c`: per shot for a shot
    /// list, else the job's seed from latent frame 0. Of one take: with cuts, each take's
    /// [`Take::job`] has its own.
    pub fn noise_keys(&self, c: usize) -> NoiseKeys {
        debug_assert!(self.takes.is_empty(), "noise keys of a job with cuts: ask its takes");
        let keys = match self.spec.shot_timeline(self.seed) {
            Some(t) => t.noise_keys(c),
            None => NoiseKeys::single(self.seed),
        };
        match self.spec.draft {
            Some(_) => keys.pooled(DRAFT_SCALE),
            None => keys,
        }
    }

    /// Output frames of each shot when the job writes one file per shot; empty otherwise.
    pub fn shot_files(&self) -> Vec<std::ops::Range<u32>> {
        match (self.spec.split_shots, self.spec.shot_timeline(self.seed)) {
            (true, Some(t)) => t.shots.iter().map(|s| s.frames.clone()).collect(),
            _ => Vec::new(),
        }
    }

    /// `[latent frames, channels, height, width]` of the clip's final latents (the latents output).
    pub fn latent_shape(&self, channels: usize) -> [usize; 4] {
        [self.latent_frames, channels, self.latent_height, self.latent_width]
    }

    /// A rerender's mask for take `take` of this job and a model of temporal compression `c`:
    /// the part of the range in the take, in the take's own frames, ramped over
    /// [`MARGIN_OVERLAPS`] overlaps inside the take (nothing crosses a cut); a take the range
    /// misses is held whole. `None` for other jobs.
    pub fn take_repaint(&self, take: &Take, c: usize) -> Option<RepaintMask> {
        if self.takes.is_empty() {
            return self.repaint_mask(c);
        }
        let r = self.spec.rerender.as_ref()?;
        let (from, to) = (r.from_frame.max(take.frames.start), r.to_frame.min(take.frames.end));
        let latent_frames = take.job.latent_frames;
        if from >= to {
            return Some(RepaintMask::hold_all(latent_frames));
        }
        let local = (from - take.frames.start) as usize..(to - take.frames.start) as usize;
        let margin = MARGIN_OVERLAPS * take.job.plan.overlap();
        RepaintMask::new(latents_of_output(local, c), margin, latent_frames).ok()
    }

    /// A rerender's mask for a model of temporal compression `c`: the latent frames of its range,
    /// ramped over [`MARGIN_OVERLAPS`] overlaps; `None` for other jobs.
    pub fn repaint_mask(&self, c: usize) -> Option<RepaintMask> {
        let r = self.spec.rerender.as_ref()?;
        let free = latents_of_output(r.from_frame as usize..r.to_frame as usize, c);
        RepaintMask::new(free, MARGIN_OVERLAPS * self.plan.overlap(), self.plan.latent_frames()).ok()
    }

    /// A shot list's prompts (not encoded yet) and each window's mix of them, for a model of
    /// temporal compression `c`; `None` for a plain prompt job. Of one take, as
    /// [`ResolvedJob::noise_keys`].
    pub fn prompt_schedule(&self, c: usize) -> Option<PromptSchedule> {
        debug_assert!(
            self.takes.is_empty(),
            "the prompt schedule of a job with cuts: ask its takes"
        );
        let t = self.spec.shot_timeline(self.seed)?;
        let windows = t.window_prompts(&self.plan, c);
        let prompts = t
            .prompts
            .into_iter()
            .map(|(prompt, negative_prompt)| ScheduledPrompt {
                prompt,
                negative_prompt,
                embeddings: None,
            })
            .collect();
        Some(PromptSchedule { prompts, windows })
    }
}

/// A spec whose model-independent fields passed [`JobSpec::validate`]; only checks that need the
/// model remain.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidJobSpec(JobSpec);

impl ValidJobSpec {
    pub fn spec(&self) -> &JobSpec {
        &self.0
    }

    /// Checks the spec against `model` and computes the plan and schedule. `seed` is used when
    /// the spec has none (the caller draws it).
    pub fn resolve(self, model: &ModelInfo, seed: u64) -> Result<ResolvedJob, Vec<FieldError>> {
        let spec = self.0;
        let mut e = Vec::new();
        let sc = model.spatial_compression as u32;
        for (field, v) in [("width", spec.width), ("height", spec.height)] {
            if sc > 0 && v % sc != 0 {
                e.push(bad(
                    field,
                    format!("{v} is not a multiple of {sc}, the model's spatial compression"),
                ));
            }
        }
        if let Some(m) = reference_image_mismatch(&spec.inputs, model) {
            e.push(m);
        }
        if spec.inputs.video.is_some() && model.video_warmup.is_none() {
            e.push(bad(
                "video",
                format!(
                    "model {:?} does not render from a video (video-to-video takes a text-to-video model: a Wan2.1 T2V pipeline or the procedural model)",
                    model.name
                ),
            ));
        }
        let overlap = spec.overlap.map_or(model.default_overlap, |o| o as usize);
        if overlap > model.window_frames / 2 {
            e.push(bad(
                "overlap",
                format!(
                    "{overlap} is not in 0..={} (half of the model's {}-frame window)",
                    model.window_frames / 2,
                    model.window_frames
                ),
            ));
        }
        if !e.is_empty() {
            return Err(e);
        }
        let c = model.temporal_compression.max(1) as u32;
        let frames = spec.requested_frames();
        let rendered_frames = rendered_frames(frames, c);
        let latent_frames = model.latent_frames_for(rendered_frames as usize);
        let schedule = Schedule::new(spec.solver, spec.steps as usize, spec.shift)
            .map_err(|m| vec![bad("steps", m.to_string())])?;
        let plan = WindowPlan::new(latent_frames, model.window_frames, overlap)
            .map_err(|m| vec![bad("overlap", m.to_string())])?;
        let first_step = spec.first_step().map_err(|m| vec![bad("strength", m.to_string())])?;
        let mut outputs = spec.outputs.clone();
        outputs.sort();
        outputs.dedup();
        let job = ResolvedJob {
            first_step,
            seed: spec.seed.unwrap_or(seed),
            outputs,
            frames,
            rendered_frames,
            latent_frames,
            latent_height: (spec.height / sc.max(1)) as usize,
            latent_width: (spec.width / sc.max(1)) as usize,
            plan,
            schedule,
            takes: Vec::new(),
            spec,
        };
        if !crate::takes::has_cut(&job.spec.shots) {
            return Ok(job);
        }
        job.with_takes(model)
    }
}

impl ResolvedJob {
    /// A job whose shot list has cuts: each take resolved as a job of its own, laid end to end.
    /// The clip's rendered and latent frames are the takes' sums (each take renders its own
    /// `c·k + 1` frames and trims its own tail).
    fn with_takes(mut self, model: &ModelInfo) -> Result<ResolvedJob, Vec<FieldError>> {
        let (mut frames, mut latents, mut windows) = (0u32, 0usize, 0usize);
        let mut takes = Vec::new();
        for shots in take_ranges(&self.spec.shots) {
            let first_shot = shots.start;
            let job = take_spec(&self.spec, self.seed, shots.clone())
                .resolve(model, self.seed)
                .map_err(|errors| {
                    // Unreachable for a list that validated whole; named by its take all the same.
                    let f = |e: FieldError| FieldError::new(format!("shots[{first_shot}]"), format!("its take: {e}"));
                    errors.into_iter().map(f).collect::<Vec<_>>()
                })?;
            let take = Take {
                shots,
                frames: frames..frames + job.frames,
                latents: latents..latents + job.latent_frames,
                windows: windows..windows + job.plan.windows(),
                job,
            };
            (frames, latents, windows) = (take.frames.end, take.latents.end, take.windows.end);
            takes.push(take);
        }
        self.plan = takes[0].job.plan;
        self.rendered_frames = takes.iter().map(|t| t.job.rendered_frames).sum();
        self.latent_frames = latents;
        self.takes = takes;
        Ok(self)
    }

    /// The takes to render: the job's cut takes, or the whole job as one.
    pub fn take_list(&self) -> Vec<Take> {
        match self.takes.is_empty() {
            true => vec![Take::whole(self)],
            false => self.takes.clone(),
        }
    }

    /// The window grid of every take, in order.
    pub fn take_plans(&self) -> Vec<WindowPlan> {
        match self.takes.is_empty() {
            true => vec![self.plan],
            false => self.takes.iter().map(|t| t.job.plan).collect(),
        }
    }

    /// Windows of the whole job, every take's.
    pub fn windows(&self) -> usize {
        self.take_plans().iter().map(WindowPlan::windows).sum()
    }

    /// Latent frames the takes denoise, padding included.
    pub fn padded_latent_frames(&self) -> usize {
        self.take_plans().iter().map(WindowPlan::padded_frames).sum()
    }
}

/// Whether the job gives the reference images the model takes (none for text-to-video, the first
/// frame for image-to-video, first and last for first-and-last-frame).
fn reference_image_mismatch(inputs: &JobInputs, model: &ModelInfo) -> Option<FieldError> {
    let (given, takes, name) = (inputs.reference_images(), model.reference_images, &model.name);
    Some(match (takes, given) {
        (t, g) if t == g => return None,
        (0, _) => bad(
            "image",
            format!("model {name:?} is text-to-video: it takes no image (use an image-to-video model)"),
        ),
        (1, 0) => bad(
            "image",
            format!("model {name:?} is image-to-video: it needs the clip's first frame (--image)"),
        ),
        (1, _) => bad(
            "last_image",
            format!("model {name:?} takes one image, the first frame (first-and-last-frame models take a last one)"),
        ),
        _ => bad(
            if given == 0 { "image" } else { "last_image" },
            format!("model {name:?} is first-and-last-frame: it needs --image and --last-image"),
        ),
    })
}

/// The smallest `c·k + 1` that is at least `frames`: a causal video model with temporal
/// compression `c` renders one frame for its first latent frame and `c` for each further one.
pub fn rendered_frames(frames: u32, c: u32) -> u32 {
    let c = c.max(1);
    frames.saturating_sub(1).div_ceil(c) * c + 1
}

/// Defaults the CLI and the API use for unset fields (Wan2.1's 480p defaults).
pub mod defaults {
    pub const FPS: u32 = 16;
    pub const WIDTH: u32 = 832;
    pub const HEIGHT: u32 = 480;
    pub const STEPS: u32 = 50;
    pub const GUIDANCE: f32 = 5.0;
    pub const SHIFT: f64 = 3.0;
    pub const SOLVER: crate::scheduler::Solver = crate::scheduler::Solver::UniPc;
    pub const OUTPUT: crate::output::OutputKind = crate::output::OutputKind::Mp4;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(inputs: JobInputs) -> JobSpec {
        JobSpec {
            shots: Vec::new(),
            rerender: None,
            split_shots: false,
            strength: None,
            draft: None,
            preview_every: 0,
            model: "m".into(),
            prompt: "a lighthouse".into(),
            negative_prompt: String::new(),
            seed: Some(1),
            length: ClipLength::Frames(81),
            fps: defaults::FPS,
            width: 64,
            height: 32,
            steps: 2,
            guidance: defaults::GUIDANCE,
            shift: defaults::SHIFT,
            solver: defaults::SOLVER,
            overlap: None,
            outputs: vec![OutputKind::Mp4],
            priority: 0,
            blend: BlendMode::CoDenoise,
            inputs,
        }
    }

    #[test]
    fn a_draft_halves_the_size_quarters_the_steps_and_promotes_back() {
        let full = JobSpec {
            width: 832,
            height: 480,
            steps: 50,
            seed: None,
            ..spec(JobInputs::default())
        };
        let draft = full.clone().into_draft().unwrap();
        assert_eq!((draft.width, draft.height, draft.steps), (416, 240, 13));
        assert!(draft.validate().is_empty(), "{:?}", draft.validate());
        let promoted = draft.promoted(77).unwrap();
        assert_eq!(
            promoted,
            JobSpec {
                seed: Some(77),
                ..full.clone()
            }
        );
        assert_eq!(full.promoted(1), None);
        let e = JobSpec {
            width: 840,
            ..full.clone()
        }
        .into_draft()
        .unwrap_err();
        assert_eq!(e.field, "width");
        // A draft whose size or steps do not match what it previews is refused by name.
        let edited = JobSpec {
            steps: 20,
            ..draft.clone()
        };
        assert!(edited
            .validate()
            .iter()
            .any(|e| e.field == "draft" && e.message.contains("416x240 at 13 steps")));
        let with_image = JobSpec {
            inputs: JobInputs {
                image: Some(crate::inputs::InputDigest::of(b"png")),
                ..Default::default()
            },
            ..draft.clone()
        };
        assert!(with_image.validate().iter().any(|e| e.field == "draft"));
        // Its noise is pooled; the promoted job's is not.
        let m = ModelInfo {
            spatial_compression: 8,
            ..model(0)
        };
        let r = draft.validated().unwrap().resolve(&m, 5).unwrap();
        assert_eq!(r.noise_keys(4).pool, DRAFT_SCALE);
        let r = promoted.validated().unwrap().resolve(&m, 5).unwrap();
        assert_eq!(r.noise_keys(4).pool, 1);
    }

    fn model(reference_images: u32) -> ModelInfo {
        ModelInfo {
            video_warmup: None,
            name: "m".into(),
            window_frames: 21,
            latent_channels: 16,
            temporal_compression: 4,
            spatial_compression: 8,
            default_overlap: 5,
            weights: String::new(),
            reference_images,
        }
    }

    #[test]
    fn a_shot_list_replaces_the_prompt_and_gives_the_length() {
        use crate::shots::Transition;
        let shot = Shot::new;
        let shots = vec![shot("a", 40, Some(Transition::Blend(1.0))), shot("b", 41, None)];
        let spec = JobSpec {
            prompt: String::new(),
            shots: shots.clone(),
            rerender: None,
            split_shots: false,
            ..spec(JobInputs::default())
        };
        let r = spec.clone().resolve(&model(0), 9).unwrap();
        assert_eq!(r.frames, 81);
        let s = r.prompt_schedule(4).unwrap();
        assert_eq!((s.prompts.len(), s.windows.len()), (2, r.plan.windows()));
        s.validate(r.plan.windows()).unwrap();
        assert_eq!(
            r.noise_keys(4).segments[0].seed,
            1,
            "the spec's seed is the first shot's"
        );
        let fields = |s: JobSpec| s.validate().into_iter().map(|e| e.to_string()).collect::<Vec<_>>();
        let both = fields(JobSpec {
            prompt: "c".into(),
            ..spec.clone()
        });
        assert_eq!(both, ["prompt: give the prompt in the shots, not both"]);
        let long = fields(JobSpec {
            length: ClipLength::Frames(90),
            ..spec.clone()
        });
        assert_eq!(
            long,
            ["duration: the shots add up to 81 frames: give that many frames, or no length"]
        );
        let video = fields(JobSpec {
            inputs: JobInputs {
                video: Some(InputDigest::of(b"v")),
                ..JobInputs::default()
            },
            ..spec.clone()
        });
        // Video-to-video takes a shot list: the video gives the frames, the shots the prompts.
        assert!(video.is_empty(), "{video:?}");
        let image = fields(JobSpec {
            inputs: JobInputs {
                image: Some(InputDigest::of(b"i")),
                ..JobInputs::default()
            },
            ..spec.clone()
        });
        // So does image-to-video: the image anchors every shot.
        assert!(image.is_empty(), "{image:?}");
        let bad = fields(JobSpec {
            shots: vec![shot("", 81, None)],
            rerender: None,
            split_shots: false,
            ..spec
        });
        assert_eq!(bad, ["shots[0].prompt: must not be empty"]);
        // A plain job has neither.
        let plain = super::tests::spec(JobInputs::default()).resolve(&model(0), 9).unwrap();
        assert_eq!(
            (plain.prompt_schedule(4), plain.noise_keys(4)),
            (None, NoiseKeys::single(1))
        );
    }

    #[test]
    fn a_cut_makes_takes_that_are_jobs_of_their_own() {
        use crate::shots::{shot_seed, Transition};
        let shot = Shot::new;
        let shots = vec![
            shot("a", 60, Some(Transition::Blend(1.0))),
            shot("b", 61, Some(Transition::Cut)),
            Shot {
                seed: Some(5),
                ..shot("c", 80, None)
            },
        ];
        let spec = JobSpec {
            prompt: String::new(),
            shots,
            length: ClipLength::Frames(201),
            ..spec(JobInputs::default())
        };
        let r = spec.clone().resolve(&model(0), 9).unwrap();
        assert_eq!(r.takes.len(), 2);
        let (t0, t1) = (&r.takes[0], &r.takes[1]);
        // Take 0: 121 frames = 31 latent frames, 2 windows; take 1: 80 frames render 81 = 21
        // latent frames, 1 window. The clip's latents and windows are the sums.
        assert_eq!(
            (
                t0.shots.clone(),
                t0.frames.clone(),
                t0.latents.clone(),
                t0.windows.clone()
            ),
            (0..2, 0..121, 0..31, 0..2)
        );
        assert_eq!(
            (
                t1.shots.clone(),
                t1.frames.clone(),
                t1.latents.clone(),
                t1.windows.clone()
            ),
            (2..3, 121..201, 31..52, 2..3)
        );
        assert_eq!(
            (r.frames, r.rendered_frames, r.latent_frames, r.windows()),
            (201, 202, 52, 3)
        );
        assert_eq!(r.latent_shape(16)[0], 52);
        assert_eq!(r.padded_latent_frames(), 37 + 21);
        // Each take is a shot list of its own shots, seeds written out, ending without a
        // transition; the job's seed (1) keys shot 0 as in any list.
        assert_eq!(
            t0.job.spec.shots.iter().map(|s| s.seed).collect::<Vec<_>>(),
            [Some(1), Some(shot_seed(1, 1))]
        );
        assert_eq!(t1.job.spec.shots[0].seed, Some(5));
        assert_eq!(t1.job.spec.shots[0].transition, None);
        assert_eq!((t1.job.frames, t1.job.takes.len()), (80, 0));
        assert_eq!(r.take_plans(), vec![t0.job.plan, t1.job.plan]);
        // The resolved job survives the job store's JSON.
        let back: ResolvedJob = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        // A job without cuts is its own one take.
        let plain = super::tests::spec(JobInputs::default()).resolve(&model(0), 9).unwrap();
        assert!(plain.takes.is_empty());
        assert_eq!(plain.take_list(), vec![crate::takes::Take::whole(&plain)]);
        assert_eq!(plain.windows(), plain.plan.windows());
        // A cut with a video, an image or a rerender is refused at the cut.
        let fields = |s: JobSpec| s.validate().into_iter().map(|e| e.to_string()).collect::<Vec<_>>();
        let with_video = fields(JobSpec {
            inputs: JobInputs {
                video: Some(InputDigest::of(b"v")),
                ..JobInputs::default()
            },
            ..spec.clone()
        });
        assert_eq!(with_video, ["shots[1].transition: a cut is not supported with an input video (--video) yet: use blend transitions, or render each take as its own job"]);
        let with_image = fields(JobSpec {
            inputs: JobInputs {
                image: Some(InputDigest::of(b"i")),
                ..JobInputs::default()
            },
            ..spec.clone()
        });
        assert!(
            with_image[0].contains("with a reference image (--image)"),
            "{with_image:?}"
        );
        // A rerender of a cut job: its range, in each take's frames, ramped inside the take; a
        // take the range misses is held whole.
        let edit = JobSpec {
            rerender: Some(Rerender {
                source: "job-1".into(),
                from_frame: 40,
                to_frame: 60,
            }),
            ..spec.clone()
        };
        let e = edit.clone().resolve(&model(0), 9).unwrap();
        assert_eq!(
            e.take_repaint(&e.takes[0], 4),
            Some(RepaintMask::new(10..16, MARGIN_OVERLAPS * 5, 31).unwrap())
        );
        assert_eq!(e.take_repaint(&e.takes[1], 4), Some(RepaintMask::hold_all(21)));
        assert!(!RepaintMask::hold_all(21).runs(&(0..21)));
        assert_eq!(e.takes[1].job.spec.rerender, None, "a take carries no range of its own");
        // The cuts must stay where the source has them.
        assert_eq!(edit.rerender_mismatch(&spec), None);
        let mut moved = edit.clone();
        moved.shots[1].frames = Some(41);
        moved.shots[2].frames = Some(100);
        let why = moved.rerender_mismatch(&spec).unwrap();
        assert_eq!(why.field, "shots");
        assert!(why.message.contains("[0..121, 121..201]"), "{why}");
    }

    #[test]
    fn reference_images_must_be_what_the_model_takes() {
        let d = |b: &[u8]| Some(InputDigest::of(b));
        let none = JobInputs::default();
        let first = JobInputs {
            video: None,
            image: d(b"a"),
            last_image: None,
        };
        let both = JobInputs {
            video: None,
            image: d(b"a"),
            last_image: d(b"b"),
        };
        let only_last = JobInputs {
            video: None,
            image: None,
            last_image: d(b"b"),
        };
        let field = |inputs: &JobInputs, takes: u32| -> Option<String> {
            match spec(inputs.clone()).resolve(&model(takes), 0) {
                Ok(_) => None,
                Err(e) => Some(format!("{}: {}", e[0].field, e[0].message)),
            }
        };
        assert_eq!(field(&none, 0), None);
        assert_eq!(field(&first, 1), None);
        assert_eq!(field(&both, 2), None);
        let starts = |got: Option<String>, want: &str| {
            let got = got.expect("refused");
            assert!(got.starts_with(want), "{got:?} does not start with {want:?}");
        };
        starts(field(&first, 0), r#"image: model "m" is text-to-video"#);
        starts(field(&none, 1), r#"image: model "m" is image-to-video: it needs"#);
        starts(field(&both, 1), r#"last_image: model "m" takes one image"#);
        starts(field(&none, 2), r#"image: model "m" is first-and-last-frame"#);
        starts(field(&first, 2), r#"last_image: model "m" is first-and-last-frame"#);
        // A last image without a first one is refused before any model is looked at.
        let e = spec(only_last).validate();
        assert_eq!(e.len(), 1);
        assert!(e[0].field == "last_image" && e[0].message.contains("needs image too"));
    }

    #[test]
    fn a_video_job_needs_a_video_model_and_a_strength_that_runs_a_step() {
        let video = JobInputs {
            video: Some(InputDigest::of(b"v")),
            ..JobInputs::default()
        };
        let with = |inputs: JobInputs, strength: Option<f64>| JobSpec {
            strength,
            steps: 10,
            ..spec(inputs)
        };
        let v2v = ModelInfo {
            video_warmup: Some(28),
            ..model(0)
        };
        // The default strength 0.8 runs 8 of 10 steps: from step 2.
        let r = with(video.clone(), None).resolve(&v2v, 0).unwrap();
        assert_eq!(r.first_step, 2);
        assert_eq!(with(video.clone(), Some(0.35)).resolve(&v2v, 0).unwrap().first_step, 7);
        assert_eq!(with(JobInputs::default(), None).resolve(&v2v, 0).unwrap().first_step, 0);
        let message = |s: JobSpec, m: &ModelInfo| {
            let e = s.resolve(m, 0).unwrap_err();
            format!("{}: {}", e[0].field, e[0].message)
        };
        assert_eq!(
            message(with(video.clone(), None), &model(0)),
            r#"video: model "m" does not render from a video (video-to-video takes a text-to-video model: a Wan2.1 T2V pipeline or the procedural model)"#
        );
        assert_eq!(
            message(with(video.clone(), Some(0.0)), &v2v),
            "strength: strength 0 is not in (0, 1]"
        );
        assert!(message(with(video.clone(), Some(0.05)), &v2v).contains("strength 0.05 runs no step of 10"));
        assert_eq!(
            message(with(JobInputs::default(), Some(0.5)), &v2v),
            "strength: is for video-to-video: give a video too (--video)"
        );
        let both = JobInputs {
            image: Some(InputDigest::of(b"i")),
            ..video
        };
        assert!(message(with(both, None), &v2v).starts_with("video: a job starts from a video"));
    }

    #[test]
    fn a_rerender_checks_its_range_and_keeps_its_sources_clip() {
        let source = spec(JobInputs::default());
        let edit = |from_frame, to_frame| JobSpec {
            rerender: Some(Rerender {
                source: "job-1".into(),
                from_frame,
                to_frame,
            }),
            prompt: "another".into(),
            seed: Some(9),
            ..source.clone()
        };
        assert!(edit(10, 30).validate().is_empty());
        for (a, b) in [(30, 30), (40, 30), (10, 82)] {
            let e = edit(a, b).validate();
            assert!(e.len() == 1 && e[0].field == "rerender", "{a}..{b}: {e:?}");
            assert!(e[0].message.contains("inside the clip's 81 frames"), "{e:?}");
        }
        let split = JobSpec {
            split_shots: true,
            ..source.clone()
        };
        assert_eq!(split.validate()[0].field, "split_shots");
        let mut nameless = edit(1, 2);
        nameless.rerender.as_mut().unwrap().source.clear();
        assert_eq!(nameless.validate()[0].field, "rerender.source");
        // Prompt, seed and guidance may change; what shapes the clip may not.
        assert_eq!(edit(10, 30).rerender_mismatch(&source), None);
        let e = JobSpec {
            steps: 3,
            ..edit(10, 30)
        }
        .rerender_mismatch(&source)
        .unwrap();
        assert_eq!(
            e.to_string(),
            "steps: a rerender keeps its source job's steps; job job-1 has another"
        );
        let e = JobSpec {
            length: ClipLength::Frames(85),
            ..edit(10, 30)
        }
        .rerender_mismatch(&source)
        .unwrap();
        assert_eq!(e.field, "frames");
        // The mask: output frames 10..30 are latents 3..9, ramped over three overlaps.
        let r = edit(10, 30).resolve(&model(0), 0).unwrap();
        let m = r.repaint_mask(4).unwrap();
        assert_eq!((m.free.clone(), m.margin, m.latent_frames), (3..9, 15, 21));
        assert_eq!(source.clone().resolve(&model(0), 0).unwrap().repaint_mask(4), None);
    }

    #[test]
    fn live_previews_come_before_the_last_step_or_not_at_all() {
        let base = spec(JobInputs::default());
        for (every, ok) in [
            (0, true),
            (1, true),
            (base.steps - 1, true),
            (base.steps, false),
            (base.steps + 7, false),
        ] {
            let s = JobSpec {
                preview_every: every,
                ..base.clone()
            };
            let errors = s.validate();
            assert_eq!(errors.is_empty(), ok, "preview_every {every}: {errors:?}");
            if !ok {
                assert!(errors.iter().any(|e| e.field == "preview_every"
                    && e.message.contains(&format!("not below the job's {} steps", base.steps))));
            }
        }
    }
}
