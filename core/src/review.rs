//! QC review of a finished clip (`longshot review`): what a reviewer checks before publishing it
//! (a visible seam, flicker, frozen, black or white frames, non-finite latents, the wrong length
//! or frame rate), measured on its decoded frames, with a checklist verdict and a contact sheet.
//! Pure: small frames in (the CLI decodes them at most [`ANALYSIS_WIDTH`] wide: every check here
//! reads brightness and frame-to-frame change, which survive a box downscale), a report out.

use crate::seam::{jump_ratio, summarize, SeamGeometry, Summary};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Frames are analysed (and shown on the contact sheet) at most this wide.
pub const ANALYSIS_WIDTH: u32 = 160;
/// A seam fails when its jump ratio (of the second difference, which cancels steady motion and
/// a blend's steady change of content) exceeds both this and [`SEAM_OVER_PLACEBO`] × the largest
/// placebo ratio (positions inside single windows: what "no seam" measures on this clip, codec
/// noise included).
pub const SEAM_FLOOR: f64 = 3.0;
pub const SEAM_OVER_PLACEBO: f64 = 1.5;
/// A shot flickers when its mean brightness's second difference averages over this (8-bit levels).
pub const FLICKER_LIMIT: f64 = 2.0;
/// Two frames whose mean absolute difference is under this (8-bit levels) are the same picture.
pub const FROZEN_DIFF: f64 = 0.25;
/// A frozen run this many seconds long fails.
pub const FROZEN_SECONDS: f64 = 0.5;
/// Mean luma (Rec. 601, 8-bit) under which a frame is black, over which it is white.
pub const BLACK_LUMA: f64 = 12.0;
pub const WHITE_LUMA: f64 = 243.0;

/// Decoded frames, `[frame][y][x][rgb]` 8-bit.
#[derive(Clone, Copy, Debug)]
pub struct Frames<'a> {
    pub rgb: &'a [u8],
    pub width: usize,
    pub height: usize,
}

impl Frames<'_> {
    pub fn count(&self) -> usize {
        self.rgb.len() / (self.width * self.height * 3).max(1)
    }

    pub fn frame(&self, i: usize) -> &[u8] {
        let n = self.width * self.height * 3;
        &self.rgb[i * n..(i + 1) * n]
    }
}

/// What the clip was asked to be, and where its structure lies (output frames).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layout {
    pub frames: u32,
    pub fps: u32,
    pub shots: Vec<ShotSpan>,
    /// Each window overlap's zone, with its take.
    pub seams: Vec<(usize, Range<usize>)>,
    /// Placebo zones (inside single windows), same width as the seams.
    pub placebos: Vec<Range<usize>>,
    /// First frames of takes after the first (hard cuts).
    pub cuts: Vec<usize>,
    /// Frames where a shot blends into the next (its content is meant to change there).
    pub blends: Vec<Range<usize>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ShotSpan {
    pub frames: Range<usize>,
    pub prompt: String,
}

/// One line of the checklist: `passed` is `None` when it could not be checked (`detail` says why).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: Option<bool>,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeamScore {
    pub take: usize,
    pub frames: Range<usize>,
    /// Jump ratio of the second difference; `None` when the clip is too short around it (or
    /// too still to have a reference).
    pub sjr: Option<f64>,
    /// It overlaps a shot blend: the content is meant to change there, so its ratio is shown,
    /// not judged.
    pub in_blend: bool,
    pub passed: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CutScore {
    pub frame: usize,
    /// Jump ratio of the frame-to-frame change into `frame`.
    pub sjr: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShotScore {
    pub index: usize,
    pub frames: Range<usize>,
    pub prompt: String,
    pub mean_luma: f64,
    pub flicker: f64,
    /// Longest run of identical frames, in frames (1: none repeated).
    pub longest_frozen: usize,
    pub black_frames: usize,
    pub white_frames: usize,
    /// Output frames whose latents hold NaN or infinity (`None`: no latents to read).
    pub nonfinite_frames: Option<usize>,
}

/// The whole review.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Review {
    /// Every checked line passed.
    pub passed: bool,
    pub checks: Vec<Check>,
    pub frames: usize,
    pub frames_requested: u32,
    pub fps: Option<f64>,
    pub fps_requested: u32,
    pub seconds: f64,
    pub seams: Vec<SeamScore>,
    /// Jump ratios at the placebo positions.
    pub placebo: Summary,
    /// A seam passes at or under this ratio.
    pub seam_limit: f64,
    pub cuts: Vec<CutScore>,
    pub shots: Vec<ShotScore>,
}

