//! GPU parity against models' own code, called rather than restated: patchify through
//! `wan::transformer::embed::PatchEmbedding::forward` (loaded from a checkpoint file whose projection is the
//! identity, so its output is exactly the gathered patches), `wan::transformer::embed::unpatchify`, and the
//! VAE's RGB output `wan::vae::DecodedFrames::rgb_frame`.
//!
//! One reference is RESTATED, because it is private: the gated residual is `add_gated` in
//! models/src/wan/transformer/block.rs, reachable only through a whole `WanBlock::forward` (no GPU block
//! exists in this crate's reach yet; the GPU transformer's block-level parity will cover it).
//!
//! Needs a GPU (feature `cuda`): without one every test FAILS with the probe's reason. Never run
//! by CI; `scripts/gpu/pack.sh` builds it for the device machine.

use longshot_kernels::cuda::parity::{assert_bits, down, gpu, poisoned, up, Rng};
use longshot_models::wan::tensor_io::{self, Tensor};
use longshot_models::wan::transformer::embed::{unpatchify, PatchEmbedding, TokenGrid};
use longshot_models::wan::transformer::keys::TransformerKeys;
use longshot_models::wan::transformer::layers::Fetch;
use longshot_models::wan::vae::DecodedFrames;
use longshot_models::wan::{TransformerConfig, WeightStore};

const SHAPES: [(usize, [usize; 3], [usize; 3]); 3] = [
    // (channels, token grid (f, h, w), patch (pt, ph, pw)): Wan's patch, an odd grid, a 3D patch.
    (16, [3, 4, 5], [1, 2, 2]),
    (4, [1, 7, 3], [1, 2, 2]),
    (3, [2, 3, 2], [2, 3, 1]),
];

/// Wan's patch embedding with an identity projection (D = C·pt·ph·pw, bias 0), loaded through
/// the checkpoint path the real model uses.
fn identity_patch_embedding(dir: &std::path::Path, c: usize, patch: [usize; 3]) -> PatchEmbedding {
    let feat = c * patch.iter().product::<usize>();
    let mut eye = vec![0.0f32; feat * feat];
    for j in 0..feat {
        eye[j * feat + j] = 1.0;
    }
    let [pt, ph, pw] = patch;
    let weight = Tensor {
        shape: vec![feat, c, pt, ph, pw],
        data: eye,
    };
    let bias = Tensor {
        shape: vec![feat],
        data: vec![0.0; feat],
    };
    let path = dir.join(format!("patch_{c}_{pt}{ph}{pw}.safetensors"));
    tensor_io::write(
        &path,
        &[("patch_embedding.weight", &weight), ("patch_embedding.bias", &bias)],
    )
    .unwrap();
    let store = WeightStore::open_files(&[path]).unwrap();
    let keys = TransformerKeys::Diffusers { prefix: String::new() };
    let cfg = TransformerConfig {
        patch_size: patch,
        in_channels: c,
        num_attention_heads: 1,
        attention_head_dim: feat,
        ..TransformerConfig::default()
    };
    PatchEmbedding::load(
        &Fetch {
            store: &store,
            keys: &keys,
        },
        &cfg,
    )
    .unwrap()
}

#[test]
fn patchify_is_the_patch_embeddings_gather() {
    let mut rng = Rng::new("patchify");
    let dir = tempfile::tempdir().unwrap();
    for (c, [gf, gh, gw], patch) in SHAPES {
        let [pt, ph, pw] = patch;
        let x = rng.vec(c * gf * pt * gh * ph * gw * pw, 1.0);
        // Identity projection: every output is one input times 1 plus zeros, so exact.
        let want = identity_patch_embedding(dir.path(), c, patch).forward(&x, TokenGrid { f: gf, h: gh, w: gw });
        let mut out = poisoned(want.len());
        gpu().patchify(&up(&x), c, [gf, gh, gw], patch, &mut out).unwrap();
        assert_bits(
            &format!("patchify C={c} grid {:?} patch {patch:?}", [gf, gh, gw]),
            &down(&out),
            &want,
        );
    }
}

#[test]
fn unpatchify_is_models_unpatchify() {
    let mut rng = Rng::new("unpatchify");
    for (c, grid, patch) in SHAPES {
        let [gf, gh, gw] = grid;
        let y = rng.vec(gf * gh * gw * c * patch.iter().product::<usize>(), 1.0);
        let want = unpatchify(&y, TokenGrid { f: gf, h: gh, w: gw }, patch, c);
        let mut out = poisoned(want.len());
        gpu().unpatchify(&up(&y), c, grid, patch, &mut out).unwrap();
        assert_bits(
            &format!("unpatchify C={c} grid {grid:?} patch {patch:?}"),
            &down(&out),
            &want,
        );
    }
}

#[test]
fn rgb_output_is_the_decoders_rgb_frame() {
    let mut rng = Rng::new("rgb");
    let (frames, height, width) = (3, 17, 23);
    // Beyond [−1, 1] so the clamp is exercised on both sides.
    let data = rng.vec(frames * 3 * height * width, 1.3);
    let decoded = DecodedFrames {
        first_frame: 5,
        frames,
        channels: 3,
        height,
        width,
        data,
    };
    for i in 0..frames {
        let want = decoded.rgb_frame(i).expect("3 channels").data;
        let mut out = poisoned(want.len());
        gpu().rgb_from_planar(&up(decoded.frame(i)), &mut out).unwrap();
        assert_bits(&format!("rgb_from_planar frame {i}"), &down(&out), &want);
    }
}

#[test]
fn gated_residual_matches_the_restated_block_formula() {
    let mut rng = Rng::new("gated_residual");
    let (rows, dim) = (33, 1536);
    let (x, y, gate) = (rng.vec(rows * dim, 8.0), rng.vec(rows * dim, 2.0), rng.vec(dim, 1.0));
    // RESTATED from models/src/wan/transformer/block.rs `add_gated` (private): `x += y * gate`, the product
    // rounded first.
    let want: Vec<f32> = x
        .iter()
        .zip(&y)
        .enumerate()
        .map(|(i, (&xv, &yv))| xv + yv * gate[i % dim])
        .collect();
    let mut d = up(&x);
    gpu().gated_residual(&mut d, &up(&y), &up(&gate)).unwrap();
    assert_bits("gated_residual (restated reference)", &down(&d), &want);
}
