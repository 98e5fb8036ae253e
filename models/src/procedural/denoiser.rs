//! The procedural model's `Denoiser`: the exact flow-matching velocity of a Gaussian prior.
//!
//! `v = (x_t − x̂0)/σ` with `x̂0 = E[x0 | x_t]` from `posterior`. The conditional branch uses the
//! prompt's prior, the unconditional branch the negative prompt's mean (neutral when it is empty)
//! with the prompt's covariance (see [`PriorParams::unconditional`]).

use super::basis::AxisBasis;
use super::colour::CHANNELS;
use super::posterior::{self, Scratch, WindowBases};
use super::prior::PriorParams;
use super::ProceduralError;
use longshot_core::denoiser::{Branch, Conditioning, DenoiseError, Denoiser, ModelInfo, StepPoint, WindowContext};
use longshot_core::tensor::{LatentShape, Latents};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// One guidance branch: its prior and the eigenbases of its kernels.
struct BranchPrior {
    params: PriorParams,
    /// Inside a shot list's blend: the next prompt's prior and its weight. The mean is then
    /// `(1 − w)·μ + w·μ_next` and the texture statistics of `params` are already interpolated
    /// ([`PriorParams::blend_statistics`]).
    toward: Option<(PriorParams, f32)>,
    variance: [f64; CHANNELS],
    y: AxisBasis,
    x: AxisBasis,
    /// `K_t` depends only on the window length, which is fixed within a job: built on first use.
    temporal: BTreeMap<usize, AxisBasis>,
}

impl BranchPrior {
    fn new(params: PriorParams, toward: Option<(PriorParams, f32)>, height: usize, width: usize) -> Self {
        let y = AxisBasis::new(height, params.spatial_length);
        let x = AxisBasis::new(width, params.spatial_length);
        Self {
            variance: params.channel_variance(),
            params,
            toward,
            y,
            x,
            temporal: BTreeMap::new(),
        }
    }

    /// The prior mean of a window (see `toward`).
    fn mean_window(&self, first_frame: usize, frames: usize, height: usize, width: usize, out: &mut [f32]) {
        self.params.mean_window(first_frame, frames, height, width, out);
        if let Some((next, w)) = &self.toward {
            let mut b = vec![0.0f32; out.len()];
            next.mean_window(first_frame, frames, height, width, &mut b);
            out.iter_mut().zip(&b).for_each(|(a, &b)| *a = (1.0 - w) * *a + w * b);
        }
    }

    fn temporal(&mut self, frames: usize) -> &AxisBasis {
        let length = self.params.temporal_length;
        self.temporal
            .entry(frames)
            .or_insert_with(|| AxisBasis::new(frames, length))
    }
}

/// A denoiser bound to one job's conditioning and latent size.
pub struct ProceduralDenoiser {
    info: ModelInfo,
    height: usize,
    width: usize,
    conditional: BranchPrior,
    unconditional: BranchPrior,
    mean: Vec<f32>,
    x0: Vec<f32>,
    scratch: Scratch,
}

impl ProceduralDenoiser {
    pub fn new(info: ModelInfo, cond: &Conditioning, height: usize, width: usize) -> Self {
        let mut conditional = PriorParams::from_prompt(&cond.prompt);
        let mut unconditional = PriorParams::unconditional(&cond.negative_prompt, &conditional);
        let (mut toward, mut toward_unconditional) = (None, None);
        if let Some(b) = &cond.blend {
            let next = PriorParams::from_prompt(&b.prompt);
            let next_unconditional = PriorParams::unconditional(&b.negative_prompt, &next);
            conditional.blend_statistics(&next, b.weight);
            unconditional.blend_statistics(&next, b.weight);
            toward = Some((next, b.weight));
            toward_unconditional = Some((next_unconditional, b.weight));
        }
        Self {
            info,
            height,
            width,
            conditional: BranchPrior::new(conditional, toward, height, width),
            unconditional: BranchPrior::new(unconditional, toward_unconditional, height, width),
            mean: Vec::new(),
            x0: Vec::new(),
            scratch: Scratch::default(),
        }
    }

    /// The prior parameters a branch uses.
    pub fn params(&self, branch: Branch) -> &PriorParams {
        match branch {
            Branch::Conditional => &self.conditional.params,
            Branch::Unconditional => &self.unconditional.params,
        }
    }

