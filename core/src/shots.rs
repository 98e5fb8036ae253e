//! Shot lists: takes whose prompt changes along them.
//!
//! A job may give a list of shots instead of one prompt. Each shot has a prompt, a length and
//! optionally its own negative prompt and seed; a `blend` transition into the next shot moves the
//! conditioning from one prompt to the next over a time span centred on the boundary. The shots
//! lie end to end on the clip's output frames ([`ShotTimeline`]), and from there:
//! - every window of the plan gets one conditioning ([`WindowPrompt`]): the prompt of the shot
//!   under its centre frame, or, inside a blend, a mix of the two prompts with weight
//!   [`blend_weight`] (smoothstep of the position in the blend);
//! - every latent frame gets its noise from its shot's seed and its index within the shot
//!   ([`NoiseKeys`]), so a shot's noise does not move when an earlier shot's length changes.
//!
//! A one-shot list with the job's seed renders exactly what a plain prompt job does. A `cut`
//! ends a take: the shots after it render as a take of their own ([`crate::takes`]).

use crate::denoiser::causal_frames;
use crate::job::FieldError;
use crate::noise::{NoiseKeys, NoiseSegment};
use crate::plan::WindowPlan;
use crate::prompt_parts::PromptParts;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Turns every shot given in parts (`subject`, `action`, `environment`, `camera`, `style`) into
/// its composed prompt ([`PromptParts::compose`]) and clears the parts. A shot with both a prompt
/// and parts is refused, naming it.
pub fn compose_prompts(shots: &mut [Shot]) -> Result<(), Vec<FieldError>> {
    let mut e = Vec::new();
    for (i, s) in shots.iter_mut().enumerate() {
        let parts = PromptParts {
            subject: s.subject.take(),
            action: s.action.take(),
            environment: s.environment.take(),
            camera: s.camera.take(),
            style: s.style.take(),
        };
        if parts.is_empty() {
            continue;
        }
        if !s.prompt.trim().is_empty() {
            e.push(FieldError::new(
                field(i, "prompt"),
                "give the prompt or its parts (subject, action, environment, camera, style), not both",
            ));
            continue;
        }
        s.prompt = parts.compose();
    }
    if e.is_empty() {
        Ok(())
    } else {
        Err(e)
    }
}

/// Most shots one job may list.
pub const MAX_SHOTS: usize = 1000;

/// One shot, as the user writes it (YAML or JSON; unknown keys are refused).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shot {
    /// The prompt; or give its parts (`subject` … `style`), which [`compose_prompts`] turns into
    /// it before the list is sent.
    #[serde(default)]
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
    /// The job's negative prompt when unset.
    #[serde(default)]
    pub negative_prompt: Option<String>,
    /// Length in seconds (times the job's fps, rounded); exactly one of `duration` and `frames`.
    #[serde(default)]
    pub duration: Option<f64>,
    /// Length in output frames.
    #[serde(default)]
    pub frames: Option<u32>,
    /// Seed of this shot's noise; see [`shot_seed`] when unset.
    #[serde(default)]
    pub seed: Option<u64>,
    /// How this shot passes into the next; none for the last shot.
    #[serde(default)]
    pub transition: Option<Transition>,
}

impl Shot {
    /// A shot of `frames` frames with `prompt`, the job's negative prompt and a derived seed.
    pub fn new(prompt: &str, frames: u32, transition: Option<Transition>) -> Shot {
        Shot {
            prompt: prompt.into(),
            frames: Some(frames),
            transition,
            ..Default::default()
        }
    }
}

/// How a shot passes into the next one. Written `cut` or `{blend: SECONDS}` (YAML and JSON
/// alike).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TransitionForm", into = "TransitionForm")]
pub enum Transition {
    /// A hard cut: the shots on either side are separate takes ([`crate::takes`]).
    Cut,
    /// The prompt moves from this shot's to the next one's over this many seconds, centred on
    /// the boundary.
    Blend(f64),
}

