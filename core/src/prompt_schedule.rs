//! A shot list's text conditioning as a shard receives it: every distinct prompt once (with its
//! embeddings, for models that take them) and every window's mix of them
//! ([`crate::shots::WindowPrompt`]).
//!
//! A window inside a blend conditions on `(1 − w)·E_from + w·E_to` of the two prompts' text
//! embeddings (the interpolation is f32, elementwise, in that order, so every worker computes
//! the same bits); a model that reads prompt text instead gets both prompts and `w`
//! ([`PromptBlend`]) and interpolates its own representation.

use crate::denoiser::{Branch, PromptBlend};
use crate::denoiser::{Conditioning, DenoiseError, Denoiser, ModelInfo, StepPoint, TextEmbeddings, WindowContext};
use crate::shots::WindowPrompt;
use crate::tensor::Latents;
use std::ops::Range;

/// One distinct (prompt, negative prompt) of a job, encoded once.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledPrompt {
    pub prompt: String,
    pub negative_prompt: String,
    pub embeddings: Option<TextEmbeddings>,
}

/// The prompts of a shot list and each window's mix of them, for the whole plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptSchedule {
    pub prompts: Vec<ScheduledPrompt>,
    /// One per window of the plan.
    pub windows: Vec<WindowPrompt>,
}

impl PromptSchedule {
    /// Checks the schedule against a plan of `windows` windows: indices in range, weights in
    /// [0, 1], embeddings for every prompt or for none, all of one shape and finite.
    pub fn validate(&self, windows: usize) -> Result<(), String> {
        if self.prompts.is_empty() {
            return Err("no prompts".into());
        }
        if self.windows.len() != windows {
            return Err(format!(
                "{} window prompts for a plan of {windows} windows",
                self.windows.len()
            ));
        }
        let n = self.prompts.len() as u32;
        for (k, w) in self.windows.iter().enumerate() {
            if w.from >= n || w.to >= n {
                return Err(format!("window {k} names prompt {} of {n}", w.from.max(w.to)));
            }
            if !(0.0..=1.0).contains(&w.weight) {
                return Err(format!("window {k}'s weight {} is not in [0, 1]", w.weight));
            }
        }
        let shapes: Vec<Option<(usize, usize)>> = self
            .prompts
            .iter()
            .map(|p| p.embeddings.as_ref().map(|e| (e.rows, e.dim)))
            .collect();
        if shapes.windows(2).any(|s| s[0] != s[1]) {
            return Err("the prompts' embeddings differ in presence or shape".into());
        }
        for (i, p) in self.prompts.iter().enumerate() {
            if let Some(e) = &p.embeddings {
                e.validate().map_err(|m| format!("prompt {i}: {m}"))?;
            }
        }
        Ok(())
    }

    /// Window `window`'s conditioning: `base` (its reference images and image embeddings) with
    /// the window's prompt, and its mix's embeddings and [`PromptBlend`] inside a blend.
    /// Call after [`PromptSchedule::validate`].
    pub fn conditioning(&self, window: usize, base: &Conditioning) -> Conditioning {
        let w = self.windows[window];
        let from = &self.prompts[w.from as usize];
        let to = &self.prompts[w.to as usize];
        let single = w.is_single();
        Conditioning {
            prompt: from.prompt.clone(),
            negative_prompt: from.negative_prompt.clone(),
            embeddings: match (&from.embeddings, &to.embeddings) {
                (Some(a), Some(b)) if !single => Some(a.lerp(b, w.weight)),
                (a, _) => a.clone(),
            },
            blend: (!single).then(|| PromptBlend {
                prompt: to.prompt.clone(),
                negative_prompt: to.negative_prompt.clone(),
                weight: w.weight,
            }),
            ..base.clone()
        }
    }

    /// The shard's windows grouped by identical mix, in first-use order: one denoiser serves
    /// each group.
    pub fn groups(&self, windows: Range<usize>) -> Vec<(WindowPrompt, Vec<usize>)> {
        let mut groups: Vec<(WindowPrompt, Vec<usize>)> = Vec::new();
        for k in windows {
            let w = self.windows[k];
            match groups.iter_mut().find(|(g, _)| same_mix(*g, w)) {
                Some((_, ks)) => ks.push(k),
                None => groups.push((w, vec![k])),
            }
        }
        groups
    }
}

fn same_mix(a: WindowPrompt, b: WindowPrompt) -> bool {
    match (a.is_single(), b.is_single()) {
        (true, true) => a.from == b.from,
        (false, false) => a.from == b.from && a.to == b.to && a.weight.to_bits() == b.weight.to_bits(),
        _ => false,
    }
}

