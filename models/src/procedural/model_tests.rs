//! Model-level tests of the procedural model: the per-axis posterior against a dense solve, its
//! limits, determinism, the prompt's palette after decoding, and a timing probe.

use super::colour::CHANNELS;
use super::prior::MEAN_SCALE;
use super::prompt::gaussian_latents;
use super::{basis, PriorParams, ProceduralDenoiser, ProceduralModel};
use longshot_core::denoiser::{Branch, Conditioning, Denoiser, RgbFrame, StepPoint, WindowContext};
use longshot_core::tensor::{LatentShape, Latents};
use nalgebra::{DMatrix, DVector};

fn cond(prompt: &str, negative: &str) -> Conditioning {
    Conditioning::new(prompt, negative)
}

fn denoiser(c: &Conditioning, shape: LatentShape) -> ProceduralDenoiser {
    ProceduralDenoiser::new(ProceduralModel::new().info(), c, shape.height, shape.width)
}

fn step(sigma: f32) -> StepPoint {
    StepPoint {
        index: 0,
        sigma,
        timestep: sigma * 1000.0,
    }
}

fn window(first_frame: usize) -> WindowContext {
    WindowContext { index: 0, first_frame }
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let den: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum();
    (num / den).sqrt()
}

/// `E[x0 | x_t]` by building `Σ` as one dense matrix and solving the linear system in f64.
fn dense_posterior_mean(p: &PriorParams, first_frame: usize, x: &Latents, sigma: f64) -> Vec<f64> {
    let s = x.shape();
    let (kt, ky, kx) = (
        basis::se_kernel(s.frames, p.temporal_length),
        basis::se_kernel(s.height, p.spatial_length),
        basis::se_kernel(s.width, p.spatial_length),
    );
    let var = p.channel_variance();
    let coords: Vec<(usize, usize, usize, usize)> = (0..s.frames)
        .flat_map(|t| {
            (0..CHANNELS).flat_map(move |c| (0..s.height).flat_map(move |y| (0..s.width).map(move |xx| (t, c, y, xx))))
        })
        .collect();
    let n = coords.len();
    let sigma_full = DMatrix::from_fn(n, n, |i, j| {
        let ((t, c, y, xx), (t2, c2, y2, x2)) = (coords[i], coords[j]);
        if c == c2 {
            var[c] * kt[(t, t2)] * ky[(y, y2)] * kx[(xx, x2)]
        } else {
            0.0
        }
    });
    let mut mean = vec![0.0f32; n];
    p.mean_window(first_frame, s.frames, s.height, s.width, &mut mean);
    let mu = DVector::from_iterator(n, mean.iter().map(|&m| f64::from(m)));
    let xt = DVector::from_iterator(n, x.as_slice().iter().map(|&v| f64::from(v)));
    let keep = 1.0 - sigma;
    let system = &sigma_full * (keep * keep) + DMatrix::identity(n, n) * (sigma * sigma);
    let z = system
        .lu()
        .solve(&(&xt - &mu * keep))
        .expect("the system is positive definite");
    (mu + &sigma_full * z * keep).iter().copied().collect()
}

#[test]
fn per_axis_posterior_matches_a_dense_solve() {
    let shape = LatentShape::new(3, CHANNELS, 3, 4);
    for (c, branch) in [
        (cond("a red sunset", "blurry"), Branch::Conditional),
        (cond("fast storm", "blurry grey"), Branch::Unconditional),
        (cond("x", ""), Branch::Unconditional),
    ] {
        let mut d = denoiser(&c, shape);
        let params = d.params(branch).clone();
        let x = gaussian_latents(shape, 11);
        for &sigma in &[0.05f32, 0.3, 0.7, 0.95] {
            let want = dense_posterior_mean(&params, 7, &x, f64::from(sigma));
            let mut got = Latents::zeros(shape);
            d.posterior_mean(&x, window(7), sigma, branch, &mut got).unwrap();
            let worst = got
                .as_slice()
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (f64::from(g) - w).abs())
                .fold(0.0, f64::max);
            assert!(worst < 5e-6, "{branch:?} σ={sigma}: max |eigen − dense| = {worst}");
            // The velocity is the same posterior mean seen through v = (x_t − x̂0)/σ.
            let mut v = Latents::zeros(shape);
            d.predict(&x, window(7), step(sigma), branch, &mut v).unwrap();
            for ((&vi, &xi), &w) in v.as_slice().iter().zip(x.as_slice()).zip(&want) {
                let expect = (f64::from(xi) - w) / f64::from(sigma);
                assert!(
                    (f64::from(vi) - expect).abs() < 5e-6 / f64::from(sigma) + 1e-5 * expect.abs(),
                    "σ={sigma}: v {vi} vs {expect}"
                );
            }
        }
    }
}

