//! GPU parity of the VAE decoder's ops whose references live in `longshot_kernels::cpu`: causal
//! 3D convolution (`nn_conv::CausalConv3d`), channel RMS norm and nearest ×2 upsampling
//! (`nn_vae`). The RGB output conversion is checked against models' own
//! `DecodedFrames::rgb_frame` in longshot-tests (`tests/tests/gpu_parity_models.rs`).
//!
//! Needs a GPU: without one every test FAILS with the probe's reason. Not run by CI.

use longshot_kernels::cpu::{nn_conv::CausalConv3d, nn_vae};
use longshot_kernels::cuda::parity::{assert_bits, assert_close, down, gpu, poisoned, up, Rng, F32_TOL};
use longshot_kernels::cuda::ConvShape;

#[test]
fn causal_conv3d_matches() {
    let mut rng = Rng::new("causal_conv3d");
    for &(frames, cin, cout, h, w, kt, ks) in &[
        (4, 8, 6, 9, 11, 3, 3),
        (3, 5, 4, 6, 7, 1, 3),
        (2, 16, 12, 5, 5, 1, 1),
        (3, 4, 5, 47, 50, 3, 3),
    ] {
        let x = rng.vec(frames * cin * h * w, 1.0);
        let (weight, bias) = (rng.vec(cout * cin * kt * ks * ks, 0.3), rng.vec(cout, 0.3));
        let want = CausalConv3d::new(&weight, &bias, cout, cin, kt, ks).forward(&x, frames, h, w);
        let mut out = poisoned(want.len());
        let s = ConvShape {
            frames,
            cin,
            cout,
            h,
            w,
            kt,
            ks,
        };
        gpu()
            .causal_conv3d(&up(&x), &up(&weight), &up(&bias), s, &mut out)
            .unwrap();
        assert_close(&format!("causal_conv3d {s:?}"), &down(&out), &want, F32_TOL);
    }
}

#[test]
fn channel_rms_norm_and_upsample_are_bit_identical() {
    let mut rng = Rng::new("vae_pointwise");
    let (frames, c, hw) = (3, 96, 37 * 29);
    let x = rng.vec(frames * c * hw, 2.0);
    let gamma = rng.vec(c, 1.0);
    let mut want = x.clone();
    nn_vae::channel_rms_norm(&mut want, c, hw, &gamma);
    let mut d = up(&x);
    gpu().channel_rms_norm(&mut d, c, hw, &up(&gamma)).unwrap();
    assert_bits("channel_rms_norm", &down(&d), &want);

    let (planes, h, w) = (7, 13, 9);
    let x = rng.vec(planes * h * w, 1.0);
    let want = nn_vae::upsample_nearest2x(&x, planes, h, w);
    let mut out = poisoned(want.len());
    gpu().upsample_nearest2x(&up(&x), planes, h, w, &mut out).unwrap();
    assert_bits("upsample_nearest2x", &down(&out), &want);
}
