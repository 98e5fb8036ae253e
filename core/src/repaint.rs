//! Re-rendering a time range in place: RePaint along time (docs/long-clips.md §9).
//!
//! A rerender job runs the same plan and schedule as the job it edits. Every latent frame has a
//! weight `m ∈ [0, 1]`: 1 inside the range being re-rendered, 0 outside it, and a smoothstep ramp
//! across `margin` frames on either side. After every scheduler step (and at the start) each frame
//! becomes `m·x + (1 − m)·noise_to(σ, known, ε)`: the original job's final latents, re-noised to
//! the current σ with the window's own Philox noise ε. At σ = 0 that is `known` exactly, so frames
//! with `m = 0` end bit-identical to the original. The weight is a function of the global frame
//! alone and the replacement is per element, so overlapping windows keep identical copies and the
//! result does not depend on the number of workers. A window with no frame of weight > 0 inside
//! the clip is held: it runs no model, only the replacement.

use crate::plan::WindowPlan;
use crate::scheduler::strength::noise_to;
use crate::tensor::{LatentShape, Latents};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use thiserror::Error;

/// A rerender's default margin, in window overlaps: the ramp that joins a re-rolled range to the
/// kept frames at the placebo seam level (measured in tests/tests/rerender.rs).
pub const MARGIN_OVERLAPS: usize = 3;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RepaintError {
    #[error("the re-rendered latent frames {start}..{end} are empty or outside the clip's {frames} latent frames")]
    Range { start: usize, end: usize, frames: usize },
}

/// Which latent frames a rerender regenerates, and how it joins the frames it keeps.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RepaintMask {
    /// Latent frames regenerated freely (weight 1).
    pub free: Range<usize>,
    /// Frames on either side of `free` over which the weight ramps down to 0.
    pub margin: usize,
    /// Latent frames of the clip; frames past it (the plan's padding) have no known latents and
    /// are free, but never make a window run.
    pub latent_frames: usize,
}

impl RepaintMask {
    /// The mask regenerating `free` with a ramp of `margin` frames; the empty range at the clip's
    /// end with no margin is [`RepaintMask::hold_all`] (how the wire carries it).
    pub fn new(free: Range<usize>, margin: usize, latent_frames: usize) -> Result<Self, RepaintError> {
        if free == (latent_frames..latent_frames) && margin == 0 {
            return Ok(Self::hold_all(latent_frames));
        }
        if free.start >= free.end || free.end > latent_frames {
            return Err(RepaintError::Range {
                start: free.start,
                end: free.end,
                frames: latent_frames,
            });
        }
        Ok(RepaintMask {
            free,
            margin,
            latent_frames,
        })
    }

    /// A mask that keeps every frame of a clip of `latent_frames`: a take of a rerender that
    /// the range does not reach ([`crate::takes`]). No window runs the model; the take ends as
    /// the source's latents, bit for bit, and is decoded again.
    pub fn hold_all(latent_frames: usize) -> Self {
        RepaintMask {
            free: latent_frames..latent_frames,
            margin: 0,
            latent_frames,
        }
    }

    /// The weight of global latent frame `l`: how much of the model's update it keeps.
    pub fn weight(&self, l: usize) -> f32 {
        if l >= self.latent_frames || self.free.contains(&l) {
            return 1.0;
        }
        let d = if l < self.free.start {
            self.free.start - l
        } else {
            l + 1 - self.free.end
        };
        if d > self.margin {
            return 0.0;
        }
        // d = 1 is next to the free range, d = margin the farthest ramp frame.
        let t = 1.0 - d as f64 / (self.margin + 1) as f64;
        (t * t * (3.0 - 2.0 * t)) as f32
    }

    /// Latent frames whose weight is above 0 inside the clip: the range plus its margin.
    pub fn touched(&self) -> Range<usize> {
        self.free.start.saturating_sub(self.margin)..(self.free.end + self.margin).min(self.latent_frames)
    }

    /// Whether a window over `frames` runs the model (some frame of the clip in it has weight > 0).
    pub fn runs(&self, frames: &Range<usize>) -> bool {
        let t = self.touched();
        frames.start < t.end && t.start < frames.end
    }

    /// Replaces the kept part of a window's latents `x` (first global frame `first`, `frame_len`
    /// values per frame) by `known` re-noised to `sigma` with `noise`.
    pub fn apply(&self, first: usize, frame_len: usize, sigma: f32, known: &[f32], noise: &[f32], x: &mut [f32]) {
        assert!(
            x.len() == known.len() && x.len() == noise.len() && x.len().is_multiple_of(frame_len),
            "repaint: lengths differ"
        );
        let mut noised = vec![0.0f32; frame_len];
        for (f, xs) in x.chunks_exact_mut(frame_len).enumerate() {
            let m = self.weight(first + f);
            if m == 1.0 {
                continue;
            }
            let r = f * frame_len..(f + 1) * frame_len;
            if sigma == 0.0 {
                noised.copy_from_slice(&known[r]);
            } else {
                noise_to(sigma, &known[r.clone()], &noise[r], &mut noised);
            }
            if m == 0.0 {
                xs.copy_from_slice(&noised);
            } else {
                for (xv, &k) in xs.iter_mut().zip(&noised) {
                    *xv = m * *xv + (1.0 - m) * k;
                }
            }
        }
    }
}