#[test]
fn small_sigma_keeps_x_t_and_full_noise_gives_the_mean() {
    let shape = LatentShape::new(6, CHANNELS, 8, 10);
    let mut d = denoiser(&cond("a slow green forest", ""), shape);
    let (mut x0, mut mean, mut out) = (Latents::zeros(shape), Latents::zeros(shape), Latents::zeros(shape));
    d.sample_prior(&gaussian_latents(shape, 1), window(0), Branch::Conditional, &mut x0)
        .unwrap();
    d.prior_mean(window(0), Branch::Conditional, &mut mean).unwrap();
    let noise = gaussian_latents(shape, 2);
    let noisy = |sigma: f32| {
        let data = x0
            .as_slice()
            .iter()
            .zip(noise.as_slice())
            .map(|(&a, &e)| (1.0 - sigma) * a + sigma * e)
            .collect();
        Latents::from_vec(shape, data).unwrap()
    };
    let xt = noisy(1e-3);
    d.posterior_mean(&xt, window(0), 1e-3, Branch::Conditional, &mut out)
        .unwrap();
    let near_xt = rel_err(out.as_slice(), xt.as_slice());
    assert!(near_xt < 3e-3, "σ=1e-3: ‖x̂0 − x_t‖/‖x_t‖ = {near_xt}");
    d.posterior_mean(&noisy(0.999), window(0), 0.999, Branch::Conditional, &mut out)
        .unwrap();
    let near_mean = rel_err(out.as_slice(), mean.as_slice());
    assert!(near_mean < 0.05, "σ=0.999: ‖x̂0 − μ‖/‖μ‖ = {near_mean}");
    // At σ = 1 the data term vanishes exactly: x̂0 = μ, bit for bit.
    d.posterior_mean(&noise, window(0), 1.0, Branch::Conditional, &mut out)
        .unwrap();
    assert_eq!(out, mean);
}

#[test]
fn same_prompt_same_bits_whatever_the_thread_count() {
    let shape = LatentShape::new(5, CHANNELS, 9, 13);
    let c = cond("a red sunset", "");
    let x = gaussian_latents(shape, 3);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut d = ProceduralModel::new().denoiser(&c, shape.height, shape.width);
            let mut v = Latents::zeros(shape);
            d.predict(&x, window(4), step(0.6), Branch::Conditional, &mut v)
                .unwrap();
            v
        })
    };
    let one = run(1);
    assert!(one.as_slice().iter().all(|v| v.is_finite()));
    assert!(one
        .as_slice()
        .iter()
        .zip(run(3).as_slice())
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    // A different prompt is a different prior, and a different velocity.
    let mut other = ProceduralModel::new().denoiser(&cond("a blue ocean", ""), shape.height, shape.width);
    let mut v = Latents::zeros(shape);
    other
        .predict(&x, window(4), step(0.6), Branch::Conditional, &mut v)
        .unwrap();
    assert_ne!(v, one);
}

#[test]
fn a_blend_mixes_the_two_prompts_priors() {
    let shape = LatentShape::new(3, CHANNELS, 4, 6);
    let (red, blue) = (cond("a red sunset", "fog"), cond("a blue ocean", ""));
    let mixed = Conditioning {
        blend: Some(longshot_core::denoiser::PromptBlend {
            prompt: blue.prompt.clone(),
            negative_prompt: blue.negative_prompt.clone(),
            weight: 0.25,
        }),
        ..red.clone()
    };
    let mean = |c: &Conditioning, branch| {
        let mut out = Latents::zeros(shape);
        denoiser(c, shape).prior_mean(window(5), branch, &mut out).unwrap();
        out.into_vec()
    };
    for branch in [Branch::Conditional, Branch::Unconditional] {
        let (a, b, m) = (mean(&red, branch), mean(&blue, branch), mean(&mixed, branch));
        let want: Vec<f32> = a.iter().zip(&b).map(|(&a, &b)| 0.75 * a + 0.25 * b).collect();
        assert_eq!(m, want, "{branch:?}: the mean is the weighted mix");
    }
    // The texture statistics move a quarter of the way too, in both branches.
    let d = denoiser(&mixed, shape);
    let (r, bl) = (
        PriorParams::from_prompt("a red sunset"),
        PriorParams::from_prompt("a blue ocean"),
    );
    let lerp = |a: f64, b: f64| 0.75 * a + 0.25 * b;
    for branch in [Branch::Conditional, Branch::Unconditional] {
        let p = d.params(branch);
        assert_eq!(p.temporal_length, lerp(r.temporal_length, bl.temporal_length));
        assert_eq!(p.spatial_length, lerp(r.spatial_length, bl.spatial_length));
        assert_eq!(p.channel_std[0], lerp(r.channel_std[0], bl.channel_std[0]));
    }
}

