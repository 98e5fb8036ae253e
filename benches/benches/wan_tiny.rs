//! CPU time of one Wan2.1 forward for the tiny golden configs (transformer, VAE decode, umT5),
//! against a baseline measured in the same run: a 256³ f32 GEMM through the same GEMM the
//! reference ops use, so "fraction of GEMM throughput" is comparable across noisy machines.
//! Run: `cargo bench -p longshot-benches --bench wan_tiny`. Results: benches/RESULTS.md.

use longshot_kernels::cpu::nn_gemm::{gemm, MatMut, MatRef};
use longshot_models::wan::{forward_flops, TextEncoder, TransformerConfig, WanTransformer, WanVae, WanVaeDecoder};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/wan")
}

/// Median wall time of `f` in ms over enough runs to take ~0.5 s (at least 5).
fn median_ms(mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let t0 = Instant::now();
    f();
    let once = t0.elapsed().as_secs_f64();
    let runs = ((0.5 / once.max(1e-6)) as usize).clamp(5, 200);
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn gemm_gflops() -> f64 {
    let n = 256;
    let (a, b) = (values(n * n, 1), values(n * n, 2));
    let mut c = vec![0f32; n * n];
    let ms = median_ms(|| {
        gemm(
            1.0,
            MatRef::row_major(&a, n, n),
            MatRef::row_major(&b, n, n),
            0.0,
            MatMut::row_major(&mut c, n, n),
        )
    });
    2.0 * (n * n * n) as f64 / (ms * 1e-3) / 1e9
}

fn main() {
    let threads = rayon::current_num_threads();
    let base = gemm_gflops();
    println!("baseline: 256³ f32 GEMM {base:.1} GFLOP/s ({threads} threads)");
    println!("| what | shape | ms | GFLOP/s | of GEMM |");
    println!("|---|---|---|---|---|");
    // Transformer: the unit-test and pipeline-test configs at their golden shapes, and the
    // pipeline_tiny transformer at the cluster test's window (21 latent frames, 4×6, 512 tokens).
    for (name, dir, [c, t, h, w], tokens) in [
        ("transformer unit_test", "unit_test/transformer", [4, 2, 16, 16], 12),
        (
            "transformer pipeline_test",
            "pipeline_test/transformer",
            [16, 3, 6, 10],
            16,
        ),
        (
            "transformer pipeline_tiny (window)",
            "pipeline_tiny/transformer",
            [16, 21, 4, 6],
            512,
        ),
    ] {
        let m = WanTransformer::load(&fixtures().join(dir)).expect("fixture transformer");
        let cfg: &TransformerConfig = m.config();
        let text = m.encode_text(&values(tokens * cfg.text_dim, 3)).expect("text");
        let x = values(c * t * h * w, 4);
        let ms = median_ms(|| {
            std::hint::black_box(m.forward(&x, [c, t, h, w], 500.0, &text).expect("forward"));
        });
        let flops = forward_flops(cfg, t, h, w, tokens);
        let gf = flops / (ms * 1e-3) / 1e9;
        println!(
            "| {name} | {c}×{t}×{h}×{w}, {tokens} tokens | {ms:.3} | {gf:.2} | {:.1}% |",
            100.0 * gf / base
        );
    }
    // VAE decoder: whole-clip decode, per output frame.
    for (name, dir, [c, t, h, w]) in [
        ("VAE vae_small", "vae_small/vae", [16, 5, 3, 4]),
        ("VAE pipeline_tiny", "pipeline_tiny/vae", [16, 21, 4, 6]),
    ] {
        let vae = WanVaeDecoder::load(&fixtures().join(dir)).expect("fixture VAE");
        let z = values(c * t * h * w, 5);
        let frames = 1 + 4 * (t - 1);
        let ms = median_ms(|| {
            std::hint::black_box(vae.decode(&z, [1, c, t, h, w]).expect("decode"));
        });
        println!(
            "| {name} (per output frame) | {c}×{t}×{h}×{w} → {frames} frames | {:.3} | | |",
            ms / frames as f64
        );
    }
    // umT5: one prompt (tokenise, encode, pad to 512).
    let enc = TextEncoder::from_dirs(
        &fixtures().join("umt5_tiny/text_encoder"),
        &fixtures().join("umt5_tiny/tokenizer"),
    )
    .expect("umT5");
    let prompt = "a lighthouse on a cliff at dusk, waves crashing, cinematic lighting";
    let ms = median_ms(|| {
        std::hint::black_box(enc.encode(prompt).expect("encode"));
    });
    println!(
        "| umT5 umt5_tiny (one prompt) | {} tokens → 512×32 | {ms:.3} | | |",
        enc.tokenizer().encode(prompt).expect("tokens").seq_len()
    );
}
