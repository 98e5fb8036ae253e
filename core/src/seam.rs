//! Model-free seam metrics (docs/long-clips.md §6), on decoded frames or directly on latents.
//!
//! `d1(t) = mean|X_{t+1} − X_t|` and `d2(t) = mean|X_{t+1} − 2X_t + X_{t−1}|` (d2 cancels steady
//! motion). The seam jump ratio (SJR) of a zone is the max of d over the zone divided by the median
//! of d over reference positions 8–24 frames away; ≈1 means the seam cannot be seen. Placebo zones
//! at positions inside single windows calibrate what "≈1" is for a given clip. Ghosting compares the
//! spatial Laplacian variance (sharpness) in the zone with the reference: well below 1 means blending
//! blurred the seam.

use crate::plan::WindowPlan;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// How a frame's values are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameLayout {
    /// `[height, width, channels]` (decoded RGB).
    Hwc,
    /// `[channels, height, width]` (one latent frame).
    Chw,
}

/// A sequence of equally shaped frames.
#[derive(Clone, Debug)]
pub struct Clip<'a> {
    pub frames: Vec<&'a [f32]>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub layout: FrameLayout,
}

/// Zone margins and reference distances, in frames of the clip being measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeamGeometry {
    /// Frames added on either side of an overlap to form its zone.
    pub margin: usize,
    /// Reference positions lie `ref_near..=ref_far` frames away from the zone.
    pub ref_near: usize,
    pub ref_far: usize,
}

impl SeamGeometry {
    /// The spec's geometry for decoded frames.
    pub const FRAMES: SeamGeometry = SeamGeometry {
        margin: 2,
        ref_near: 8,
        ref_far: 24,
    };
    /// The same distances at 4× temporal compression, for latents.
    pub const LATENTS: SeamGeometry = SeamGeometry {
        margin: 0,
        ref_near: 2,
        ref_far: 6,
    };
}

/// `d1[t]` for the pair (t, t+1).
pub fn d1(clip: &Clip) -> Vec<f64> {
    clip.frames
        .windows(2)
        .map(|p| mean_abs(p[0].iter().zip(p[1]).map(|(a, b)| b - a)))
        .collect()
}

/// `d2[t−1]` for the triple centred on t (so index i is centred on frame i+1).
pub fn d2(clip: &Clip) -> Vec<f64> {
    clip.frames
        .windows(3)
        .map(|p| mean_abs(p[0].iter().zip(p[1]).zip(p[2]).map(|((a, b), c)| c - 2.0 * b + a)))
        .collect()
}

fn mean_abs(it: impl Iterator<Item = f32>) -> f64 {
    let (mut s, mut n) = (0.0f64, 0usize);
    for v in it {
        s += f64::from(v.abs());
        n += 1;
    }
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Reference positions `near..=far` away from `zone` (either side), inside `0..len`.
fn reference_positions(zone: &Range<usize>, len: usize, g: SeamGeometry) -> Vec<usize> {
    let mut out = Vec::new();
    for d in g.ref_near..=g.ref_far {
        if let Some(p) = zone.start.checked_sub(d) {
            out.push(p);
        }
        let p = zone.end + d - 1;
        if zone.end > 0 && p < len {
            out.push(p);
        }
    }
    out
}

/// SJR of `series` (indexed by position; `offset` = frame index of `series[0]`) over the frame
/// zone `zone`. `None` when the zone or its reference falls outside the clip, or the reference is 0.
pub fn jump_ratio(series: &[f64], offset: usize, zone: Range<usize>, g: SeamGeometry) -> Option<f64> {
    let to_idx = |p: usize| p.checked_sub(offset).filter(|&i| i < series.len());
    let zone_max = zone.clone().filter_map(to_idx).map(|i| series[i]).reduce(f64::max)?;
    let refs: Vec<f64> = reference_positions(&zone, offset + series.len(), g)
        .into_iter()
        .filter(|p| !zone.contains(p))
        .filter_map(to_idx)
        .map(|i| series[i])
        .collect();
    let r = median(refs)?;
    (r > 0.0).then_some(zone_max / r)
}

/// Mean over a frame of its per-channel spatial Laplacian variance (a sharpness measure).
pub fn laplacian_variance(frame: &[f32], clip: &Clip) -> f64 {
    let (c, h, w) = (clip.channels, clip.height, clip.width);
    let at = |ch: usize, y: usize, x: usize| match clip.layout {
        FrameLayout::Hwc => frame[(y * w + x) * c + ch],
        FrameLayout::Chw => frame[(ch * h + y) * w + x],
    };
    let mut total = 0.0;
    for ch in 0..c {
        let mut vals = Vec::with_capacity(h.saturating_sub(2) * w.saturating_sub(2));
        for y in 1..h.saturating_sub(1) {
            for x in 1..w.saturating_sub(1) {
                let l = at(ch, y - 1, x) + at(ch, y + 1, x) + at(ch, y, x - 1) + at(ch, y, x + 1) - 4.0 * at(ch, y, x);
                vals.push(f64::from(l));
            }
        }
        let n = vals.len().max(1) as f64;
        let mean = vals.iter().sum::<f64>() / n;
        total += vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    }
    total / c.max(1) as f64
}

/// Laplacian variance over the zone's frames / median over its reference frames.
pub fn ghosting_ratio(clip: &Clip, zone: Range<usize>, g: SeamGeometry) -> Option<f64> {
    let lv: Vec<f64> = clip.frames.iter().map(|f| laplacian_variance(f, clip)).collect();
    let z: Vec<f64> = zone.clone().filter(|&t| t < lv.len()).map(|t| lv[t]).collect();
    let zone_mean = if z.is_empty() {
        return None;
    } else {
        z.iter().sum::<f64>() / z.len() as f64
    };
    let r = median(
        reference_positions(&zone, lv.len(), g)
            .into_iter()
            .filter(|p| !zone.contains(p))
            .map(|p| lv[p])
            .collect(),
    )?;
    (r > 0.0).then_some(zone_mean / r)
}

/// Scores of one zone (a seam or a placebo).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZoneScore {
    pub zone: Range<usize>,
    pub sjr_d1: Option<f64>,
    pub sjr_d2: Option<f64>,
    pub ghosting: Option<f64>,
}