/// `frames` box-downscaled by the smallest whole factor that brings them to at most `max_width`
/// wide: the frames, their width and height.
pub fn downscale(frames: &Frames, max_width: usize) -> (Vec<u8>, usize, usize) {
    let (w, h) = (frames.width, frames.height);
    let k = w.div_ceil(max_width.max(1)).max(1);
    if k == 1 {
        return (frames.rgb.to_vec(), w, h);
    }
    let (ow, oh) = ((w / k).max(1), (h / k).max(1));
    let mut out = Vec::with_capacity(frames.count() * ow * oh * 3);
    for i in 0..frames.count() {
        let f = frames.frame(i);
        for y in 0..oh {
            for x in 0..ow {
                let mut sum = [0u32; 3];
                let ys = y * k..((y + 1) * k).min(h);
                let xs = x * k..((x + 1) * k).min(w);
                let n = (ys.len() * xs.len()) as u32;
                for sy in ys {
                    for sx in xs.clone() {
                        let p = (sy * w + sx) * 3;
                        (0..3).for_each(|c| sum[c] += u32::from(f[p + c]));
                    }
                }
                out.extend(sum.iter().map(|s| ((s + n / 2) / n) as u8));
            }
        }
    }
    (out, ow, oh)
}

/// Mean luma of each frame (Rec. 601, 8-bit levels).
pub fn luma_means(f: &Frames) -> Vec<f64> {
    (0..f.count())
        .map(|i| {
            let px = f.frame(i).chunks_exact(3);
            let n = px.len().max(1) as f64;
            px.map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
                .sum::<f64>()
                / n
        })
        .collect()
}

/// Mean absolute difference of each consecutive pair (8-bit levels): `d1[t]` for (t, t+1).
pub fn frame_diffs(f: &Frames) -> Vec<f64> {
    (1..f.count())
        .map(|i| {
            let (a, b) = (f.frame(i - 1), f.frame(i));
            a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u64).sum::<u64>() as f64 / a.len().max(1) as f64
        })
        .collect()
}

/// Mean absolute second difference of each triple (8-bit levels): `d2[t−1]` centred on frame t.
pub fn frame_second_diffs(f: &Frames) -> Vec<f64> {
    (2..f.count())
        .map(|i| {
            let (a, b, c) = (f.frame(i - 2), f.frame(i - 1), f.frame(i));
            let sum: i64 = (0..a.len())
                .map(|k| (i64::from(c[k]) - 2 * i64::from(b[k]) + i64::from(a[k])).abs())
                .sum();
            sum as f64 / a.len().max(1) as f64
        })
        .collect()
}

/// How the clip was stored: its container's frame rate (`None`: a PNG sequence, which has none)
/// and its keyframes (a codec's quality steps there, which are not the clip's).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stored {
    pub fps: Option<f64>,
    pub keyframes: Vec<usize>,
}

