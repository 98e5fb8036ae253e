//! Live previews (`--preview-every K`): every K steps each partition projects the model's current
//! guess of the clean latents of the frames it owns to 8-bit RGB at latent resolution, and the
//! coordinator assembles those into a low-resolution clip that `longshot watch --preview` keeps
//! on disk.
//!
//! The guess is the flow-matching x0 prediction `x − σ·v` (the blended velocity the scheduler
//! steps with), so it needs no extra forward. The VAE is far too slow to run every few steps, so
//! a [`PreviewMap`] stands in for it: a per-cell linear map from latent channels to RGB. A model
//! whose decoder is a known colour map gives it exactly; any other decoder's is fitted by least
//! squares against that decoder's own output ([`PreviewMap::fit`]).

use crate::denoiser::{DenoiseError, FrameDecoder, RgbFrame};
use crate::noise::NoiseStream;
use crate::tensor::{LatentShape, Latents};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How a projected value becomes a colour in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Squash {
    Clamp,
    Sigmoid,
}

/// `rgb = squash(bias + Σ_c weights[c] · z_c)` per latent cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreviewMap {
    /// One RGB weight triple per latent channel.
    pub weights: Vec<[f32; 3]>,
    pub bias: [f32; 3],
    pub squash: Squash,
}

/// Previews of consecutive latent frames: 8-bit RGB, frame-major, row-major, `frames · height ·
/// width · 3` bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewFrames {
    /// Steps done when the x0 prediction was taken: the preview shows where the clip is heading
    /// after `step` of the job's steps.
    pub step: u32,
    /// Global latent frame of the first frame.
    pub first_frame: u32,
    pub frames: u32,
    pub width: u32,
    pub height: u32,
    pub rgb8: Vec<u8>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PreviewError {
    #[error("preview map has {map} channels, the latents {latents}")]
    Channels { map: usize, latents: usize },
    #[error("preview of {frames} frames at {width}x{height} carries {got} bytes, expected {want}")]
    Size {
        frames: u32,
        width: u32,
        height: u32,
        got: usize,
        want: usize,
    },
    #[error("preview frames {first}..{end} are outside the clip's {clip} latent frames")]
    Range { first: u32, end: u64, clip: usize },
    #[error("preview is {width}x{height}, the clip's previews are {clip_width}x{clip_height}")]
    Resolution {
        width: u32,
        height: u32,
        clip_width: u32,
        clip_height: u32,
    },
}

impl PreviewFrames {
    /// Checks that `rgb8` holds exactly the frames it says.
    pub fn check(&self) -> Result<(), PreviewError> {
        let want = self.frames as usize * self.height as usize * self.width as usize * 3;
        if self.rgb8.len() != want {
            return Err(PreviewError::Size {
                frames: self.frames,
                width: self.width,
                height: self.height,
                got: self.rgb8.len(),
                want,
            });
        }
        Ok(())
    }

    /// Bytes of one frame.
    pub fn frame_len(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }
}

/// The x0 prediction of flow matching, `x − σ·v`, into `out`.
pub fn x0_prediction(x: &[f32], v: &[f32], sigma: f32, out: &mut [f32]) {
    for ((o, &x), &v) in out.iter_mut().zip(x).zip(v) {
        *o = x - sigma * v;
    }
}

