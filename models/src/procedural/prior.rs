//! The Gaussian video prior a prompt stands for, and its mean on the global timeline.
//!
//! `x0 ~ N(μ, Σ)` over a window `[frames, 16, H, W]`, `Σ = diag(s_c²) ⊗ K_t ⊗ K_y ⊗ K_x` with
//! squared-exponential kernels (see `basis`). The parameters are a pure function of the prompt
//! string: palette words set the colours (laid out top to bottom in the order they are named),
//! horizon words a layout in horizontal bands drifting sideways, motion words the temporal
//! correlation length and speed, and an FNV-1a hash of the words everything else (see `prompt`).

use super::colour::{self, CHANNELS};
use super::detmath;
use super::prompt::{self, ParamStream};
use longshot_core::job::defaults;
use rayon::prelude::*;
use std::f64::consts::{PI, TAU};

/// Correlation length (latent frames) for prompts with slow / fast motion words.
const SLOW_LENGTH: f64 = 6.0;
const FAST_LENGTH: f64 = 1.5;

/// The prior's mean is designed in colour-logit units as the clip should look at the default
/// guidance, then divided by that guidance. Classifier-free guidance multiplies the difference
/// between the prompt's mean and the (neutral) negative prompt's by the guidance scale, so the
/// default guidance lands on the prompt's palette, lower guidance is more muted and higher more
/// saturated, as on real models, and never far out of gamut.
pub const MEAN_SCALE: f64 = 1.0 / defaults::GUIDANCE as f64;

/// One travelling plane wave of the mean pattern: `loading · sin(k·(pos − drift·g) + phase)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Wave {
    /// Wave vector `(k_y, k_x)` in radians per latent cell.
    pub k: (f64, f64),
    pub phase: f64,
    /// Per-channel amplitude (latent units, before [`MEAN_SCALE`]).
    pub loading: [f64; CHANNELS],
}

/// Everything that defines one prompt's prior.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorParams {
    /// The colours the palette words asked for, in the prompt's order, laid out from the top of
    /// the frame to the bottom ("a red sunset over the sea": red sky, orange, blue sea); a hashed
    /// colour when there is none. sRGB-ish values in (0, 1).
    pub stops: Vec<[f64; 3]>,
    /// The colour-free per-channel offset (hashed), latent units before [`MEAN_SCALE`].
    pub offset: [f64; CHANNELS],
    /// Per-channel standard deviation `s_c` of the texture.
    pub channel_std: [f64; CHANNELS],
    /// Squared-exponential correlation length of `K_t`, in latent frames.
    pub temporal_length: f64,
    /// Squared-exponential correlation length of `K_y` and `K_x`, in latent cells.
    pub spatial_length: f64,
    /// Velocity `(dy, dx)` of the mean pattern, in latent cells per latent frame.
    pub drift: (f64, f64),
    pub waves: Vec<Wave>,
}

impl PriorParams {
    /// The prior of `prompt`. An empty prompt (no words) gives [`PriorParams::neutral`].
    pub fn from_prompt(text: &str) -> Self {
        let words = prompt::words(text);
        if words.is_empty() {
            return Self::neutral();
        }
        let mut s = ParamStream::new(prompt::prompt_hash(&words));
        // Every hashed value is drawn, in this fixed order, whether or not a word overrides it, so
        // that one word's presence never reshuffles the other parameters.
        let hashed_rgb = [s.uniform(0.3, 0.7), s.uniform(0.3, 0.7), s.uniform(0.3, 0.7)];
        let hashed_temporal = s.uniform(2.5, 5.0);
        let spatial_length = s.uniform(2.0, 6.0);
        let drift_angle = s.uniform(0.0, TAU);
        let mut channel_std = [0.0; CHANNELS];
        channel_std.iter_mut().for_each(|v| *v = s.uniform(0.25, 0.45));
        let mut offset = [0.0; CHANNELS];
        offset.iter_mut().for_each(|v| *v = s.uniform(-0.4, 0.4));
        colour::project_out_colour(&mut offset);
        // A horizon (sea, desert, sunset, …) lays the picture out in horizontal bands that drift
        // sideways; otherwise the pattern's orientation is hashed.
        let horizontal = words.iter().any(|w| prompt::is_horizon_word(w));
        let waves = (0..2)
            .map(|_| hashed_wave(&mut s, spatial_length, horizontal))
            .collect();

        let mut stops: Vec<[f64; 3]> = words.iter().filter_map(|w| prompt::colour_of(w)).collect();
        if stops.is_empty() {
            stops.push(hashed_rgb);
        }
        let motion: i32 = words.iter().map(|w| prompt::motion_of(w)).sum();
        let temporal_length = match motion.signum() {
            1 => SLOW_LENGTH,
            -1 => FAST_LENGTH,
            _ => hashed_temporal,
        };
        let hashed_direction = detmath::sin_cos(drift_angle);
        let direction = words
            .iter()
            .find_map(|w| prompt::direction_of(w))
            .unwrap_or(if horizontal {
                (0.0, hashed_direction.1.signum())
            } else {
                hashed_direction
            });
        // Faster motion for shorter temporal correlation, so pattern and texture agree on the pace.
        let speed = (1.2 / temporal_length).clamp(0.1, 0.8);
        Self {
            stops,
            offset,
            channel_std,
            temporal_length,
            spatial_length,
            drift: (speed * direction.0, speed * direction.1),
            waves,
        }
    }