/// Reviews `frames` against `layout`; `nonfinite`: output frames whose latents are not finite
/// (`None` without latents).
pub fn review(frames: &Frames, layout: &Layout, stored: &Stored, nonfinite: Option<&[usize]>) -> Review {
    let fps = stored.fps;
    let n = frames.count();
    let luma = luma_means(frames);
    let diffs = frame_diffs(frames);
    let second = without_keyframes(frame_second_diffs(frames), &stored.keyframes);
    let g = SeamGeometry::FRAMES;
    let placebo = summarize(layout.placebos.iter().map(|z| jump_ratio(&second, 1, z.clone(), g)));
    let seam_limit = if placebo.count > 0 {
        SEAM_FLOOR.max(SEAM_OVER_PLACEBO * placebo.max)
    } else {
        SEAM_FLOOR
    };
    let seams: Vec<SeamScore> = layout
        .seams
        .iter()
        .map(|(take, z)| {
            let sjr = jump_ratio(&second, 1, z.clone(), g);
            let in_blend = layout.blends.iter().any(|b| b.start < z.end && z.start < b.end);
            SeamScore {
                take: *take,
                frames: z.clone(),
                sjr,
                in_blend,
                passed: in_blend || sjr.is_none_or(|r| r <= seam_limit),
            }
        })
        .collect();
    let cuts = layout
        .cuts
        .iter()
        .map(|&c| CutScore {
            frame: c,
            sjr: jump_ratio(&diffs, 0, c.saturating_sub(1)..c, g),
        })
        .collect();
    let rate = f64::from(layout.fps.max(1));
    let shots: Vec<ShotScore> = layout
        .shots
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let r = s.frames.start.min(n)..s.frames.end.min(n);
            let l = &luma[r.clone()];
            let second: Vec<f64> = l.windows(3).map(|w| (w[2] - 2.0 * w[1] + w[0]).abs()).collect();
            ShotScore {
                index,
                frames: s.frames.clone(),
                prompt: s.prompt.clone(),
                mean_luma: l.iter().sum::<f64>() / l.len().max(1) as f64,
                flicker: second.iter().sum::<f64>() / second.len().max(1) as f64,
                longest_frozen: longest_frozen(&diffs, r.clone()),
                black_frames: l.iter().filter(|&&v| v < BLACK_LUMA).count(),
                white_frames: l.iter().filter(|&&v| v > WHITE_LUMA).count(),
                nonfinite_frames: nonfinite.map(|bad| bad.iter().filter(|f| r.contains(f)).count()),
            }
        })
        .collect();
    let checks = vec![
        length_check(n, layout, fps),
        seam_check(&seams, &placebo, seam_limit),
        shot_check(
            "flicker",
            &shots,
            |s| s.flicker <= FLICKER_LIMIT,
            |s| format!("{:.2}", s.flicker),
            format!("mean |Δ² brightness| per shot at most {FLICKER_LIMIT} levels"),
        ),
        shot_check(
            "frozen frames",
            &shots,
            |s| (s.longest_frozen as f64) < FROZEN_SECONDS * rate,
            |s| format!("{} frames", s.longest_frozen),
            format!("no run of identical frames {FROZEN_SECONDS} s or longer"),
        ),
        shot_check(
            "black or white frames",
            &shots,
            |s| s.black_frames == 0 && s.white_frames == 0,
            |s| format!("{} black, {} white", s.black_frames, s.white_frames),
            format!("no frame with mean luma under {BLACK_LUMA} or over {WHITE_LUMA}"),
        ),
        match nonfinite {
            None => Check {
                name: "finite latents".into(),
                passed: None,
                detail: "not checked: the job kept no latents (render with --format mp4,latents)".into(),
            },
            Some(bad) => Check {
                name: "finite latents".into(),
                passed: Some(bad.is_empty()),
                detail: match bad.first() {
                    None => "every latent value is finite".into(),
                    Some(f) => format!(
                        "{} output frames come from NaN or infinite latents, from frame {f}",
                        bad.len()
                    ),
                },
            },
        },
    ];
    Review {
        passed: checks.iter().all(|c| c.passed != Some(false)),
        checks,
        frames: n,
        frames_requested: layout.frames,
        fps,
        fps_requested: layout.fps,
        seconds: n as f64 / fps.unwrap_or(rate),
        seams,
        placebo,
        seam_limit,
        cuts,
        shots,
    }
}

/// `d2` with the values whose triple spans a keyframe (centred on the frame before it or on it)
/// replaced by the nearest other value: a codec refreshes the picture at a keyframe, a step that
/// is the encoder's, not the clip's.
fn without_keyframes(mut d2: Vec<f64>, keyframes: &[usize]) -> Vec<f64> {
    let masked: Vec<bool> = (0..d2.len())
        .map(|i| keyframes.iter().any(|&k| k > 0 && (i + 1 == k || i + 2 == k)))
        .collect();
    let kept: Vec<usize> = (0..d2.len()).filter(|&i| !masked[i]).collect();
    for i in (0..d2.len()).filter(|&i| masked[i]) {
        if let Some(&j) = kept.iter().min_by_key(|&&j| j.abs_diff(i)) {
            d2[i] = d2[j];
        }
    }
    d2
}