fn to_u8(v: f32) -> u8 {
    // NaN (a diverged guess) shows as black rather than failing the preview.
    (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8
}

impl PreviewMap {
    /// Projects every frame of `latents` to RGB at latent resolution.
    pub fn project(&self, latents: &Latents, step: u32, first_frame: u32) -> Result<PreviewFrames, PreviewError> {
        let s = latents.shape();
        if s.channels != self.weights.len() {
            return Err(PreviewError::Channels {
                map: self.weights.len(),
                latents: s.channels,
            });
        }
        let plane = s.height * s.width;
        let mut rgb8 = vec![0u8; s.frames * plane * 3];
        // Frames are independent (threads cannot change a bit); per frame, one colour plane at a
        // time so the inner loops are contiguous and vectorise.
        rgb8.par_chunks_exact_mut(plane * 3).enumerate().for_each(|(f, out)| {
            let frame = latents.frames(f..f + 1);
            let mut acc = [0usize; 3].map(|_| vec![0f32; plane]);
            for (k, acc) in acc.iter_mut().enumerate() {
                acc.fill(self.bias[k]);
                for (c, w) in self.weights.iter().enumerate() {
                    let w = w[k];
                    for (a, &z) in acc.iter_mut().zip(&frame[c * plane..(c + 1) * plane]) {
                        *a += w * z;
                    }
                }
            }
            for (i, px) in out.chunks_exact_mut(3).enumerate() {
                for (o, a) in px.iter_mut().zip(&acc) {
                    let v = match self.squash {
                        Squash::Clamp => a[i],
                        Squash::Sigmoid => 1.0 / (1.0 + (-a[i]).exp()),
                    };
                    *o = to_u8(v);
                }
            }
        });
        Ok(PreviewFrames {
            step,
            first_frame,
            frames: s.frames as u32,
            width: s.width as u32,
            height: s.height as u32,
            rgb8,
        })
    }

    /// The least-squares linear map from a latent cell's channels to the mean colour of the pixels
    /// `decoder` makes of it, fitted on Gaussian latents (what the x0 prediction of a diffusion
    /// model's normalised latents resembles). Each latent frame is compared with the last output
    /// frame it decodes to, the one it determines most. Decodes [`FIT_FRAMES`] latent frames of
    /// [`FIT_CELLS`]² cells once, so it belongs at the first preview, not on every step.
    pub fn fit(decoder: &dyn FrameDecoder, channels: usize) -> Result<PreviewMap, DenoiseError> {
        let shape = LatentShape::new(FIT_FRAMES, channels, FIT_CELLS, FIT_CELLS);
        let z = NoiseStream::new(FIT_SEED, 0)
            .and_then(|n| n.latents(0, shape))
            .map_err(|e| DenoiseError::Model(format!("preview fit noise: {e}")))?;
        let mut frames: Vec<(usize, RgbFrame)> = Vec::new();
        decoder.decode(&z, 0, 0, &mut |i, f| frames.push((i, f)))?;
        let n = frames.len();
        if n < FIT_FRAMES || !(n - 1).is_multiple_of(FIT_FRAMES - 1) {
            return Err(DenoiseError::Model(format!(
                "preview fit: the decoder made {n} frames of {FIT_FRAMES} latent frames"
            )));
        }
        let per_latent = (n - 1) / (FIT_FRAMES - 1);
        let (fw, fh) = (frames[0].1.width, frames[0].1.height);
        if fw % FIT_CELLS != 0 || fh % FIT_CELLS != 0 || fw / FIT_CELLS != fh / FIT_CELLS || fw == 0 {
            return Err(DenoiseError::Model(format!(
                "preview fit: the decoder made {fw}x{fh} frames of {FIT_CELLS}x{FIT_CELLS} latent cells"
            )));
        }
        let s = fw / FIT_CELLS;
        let k = channels + 1;
        let mut xtx = vec![0f64; k * k];
        let mut xty = vec![[0f64; 3]; k];
        let plane = FIT_CELLS * FIT_CELLS;
        let mut feat = vec![0f64; k];
        for l in 0..FIT_FRAMES {
            let target = &frames[if l == 0 { 0 } else { l * per_latent }].1;
            let zl = z.frames(l..l + 1);
            for cy in 0..FIT_CELLS {
                for cx in 0..FIT_CELLS {
                    let cell = cy * FIT_CELLS + cx;
                    for (c, f) in feat.iter_mut().take(channels).enumerate() {
                        *f = f64::from(zl[c * plane + cell]);
                    }
                    feat[channels] = 1.0;
                    let mut mean = [0f64; 3];
                    for y in cy * s..(cy + 1) * s {
                        for x in cx * s..(cx + 1) * s {
                            for (m, &v) in mean.iter_mut().zip(&target.data[(y * fw + x) * 3..][..3]) {
                                *m += f64::from(v);
                            }
                        }
                    }
                    let area = (s * s) as f64;
                    for i in 0..k {
                        for j in 0..k {
                            xtx[i * k + j] += feat[i] * feat[j];
                        }
                        for (t, m) in xty[i].iter_mut().zip(mean) {
                            *t += feat[i] * m / area;
                        }
                    }
                }
            }
        }
        let solved = solve_normal_equations(xtx, xty, k).ok_or_else(|| {
            DenoiseError::Model("preview fit: the decoder's colours do not depend on the latents".into())
        })?;
        Ok(PreviewMap {
            weights: solved[..channels].iter().map(|w| w.map(|v| v as f32)).collect(),
            bias: solved[channels].map(|v| v as f32),
            squash: Squash::Clamp,
        })
    }
}

/// Latent frames and cells per side that [`PreviewMap::fit`] decodes.
pub const FIT_FRAMES: usize = 3;
pub const FIT_CELLS: usize = 16;
const FIT_SEED: u64 = 0x5052_4556_4945_5700; // "PREVIEW"

/// Solves `A·w = b` for three right-hand sides (A symmetric positive definite, `k × k`) by
/// Gaussian elimination with partial pivoting; a tiny ridge keeps an unused channel solvable.
fn solve_normal_equations(mut a: Vec<f64>, mut b: Vec<[f64; 3]>, k: usize) -> Option<Vec<[f64; 3]>> {
    let ridge = 1e-9 * (0..k).map(|i| a[i * k + i]).sum::<f64>() / k as f64;
    for i in 0..k {
        a[i * k + i] += ridge;
    }
    for col in 0..k {
        let pivot = (col..k).max_by(|&p, &q| a[p * k + col].abs().total_cmp(&a[q * k + col].abs()))?;
        if a[pivot * k + col].abs() < 1e-300 {
            return None;
        }
        if pivot != col {
            for j in 0..k {
                a.swap(pivot * k + j, col * k + j);
            }
            b.swap(pivot, col);
        }
        for row in col + 1..k {
            let f = a[row * k + col] / a[col * k + col];
            for j in col..k {
                a[row * k + j] -= f * a[col * k + j];
            }
            let bc = b[col];
            for (r, c) in b[row].iter_mut().zip(bc) {
                *r -= f * c;
            }
        }
    }
    let mut w = vec![[0f64; 3]; k];
    for row in (0..k).rev() {
        let mut acc = b[row];
        for j in row + 1..k {
            for (a_, wj) in acc.iter_mut().zip(w[j]) {
                *a_ -= a[row * k + j] * wj;
            }
        }
        w[row] = acc.map(|v| v / a[row * k + row]);
    }
    w.iter().flatten().all(|v| v.is_finite()).then_some(w)
}

/// A clip's preview as the coordinator assembles it: each latent frame's newest preview.
#[derive(Clone, Debug, PartialEq)]
pub struct PreviewClip {
    pub width: u32,
    pub height: u32,
    /// Per latent frame, the step its preview was taken after (0: none yet).
    pub steps: Vec<u32>,
    pub rgb8: Vec<u8>,
}

impl PreviewClip {
    /// An empty clip of `frames` latent frames of `width × height` cells.
    pub fn new(frames: usize, width: u32, height: u32) -> PreviewClip {
        PreviewClip {
            width,
            height,
            steps: vec![0; frames],
            rgb8: vec![0; frames * width as usize * height as usize * 3],
        }
    }

    fn frame_len(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }

    /// Takes in `p`'s frames; a frame already previewed at a later step keeps that preview.
    pub fn update(&mut self, p: &PreviewFrames) -> Result<(), PreviewError> {
        p.check()?;
        if (p.width, p.height) != (self.width, self.height) {
            return Err(PreviewError::Resolution {
                width: p.width,
                height: p.height,
                clip_width: self.width,
                clip_height: self.height,
            });
        }
        let end = u64::from(p.first_frame) + u64::from(p.frames);
        if end > self.steps.len() as u64 {
            return Err(PreviewError::Range {
                first: p.first_frame,
                end,
                clip: self.steps.len(),
            });
        }
        let fl = self.frame_len();
        for (i, src) in p.rgb8.chunks_exact(fl).enumerate() {
            let l = p.first_frame as usize + i;
            if self.steps[l] <= p.step {
                self.steps[l] = p.step;
                self.rgb8[l * fl..(l + 1) * fl].copy_from_slice(src);
            }
        }
        Ok(())
    }

    /// The step every frame has been previewed at (0 while some frame has none).
    pub fn complete_step(&self) -> u32 {
        self.steps.iter().copied().min().unwrap_or(0)
    }

    /// Latent frame `l`'s preview.
    pub fn frame(&self, l: usize) -> &[u8] {
        let fl = self.frame_len();
        &self.rgb8[l * fl..(l + 1) * fl]
    }

    /// The clip as runs of consecutive frames previewed at the same step (frames with none left
    /// out): what a watcher that joins late is sent first.
    pub fn runs(&self) -> Vec<PreviewFrames> {
        let mut out: Vec<PreviewFrames> = Vec::new();
        let fl = self.frame_len();
        for (l, &step) in self.steps.iter().enumerate() {
            if step == 0 {
                continue;
            }
            match out.last_mut() {
                Some(r) if r.step == step && (r.first_frame + r.frames) as usize == l => {
                    r.frames += 1;
                    r.rgb8.extend_from_slice(self.frame(l));
                }
                _ => out.push(PreviewFrames {
                    step,
                    first_frame: l as u32,
                    frames: 1,
                    width: self.width,
                    height: self.height,
                    rgb8: self.rgb8[l * fl..(l + 1) * fl].to_vec(),
                }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(step: u32, first: u32, n: u32, fill: u8) -> PreviewFrames {
        PreviewFrames {
            step,
            first_frame: first,
            frames: n,
            width: 2,
            height: 1,
            rgb8: vec![fill; n as usize * 6],
        }
    }

    #[test]
    fn the_clip_keeps_each_frames_newest_preview_and_sends_it_in_runs() {
        let mut clip = PreviewClip::new(5, 2, 1);
        clip.update(&frames(2, 0, 2, 10)).unwrap();
        assert_eq!(clip.complete_step(), 0);
        clip.update(&frames(4, 1, 3, 20)).unwrap();
        // An older preview of frame 1 arriving late does not replace the newer one.
        clip.update(&frames(2, 1, 1, 99)).unwrap();
        assert_eq!(clip.steps, vec![2, 4, 4, 4, 0]);
        assert_eq!(clip.frame(1), &[20; 6]);
        let runs = clip.runs();
        assert_eq!(runs, vec![frames(2, 0, 1, 10), frames(4, 1, 3, 20)]);
        clip.update(&frames(4, 4, 1, 30)).unwrap();
        assert_eq!(clip.complete_step(), 2);
    }

    #[test]
    fn the_clip_refuses_previews_that_do_not_fit() {
        let mut clip = PreviewClip::new(3, 2, 1);
        assert!(matches!(
            clip.update(&frames(1, 2, 2, 0)),
            Err(PreviewError::Range { end: 4, .. })
        ));
        let mut wide = frames(1, 0, 1, 0);
        wide.width = 4;
        wide.rgb8 = vec![0; 12];
        assert!(matches!(clip.update(&wide), Err(PreviewError::Resolution { .. })));
        let mut short = frames(1, 0, 1, 0);
        short.rgb8.pop();
        assert!(matches!(
            clip.update(&short),
            Err(PreviewError::Size { got: 5, want: 6, .. })
        ));
        assert_eq!(clip.steps, vec![0, 0, 0], "nothing of a refused preview is kept");
    }

    #[test]
    fn projection_is_the_linear_map_per_cell_squashed() {
        let map = PreviewMap {
            weights: vec![[1.0, 0.0, -1.0], [0.0, 0.5, 0.0]],
            bias: [0.0, 0.25, 1.0],
            squash: Squash::Clamp,
        };
        // 1 frame, 2 channels, 1x2 cells: channel 0 = [0.5, 2], channel 1 = [1, -1].
        let z = Latents::from_vec(LatentShape::new(1, 2, 1, 2), vec![0.5, 2.0, 1.0, -1.0]).unwrap();
        let p = map.project(&z, 3, 7).unwrap();
        assert_eq!((p.step, p.first_frame, p.frames, p.width, p.height), (3, 7, 1, 2, 1));
        // Cell 0: (0.5, 0.75, 0.5); cell 1: (2 → 1, −0.25 → 0, −1 → 0).
        assert_eq!(p.rgb8, vec![128, 191, 128, 255, 0, 0]);
        let sig = PreviewMap {
            squash: Squash::Sigmoid,
            ..map.clone()
        };
        assert_eq!(sig.project(&z, 3, 7).unwrap().rgb8[..3], [159, 173, 159]);
        let three = Latents::zeros(LatentShape::new(1, 3, 1, 1));
        assert_eq!(
            map.project(&three, 1, 0),
            Err(PreviewError::Channels { map: 2, latents: 3 })
        );
    }

    /// A decoder that is exactly a linear colour map, ×4 nearest upsampling and ×2 temporal
    /// repetition: the fit must find the map.
    struct LinearDecoder(PreviewMap);

    impl FrameDecoder for LinearDecoder {
        fn halo(&self) -> usize {
            0
        }
        fn decode(
            &self,
            latents: &Latents,
            first_global: usize,
            _emit_from: usize,
            sink: &mut dyn FnMut(usize, RgbFrame),
        ) -> Result<(), DenoiseError> {
            let s = latents.shape();
            let plane = s.height * s.width;
            for l in 0..s.frames {
                let f = latents.frames(l..l + 1);
                let mut data = vec![0f32; plane * 16 * 3];
                for y in 0..s.height * 4 {
                    for x in 0..s.width * 4 {
                        let cell = (y / 4) * s.width + x / 4;
                        for k in 0..3 {
                            let v: f32 = self.0.bias[k]
                                + (0..s.channels)
                                    .map(|c| self.0.weights[c][k] * f[c * plane + cell])
                                    .sum::<f32>();
                            data[(y * s.width * 4 + x) * 3 + k] = v;
                        }
                    }
                }
                let frame = RgbFrame {
                    width: s.width * 4,
                    height: s.height * 4,
                    data,
                };
                let g = first_global + l;
                let outs = if g == 0 { 0..1 } else { 2 * g - 1..2 * g + 1 };
                for i in outs {
                    sink(i, frame.clone());
                }
            }
            Ok(())
        }
        fn preview_map(&self) -> Result<PreviewMap, DenoiseError> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn fitting_a_linear_decoder_recovers_its_map() {
        let truth = PreviewMap {
            weights: vec![[0.1, -0.05, 0.02], [0.0, 0.2, 0.03], [-0.07, 0.01, 0.15]],
            bias: [0.5, 0.4, 0.6],
            squash: Squash::Clamp,
        };
        let fitted = PreviewMap::fit(&LinearDecoder(truth.clone()), 3).unwrap();
        for (f, t) in fitted
            .weights
            .iter()
            .zip(&truth.weights)
            .chain([(&fitted.bias, &truth.bias)])
        {
            for (a, b) in f.iter().zip(t) {
                assert!((a - b).abs() < 1e-5, "fitted {fitted:?}, truth {truth:?}");
            }
        }
    }

    #[test]
    fn x0_prediction_steps_the_whole_way_to_sigma_zero() {
        let mut out = [0.0; 2];
        x0_prediction(&[1.0, -2.0], &[0.5, 4.0], 0.5, &mut out);
        assert_eq!(out, [0.75, -4.0]);
    }
}
