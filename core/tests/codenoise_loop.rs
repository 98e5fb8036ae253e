//! The co-denoising loop with a small window-coupled toy model: bit-identity across partition
//! counts, divergence detection, lost neighbours and cancellation. (The procedural reference model's
//! versions of these tests, with seam metrics, live in the workspace `tests/` crate.)

use longshot_core::codenoise::{denoise_partition, BlendMode, CoDenoiseError, PartitionConfig};
use longshot_core::denoiser::{
    Branch, DenoiseError, Denoiser, FrameDecoder, ModelInfo, RgbFrame, StepPoint, WindowContext,
};
use longshot_core::exchange::{ChannelExchange, Exchange, ExchangeError, OverlapMessage, Payload, Side};
use longshot_core::local::render_local;
use longshot_core::plan::WindowPlan;
use longshot_core::preview::PreviewMap;
use longshot_core::scheduler::{Schedule, Solver};
use longshot_core::tensor::Latents;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// x̂0 = shrink·(1−σ)·(mean of the window over time): every window sees only its own frames, so
/// neighbouring windows disagree on their overlap unless the loop couples them.
struct WindowMeanModel(ModelInfo);

impl Denoiser for WindowMeanModel {
    fn info(&self) -> &ModelInfo {
        &self.0
    }
    fn predict(
        &mut self,
        x: &Latents,
        _w: WindowContext,
        step: StepPoint,
        branch: Branch,
        out: &mut Latents,
    ) -> Result<(), DenoiseError> {
        let shape = x.shape();
        let (n, fl) = (shape.frames, shape.frame_len());
        let shrink = if branch == Branch::Conditional { 0.9f32 } else { 0.4 };
        let s = step.sigma;
        for p in 0..fl {
            let mean: f32 = (0..n).map(|t| x.as_slice()[t * fl + p]).sum::<f32>() / n as f32;
            for t in 0..n {
                let xi = x.as_slice()[t * fl + p];
                let x0 = shrink * (1.0 - s) * (0.5 * mean + 0.5 * xi);
                out.as_mut_slice()[t * fl + p] = (xi - x0) / s;
            }
        }
        Ok(())
    }
}

/// Causal toy decoder with a one-frame warm-up: output frame for latent l mixes l−1 and l.
struct ToyDecoder;

impl FrameDecoder for ToyDecoder {
    fn halo(&self) -> usize {
        1
    }
    fn preview_map(&self) -> Result<PreviewMap, DenoiseError> {
        // Its frames are not RGB (one value per latent value).
        Err(DenoiseError::Model("the toy decoder makes no previews".into()))
    }
    fn decode(
        &self,
        z: &Latents,
        first_global: usize,
        emit_from: usize,
        sink: &mut dyn FnMut(usize, RgbFrame),
    ) -> Result<(), DenoiseError> {
        let fl = z.shape().frame_len();
        for l in emit_from..z.shape().frames {
            let g = first_global + l;
            let cur = z.frames(l..l + 1);
            let prev = if l > 0 { z.frames(l - 1..l) } else { cur };
            let reps = if g == 0 { 1 } else { 4 };
            for k in 0..reps {
                let a = (k + 1) as f32 / 4.0;
                let data: Vec<f32> = (0..fl)
                    .map(|i| 1.0 / (1.0 + (-(prev[i] + a * (cur[i] - prev[i]))).exp()))
                    .collect();
                let idx = if g == 0 { 0 } else { 4 * (g - 1) + 1 + k };
                sink(
                    idx,
                    RgbFrame {
                        width: fl,
                        height: 1,
                        data,
                    },
                );
            }
        }
        Ok(())
    }
}

/// A causal decoder whose output depends on the `0`-field many preceding latent frames (their
/// mean), so a wrong or missing warm-up changes the output.
struct WideHaloDecoder(usize);

impl FrameDecoder for WideHaloDecoder {
    fn halo(&self) -> usize {
        self.0
    }
    fn preview_map(&self) -> Result<PreviewMap, DenoiseError> {
        // Its frames are not RGB (one value per latent value).
        Err(DenoiseError::Model("the toy decoder makes no previews".into()))
    }
    fn decode(
        &self,
        z: &Latents,
        first_global: usize,
        emit_from: usize,
        sink: &mut dyn FnMut(usize, RgbFrame),
    ) -> Result<(), DenoiseError> {
        let fl = z.shape().frame_len();
        for l in emit_from..z.shape().frames {
            let g = first_global + l;
            let from = l.saturating_sub(self.0);
            let n = (l + 1 - from) as f32;
            let data: Vec<f32> = (0..fl)
                .map(|i| (from..=l).map(|k| z.frames(k..k + 1)[i]).sum::<f32>() / n)
                .collect();
            sink(
                g,
                RgbFrame {
                    width: fl,
                    height: 1,
                    data,
                },
            );
        }
        Ok(())
    }
}