/// Longest run of identical frames within `frames` (pairs whose difference is under [`FROZEN_DIFF`]).
fn longest_frozen(diffs: &[f64], frames: Range<usize>) -> usize {
    let (mut best, mut run) = (1, 1);
    for t in frames.start..frames.end.saturating_sub(1) {
        run = if diffs.get(t).is_some_and(|&d| d < FROZEN_DIFF) {
            run + 1
        } else {
            1
        };
        best = best.max(run);
    }
    best
}

fn length_check(n: usize, layout: &Layout, fps: Option<f64>) -> Check {
    let frames_ok = n == layout.frames as usize;
    let fps_ok = fps.is_none_or(|f| (f - f64::from(layout.fps)).abs() < 0.01);
    let got = match fps {
        Some(f) => format!("{n} frames at {f:.3} fps"),
        None => format!("{n} frames (a PNG sequence: no frame rate to read)"),
    };
    Check {
        name: "length and frame rate".into(),
        passed: Some(frames_ok && fps_ok),
        detail: format!("{got}; asked for {} frames at {} fps", layout.frames, layout.fps),
    }
}

fn seam_check(seams: &[SeamScore], placebo: &Summary, limit: f64) -> Check {
    let measured: Vec<f64> = seams.iter().filter_map(|s| s.sjr).collect();
    let detail = if seams.is_empty() {
        "no window seams (one window per take)".to_string()
    } else {
        let worst = measured.iter().copied().fold(f64::NAN, f64::max);
        let unmeasured = seams.len() - measured.len();
        let blended = seams.iter().filter(|s| s.in_blend).count();
        format!(
            "{} seam{}, largest jump ratio {worst:.2} (limit {limit:.2}; placebo median {:.2}, max {:.2}){}{}",
            seams.len(),
            if seams.len() == 1 { "" } else { "s" },
            placebo.median,
            placebo.max,
            match unmeasured {
                0 => String::new(),
                u => format!("; {u} too near the clip's ends to measure"),
            },
            match blended {
                0 => String::new(),
                b => format!("; {b} in a shot blend, shown, not judged"),
            }
        )
    };
    Check {
        name: "seams".into(),
        passed: Some(seams.iter().all(|s| s.passed)),
        detail,
    }
}

fn shot_check(
    name: &str,
    shots: &[ShotScore],
    ok: impl Fn(&ShotScore) -> bool,
    show: impl Fn(&ShotScore) -> String,
    rule: String,
) -> Check {
    let bad: Vec<String> = shots
        .iter()
        .filter(|s| !ok(s))
        .map(|s| format!("shot {} ({})", s.index + 1, show(s)))
        .collect();
    Check {
        name: name.into(),
        passed: Some(bad.is_empty()),
        detail: match bad.is_empty() {
            true => rule,
            false => format!("{rule}: failed by {}", bad.join(", ")),
        },
    }
}

/// How a thumbnail's left edge is marked: a shot change inside the frames since the previous
/// thumbnail (a blend), or a cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mark {
    Shot,
    Cut,
}

/// A contact sheet: one thumbnail per `every` frames, `columns` to a row.
#[derive(Clone, Debug, PartialEq)]
pub struct ContactSheet {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    /// Each thumbnail's frame index and mark.
    pub thumbnails: Vec<(usize, Option<Mark>)>,
}

pub const SHEET_GAP: usize = 4;
const BACKGROUND: [u8; 3] = [24, 24, 24];
const MARK_WIDTH: usize = 4;

impl Mark {
    pub fn colour(self) -> [u8; 3] {
        match self {
            Mark::Shot => [255, 170, 0],
            Mark::Cut => [230, 30, 30],
        }
    }
}