/// [`Transition`] as written.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum TransitionForm {
    Name(String),
    Blend {
        #[serde(rename = "blend")]
        seconds: f64,
    },
}

impl TryFrom<TransitionForm> for Transition {
    type Error = String;
    fn try_from(t: TransitionForm) -> Result<Self, String> {
        match t {
            TransitionForm::Name(n) if n == "cut" => Ok(Transition::Cut),
            TransitionForm::Name(n) => Err(format!("unknown transition {n:?}: cut, or {{blend: SECONDS}}")),
            TransitionForm::Blend { seconds } => Ok(Transition::Blend(seconds)),
        }
    }
}

impl From<Transition> for TransitionForm {
    fn from(t: Transition) -> Self {
        match t {
            Transition::Cut => TransitionForm::Name("cut".into()),
            Transition::Blend(seconds) => TransitionForm::Blend { seconds },
        }
    }
}

/// Where one shot lies on the clip.
#[derive(Clone, Debug, PartialEq)]
pub struct ShotSpan {
    /// Output frames of the shot.
    pub frames: Range<u32>,
    /// Index of the shot's (prompt, negative prompt) in [`ShotTimeline::prompts`].
    pub prompt: usize,
    pub seed: u64,
    /// The blend from this shot into the next, in output frames; empty when there is none.
    pub blend_out: Range<u32>,
}

/// A validated shot list laid out on the clip's output frames.
#[derive(Clone, Debug, PartialEq)]
pub struct ShotTimeline {
    pub shots: Vec<ShotSpan>,
    /// Distinct (prompt, negative prompt) pairs in order of first use: each is encoded once.
    pub prompts: Vec<(String, String)>,
}

/// One window's conditioning: prompt `from`, mixed toward prompt `to` by `weight` in [0, 1]
/// (indices into [`ShotTimeline::prompts`]; `weight` 0 and `from == to` outside blends).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowPrompt {
    pub from: u32,
    pub to: u32,
    pub weight: f32,
}

impl WindowPrompt {
    pub fn single(prompt: u32) -> Self {
        Self {
            from: prompt,
            to: prompt,
            weight: 0.0,
        }
    }
    /// Whether the window conditions on one prompt only.
    pub fn is_single(&self) -> bool {
        self.from == self.to || self.weight == 0.0
    }
}

/// The weight of the next prompt at position `u` in [0, 1] through a blend: smoothstep
/// `u²(3 − 2u)`, so the conditioning leaves one prompt and arrives at the next with zero slope.
pub fn blend_weight(u: f64) -> f32 {
    let u = u.clamp(0.0, 1.0);
    (u * u * (3.0 - 2.0 * u)) as f32
}

