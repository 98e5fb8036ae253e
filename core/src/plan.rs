//! The window grid on the global latent timeline (docs/long-clips.md §1).
//!
//! A pure function of (latent frames L, window W, overlap O): the number of workers never changes
//! the grid, only which worker runs which windows. That is the first half of bit-identity across
//! cluster sizes.

use serde::{Deserialize, Serialize};
use std::ops::Range;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("latent_frames must be at least 1")]
    NoFrames,
    #[error("window must be at least 2 latent frames, got {0}")]
    WindowTooSmall(usize),
    #[error("overlap {overlap} is too large for window {window}: allowed 0..={max} (at most half the window)")]
    OverlapTooLarge { overlap: usize, window: usize, max: usize },
    #[error("workers must be at least 1")]
    NoWorkers,
    #[error("window range end {end} is past the plan's {windows} windows: allowed 1..={windows}")]
    WindowsPastEnd { end: usize, windows: usize },
    #[error("window range {start}..{end} is empty: a shard runs at least one window")]
    NoWindows { start: usize, end: usize },
}

/// Overlapping windows of `window` latent frames with stride `window − overlap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WindowPlan {
    latent_frames: usize,
    window: usize,
    overlap: usize,
    windows: usize,
}

impl WindowPlan {
    pub fn new(latent_frames: usize, window: usize, overlap: usize) -> Result<Self, PlanError> {
        if latent_frames == 0 {
            return Err(PlanError::NoFrames);
        }
        if window < 2 {
            return Err(PlanError::WindowTooSmall(window));
        }
        // O ≤ W/2 keeps every frame in at most two windows.
        if overlap > window / 2 {
            return Err(PlanError::OverlapTooLarge {
                overlap,
                window,
                max: window / 2,
            });
        }
        let stride = window - overlap;
        let windows = if latent_frames <= window {
            1
        } else {
            (latent_frames - window).div_ceil(stride) + 1
        };
        Ok(Self {
            latent_frames,
            window,
            overlap,
            windows,
        })
    }

    /// Real latent frames of the clip (before padding).
    pub fn latent_frames(&self) -> usize {
        self.latent_frames
    }
    pub fn window(&self) -> usize {
        self.window
    }
    pub fn overlap(&self) -> usize {
        self.overlap
    }
    pub fn stride(&self) -> usize {
        self.window - self.overlap
    }
    pub fn windows(&self) -> usize {
        self.windows
    }
    /// Frames actually denoised: `W + (n−1)·S ≥ L`; the tail beyond L is trimmed after decoding.
    pub fn padded_frames(&self) -> usize {
        self.window + (self.windows - 1) * self.stride()
    }

    /// Global latent frames of window `k`.
    pub fn window_range(&self, k: usize) -> Range<usize> {
        let start = k * self.stride();
        start..start + self.window
    }

    /// Boundary between the frames owned by window `k` and window `k+1`: the middle of their
    /// overlap (the left window owns the first ⌊O/2⌋ overlap frames).
    fn owner_split(&self, k: usize) -> usize {
        (k + 1) * self.stride() + self.overlap / 2
    }

    /// Global latent frames window `k` owns for decoding, trimmed to the real clip (may be empty
    /// only for a padding-only tail, which the grid never produces).
    pub fn owned_range(&self, k: usize) -> Range<usize> {
        let start = if k == 0 { 0 } else { self.owner_split(k - 1) };
        let end = if k + 1 == self.windows {
            self.padded_frames()
        } else {
            self.owner_split(k)
        };
        start.min(self.latent_frames)..end.min(self.latent_frames)
    }

    /// The window that owns global latent frame `f`.
    pub fn owner_of(&self, f: usize) -> usize {
        (0..self.windows)
            .find(|&k| self.owned_range(k).contains(&f))
            .unwrap_or(self.windows - 1)
    }

    /// Checks that `windows` is a non-empty range of this plan's windows: the one definition of
    /// a valid shard, used where an assignment arrives and by the co-denoising loop.
    pub fn check_windows(&self, windows: &Range<usize>) -> Result<(), PlanError> {
        if windows.end > self.windows {
            return Err(PlanError::WindowsPastEnd {
                end: windows.end,
                windows: self.windows,
            });
        }
        if windows.is_empty() {
            return Err(PlanError::NoWindows {
                start: windows.start,
                end: windows.end,
            });
        }
        Ok(())
    }

