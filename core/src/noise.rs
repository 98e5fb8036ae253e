//! Counter-based Gaussian noise (docs/long-clips.md §4): Philox4x32-10 keyed by the seed, with
//! the counter built from (step, global latent frame, channel, y, x). The value at a coordinate is
//! the same whichever window or worker draws it, so noise never depends on the cluster size.
//!
//! Counter layout: `[x / 4, y, (step << 16) | channel, frame]`, key `[seed_lo, seed_hi]`. One Philox
//! block yields four uniforms, turned into the Gaussians of x = 4b..4b+3 by two Box–Muller pairs
//! computed in f64 and rounded once to f32 (f64 transcendental results round to the same f32 on
//! every libm we target, which single-precision ones would not guarantee).

use crate::tensor::{LatentShape, Latents};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use thiserror::Error;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with `rounds` rounds (10 is the standard, crush-resistant choice).
pub fn philox4x32(rounds: u32, mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    for r in 0..rounds {
        if r > 0 {
            key[0] = key[0].wrapping_add(W0);
            key[1] = key[1].wrapping_add(W1);
        }
        let p0 = u64::from(M0) * u64::from(ctr[0]);
        let p1 = u64::from(M1) * u64::from(ctr[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        ctr = [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0];
    }
    ctr
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NoiseError {
    #[error("channel {0} is out of range: the noise counter allows channels 0..65536")]
    Channel(usize),
    #[error("step {0} is out of range: the noise counter allows steps 0..65536")]
    Step(u32),
    #[error("{axis} {value} is out of range: the noise counter allows 0..2^32")]
    Coordinate { axis: &'static str, value: usize },
}

/// Noise coordinates for one stream (one seed, one step).
#[derive(Clone, Copy, Debug)]
pub struct NoiseStream {
    key: [u32; 2],
    step_word: u32,
}

impl NoiseStream {
    pub fn new(seed: u64, step: u32) -> Result<Self, NoiseError> {
        if step >= 1 << 16 {
            return Err(NoiseError::Step(step));
        }
        Ok(Self {
            key: [seed as u32, (seed >> 32) as u32],
            step_word: step << 16,
        })
    }

    /// Four Gaussians for x = 4·x_block .. 4·x_block+3 at (frame, channel, y).
    fn block(&self, frame: u32, channel: u32, y: u32, x_block: u32) -> [f32; 4] {
        let r = philox4x32(10, [x_block, y, self.step_word | channel, frame], self.key);
        let (a, b) = box_muller(r[0], r[1]);
        let (c, d) = box_muller(r[2], r[3]);
        [a, b, c, d]
    }

    /// One value (slow path; the fill functions are what the loop uses).
    pub fn at(&self, frame: u32, channel: u32, y: u32, x: u32) -> f32 {
        self.block(frame, channel, y, x / 4)[(x % 4) as usize]
    }

    /// Fills `shape` (frame-major) with the noise of global frames `first_frame..`.
    pub fn latents(&self, first_frame: usize, shape: LatentShape) -> Result<Latents, NoiseError> {
        check_coords(first_frame + shape.frames, shape)?;
        let (h, w) = (shape.height, shape.width);
        let mut data = vec![0.0f32; shape.len()];
        // One plane = one (frame, channel); planes are independent, so threads cannot change bits.
        data.par_chunks_mut(h * w).enumerate().for_each(|(plane, out)| {
            let frame = (first_frame + plane / shape.channels) as u32;
            let channel = (plane % shape.channels) as u32;
            for y in 0..h {
                let row = &mut out[y * w..(y + 1) * w];
                for (xb, chunk) in row.chunks_mut(4).enumerate() {
                    let g = self.block(frame, channel, y as u32, xb as u32);
                    chunk.copy_from_slice(&g[..chunk.len()]);
                }
            }
        });
        Ok(Latents::from_vec(shape, data).expect("length matches shape by construction"))
    }
}

/// Latent frames from `first_latent` on (up to the next segment) take their noise from `seed`
/// at frame index `l − first_latent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoiseSegment {
    pub first_latent: usize,
    pub seed: u64,
}

/// How latent frames map to noise streams; one segment from frame 0 is a plain job's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoiseKeys {
    pub segments: Vec<NoiseSegment>,
    /// A draft's: each value is the sum of a `pool`×`pool` block of the noise at `pool` times
    /// the width and height, divided by `pool` (still unit variance), so a draft starts from its
    /// full-size job's noise, coarser. 1: plain.
    #[serde(default = "unpooled")]
    pub pool: u32,
}

fn unpooled() -> u32 {
    1
}

/// The largest pooling factor accepted.
pub const MAX_POOL: u32 = 4;

impl NoiseKeys {
    pub fn single(seed: u64) -> Self {
        Self {
            segments: vec![NoiseSegment { first_latent: 0, seed }],
            pool: 1,
        }
    }

    /// These keys, pooled by `k` (see [`NoiseKeys::pool`]).
    pub fn pooled(self, k: u32) -> Self {
        Self { pool: k, ..self }
    }

    /// Checks the segments start at 0 and increase, and the pooling factor.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_POOL).contains(&self.pool) {
            return Err(format!("noise pooling {} is not in 1..={MAX_POOL}", self.pool));
        }
        match self.segments.first() {
            None => return Err("no noise segment".into()),
            Some(s) if s.first_latent != 0 => {
                return Err(format!(
                    "the first noise segment starts at latent frame {}, not 0",
                    s.first_latent
                ))
            }
            _ => {}
        }
        if let Some(w) = self
            .segments
            .windows(2)
            .find(|w| w[1].first_latent <= w[0].first_latent)
        {
            return Err(format!(
                "noise segments must start at increasing latent frames ({} then {})",
                w[0].first_latent, w[1].first_latent
            ));
        }
        Ok(())
    }

    /// The segments covering latent frames `frames`, each with its part of the range.
    pub fn split(&self, frames: Range<usize>) -> Vec<(NoiseSegment, Range<usize>)> {
        let mut out = Vec::new();
        for (i, s) in self.segments.iter().enumerate() {
            let end = self.segments.get(i + 1).map_or(usize::MAX, |n| n.first_latent);
            let (a, b) = (frames.start.max(s.first_latent), frames.end.min(end));
            if a < b {
                out.push((*s, a..b));
            }
        }
        out
    }
}