    /// The prior of an empty prompt: mid-grey, no pattern, no drift, moderate correlations. The
    /// unconditional branch takes its mean when the negative prompt is empty.
    pub fn neutral() -> Self {
        Self {
            stops: vec![[0.5; 3]],
            offset: [0.0; CHANNELS],
            channel_std: [0.35; CHANNELS],
            temporal_length: 4.0,
            spatial_length: 4.0,
            drift: (0.0, 0.0),
            waves: Vec::new(),
        }
    }

    /// The unconditional branch's prior: the mean of `negative` (colours, pattern, drift) with the
    /// texture statistics of `conditional`. With one covariance in both branches, guidance (which
    /// amplifies the branches' difference) amplifies the difference of means only, a smooth
    /// picture, and never the noise.
    pub fn unconditional(negative: &str, conditional: &PriorParams) -> Self {
        Self {
            channel_std: conditional.channel_std,
            temporal_length: conditional.temporal_length,
            spatial_length: conditional.spatial_length,
            ..Self::from_prompt(negative)
        }
    }

    /// Inside a shot list's blend: moves the texture statistics (channel spread, temporal and
    /// spatial correlation lengths) toward `next`'s by `w`; the mean is mixed by the denoiser.
    pub fn blend_statistics(&mut self, next: &PriorParams, w: f32) {
        let w = f64::from(w);
        let lerp = |a: f64, b: f64| (1.0 - w) * a + w * b;
        for (s, n) in self.channel_std.iter_mut().zip(next.channel_std) {
            *s = lerp(*s, n);
        }
        self.temporal_length = lerp(self.temporal_length, next.temporal_length);
        self.spatial_length = lerp(self.spatial_length, next.spatial_length);
    }

    /// The average colour of the stops, the palette the clip reads as (what the tests compare).
    #[cfg(test)]
    pub fn palette(&self) -> [f64; 3] {
        let n = self.stops.len() as f64;
        [0, 1, 2].map(|k| self.stops.iter().map(|c| c[k]).sum::<f64>() / n)
    }

    /// `s_c²`.
    pub fn channel_variance(&self) -> [f64; CHANNELS] {
        self.channel_std.map(|s| s * s)
    }

    /// The colour part of the mean of row `y` of `height`, before [`MEAN_SCALE`]: the stops at
    /// evenly spaced heights, smoothly interpolated between them.
    fn row_colour(&self, y: usize, height: usize) -> [f64; CHANNELS] {
        let n = self.stops.len();
        let u = (y as f64 + 0.5) / height as f64 * n as f64 - 0.5;
        let i = (u.floor().max(0.0) as usize).min(n - 1);
        let t = (u - i as f64).clamp(0.0, 1.0);
        let w = t * t * (3.0 - 2.0 * t);
        let (a, b) = (
            colour::latent_for_rgb(self.stops[i]),
            colour::latent_for_rgb(self.stops[(i + 1).min(n - 1)]),
        );
        std::array::from_fn(|c| (1.0 - w) * a[c] + w * b[c])
    }

    /// Writes μ for a window whose local frame 0 is global latent frame `first_frame` into `out`
    /// (`[frames, 16, height, width]`).
    ///
    /// The pattern is evaluated at the GLOBAL frame index. Overlapping windows hold copies of the
    /// same global frames; if μ followed the local index, each window would pull its copy towards a
    /// different mean, the blended velocity would fight itself at every seam, and the drift would
    /// restart in every window. With the global index all windows agree bit for bit on μ of every
    /// frame they share, and the pattern moves continuously over the whole clip.
    pub fn mean_window(&self, first_frame: usize, frames: usize, height: usize, width: usize, out: &mut [f32]) {
        let plane = height * width;
        assert_eq!(out.len(), frames * CHANNELS * plane, "mean_window: output length");
        if plane == 0 {
            return;
        }
        // sin(α(x) + β(g, y)) = sin α cos β + cos α sin β: the x factor is the same for every frame.
        let along_x: Vec<Vec<(f64, f64)>> = self
            .waves
            .iter()
            .map(|w| (0..width).map(|x| detmath::sin_cos(w.k.1 * x as f64)).collect())
            .collect();
        let rows: Vec<[f64; CHANNELS]> = (0..height)
            .map(|y| {
                let colour = self.row_colour(y, height);
                std::array::from_fn(|c| colour[c] + self.offset[c])
            })
            .collect();
        out.par_chunks_mut(CHANNELS * plane).enumerate().for_each(|(t, frame)| {
            let g = (first_frame + t) as f64;
            let mut pattern = vec![0.0f64; self.waves.len() * plane];
            for (wi, wave) in self.waves.iter().enumerate() {
                let shift = wave.k.0 * self.drift.0 * g + wave.k.1 * self.drift.1 * g;
                for y in 0..height {
                    let (sb, cb) = detmath::sin_cos(wave.k.0 * y as f64 - shift + wave.phase);
                    let row = &mut pattern[wi * plane + y * width..wi * plane + (y + 1) * width];
                    for (p, &(sa, ca)) in row.iter_mut().zip(&along_x[wi]) {
                        *p = sa * cb + ca * sb;
                    }
                }
            }
            for (c, dst) in frame.chunks_exact_mut(plane).enumerate() {
                for (i, d) in dst.iter_mut().enumerate() {
                    let mut v = rows[i / width][c];
                    for (wi, wave) in self.waves.iter().enumerate() {
                        v += wave.loading[c] * pattern[wi * plane + i];
                    }
                    *d = (v * MEAN_SCALE) as f32;
                }
            }
        });
    }
}