    /// `E[x0 | x_t]` for window latents `x` at noise level `sigma` (0 ≤ σ ≤ 1), written to `x0`.
    pub fn posterior_mean(
        &mut self,
        x: &Latents,
        window: WindowContext,
        sigma: f32,
        branch: Branch,
        x0: &mut Latents,
    ) -> Result<(), DenoiseError> {
        self.check_shape(x.shape())?;
        self.check_shape(x0.shape())?;
        if !(0.0..=1.0).contains(&sigma) {
            return Err(ProceduralError::Sigma(sigma).into());
        }
        self.with_window(x.shape().frames, window, branch, |bases, variance, mean, scratch| {
            posterior::posterior_mean(bases, variance, mean, x.as_slice(), sigma, scratch, x0.as_mut_slice());
        });
        Ok(())
    }

    /// A sample of a branch's prior for the window, from white noise `z` (same shape), into `out`.
    pub fn sample_prior(
        &mut self,
        z: &Latents,
        window: WindowContext,
        branch: Branch,
        out: &mut Latents,
    ) -> Result<(), DenoiseError> {
        self.check_shape(z.shape())?;
        self.check_shape(out.shape())?;
        self.with_window(z.shape().frames, window, branch, |bases, variance, mean, scratch| {
            posterior::sample_prior(bases, variance, mean, z.as_slice(), scratch, out.as_mut_slice());
        });
        Ok(())
    }

    /// μ of a branch's prior for the window, into `out`.
    pub fn prior_mean(&self, window: WindowContext, branch: Branch, out: &mut Latents) -> Result<(), DenoiseError> {
        self.check_shape(out.shape())?;
        let s = out.shape();
        let prior = match branch {
            Branch::Conditional => &self.conditional,
            Branch::Unconditional => &self.unconditional,
        };
        prior.mean_window(window.first_frame, s.frames, s.height, s.width, out.as_mut_slice());
        Ok(())
    }

    /// Runs `f` with a branch's eigenbases for a window of `frames` frames, its `s_c²`, the window's
    /// μ (computed into the reusable buffer) and the scratch buffers.
    fn with_window<R>(
        &mut self,
        frames: usize,
        window: WindowContext,
        branch: Branch,
        f: impl FnOnce(&WindowBases<'_>, &[f64; CHANNELS], &[f32], &mut Scratch) -> R,
    ) -> R {
        let Self {
            conditional,
            unconditional,
            mean,
            scratch,
            height,
            width,
            ..
        } = self;
        let prior = match branch {
            Branch::Conditional => conditional,
            Branch::Unconditional => unconditional,
        };
        mean.resize(frames * CHANNELS * *height * *width, 0.0);
        prior.mean_window(window.first_frame, frames, *height, *width, mean);
        prior.temporal(frames);
        let bases = WindowBases {
            t: &prior.temporal[&frames],
            y: &prior.y,
            x: &prior.x,
        };
        f(&bases, &prior.variance, mean, scratch)
    }

    fn check_shape(&self, got: LatentShape) -> Result<(), DenoiseError> {
        if got.frames == 0 || got.channels != CHANNELS || got.height != self.height || got.width != self.width {
            let want = format!("[frames ≥ 1, {CHANNELS}, {}, {}]", self.height, self.width);
            return Err(DenoiseError::Shape { got, want });
        }
        Ok(())
    }
}

impl Denoiser for ProceduralDenoiser {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn predict(
        &mut self,
        x: &Latents,
        window: WindowContext,
        step: StepPoint,
        branch: Branch,
        out: &mut Latents,
    ) -> Result<(), DenoiseError> {
        let sigma = step.sigma;
        // v = (x_t − x̂0)/σ is undefined at σ = 0; the loop never asks for it, so it is an error.
        if !(sigma > 0.0 && sigma <= 1.0) {
            return Err(ProceduralError::Sigma(sigma).into());
        }
        if out.shape() != x.shape() {
            return Err(DenoiseError::Shape {
                got: out.shape(),
                want: format!("the input's shape {:?}", x.shape()),
            });
        }
        let mut buffer = std::mem::take(&mut self.x0);
        buffer.resize(x.shape().len(), 0.0);
        let mut x0 = Latents::from_vec(x.shape(), buffer).unwrap_or_else(|| Latents::zeros(x.shape()));
        let result = self.posterior_mean(x, window, sigma, branch, &mut x0);
        if result.is_ok() {
            let v = out.as_mut_slice().par_iter_mut();
            v.zip(x.as_slice().par_iter().zip(x0.as_slice()))
                .for_each(|(v, (&xt, &x0))| *v = (xt - x0) / sigma);
        }
        self.x0 = x0.into_vec();
        result
    }
}