fn info() -> ModelInfo {
    ModelInfo {
        video_warmup: None,
        name: "toy".into(),
        window_frames: 8,
        latent_channels: 2,
        temporal_compression: 4,
        spatial_compression: 1,
        default_overlap: 2,
        weights: String::new(),
        reference_images: 0,
    }
}

fn config(solver: Solver, mode: BlendMode) -> PartitionConfig {
    // 60 latent frames, W=8, O=2 (stride 6): 10 windows, padded to 62.
    let plan = WindowPlan::new(60, 8, 2).unwrap();
    assert_eq!(plan.windows(), 10);
    PartitionConfig {
        first_step: 0,
        repaint: None,
        plan,
        windows: 0..plan.windows(),
        channels: 2,
        height: 3,
        width: 4,
        schedule: Schedule::new(solver, 6, 3.0).unwrap(),
        guidance: 3.0,
        noise: longshot_core::noise::NoiseKeys::single(1234),
        mode,
        hash_every: 2,
        output_frames: 1 + 4 * 59,
    }
}

fn render(cfg: &PartitionConfig, parts: usize) -> longshot_core::local::LocalRender {
    render_local(
        cfg,
        parts,
        &|| Box::new(WindowMeanModel(info())),
        &ToyDecoder,
        Duration::from_secs(20),
    )
    .unwrap()
}

#[test]
fn bit_identical_whatever_the_partition_count() {
    for solver in [Solver::UniPc, Solver::Euler] {
        for mode in [BlendMode::CoDenoise, BlendMode::Independent] {
            let cfg = config(solver, mode);
            let one = render(&cfg, 1);
            assert_eq!(one.frames.len(), 1 + 4 * 59);
            for parts in 2..=4 {
                let many = render(&cfg, parts);
                assert!(
                    one.latents == many.latents,
                    "{solver:?} {mode:?}: latents differ with {parts} partitions"
                );
                assert!(
                    one.frames == many.frames,
                    "{solver:?} {mode:?}: frames differ with {parts} partitions"
                );
            }
        }
    }
}

#[test]
fn a_decoder_halo_wider_than_a_partition_is_chained_from_several_neighbours() {
    // Each of 4 partitions owns 12–18 frames; a 25-frame halo spans up to three of them.
    let cfg = config(Solver::Euler, BlendMode::CoDenoise);
    let decoder = WideHaloDecoder(25);
    let run = |parts| {
        render_local(
            &cfg,
            parts,
            &|| Box::new(WindowMeanModel(info())),
            &decoder,
            Duration::from_secs(20),
        )
        .unwrap()
    };
    let one = run(1);
    assert_eq!(one.frames.len(), 60);
    for parts in 2..=4 {
        assert!(one.frames == run(parts).frames, "frames differ with {parts} partitions");
    }
}

#[test]
fn coupling_changes_the_result_and_the_overlaps_agree() {
    let coupled = render(&config(Solver::UniPc, BlendMode::CoDenoise), 3);
    let independent = render(&config(Solver::UniPc, BlendMode::Independent), 3);
    assert_ne!(coupled.latents, independent.latents);
    // δ is reported once per boundary per step, and the toy windows really disagree.
    assert_eq!(coupled.disagreement.len(), 9);
    assert!(coupled
        .disagreement
        .iter()
        .all(|(_, d)| d.len() == 6 && d.iter().all(|&x| x > 0.0)));
}

/// Flips one value of one velocity message: the two copies of that overlap then differ, and the
/// hash check must stop the render.
struct Corrupting {
    inner: ChannelExchange,
    at_step: u32,
}

impl Exchange for Corrupting {
    fn send(&mut self, side: Side, mut msg: OverlapMessage) -> Result<(), ExchangeError> {
        if msg.step == self.at_step {
            if let Payload::Velocity(v) = &mut msg.payload {
                v[3] += 1e-3;
            }
        }
        self.inner.send(side, msg)
    }
    fn recv(&mut self, side: Side, step: u32) -> Result<OverlapMessage, ExchangeError> {
        self.inner.recv(side, step)
    }
}