    /// Contiguous window ranges for `workers` workers, balanced to within one window; workers
    /// beyond the window count get nothing (fewer ranges are returned).
    pub fn assign(&self, workers: usize) -> Result<Vec<Range<usize>>, PlanError> {
        if workers == 0 {
            return Err(PlanError::NoWorkers);
        }
        let parts = workers.min(self.windows);
        let (base, extra) = (self.windows / parts, self.windows % parts);
        let mut start = 0;
        Ok((0..parts)
            .map(|i| {
                let len = base + usize::from(i < extra);
                let r = start..start + len;
                start += len;
                r
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wan_sized_example() {
        // 60 s at 16 fps: 961 frames → 241 latent frames; W=21, O=5, S=16.
        let p = WindowPlan::new(241, 21, 5).unwrap();
        assert_eq!(p.windows(), 15);
        assert_eq!(p.padded_frames(), 245);
        assert_eq!(p.window_range(1), 16..37);
        assert_eq!(p.owned_range(0), 0..18);
        assert_eq!(p.owned_range(1), 18..34);
        assert_eq!(p.owned_range(14), 226..241);
        assert_eq!(p.owner_of(17), 0);
        assert_eq!(p.owner_of(18), 1);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert_eq!(WindowPlan::new(0, 21, 5), Err(PlanError::NoFrames));
        assert_eq!(WindowPlan::new(10, 1, 0), Err(PlanError::WindowTooSmall(1)));
        assert_eq!(
            WindowPlan::new(100, 21, 11),
            Err(PlanError::OverlapTooLarge {
                overlap: 11,
                window: 21,
                max: 10
            })
        );
        assert_eq!(WindowPlan::new(10, 4, 2).unwrap().assign(0), Err(PlanError::NoWorkers));
    }

    #[test]
    fn short_clip_is_one_padded_window() {
        let p = WindowPlan::new(7, 21, 5).unwrap();
        assert_eq!((p.windows(), p.padded_frames()), (1, 21));
        assert_eq!(p.owned_range(0), 0..7);
    }

    proptest! {
        #[test]
        fn plan_properties(l in 1usize..400, w in 2usize..40, o_frac in 0.0f64..=1.0, workers in 1usize..12) {
            let o = ((w / 2) as f64 * o_frac).floor() as usize;
            let p = WindowPlan::new(l, w, o).unwrap();
            let s = p.stride();
            // Coverage: the padded grid covers the clip, and no fewer windows would.
            prop_assert!(p.padded_frames() >= l);
            prop_assert!(p.windows() == 1 || p.padded_frames() - s < l);
            prop_assert_eq!(p.window_range(p.windows() - 1).end, p.padded_frames());
            // Neighbours overlap by exactly O; every frame lies in at most two windows.
            for k in 1..p.windows() {
                let (a, b) = (p.window_range(k - 1), p.window_range(k));
                prop_assert_eq!(a.end - b.start, o);
            }
            for f in 0..p.padded_frames() {
                let n = (0..p.windows()).filter(|&k| p.window_range(k).contains(&f)).count();
                prop_assert!((1..=2).contains(&n));
            }
            // Ownership partitions 0..L, in order, and each window owns frames inside itself.
            let mut next = 0;
            for k in 0..p.windows() {
                let r = p.owned_range(k);
                prop_assert_eq!(r.start, next);
                if !r.is_empty() {
                    prop_assert!(p.window_range(k).start <= r.start && r.end <= p.window_range(k).end);
                }
                next = r.end;
            }
            prop_assert_eq!(next, l);
            // Assignment covers every window exactly once, contiguously and balanced.
            let a = p.assign(workers).unwrap();
            prop_assert_eq!(a.len(), workers.min(p.windows()));
            prop_assert_eq!(a[0].start, 0);
            prop_assert_eq!(a.last().unwrap().end, p.windows());
            for pair in a.windows(2) {
                prop_assert_eq!(pair[0].end, pair[1].start);
            }
            let sizes: Vec<usize> = a.iter().map(|r| r.len()).collect();
            prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            prop_assert!(sizes.iter().all(|&n| n >= 1));
        }
    }
}