/// Scores `zones` of `clip`.
pub fn score_zones(clip: &Clip, zones: &[Range<usize>], g: SeamGeometry) -> Vec<ZoneScore> {
    let (s1, s2) = (d1(clip), d2(clip));
    zones
        .iter()
        .map(|z| ZoneScore {
            zone: z.clone(),
            sjr_d1: jump_ratio(&s1, 0, z.clone(), g),
            sjr_d2: jump_ratio(&s2, 1, z.clone(), g),
            ghosting: ghosting_ratio(clip, z.clone(), g),
        })
        .collect()
}

/// Median and maximum of the defined values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub max: f64,
    pub count: usize,
}

pub fn summarize(values: impl Iterator<Item = Option<f64>>) -> Summary {
    let v: Vec<f64> = values.flatten().collect();
    let max = v.iter().copied().fold(f64::NAN, f64::max);
    Summary {
        count: v.len(),
        max,
        median: median(v).unwrap_or(f64::NAN),
    }
}

/// Output-frame index range of latent frames `latent` (causal temporal compression `c`: latent 0
/// gives frame 0, latent l ≥ 1 gives frames c·(l−1)+1 ..= c·l).
pub fn output_frames_of(latent: Range<usize>, c: usize) -> Range<usize> {
    let first = |l: usize| if l == 0 { 0 } else { c * (l - 1) + 1 };
    first(latent.start)..first(latent.end)
}

/// Seam zones of a plan: each overlap (in latent frames, or output frames when `compression` is
/// `Some(c)`), widened by the geometry's margin and clipped to `len` frames.
pub fn seam_zones(plan: &WindowPlan, compression: Option<usize>, len: usize, g: SeamGeometry) -> Vec<Range<usize>> {
    (0..plan.windows().saturating_sub(1))
        .map(|k| {
            let ov = plan.window_range(k + 1).start..plan.window_range(k).end;
            let z = compression.map_or(ov.clone(), |c| output_frames_of(ov, c));
            z.start.saturating_sub(g.margin)..(z.end + g.margin).min(len)
        })
        .filter(|z| z.start < z.end && z.end <= len)
        .collect()
}

/// Placebo zones: same width as the seam zones, centred at points strictly inside single windows
/// (away from every overlap), at deterministic pseudo-random offsets (`seed`).
pub fn placebo_zones(
    plan: &WindowPlan,
    compression: Option<usize>,
    len: usize,
    g: SeamGeometry,
    seed: u64,
) -> Vec<Range<usize>> {
    let width = seam_zones(plan, compression, len, g)
        .first()
        .map_or(plan.overlap() + 2 * g.margin, |z| z.len());
    let map = |l: usize| compression.map_or(l, |c| output_frames_of(0..l, c).end);
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::new();
    for k in 0..plan.windows() {
        // Interior of window k: frames not shared with a neighbour.
        let r = plan.window_range(k);
        let lo = if k == 0 { r.start } else { r.start + plan.overlap() };
        let hi = if k + 1 == plan.windows() {
            r.end
        } else {
            r.end - plan.overlap()
        };
        let (lo, hi) = (map(lo) + width / 2, map(hi).min(len).saturating_sub(width - width / 2));
        if lo >= hi {
            continue;
        }
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let centre = lo + ((state >> 33) as usize) % (hi - lo);
        out.push(centre - width / 2..centre - width / 2 + width);
    }
    out
}