#[test]
fn a_corrupted_overlap_is_caught_as_divergence() {
    let base = config(Solver::UniPc, BlendMode::CoDenoise);
    let mut ex = ChannelExchange::chain(2, Duration::from_secs(10));
    let right_ex = ex.pop().unwrap();
    let left_ex = ex.pop().unwrap();
    let cancel = AtomicBool::new(false);
    let (left, right) = std::thread::scope(|s| {
        let l = s.spawn(|| {
            let cfg = PartitionConfig {
                windows: 0..5,
                ..base.clone()
            };
            let mut ex = Corrupting {
                inner: left_ex,
                at_step: 2,
            };
            denoise_partition(&cfg, &mut WindowMeanModel(info()), &mut ex, &cancel, &mut |_| {})
        });
        let r = s.spawn(|| {
            let cfg = PartitionConfig {
                windows: 5..10,
                ..base.clone()
            };
            let mut ex = right_ex;
            denoise_partition(&cfg, &mut WindowMeanModel(info()), &mut ex, &cancel, &mut |_| {})
        });
        (l.join().unwrap(), r.join().unwrap())
    });
    // Step 2 is corrupted; hashes are compared after steps 2, 4 and 6 (index 1, 3, 5): caught at index 3.
    for r in [left, right] {
        match r {
            Err(CoDenoiseError::Divergence { boundary: 4, step: 3 }) => {}
            other => panic!("expected a divergence at boundary 4 after step 3, got {other:?}"),
        }
    }
}

#[test]
fn a_lost_neighbour_is_a_timeout_not_a_hang() {
    let cfg = PartitionConfig {
        windows: 0..5,
        ..config(Solver::Euler, BlendMode::CoDenoise)
    };
    let mut ex = ChannelExchange::chain(2, Duration::from_millis(300));
    let _right_never_runs = ex.pop().unwrap();
    let mut left = ex.pop().unwrap();
    let t = Instant::now();
    let err = denoise_partition(
        &cfg,
        &mut WindowMeanModel(info()),
        &mut left,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CoDenoiseError::Exchange(ExchangeError::Timeout {
                side: Side::Right,
                step: 0,
                ..
            })
        ),
        "{err:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(err.to_string().contains("right neighbour"), "{err}");
}

#[test]
fn cancellation_stops_the_loop() {
    let cfg = config(Solver::Euler, BlendMode::CoDenoise);
    let mut ex = ChannelExchange::chain(1, Duration::from_secs(1));
    let err = denoise_partition(
        &cfg,
        &mut WindowMeanModel(info()),
        &mut ex[0],
        &AtomicBool::new(true),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, CoDenoiseError::Cancelled));
}

/// The inner exchange of a grouped exchange must see no velocity: they all go over the group.
struct NoVelocities(ChannelExchange);

impl Exchange for NoVelocities {
    fn send(&mut self, side: Side, msg: OverlapMessage) -> Result<(), ExchangeError> {
        if matches!(msg.payload, Payload::Velocity(_)) {
            return Err(ExchangeError::Protocol {
                side,
                reason: "a velocity reached the inner exchange".into(),
            });
        }
        self.0.send(side, msg)
    }
    fn recv(&mut self, side: Side, step: u32) -> Result<OverlapMessage, ExchangeError> {
        self.0.recv(side, step)
    }
}

/// Velocities over a grouped transport (the shape of the NCCL path), hashes and halos over the
/// plain exchange: the render is bit-identical to the plain one for every partition count.
#[test]
fn a_render_over_the_grouped_exchange_is_bit_identical() {
    use longshot_core::grouped_exchange::{ChannelGroup, GroupedExchange};
    use longshot_core::local::render_local_with;
    let cfg = config(Solver::UniPc, BlendMode::CoDenoise);
    let one = render(&cfg, 1);
    for parts in 2..=4 {
        let grouped = render_local_with(&cfg, parts, &|| Box::new(WindowMeanModel(info())), &ToyDecoder, |n| {
            let t = Duration::from_secs(20);
            ChannelGroup::chain(n, t)
                .into_iter()
                .zip(ChannelExchange::chain(n, t))
                .enumerate()
                .map(|(i, (g, e))| GroupedExchange::new(g, NoVelocities(e), i > 0, i + 1 < n))
                .collect()
        })
        .unwrap();
        assert!(one.latents == grouped.latents, "latents differ with {parts} partitions");
        assert!(one.frames == grouped.frames, "frames differ with {parts} partitions");
    }
}