/// A wave with a wavelength of 3–6 spatial correlation lengths, a hashed phase, a hashed channel
/// loading of norm 0.6 (about ±0.35 in colour logits at the default guidance: a gentle visible
/// pattern), and a hashed direction: any for most prompts, within 20° of vertical for a horizon
/// (so its crests run horizontally).
fn hashed_wave(s: &mut ParamStream, spatial_length: f64, horizontal: bool) -> Wave {
    let wavelength = spatial_length * s.uniform(3.0, 6.0);
    let u = s.uniform(0.0, TAU);
    let angle = if horizontal {
        PI / 2.0 + (u / TAU - 0.5) * (2.0 * PI / 9.0)
    } else {
        u
    };
    let (sin_a, cos_a) = detmath::sin_cos(angle);
    let kk = TAU / wavelength;
    let phase = s.uniform(0.0, TAU);
    let mut loading = [0.0; CHANNELS];
    loading.iter_mut().for_each(|v| *v = s.uniform(-1.0, 1.0));
    let norm = loading.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
    loading.iter_mut().for_each(|v| *v *= 0.6 / norm);
    Wave {
        k: (kk * sin_a, kk * cos_a),
        phase,
        loading,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_follow_the_words_and_the_hash() {
        let p = PriorParams::from_prompt("a red sunset");
        assert_eq!(p, PriorParams::from_prompt("A red sunset!"));
        assert_eq!(p.stops.len(), 2, "red, then sunset orange below it");
        assert_ne!(p, PriorParams::from_prompt("a blue ocean"));
        assert_ne!(
            p.channel_std,
            PriorParams::from_prompt("a red sunset at noon").channel_std
        );
        assert_eq!(PriorParams::from_prompt(" ,. "), PriorParams::neutral());
        assert_eq!(
            PriorParams::from_prompt("a slow calm river").temporal_length,
            SLOW_LENGTH
        );
        assert_eq!(PriorParams::from_prompt("a fast storm").temporal_length, FAST_LENGTH);
        let other = PriorParams::from_prompt("a river").temporal_length;
        assert!((2.5..5.0).contains(&other));
        let left = PriorParams::from_prompt("clouds moving left").drift;
        assert!(left.0 == 0.0 && left.1 < 0.0);
        assert!(p.palette()[0] > p.palette()[2]);
        // A horizon: bands run horizontally (wave vectors near vertical) and drift sideways.
        let sea = PriorParams::from_prompt("a slow red sunset over the sea");
        assert!(sea.drift.0 == 0.0 && sea.drift.1 != 0.0, "{:?}", sea.drift);
        assert!(
            sea.waves.iter().all(|w| w.k.0.abs() > 2.0 * w.k.1.abs()),
            "{:?}",
            sea.waves
        );
        // An explicit direction word still wins.
        assert!(PriorParams::from_prompt("waves rolling up over the sea").drift.0 < 0.0);
    }

    #[test]
    fn windows_agree_on_the_mean_of_shared_frames() {
        let p = PriorParams::from_prompt("fast orange fire");
        let (h, w, f) = (5, 7, 6);
        let frame_len = CHANNELS * h * w;
        let mut a = vec![0.0; f * frame_len];
        let mut b = vec![0.0; f * frame_len];
        p.mean_window(10, f, h, w, &mut a);
        p.mean_window(13, f, h, w, &mut b);
        // Global frames 13..16 are local 3..6 in `a` and 0..3 in `b`.
        assert!(a[3 * frame_len..]
            .iter()
            .zip(&b[..3 * frame_len])
            .all(|(x, y)| x.to_bits() == y.to_bits()));
        // ... and the pattern does move from one frame to the next.
        assert_ne!(a[..frame_len], a[frame_len..2 * frame_len]);
    }
}