/// δ = ‖a − b‖ / mean(‖a‖, ‖b‖): the disagreement of two windows' velocities on an overlap.
pub fn overlap_disagreement(a: &[f32], b: &[f32]) -> f64 {
    let (mut diff, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        diff += f64::from(x - y).powi(2);
        na += f64::from(x).powi(2);
        nb += f64::from(y).powi(2);
    }
    let denom = (na.sqrt() + nb.sqrt()) / 2.0;
    if denom > 0.0 {
        diff.sqrt() / denom
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip_of(frames: &[Vec<f32>]) -> Clip<'_> {
        Clip {
            frames: frames.iter().map(|f| f.as_slice()).collect(),
            channels: 1,
            height: 1,
            width: frames[0].len(),
            layout: FrameLayout::Chw,
        }
    }

    #[test]
    fn steady_motion_has_unit_ratio_and_a_jump_does_not() {
        // A linear ramp in time: d1 constant, d2 zero.
        let frames: Vec<Vec<f32>> = (0..80).map(|t| vec![t as f32 * 0.01; 4]).collect();
        let c = clip_of(&frames);
        let s1 = d1(&c);
        assert!((jump_ratio(&s1, 0, 38..44, SeamGeometry::FRAMES).unwrap() - 1.0).abs() < 1e-3);
        assert!(d2(&c).iter().all(|&v| v < 1e-6));
        // Add a cut of 0.2 at frame 40.
        let cut: Vec<Vec<f32>> = frames
            .iter()
            .enumerate()
            .map(|(t, f)| f.iter().map(|v| v + if t >= 40 { 0.2 } else { 0.0 }).collect())
            .collect();
        let r = jump_ratio(&d1(&clip_of(&cut)), 0, 38..44, SeamGeometry::FRAMES).unwrap();
        assert!((r - 21.0).abs() < 2e-2, "ratio {r}");
    }

    #[test]
    fn zones_follow_the_plan() {
        let plan = WindowPlan::new(30, 21, 5).unwrap();
        assert_eq!(plan.windows(), 2);
        // Overlap latent frames 16..21 → output frames 61..81, widened by 2.
        assert_eq!(output_frames_of(16..21, 4), 61..81);
        let z = seam_zones(&plan, Some(4), 117, SeamGeometry::FRAMES);
        assert_eq!(z, vec![59..83]);
        let p = placebo_zones(&plan, Some(4), 117, SeamGeometry::FRAMES, 1);
        assert_eq!(p.len(), 2);
        for zone in &p {
            assert_eq!(zone.len(), 24);
            assert!(
                zone.end <= 61 || zone.start >= 81,
                "placebo {zone:?} touches the overlap"
            );
        }
    }

    #[test]
    fn ghosting_sees_blur() {
        let sharp: Vec<f32> = (0..64)
            .map(|i| if (i / 8 + i % 8) % 2 == 0 { 1.0 } else { 0.0 })
            .collect();
        let blurred: Vec<f32> = sharp.iter().map(|v| 0.25 + 0.5 * v).collect();
        let frames: Vec<Vec<f32>> = (0..60)
            .map(|t| {
                if (28..32).contains(&t) {
                    blurred.clone()
                } else {
                    sharp.clone()
                }
            })
            .collect();
        let clip = Clip {
            frames: frames.iter().map(|f| f.as_slice()).collect(),
            channels: 1,
            height: 8,
            width: 8,
            layout: FrameLayout::Chw,
        };
        let g = ghosting_ratio(&clip, 28..32, SeamGeometry::FRAMES).unwrap();
        assert!((g - 0.25).abs() < 1e-9, "ghosting {g}");
        assert!((overlap_disagreement(&[1.0, 0.0], &[1.0, 0.0])).abs() < 1e-12);
        assert!((overlap_disagreement(&[1.0, 0.0], &[0.0, 1.0]) - 2f64.sqrt()).abs() < 1e-12);
    }
}