#[test]
fn unconditional_branch_uses_the_negative_prompt() {
    let shape = LatentShape::new(2, CHANNELS, 2, 2);
    let d = denoiser(&cond("a red sunset", "dark night"), shape);
    let prompt = PriorParams::from_prompt("a red sunset");
    assert_eq!(d.params(Branch::Conditional), &prompt);
    // The negative prompt's mean, the prompt's texture statistics.
    let (negative, neutral) = (PriorParams::from_prompt("dark night"), PriorParams::neutral());
    let u = d.params(Branch::Unconditional);
    assert_eq!(
        (&u.stops, &u.offset, u.drift, &u.waves),
        (&negative.stops, &negative.offset, negative.drift, &negative.waves)
    );
    assert_eq!(
        (u.channel_std, u.temporal_length, u.spatial_length),
        (prompt.channel_std, prompt.temporal_length, prompt.spatial_length)
    );
    let u = denoiser(&cond("a red sunset", ""), shape)
        .params(Branch::Unconditional)
        .clone();
    assert_eq!(
        (&u.stops, &u.offset, u.drift, &u.waves),
        (&neutral.stops, &neutral.offset, neutral.drift, &neutral.waves)
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let shape = LatentShape::new(2, CHANNELS, 3, 3);
    let mut d = ProceduralModel::new().denoiser(&cond("rain", ""), 3, 3);
    let x = gaussian_latents(shape, 5);
    let mut out = Latents::zeros(shape);
    for sigma in [0.0, -0.1, 1.5, f32::NAN] {
        let err = d
            .predict(&x, window(0), step(sigma), Branch::Conditional, &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("sigma"), "{err}");
    }
    let wrong = Latents::zeros(LatentShape::new(2, CHANNELS, 3, 4));
    assert!(d
        .predict(&wrong, window(0), step(0.5), Branch::Conditional, &mut out)
        .is_err());
}

fn mean_colour(frames: &[RgbFrame]) -> [f64; 3] {
    let mut sum = [0.0; 3];
    let mut count = 0.0;
    for f in frames {
        for px in f.data.chunks_exact(3) {
            (0..3).for_each(|k| sum[k] += f64::from(px[k]));
            count += 1.0;
        }
    }
    sum.map(|s| s / count)
}

/// Mean decoded colour of the prior mean and of one prior sample of `prompt`.
fn decoded_colours(prompt: &str) -> ([f64; 3], [f64; 3]) {
    let shape = LatentShape::new(3, CHANNELS, 12, 16);
    let mut d = denoiser(&cond(prompt, ""), shape);
    let (mut mean, mut sample) = (Latents::zeros(shape), Latents::zeros(shape));
    d.prior_mean(window(0), Branch::Conditional, &mut mean).unwrap();
    d.sample_prior(&gaussian_latents(shape, 9), window(0), Branch::Conditional, &mut sample)
        .unwrap();
    let decode = |l: &Latents| {
        let mut frames = Vec::new();
        ProceduralModel::new()
            .decoder()
            .decode(l, 0, 0, &mut |_, f| frames.push(f))
            .unwrap();
        mean_colour(&frames)
    };
    (decode(&mean), decode(&sample))
}

#[test]
fn decoded_prior_follows_the_palette() {
    // Unguided, the prior is the palette muted by MEAN_SCALE (guidance brings it to the palette:
    // tests/tests/first_clip.rs renders it), so compare hues, not values.
    let (sunset, sunset_sample) = decoded_colours("a red sunset");
    let (ocean, ocean_sample) = decoded_colours("a blue ocean");
    // A sample adds texture (unguided, so at full strength against the muted mean).
    for (name, c, margin) in [("sunset mean", sunset, 0.1), ("sunset sample", sunset_sample, 0.03)] {
        assert!(c[0] > c[2] + margin, "{name} should be red, not blue: {c:?}");
    }
    for (name, c, margin) in [("ocean mean", ocean, 0.1), ("ocean sample", ocean_sample, 0.03)] {
        assert!(c[2] > c[0] + margin, "{name} should be blue, not red: {c:?}");
    }
    assert!(sunset[0] > ocean[0] && sunset[2] < ocean[2]);
    // The decoded mean is the palette's logit times MEAN_SCALE (the pattern averages out).
    let palette = PriorParams::from_prompt("a red sunset").palette();
    let want = palette.map(|p| 1.0 / (1.0 + (-(p / (1.0 - p)).ln() * MEAN_SCALE).exp()));
    assert!(
        (0..3).all(|k| (sunset[k] - want[k]).abs() < 0.05),
        "{sunset:?} vs {want:?}"
    );
}