/// The seed of shot `index` when the shot gives none: the job's seed for the first shot (so a
/// one-shot list renders what a plain prompt job does), else the job's seed mixed with the index
/// (SplitMix64's finaliser), so shots do not repeat each other's noise.
pub fn shot_seed(job_seed: u64, index: usize) -> u64 {
    if index == 0 {
        return job_seed;
    }
    let mut z = job_seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn field(i: usize, name: &str) -> String {
    format!("shots[{i}].{name}")
}

/// A shot's length in output frames at `fps`, or what is wrong with it.
fn shot_frames(i: usize, s: &Shot, fps: u32) -> Result<u32, FieldError> {
    match (s.duration, s.frames) {
        (Some(_), Some(_)) => Err(FieldError::new(
            field(i, "duration"),
            "give duration or frames, not both",
        )),
        (None, None) => Err(FieldError::new(
            field(i, "duration"),
            "is required: give duration (seconds) or frames",
        )),
        (None, Some(0)) => Err(FieldError::new(field(i, "frames"), "must be at least 1")),
        (None, Some(f)) => Ok(f),
        (Some(d), None) => {
            let f = d * f64::from(fps);
            if !(d.is_finite() && d > 0.0 && f.round() >= 1.0 && f <= f64::from(u32::MAX)) {
                return Err(FieldError::new(
                    field(i, "duration"),
                    format!("{d} seconds is not a positive length of at least one frame at {fps} fps"),
                ));
            }
            Ok(f.round() as u32)
        }
    }
}

/// Checks a shot list and lays it out at `fps`; `negative_prompt` and `job_seed` are the job's
/// defaults. Every error names the shot and field (`shots[2].transition`); shots are 0-based.
pub fn timeline(
    shots: &[Shot],
    fps: u32,
    negative_prompt: &str,
    job_seed: u64,
    max_prompt_chars: usize,
) -> Result<ShotTimeline, Vec<FieldError>> {
    let mut e = Vec::new();
    if shots.is_empty() {
        e.push(FieldError::new("shots", "list at least one shot"));
    }
    if shots.len() > MAX_SHOTS {
        e.push(FieldError::new(
            "shots",
            format!("{} shots is more than {MAX_SHOTS}", shots.len()),
        ));
    }
    if !e.is_empty() || fps == 0 {
        return Err(e);
    }
    let lengths: Vec<Option<u32>> = shots
        .iter()
        .enumerate()
        .map(|(i, s)| shot_frames(i, s, fps).map_err(|err| e.push(err)).ok())
        .collect();
    // Blend spans in frames, per boundary.
    let mut blends = vec![0u32; shots.len()];
    for (i, s) in shots.iter().enumerate() {
        if s.prompt.trim().is_empty() {
            e.push(FieldError::new(field(i, "prompt"), "must not be empty"));
        }
        let negative = s.negative_prompt.as_deref().unwrap_or(negative_prompt);
        for (name, text) in [("prompt", s.prompt.as_str()), ("negative_prompt", negative)] {
            if text.chars().count() > max_prompt_chars {
                e.push(FieldError::new(
                    field(i, name),
                    format!("is longer than {max_prompt_chars} characters"),
                ));
            }
        }
        let last = i + 1 == shots.len();
        match (s.transition, last) {
            (Some(_), true) => e.push(FieldError::new(
                field(i, "transition"),
                "the last shot has no next shot to pass into: remove it",
            )),
            (Some(Transition::Cut), false) => {}
            (Some(Transition::Blend(d)), false) => {
                let f = d * f64::from(fps);
                if !(d.is_finite() && d > 0.0 && f.round() >= 1.0 && f <= f64::from(u32::MAX)) {
                    e.push(FieldError::new(
                        field(i, "transition"),
                        format!("blend of {d} seconds is not a positive span of at least one frame at {fps} fps"),
                    ));
                } else {
                    blends[i] = f.round() as u32;
                }
            }
            (None, false) => e.push(FieldError::new(
                field(i, "transition"),
                "is required between shots: blend: SECONDS (the prompt moves to the next shot's over that span)",
            )),
            (None, true) => {}
        }
    }
    // Each blend is centred on its boundary and must stay inside the two shots it joins, apart
    // from the other blends.
    for i in 0..shots.len() {
        let Some(len) = lengths[i] else { continue };
        let into = if i > 0 { blends[i - 1] - blends[i - 1] / 2 } else { 0 };
        let out = blends[i] / 2;
        if u64::from(into) + u64::from(out) > u64::from(len) {
            e.push(FieldError::new(
                field(i, if out > 0 { "transition" } else { "duration" }),
                format!(
                    "the shot is {len} frames but its blends take {} frames of it ({into} in, {out} out): lengthen the shot or shorten the blends",
                    u64::from(into) + u64::from(out)
                ),
            ));
        }
    }
    if !e.is_empty() {
        return Err(e);
    }
    let mut prompts: Vec<(String, String)> = Vec::new();
    let mut spans = Vec::with_capacity(shots.len());
    let mut start = 0u64;
    for (i, s) in shots.iter().enumerate() {
        let len = u64::from(lengths[i].expect("checked"));
        let end = start + len;
        if end > u64::from(u32::MAX) {
            return Err(vec![FieldError::new(
                "shots",
                "the shots add up to more than 2^32 frames",
            )]);
        }
        let pair = (
            s.prompt.clone(),
            s.negative_prompt.clone().unwrap_or_else(|| negative_prompt.to_string()),
        );
        let prompt = match prompts.iter().position(|p| *p == pair) {
            Some(p) => p,
            None => {
                prompts.push(pair);
                prompts.len() - 1
            }
        };
        let b = blends[i];
        let blend_out = (end as u32 - b / 2)..(end as u32 - b / 2 + b);
        spans.push(ShotSpan {
            frames: start as u32..end as u32,
            prompt,
            seed: s.seed.unwrap_or_else(|| shot_seed(job_seed, i)),
            blend_out,
        });
        start = end;
    }
    Ok(ShotTimeline { shots: spans, prompts })
}

/// Total output frames of a shot list at `fps`, or `None` when a shot's length is invalid
/// ([`timeline`] says which).
pub fn total_frames(shots: &[Shot], fps: u32) -> Option<u32> {
    shots
        .iter()
        .enumerate()
        .try_fold(0u32, |acc, (i, s)| acc.checked_add(shot_frames(i, s, fps).ok()?))
}

impl ShotTimeline {
    pub fn total_frames(&self) -> u32 {
        self.shots.last().map_or(0, |s| s.frames.end)
    }

    /// The shot holding output frame `f` (the last shot for frames past the end: the grid's tail).
    fn shot_at(&self, f: u32) -> usize {
        self.shots
            .iter()
            .position(|s| f < s.frames.end)
            .unwrap_or(self.shots.len() - 1)
    }

    /// The conditioning at output frame `f`.
    pub fn prompt_at(&self, f: u32) -> WindowPrompt {
        let i = self.shot_at(f);
        let s = &self.shots[i];
        // A blend centred on a boundary reaches back into shot i (its own blend_out) or forward
        // from the previous shot's.
        let blend = if s.blend_out.contains(&f) {
            Some(i)
        } else if i > 0 && self.shots[i - 1].blend_out.contains(&f) {
            Some(i - 1)
        } else {
            None
        };
        match blend {
            None => WindowPrompt::single(s.prompt as u32),
            Some(j) => {
                let z = &self.shots[j].blend_out;
                let u = (f64::from(f - z.start) + 0.5) / f64::from(z.end - z.start);
                WindowPrompt {
                    from: self.shots[j].prompt as u32,
                    to: self.shots[j + 1].prompt as u32,
                    weight: blend_weight(u),
                }
            }
        }
    }

    /// Every window's conditioning: the prompt at the output frame of its centre latent frame
    /// (temporal compression `c`).
    pub fn window_prompts(&self, plan: &WindowPlan, c: usize) -> Vec<WindowPrompt> {
        (0..plan.windows())
            .map(|k| {
                let r = plan.window_range(k);
                let centre = r.start + (r.end - r.start - 1) / 2;
                self.prompt_at(causal_frames(centre, c).start as u32)
            })
            .collect()
    }

    /// The noise keys of the latent timeline: latent frame `l` belongs to the shot holding its
    /// first output frame and takes that shot's seed and its index from the shot's first latent.
    pub fn noise_keys(&self, c: usize) -> NoiseKeys {
        let mut segments: Vec<NoiseSegment> = Vec::new();
        let mut l = 0usize;
        for (i, s) in self.shots.iter().enumerate() {
            // First latent frame whose first output frame is in shot i.
            while causal_frames(l, c).start < s.frames.start as usize {
                l += 1;
            }
            let next_start = self.shots.get(i + 1).map(|n| n.frames.start as usize);
            if next_start.is_some_and(|n| causal_frames(l, c).start >= n) {
                continue; // shorter than one latent frame: no latent frame of its own
            }
            segments.push(NoiseSegment {
                first_latent: l,
                seed: s.seed,
            });
        }
        NoiseKeys { segments, pool: 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shot(prompt: &str, frames: u32, transition: Option<Transition>) -> Shot {
        Shot::new(prompt, frames, transition)
    }

    fn errors(shots: &[Shot]) -> Vec<String> {
        timeline(shots, 16, "", 1, 100)
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn shots_lie_end_to_end_with_centred_blends() {
        let mut shots = vec![
            shot("a red fox", 100, Some(Transition::Blend(1.0))),
            shot("a blue sea", 60, Some(Transition::Blend(0.5))),
            shot("a red fox", 40, None),
        ];
        shots[1].duration = Some(3.75);
        shots[1].frames = None;
        shots[1].seed = Some(99);
        let t = timeline(&shots, 16, "blurry", 7, 100).unwrap();
        assert_eq!(t.total_frames(), 200);
        assert_eq!(t.prompts.len(), 2, "a repeated prompt is encoded once");
        assert_eq!(t.shots[1].frames, 100..160);
        assert_eq!(t.shots[0].blend_out, 92..108);
        assert_eq!(t.shots[1].blend_out, 156..164);
        assert_eq!(t.shots[2].blend_out, 200..200);
        assert_eq!((t.shots[0].seed, t.shots[1].seed), (7, 99));
        assert_ne!(t.shots[2].seed, 7);
        assert_eq!(t.prompts[0], ("a red fox".into(), "blurry".into()));
        // Outside blends one prompt; through a blend the weight rises monotonically.
        assert_eq!(t.prompt_at(50), WindowPrompt::single(0));
        assert_eq!(t.prompt_at(130), WindowPrompt::single(1));
        let w: Vec<f32> = (92..108).map(|f| t.prompt_at(f).weight).collect();
        assert!(w.windows(2).all(|p| p[1] > p[0]) && w[0] > 0.0 && w[15] < 1.0, "{w:?}");
        assert_eq!((t.prompt_at(100).from, t.prompt_at(100).to), (0, 1));
        assert_eq!((t.prompt_at(158).from, t.prompt_at(158).to), (1, 0));
        assert_eq!(
            t.prompt_at(10_000),
            WindowPrompt::single(0),
            "the tail is the last shot's"
        );
        assert_eq!(blend_weight(0.5), 0.5);
    }

    #[test]
    fn transitions_are_written_cut_or_blend_seconds() {
        let parse = |s: &str| serde_json::from_str::<Transition>(s).map_err(|e| e.to_string());
        assert_eq!(parse(r#""cut""#), Ok(Transition::Cut));
        assert_eq!(parse(r#"{"blend": 1.5}"#), Ok(Transition::Blend(1.5)));
        assert!(parse(r#""fade""#).unwrap_err().contains("unknown transition \"fade\""));
        assert_eq!(
            serde_json::to_string(&Transition::Blend(2.0)).unwrap(),
            r#"{"blend":2.0}"#
        );
        let typo = serde_json::from_str::<Shot>(r#"{"prompt": "a", "frame": 3}"#).unwrap_err();
        assert!(typo.to_string().contains("unknown field `frame`"), "{typo}");
    }

    #[test]
    fn each_error_names_the_shot_and_field() {
        assert_eq!(errors(&[]), ["shots: list at least one shot"]);
        let mut bad = vec![
            shot(" ", 10, Some(Transition::Blend(0.0))),
            shot("b", 0, Some(Transition::Cut)),
            shot("c", 10, None),
            shot("d", 4, Some(Transition::Blend(1.0))),
        ];
        bad[2].duration = Some(1.0);
        let e = errors(&bad);
        assert!(e.contains(&"shots[0].prompt: must not be empty".into()), "{e:?}");
        assert!(
            e.iter()
                .any(|m| m.starts_with("shots[0].transition: blend of 0 seconds")),
            "{e:?}"
        );
        assert!(e.contains(&"shots[1].frames: must be at least 1".into()), "{e:?}");
        assert!(
            !e.iter().any(|m| m.starts_with("shots[1].transition")),
            "a cut is allowed: {e:?}"
        );
        assert!(
            e.contains(&"shots[2].duration: give duration or frames, not both".into()),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("shots[2].transition: is required between shots")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|m| m.starts_with("shots[3].transition: the last shot")),
            "{e:?}"
        );
        // A blend longer than its shots allow.
        let e = errors(&[shot("a", 10, Some(Transition::Blend(2.0))), shot("b", 40, None)]);
        assert_eq!(
            e,
            ["shots[0].transition: the shot is 10 frames but its blends take 16 frames of it (0 in, 16 out): lengthen the shot or shorten the blends"]
        );
        let mut long = shot("a", 1, None);
        long.prompt = "x".repeat(101);
        assert_eq!(errors(&[long]), ["shots[0].prompt: is longer than 100 characters"]);
        let mut none = shot("a", 1, None);
        none.frames = None;
        assert_eq!(
            errors(&[none]),
            ["shots[0].duration: is required: give duration (seconds) or frames"]
        );
    }

    #[test]
    fn windows_take_the_prompt_under_their_centre() {
        // 4 windows of 5 latents, overlap 1: centres at latents 2, 6, 10, 14 = frames 5, 21, 37, 53;
        // the blend spans frames 14..46.
        let plan = WindowPlan::new(17, 5, 1).unwrap();
        let shots = [shot("a", 30, Some(Transition::Blend(2.0))), shot("b", 35, None)];
        let t = timeline(&shots, 16, "", 1, 100).unwrap();
        let w = t.window_prompts(&plan, 4);
        assert_eq!(w.len(), 4);
        assert_eq!(w[0], WindowPrompt::single(0));
        assert_eq!((w[1].from, w[1].to), (0, 1));
        assert!(w[1].weight > 0.0 && w[1].weight < 0.5, "{:?}", w[1]);
        assert!(w[2].weight > 0.5 && w[2].weight < 1.0, "{:?}", w[2]);
        assert_eq!(w[3], WindowPrompt::single(1));
    }

    #[test]
    fn noise_follows_each_shot() {
        let shots = [
            shot("a", 33, Some(Transition::Blend(0.25))),
            shot("b", 3, Some(Transition::Blend(0.0625))),
            shot("c", 30, None),
        ];
        let t = timeline(&shots, 16, "", 5, 100).unwrap();
        // c = 4: latent 8 starts at frame 29 (shot 0), 9 at frame 33 (shot 1), 10 at 37 (shot 2).
        let k = t.noise_keys(4);
        assert_eq!(
            k.segments,
            [
                NoiseSegment {
                    first_latent: 0,
                    seed: 5
                },
                NoiseSegment {
                    first_latent: 9,
                    seed: shot_seed(5, 1)
                },
                NoiseSegment {
                    first_latent: 10,
                    seed: shot_seed(5, 2)
                },
            ]
        );
        k.validate().unwrap();
        assert_eq!(
            k.split(7..12)
                .into_iter()
                .map(|(s, r)| (s.first_latent, r))
                .collect::<Vec<_>>(),
            [(0, 7..9), (9, 9..10), (10, 10..12)]
        );
        assert_eq!(
            NoiseKeys::single(3).split(0..4),
            [(
                NoiseSegment {
                    first_latent: 0,
                    seed: 3
                },
                0..4
            )]
        );
        assert!(NoiseKeys {
            segments: vec![],
            pool: 1
        }
        .validate()
        .is_err());
        let unordered = NoiseKeys {
            segments: vec![
                NoiseSegment {
                    first_latent: 0,
                    seed: 1,
                },
                NoiseSegment {
                    first_latent: 0,
                    seed: 2,
                },
            ],
            pool: 1,
        };
        assert!(unordered.validate().unwrap_err().contains("increasing"));
    }
}
