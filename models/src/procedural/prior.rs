//! The Gaussian video prior a prompt stands for, and its mean on the global timeline.
//!
//! `x0 ~ N(μ, Σ)` over a window `[frames, 16, H, W]`, `Σ = diag(s_c²) ⊗ K_t ⊗ K_y ⊗ K_x` with
//! squared-exponential kernels (see `basis`). The parameters are a pure function of the prompt
//! string: palette words set the colour, motion words the temporal correlation length, and an
//! FNV-1a hash of the words everything else (see `prompt`).

use super::colour::{self, CHANNELS};
use super::detmath;
use super::prompt::{self, ParamStream};
use rayon::prelude::*;
use std::f64::consts::TAU;

/// Correlation length (latent frames) for prompts with slow / fast motion words.
const SLOW_LENGTH: f64 = 8.0;
const FAST_LENGTH: f64 = 1.5;

/// One travelling plane wave of the mean pattern: `loading · sin(k·(pos − drift·g) + phase)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Wave {
    /// Wave vector `(k_y, k_x)` in radians per latent cell.
    pub k: (f64, f64),
    pub phase: f64,
    /// Per-channel amplitude (latent units).
    pub loading: [f64; CHANNELS],
}

/// Everything that defines one prompt's prior.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorParams {
    /// The colour the palette words asked for (or a hashed one), sRGB-ish in (0, 1).
    pub palette: [f64; 3],
    /// Per-channel mean `m_c` (decodes to `palette`, plus a colour-free hashed offset).
    pub channel_mean: [f64; CHANNELS],
    /// Per-channel standard deviation `s_c`.
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
        let hashed_rgb = [s.uniform(0.2, 0.8), s.uniform(0.2, 0.8), s.uniform(0.2, 0.8)];
        let hashed_temporal = s.uniform(2.5, 5.0);
        let spatial_length = s.uniform(2.0, 6.0);
        let drift_angle = s.uniform(0.0, TAU);
        let mut channel_std = [0.0; CHANNELS];
        channel_std.iter_mut().for_each(|v| *v = s.uniform(0.5, 0.9));
        let mut offset = [0.0; CHANNELS];
        offset.iter_mut().for_each(|v| *v = s.uniform(-0.4, 0.4));
        let waves = (0..2).map(|_| hashed_wave(&mut s, spatial_length)).collect();

        let colours: Vec<[f64; 3]> = words.iter().filter_map(|w| prompt::colour_of(w)).collect();
        let palette = if colours.is_empty() {
            hashed_rgb
        } else {
            let n = colours.len() as f64;
            [0, 1, 2].map(|k| colours.iter().map(|c| c[k]).sum::<f64>() / n)
        };
        let motion: i32 = words.iter().map(|w| prompt::motion_of(w)).sum();
        let temporal_length = match motion.signum() {
            1 => SLOW_LENGTH,
            -1 => FAST_LENGTH,
            _ => hashed_temporal,
        };
        let direction = words
            .iter()
            .find_map(|w| prompt::direction_of(w))
            .unwrap_or_else(|| detmath::sin_cos(drift_angle));
        // Faster motion for shorter temporal correlation, so pattern and texture agree on the pace.
        let speed = (1.2 / temporal_length).clamp(0.1, 0.8);

        let mut channel_mean = colour::latent_for_rgb(palette);
        colour::project_out_colour(&mut offset);
        channel_mean.iter_mut().zip(offset).for_each(|(m, o)| *m += o);
        Self {
            palette,
            channel_mean,
            channel_std,
            temporal_length,
            spatial_length,
            drift: (speed * direction.0, speed * direction.1),
            waves,
        }
    }

    /// The prior of an empty prompt: mid-grey, no pattern, no drift, moderate correlations. The
    /// unconditional branch uses it when the negative prompt is empty.
    pub fn neutral() -> Self {
        Self {
            palette: [0.5; 3],
            channel_mean: [0.0; CHANNELS],
            channel_std: [0.7; CHANNELS],
            temporal_length: 4.0,
            spatial_length: 4.0,
            drift: (0.0, 0.0),
            waves: Vec::new(),
        }
    }

    /// `s_c²`.
    pub fn channel_variance(&self) -> [f64; CHANNELS] {
        self.channel_std.map(|s| s * s)
    }

    /// Writes μ for a window whose local frame 0 is global latent frame `first_frame` into `out`
    /// (`[frames, 16, height, width]`).
    ///
    /// The pattern is evaluated at the GLOBAL frame index. Overlapping windows hold copies of the
    /// same global frames; if μ followed the local index, each window would pull its copy towards a
    /// different mean, the blended velocity would fight itself at every seam, and the drift would
    /// restart in every window. With the global index all windows agree bit for bit on μ of every
    /// frame they share, and the pattern moves continuously over the whole clip.
    pub fn mean_window(
        &self,
        first_frame: usize,
        frames: usize,
        height: usize,
        width: usize,
        out: &mut [f32],
    ) {
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
                    let mut v = self.channel_mean[c];
                    for (wi, wave) in self.waves.iter().enumerate() {
                        v += wave.loading[c] * pattern[wi * plane + i];
                    }
                    *d = v as f32;
                }
            }
        });
    }
}

/// A wave with a wavelength of 3–6 spatial correlation lengths, a hashed direction and phase, and a
/// hashed channel loading of norm 1 (about ±0.4 in colour logits, a gentle visible pattern).
fn hashed_wave(s: &mut ParamStream, spatial_length: f64) -> Wave {
    let wavelength = spatial_length * s.uniform(3.0, 6.0);
    let (sin_a, cos_a) = detmath::sin_cos(s.uniform(0.0, TAU));
    let kk = TAU / wavelength;
    let phase = s.uniform(0.0, TAU);
    let mut loading = [0.0; CHANNELS];
    loading.iter_mut().for_each(|v| *v = s.uniform(-1.0, 1.0));
    let norm = loading.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
    loading.iter_mut().for_each(|v| *v /= norm);
    Wave { k: (kk * sin_a, kk * cos_a), phase, loading }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_follow_the_words_and_the_hash() {
        let p = PriorParams::from_prompt("a red sunset");
        assert_eq!(p, PriorParams::from_prompt("A red sunset!"));
        assert_ne!(p, PriorParams::from_prompt("a blue ocean"));
        assert_ne!(p.channel_std, PriorParams::from_prompt("a red sunset at noon").channel_std);
        assert_eq!(PriorParams::from_prompt(" ,. "), PriorParams::neutral());
        assert_eq!(PriorParams::from_prompt("a slow calm river").temporal_length, SLOW_LENGTH);
        assert_eq!(PriorParams::from_prompt("a fast storm").temporal_length, FAST_LENGTH);
        let other = PriorParams::from_prompt("a river").temporal_length;
        assert!((2.5..5.0).contains(&other));
        let left = PriorParams::from_prompt("clouds moving left").drift;
        assert!(left.0 == 0.0 && left.1 < 0.0);
        assert!(p.palette[0] > p.palette[2]);
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