/// Lays out `frames` every `every` frames; a shot start (in `layout`) since the previous
/// thumbnail marks the next one (a cut in red, a blended change in orange).
pub fn contact_sheet(frames: &Frames, layout: &Layout, every: usize, columns: usize) -> ContactSheet {
    let every = every.max(1);
    let (w, h) = (frames.width, frames.height);
    let shown: Vec<usize> = (0..frames.count()).step_by(every).collect();
    let columns = columns.clamp(1, shown.len().max(1));
    let rows = shown.len().div_ceil(columns);
    let (sw, sh) = (
        columns * (w + SHEET_GAP) + SHEET_GAP,
        rows * (h + SHEET_GAP) + SHEET_GAP,
    );
    let mut rgb: Vec<u8> = BACKGROUND.iter().copied().cycle().take(sw * sh * 3).collect();
    let mut thumbnails = Vec::new();
    for (k, &f) in shown.iter().enumerate() {
        let since = if k == 0 { 0..1 } else { shown[k - 1] + 1..f + 1 };
        let starts = layout.shots.iter().skip(1).map(|s| s.frames.start);
        let mark = if layout.cuts.iter().any(|c| since.contains(c)) {
            Some(Mark::Cut)
        } else if starts.into_iter().any(|s| since.contains(&s)) {
            Some(Mark::Shot)
        } else {
            None
        };
        let (x0, y0) = (
            SHEET_GAP + (k % columns) * (w + SHEET_GAP),
            SHEET_GAP + (k / columns) * (h + SHEET_GAP),
        );
        let src = frames.frame(f);
        for y in 0..h {
            let row = &src[y * w * 3..(y + 1) * w * 3];
            let at = ((y0 + y) * sw + x0) * 3;
            rgb[at..at + w * 3].copy_from_slice(row);
            if let Some(m) = mark {
                for x in 0..MARK_WIDTH.min(w) {
                    rgb[at + x * 3..at + x * 3 + 3].copy_from_slice(&m.colour());
                }
            }
        }
        thumbnails.push((f, mark));
    }
    ContactSheet {
        width: sw,
        height: sh,
        rgb,
        thumbnails,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` frames of 8×6: a steady fade (level 60 + t) with a little fixed-pattern noise per
    /// frame, so nothing freezes, flickers or jumps, and the differences have a reference.
    fn smooth(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|t| (0..8 * 6 * 3).map(move |p| 60 + t as u8 + ((t * 7 + p * 13) % 5) as u8))
            .collect()
    }

    fn layout(n: usize) -> Layout {
        Layout {
            frames: n as u32,
            fps: 16,
            shots: vec![
                ShotSpan {
                    frames: 0..n / 2,
                    prompt: "a".into(),
                },
                ShotSpan {
                    frames: n / 2..n,
                    prompt: "b".into(),
                },
            ],
            seams: vec![(0, 38..46)],
            placebos: vec![(16..24), (60..68)],
            cuts: Vec::new(),
            blends: Vec::new(),
        }
    }

    fn frames(rgb: &[u8]) -> Frames<'_> {
        Frames {
            rgb,
            width: 8,
            height: 6,
        }
    }

    fn at(fps: f64) -> Stored {
        Stored {
            fps: Some(fps),
            keyframes: Vec::new(),
        }
    }

    fn check<'a>(r: &'a Review, name: &str) -> &'a Check {
        r.checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn a_clean_clip_passes_every_check() {
        let rgb = smooth(81);
        let r = review(&frames(&rgb), &layout(81), &at(16.0), Some(&[]));
        assert!(r.passed, "{r:#?}");
        assert_eq!((r.frames, r.seams.len(), r.shots.len()), (81, 1, 2));
        assert!(r.checks.iter().all(|c| c.passed == Some(true)), "{:#?}", r.checks);
    }

    #[test]
    fn each_failure_is_caught_and_named() {
        let n = 81;
        let frame = 8 * 6 * 3;
        let l = layout(n);
        // A seam jump: frames 42.. brighter by 40.
        let mut jump = smooth(n);
        jump[42 * frame..].iter_mut().for_each(|v| *v += 40);
        let r = review(&frames(&jump), &l, &at(16.0), None);
        assert_eq!(check(&r, "seams").passed, Some(false), "{r:#?}");
        assert!(!r.passed);
        // The same jump inside a shot blend is shown, not judged.
        let blended = Layout {
            blends: std::iter::once(36..52).collect(),
            ..l.clone()
        };
        let r = review(&frames(&jump), &blended, &at(16.0), None);
        let c = check(&r, "seams");
        assert_eq!(c.passed, Some(true));
        assert!(
            c.detail.ends_with("; 1 in a shot blend, shown, not judged"),
            "{}",
            c.detail
        );
        assert!(r.seams[0].in_blend && r.seams[0].sjr.unwrap() > 10.0, "{r:#?}");
        // A keyframe's refresh step is the codec's: the same jump at a keyframe is masked.
        let keyed = Stored {
            fps: Some(16.0),
            keyframes: vec![0, 42],
        };
        let r = review(&frames(&jump), &l, &keyed, None);
        assert_eq!(check(&r, "seams").passed, Some(true), "{r:#?}");
        assert_eq!(check(&r, "finite latents").passed, None);
        // Frozen: frames 50..60 repeat frame 50.
        let mut frozen = smooth(n);
        let still = frozen[50 * frame..51 * frame].to_vec();
        (51..60).for_each(|t| frozen[t * frame..(t + 1) * frame].copy_from_slice(&still));
        let r = review(&frames(&frozen), &l, &at(16.0), Some(&[]));
        let c = check(&r, "frozen frames");
        assert_eq!(c.passed, Some(false));
        assert!(c.detail.contains("shot 2 (10 frames)"), "{}", c.detail);
        // Flicker: every other frame of shot 1 brighter by 12.
        let mut flicker = smooth(n);
        (0..40)
            .step_by(2)
            .for_each(|t| flicker[t * frame..(t + 1) * frame].iter_mut().for_each(|v| *v += 12));
        let c = check(&review(&frames(&flicker), &l, &at(16.0), None), "flicker").clone();
        assert_eq!(c.passed, Some(false));
        assert!(c.detail.contains("failed by shot 1"), "{}", c.detail);
        // Black frames, NaN latents, the wrong length and frame rate.
        let mut black = smooth(n);
        black[..3 * frame].fill(0);
        let r = review(&frames(&black), &l, &at(24.0), Some(&[7, 8]));
        assert!(check(&r, "black or white frames")
            .detail
            .contains("shot 1 (3 black, 0 white)"));
        assert_eq!(check(&r, "finite latents").passed, Some(false));
        let c = check(&r, "length and frame rate");
        assert_eq!(c.passed, Some(false));
        assert_eq!(c.detail, "81 frames at 24.000 fps; asked for 81 frames at 16 fps");
        let short = smooth(80);
        assert_eq!(
            check(
                &review(&frames(&short), &l, &Stored::default(), None),
                "length and frame rate"
            )
            .passed,
            Some(false)
        );
    }

    #[test]
    fn downscaling_averages_whole_blocks() {
        // One 4×2 frame: left half 0/100 alternating rows, right half 200.
        let rgb: Vec<u8> = [0u8, 0, 200, 200, 100, 100, 200, 200]
            .iter()
            .flat_map(|&v| [v, v, v])
            .collect();
        let f = Frames {
            rgb: &rgb,
            width: 4,
            height: 2,
        };
        assert_eq!(downscale(&f, 2), (vec![50, 50, 50, 200, 200, 200], 2, 1));
        assert_eq!(downscale(&f, 4).1, 4);
    }

    #[test]
    fn the_contact_sheet_marks_shot_changes_and_cuts() {
        let rgb = smooth(81);
        let mut l = layout(81);
        l.cuts = vec![60];
        l.shots.push(ShotSpan {
            frames: 60..81,
            prompt: "c".into(),
        });
        l.shots[1].frames = 40..60;
        let s = contact_sheet(&frames(&rgb), &l, 16, 3);
        let marks: Vec<(usize, Option<Mark>)> = s.thumbnails.clone();
        assert_eq!(
            marks,
            [
                (0, None),
                (16, None),
                (32, None),
                (48, Some(Mark::Shot)),
                (64, Some(Mark::Cut)),
                (80, None)
            ]
        );
        assert_eq!((s.width, s.height), (3 * 12 + 4, 2 * 10 + 4));
        // Thumbnail 4 (row 1, column 1) starts with the cut's red bar, then frame 64's grey.
        let px = |x: usize, y: usize| &s.rgb[(y * s.width + x) * 3..(y * s.width + x) * 3 + 3];
        let (x0, y0) = (SHEET_GAP + 12, SHEET_GAP + 10);
        assert_eq!(px(x0, y0), Mark::Cut.colour());
        assert_eq!(px(x0 + 5, y0), &rgb[64 * 144..64 * 144 + 3]);
        assert_eq!(px(0, 0), BACKGROUND);
    }
}
