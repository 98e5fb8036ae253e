//! Co-denoising throughput of the procedural model on CPU, and the share of step time spent in
//! the overlap exchange and blend. Run: `cargo bench -p longshot-benches --bench codenoise`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use longshot_benches::{config, render, render_previewed};

fn codenoise(c: &mut Criterion) {
    // 4 windows (69 latent frames ≈ 17 s at 16 fps) at 240×416 (latent 30×52), 4 steps.
    let cfg = config(4, (30, 52), 4);
    let frame_steps = (cfg.plan.latent_frames() * cfg.schedule.steps()) as u64;
    let mut g = c.benchmark_group("codenoise_procedural_240x416");
    g.sample_size(10);
    g.throughput(Throughput::Elements(frame_steps));
    for parts in [1, 2] {
        let r = render(&cfg, parts);
        for (p, t) in r.timings.iter().enumerate() {
            let total = t.total().as_secs_f64();
            let share = (t.exchange + t.blend).as_secs_f64() / total;
            eprintln!(
                "partitions={parts} partition={p}: loop {total:.3}s, model {:.1}%, exchange wait {:.2}%, blend {:.3}%, scheduler {:.2}%, hash {:.3}%, exchange+blend {:.2}%",
                100.0 * t.model.as_secs_f64() / total,
                100.0 * t.exchange.as_secs_f64() / total,
                100.0 * t.blend.as_secs_f64() / total,
                100.0 * t.scheduler.as_secs_f64() / total,
                100.0 * t.verify.as_secs_f64() / total,
                100.0 * share
            );
        }
        g.bench_function(format!("{parts}_partitions"), |b| b.iter(|| render(&cfg, parts)));
    }
    g.finish();
}

/// One procedural forward at Wan2.1's 480×832 window (latent 21×16×60×104), conditional branch.
fn forward_480p(c: &mut Criterion) {
    use longshot_core::denoiser::{Branch, Conditioning, StepPoint, WindowContext};
    use longshot_core::noise::NoiseStream;
    use longshot_core::tensor::{LatentShape, Latents};
    let model = longshot_models::ProceduralModel::new();
    let cond = Conditioning::new("a red sunset over a calm ocean", "");
    let mut d = model.denoiser(&cond, 60, 104);
    let shape = LatentShape::new(21, 16, 60, 104);
    let x = NoiseStream::new(1, 0)
        .expect("stream")
        .latents(0, shape)
        .expect("noise");
    let mut v = Latents::zeros(shape);
    let step = StepPoint {
        index: 0,
        sigma: 0.5,
        timestep: 500.0,
    };
    let mut g = c.benchmark_group("procedural_forward");
    g.sample_size(10);
    g.throughput(Throughput::Elements(21));
    g.bench_function("480x832_window", |b| {
        b.iter(|| {
            d.predict(
                &x,
                WindowContext {
                    index: 0,
                    first_frame: 0,
                },
                step,
                Branch::Conditional,
                &mut v,
            )
            .expect("forward")
        })
    });
    g.finish();
}

/// Live previews every step (the most often a job can ask for) against none, on the clip of
/// [`codenoise`]: the x0 prediction and the projection of every owned latent frame to RGB, as
/// a share of the loop's wall time.
fn preview_overhead(c: &mut Criterion) {
    let cfg = config(4, (30, 52), 4);
    let mut g = c.benchmark_group("preview_procedural_240x416");
    g.sample_size(10);
    for parts in [1, 2] {
        let (r, previews) = render_previewed(&cfg, parts, 1);
        for (p, t) in r.timings.iter().enumerate() {
            eprintln!(
                "partitions={parts} partition={p}: loop {:.3}s, preview {:.2} ms per step = {:.3}% of the loop ({} preview messages in all)",
                t.total().as_secs_f64(),
                1e3 * t.preview.as_secs_f64() / cfg.schedule.steps() as f64,
                100.0 * t.preview.as_secs_f64() / t.total().as_secs_f64(),
                previews.len()
            );
        }
        g.bench_function(format!("{parts}_partitions_no_preview"), |b| {
            b.iter(|| render(&cfg, parts))
        });
        g.bench_function(format!("{parts}_partitions_preview_every_step"), |b| {
            b.iter(|| render_previewed(&cfg, parts, 1))
        });
    }
    g.finish();
}

criterion_group!(benches, codenoise, forward_480p, preview_overhead);
criterion_main!(benches);