/// The original job's final latents for one shard: clip frames `first..first + latents.frames`.
#[derive(Clone, Debug, PartialEq)]
pub struct KnownLatents {
    pub first: usize,
    pub latents: Latents,
}

impl KnownLatents {
    /// The clip's latent frames a shard running `windows` needs: its windows' frames up to the
    /// clip's end (the plan's padding past it was never kept).
    pub fn span(plan: &WindowPlan, windows: &Range<usize>) -> Range<usize> {
        plan.window_range(windows.start).start..plan.window_range(windows.end - 1).end.min(plan.latent_frames())
    }

    /// Window `k`'s known latents in `shape` (a window's), zero past the clip's end.
    pub fn window(&self, plan: &WindowPlan, k: usize, shape: LatentShape) -> Result<Latents, String> {
        let r = plan.window_range(k);
        let have = self.first..self.first + self.latents.shape().frames;
        let need = r.start..r.end.min(plan.latent_frames());
        if need.start < have.start || need.end > have.end || self.latents.shape().with_frames(shape.frames) != shape {
            return Err(format!(
                "known latents hold frames {have:?} of {:?}, but window {k} needs {need:?} of {shape:?}",
                self.latents.shape().with_frames(1),
            ));
        }
        let mut w = Latents::zeros(shape);
        w.write_frames(0, self.latents.frames(need.start - self.first..need.end - self.first));
        Ok(w)
    }
}

/// The latent frames holding output frames `frames` (causal temporal compression `c`: frame 0
/// is latent 0, frames `c·(l−1)+1 ..= c·l` are latent `l`).
pub fn latents_of_output(frames: Range<usize>, c: usize) -> Range<usize> {
    let latent = |f: usize| if f == 0 { 0 } else { (f - 1) / c + 1 };
    if frames.is_empty() {
        return latent(frames.start)..latent(frames.start);
    }
    latent(frames.start)..latent(frames.end - 1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_one_inside_zero_outside_and_ramp_across_the_margin() {
        let m = RepaintMask::new(10..14, 3, 30).unwrap();
        let w: Vec<f32> = (5..19).map(|l| m.weight(l)).collect();
        assert_eq!(&w[..2], &[0.0, 0.0]);
        assert!(w[2] > 0.0 && w[2] < w[3] && w[3] < w[4] && w[4] < 1.0, "{w:?}");
        assert!(w[5..9].iter().all(|&v| v == 1.0), "{w:?}");
        assert_eq!(w[9..12], [w[4], w[3], w[2]], "symmetric ramp");
        assert_eq!(&w[12..], &[0.0, 0.0]);
        assert_eq!(m.weight(30), 1.0, "padding is free");
        assert_eq!(m.touched(), 7..17);
        assert!(m.runs(&(0..8)) && m.runs(&(16..20)) && !m.runs(&(17..30)) && !m.runs(&(0..7)));
        assert!(!m.runs(&(30..40)), "padding alone never runs a window");
        assert!(RepaintMask::new(5..5, 1, 30).is_err() && RepaintMask::new(5..31, 1, 30).is_err());
        assert!(RepaintMask::new(30..30, 1, 30).is_err());
        assert_eq!(RepaintMask::new(30..30, 0, 30), Ok(RepaintMask::hold_all(30)));
        let all = RepaintMask::hold_all(30);
        assert!((0..30).all(|l| all.weight(l) == 0.0) && all.touched().is_empty());
    }

    #[test]
    fn kept_frames_become_the_known_latents_at_sigma_zero_bit_for_bit() {
        let m = RepaintMask::new(1..2, 1, 4).unwrap();
        let known = [-0.0f32, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        let noise = [9.0f32; 8];
        let mut x = [0.25f32; 8];
        m.apply(0, 2, 0.0, &known, &noise, &mut x);
        // Frame 3 is kept, frames 0 and 2 ramp (weight 0.5), frame 1 is free.
        assert_eq!(x[6].to_bits(), 6.0f32.to_bits());
        assert_eq!(x[7].to_bits(), 7.0f32.to_bits());
        assert_eq!(&x[2..4], &[0.25, 0.25]);
        assert_eq!(x[0], 0.5 * 0.25 + 0.5 * -0.0);
        let mut y = [0.25f32; 8];
        m.apply(0, 2, 0.5, &known, &noise, &mut y);
        assert_eq!(y[6], 0.5 * 6.0 + 0.5 * 9.0);
    }

    #[test]
    fn output_frames_map_to_the_latents_that_hold_them() {
        assert_eq!(latents_of_output(0..1, 4), 0..1);
        assert_eq!(latents_of_output(1..5, 4), 1..2);
        assert_eq!(latents_of_output(4..6, 4), 1..3);
        assert_eq!(latents_of_output(0..81, 4), 0..21);
    }
}