impl NoiseKeys {
    /// [`NoiseStream::latents`] of step 0 for global latent frames `first_frame..`, each frame
    /// from its segment's seed at its index within the segment.
    pub fn latents(&self, first_frame: usize, shape: LatentShape) -> Result<Latents, NoiseError> {
        if self.pool > 1 {
            let k = self.pool as usize;
            let fine = LatentShape::new(shape.frames, shape.channels, shape.height * k, shape.width * k);
            let full = Self {
                pool: 1,
                ..self.clone()
            }
            .latents(first_frame, fine)?;
            let (fw, plane) = (fine.width, fine.height * fine.width);
            let mut out = vec![0.0f32; shape.len()];
            // Summed in f64 in a fixed order, rounded once: the same bits wherever it runs.
            for (p, dst) in out.chunks_mut(shape.height * shape.width).enumerate() {
                let src = &full.as_slice()[p * plane..(p + 1) * plane];
                for y in 0..shape.height {
                    for x in 0..shape.width {
                        let mut sum = 0.0f64;
                        for dy in 0..k {
                            for dx in 0..k {
                                sum += f64::from(src[(y * k + dy) * fw + x * k + dx]);
                            }
                        }
                        dst[y * shape.width + x] = (sum / k as f64) as f32;
                    }
                }
            }
            return Ok(Latents::from_vec(shape, out).expect("length matches shape by construction"));
        }
        let mut out = Vec::with_capacity(shape.len());
        let frame_len = shape.len() / shape.frames.max(1);
        for (s, r) in self.split(first_frame..first_frame + shape.frames) {
            let part = LatentShape::new(r.len(), shape.channels, shape.height, shape.width);
            let noise = NoiseStream::new(s.seed, 0)?.latents(r.start - s.first_latent, part)?;
            out.extend_from_slice(noise.as_slice());
        }
        if out.len() != shape.frames * frame_len {
            return Err(NoiseError::Coordinate {
                axis: "frame (no noise segment covers it)",
                value: first_frame,
            });
        }
        Ok(Latents::from_vec(shape, out).expect("length checked"))
    }
}

fn check_coords(frame_end: usize, shape: LatentShape) -> Result<(), NoiseError> {
    if shape.channels > 1 << 16 {
        return Err(NoiseError::Channel(shape.channels - 1));
    }
    for (axis, value) in [("frame", frame_end), ("height", shape.height), ("width", shape.width)] {
        if value > u32::MAX as usize {
            return Err(NoiseError::Coordinate { axis, value });
        }
    }
    Ok(())
}