impl TextEmbeddings {
    /// `(1 − w)·self + w·other`, elementwise in f32, for both prompts.
    pub fn lerp(&self, other: &TextEmbeddings, w: f32) -> TextEmbeddings {
        let mix = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&a, &b)| (1.0 - w) * a + w * b).collect();
        TextEmbeddings {
            rows: self.rows,
            dim: self.dim,
            prompt: mix(&self.prompt, &other.prompt),
            negative: mix(&self.negative, &other.negative),
        }
    }
}

/// A shard's denoisers, one per group of windows with the same conditioning: each forward goes
/// to its window's.
pub struct WindowDenoisers {
    denoisers: Vec<Box<dyn Denoiser>>,
    /// `by_window[k − first]`: the index of window k's denoiser.
    by_window: Vec<usize>,
    first: usize,
}

impl WindowDenoisers {
    /// `groups[i]` are the windows `denoisers[i]` serves; together they must cover `windows`.
    pub fn new(windows: Range<usize>, groups: Vec<(Box<dyn Denoiser>, Vec<usize>)>) -> Result<Self, String> {
        let mut by_window = vec![usize::MAX; windows.len()];
        let mut denoisers = Vec::with_capacity(groups.len());
        for (i, (d, ks)) in groups.into_iter().enumerate() {
            for k in ks {
                if !windows.contains(&k) || by_window[k - windows.start] != usize::MAX {
                    return Err(format!("window {k} is outside {windows:?} or in two groups"));
                }
                by_window[k - windows.start] = i;
            }
            denoisers.push(d);
        }
        if denoisers.is_empty() || by_window.contains(&usize::MAX) {
            return Err(format!("the groups do not cover windows {windows:?}"));
        }
        Ok(Self {
            denoisers,
            by_window,
            first: windows.start,
        })
    }
}

impl Denoiser for WindowDenoisers {
    fn info(&self) -> &ModelInfo {
        self.denoisers[0].info()
    }

    fn predict(
        &mut self,
        x: &Latents,
        window: WindowContext,
        step: StepPoint,
        branch: Branch,
        out: &mut Latents,
    ) -> Result<(), DenoiseError> {
        let i = window
            .index
            .checked_sub(self.first)
            .and_then(|k| self.by_window.get(k))
            .ok_or_else(|| DenoiseError::Model(format!("window {} is not in this shard", window.index)))?;
        self.denoisers[*i].predict(x, window, step, branch, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(v: f32) -> TextEmbeddings {
        TextEmbeddings {
            rows: 1,
            dim: 2,
            prompt: vec![v, 2.0 * v],
            negative: vec![-v, 0.0],
        }
    }

    fn schedule() -> PromptSchedule {
        PromptSchedule {
            prompts: vec![
                ScheduledPrompt {
                    prompt: "a".into(),
                    negative_prompt: "n".into(),
                    embeddings: Some(emb(1.0)),
                },
                ScheduledPrompt {
                    prompt: "b".into(),
                    negative_prompt: "".into(),
                    embeddings: Some(emb(3.0)),
                },
            ],
            windows: vec![
                WindowPrompt::single(0),
                WindowPrompt {
                    from: 0,
                    to: 1,
                    weight: 0.25,
                },
                WindowPrompt::single(1),
                WindowPrompt::single(1),
            ],
        }
    }

    #[test]
    fn a_window_in_a_blend_mixes_the_embeddings() {
        let s = schedule();
        s.validate(4).unwrap();
        let base = Conditioning::default();
        let c = s.conditioning(1, &base);
        assert_eq!(c.embeddings.unwrap().prompt, [1.5, 3.0]);
        assert_eq!((c.prompt.as_str(), c.negative_prompt.as_str()), ("a", "n"));
        assert_eq!(
            c.blend,
            Some(PromptBlend {
                prompt: "b".into(),
                negative_prompt: "".into(),
                weight: 0.25
            })
        );
        let c = s.conditioning(2, &base);
        assert_eq!((c.embeddings.unwrap(), c.blend), (emb(3.0), None));
        let groups: Vec<Vec<usize>> = s.groups(1..4).into_iter().map(|(_, ks)| ks).collect();
        assert_eq!(groups, [vec![1], vec![2, 3]]);
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(schedule().validate(3).unwrap_err().contains("plan of 3 windows"));
        let mut s = schedule();
        s.windows[1].to = 2;
        assert!(s.validate(4).unwrap_err().contains("names prompt 2 of 2"));
        let mut s = schedule();
        s.windows[1].weight = f32::NAN;
        assert!(s.validate(4).unwrap_err().contains("not in [0, 1]"));
        let mut s = schedule();
        s.prompts[1].embeddings = None;
        assert!(s.validate(4).unwrap_err().contains("presence or shape"));
    }
}