/// Box–Muller on two 32-bit uniforms; `u1 ∈ (0, 1]` so the logarithm is finite.
fn box_muller(a: u32, b: u32) -> (f32, f32) {
    const INV_2_32: f64 = 1.0 / 4_294_967_296.0;
    let u1 = (f64::from(a) + 1.0) * INV_2_32;
    let u2 = f64::from(b) * INV_2_32;
    let r = (-2.0 * u1.ln()).sqrt();
    let theta = std::f64::consts::TAU * u2;
    ((r * theta.cos()) as f32, (r * theta.sin()) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A draft's noise is its full-size job's, 2×2 blocks summed and halved: unit variance, and
    /// the same whichever frame range (window) draws it.
    #[test]
    fn pooled_noise_sums_the_full_size_noise() {
        let (coarse, fine) = (LatentShape::new(3, 2, 4, 6), LatentShape::new(3, 2, 8, 12));
        let full = NoiseKeys::single(5).latents(2, fine).unwrap();
        let pooled = NoiseKeys::single(5).pooled(2).latents(2, coarse).unwrap();
        let f = |p: usize, y: usize, x: usize| f64::from(full.as_slice()[p * 96 + y * 12 + x]);
        for p in 0..6 {
            for y in 0..4 {
                for x in 0..6 {
                    let sum = f(p, 2 * y, 2 * x)
                        + f(p, 2 * y, 2 * x + 1)
                        + f(p, 2 * y + 1, 2 * x)
                        + f(p, 2 * y + 1, 2 * x + 1);
                    assert_eq!(pooled.as_slice()[p * 24 + y * 6 + x], (sum / 2.0) as f32);
                }
            }
        }
        // Frame 3 drawn alone equals frame 3 of the longer draw.
        let one = NoiseKeys::single(5)
            .pooled(2)
            .latents(3, LatentShape::new(1, 2, 4, 6))
            .unwrap();
        assert_eq!(one.as_slice(), &pooled.as_slice()[48..96]);
        let big = NoiseKeys::single(8)
            .pooled(2)
            .latents(0, LatentShape::new(4, 16, 32, 32))
            .unwrap();
        let v = big.as_slice();
        let var = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / v.len() as f64;
        assert!((var - 1.0).abs() < 0.03, "variance {var}");
        assert!(NoiseKeys::single(1).pooled(0).validate().is_err());
        assert!(NoiseKeys::single(1).pooled(MAX_POOL + 1).validate().is_err());
    }

    #[test]
    fn keyed_noise_takes_each_frame_from_its_segment() {
        let shape = LatentShape::new(6, 2, 3, 5);
        let one = NoiseKeys::single(9).latents(4, shape).unwrap();
        assert_eq!(one, NoiseStream::new(9, 0).unwrap().latents(4, shape).unwrap());
        let keys = NoiseKeys {
            segments: vec![
                NoiseSegment {
                    first_latent: 0,
                    seed: 9,
                },
                NoiseSegment {
                    first_latent: 7,
                    seed: 3,
                },
            ],
            pool: 1,
        };
        let x = keys.latents(4, shape).unwrap();
        let plane = 2 * 3 * 5;
        // Frames 4..7 from seed 9 at 4..7, frames 7..10 from seed 3 at 0..3.
        assert_eq!(&x.as_slice()[..3 * plane], &one.as_slice()[..3 * plane]);
        let second = NoiseStream::new(3, 0)
            .unwrap()
            .latents(0, LatentShape::new(3, 2, 3, 5))
            .unwrap();
        assert_eq!(&x.as_slice()[3 * plane..], second.as_slice());
    }

    /// Known-answer vectors published with Random123 (kat_vectors: counter, key → output).
    #[test]
    fn philox_known_answers() {
        let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            ([0; 4], [0; 2], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (ctr, key, want) in cases {
            assert_eq!(philox4x32(10, ctr, key), want, "ctr {ctr:08x?} key {key:08x?}");
        }
    }

    #[test]
    fn gaussian_moments() {
        let s = NoiseStream::new(42, 0).unwrap();
        let n = s.latents(0, LatentShape::new(4, 16, 32, 32)).unwrap();
        let v = n.as_slice();
        let len = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / len;
        let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / len;
        let skew = v.iter().map(|&x| (f64::from(x) - mean).powi(3)).sum::<f64>() / len / var.powf(1.5);
        let kurt = v.iter().map(|&x| (f64::from(x) - mean).powi(4)).sum::<f64>() / len / (var * var);
        // 65,536 samples: standard errors are about 0.004 (mean), 0.0055 (var), 0.01 (skew), 0.02 (kurtosis).
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "variance {var}");
        assert!(skew.abs() < 0.05, "skewness {skew}");
        assert!((kurt - 3.0).abs() < 0.1, "kurtosis {kurt}");
        let tail = v.iter().filter(|x| x.abs() > 1.96).count() as f64 / len;
        assert!((tail - 0.05).abs() < 0.005, "two-sided 5% tail {tail}");
    }

    #[test]
    fn independent_of_who_draws_it() {
        let s = NoiseStream::new(7, 3).unwrap();
        let shape = LatentShape::new(6, 3, 5, 9);
        let whole = s.latents(10, shape).unwrap();
        let part = s.latents(13, shape.with_frames(3)).unwrap();
        assert_eq!(whole.frames(3..6), part.as_slice());
        assert_eq!(whole.as_slice()[shape.frame_len() + 2 * 9 + 5], s.at(11, 0, 2, 5));
        // Different seeds and steps give different streams.
        assert_ne!(s.at(0, 0, 0, 0), NoiseStream::new(8, 3).unwrap().at(0, 0, 0, 0));
        assert_ne!(s.at(0, 0, 0, 0), NoiseStream::new(7, 4).unwrap().at(0, 0, 0, 0));
        assert_eq!(NoiseStream::new(1, 1 << 16).unwrap_err(), NoiseError::Step(1 << 16));
    }
}
