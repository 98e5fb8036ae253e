//! GPU parity of the co-denoising loop's ops whose references live in `longshot_kernels::cpu`:
//! CFG combine, the overlap blend (the function core's codenoise loop calls), the schedulers'
//! linear combinations, and the raw Philox4x32-10 blocks (Random123's known answers). All
//! bit-identical. Noise against `core::noise` and whole scheduler steps against
//! `core::scheduler` are in longshot-tests (`tests/tests/gpu_parity_core.rs`).
//!
//! Needs a GPU: without one every test FAILS with the probe's reason. Not run by CI;
//! `scripts/gpu/pack.sh` builds it for the device machine.

use longshot_kernels::cpu;
use longshot_kernels::cuda::parity::{assert_bits, down, gpu, poisoned, up, Rng};

#[test]
fn philox_known_answers() {
    // Random123's kat_vectors, as in core::noise's tests.
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
        let c = gpu().upload(&ctr).unwrap();
        let mut out = gpu().filled(4, 0u32).unwrap();
        gpu().philox4x32_10(&c, key, &mut out).unwrap();
        assert_eq!(gpu().download(&out).unwrap(), want, "ctr {ctr:08x?} key {key:08x?}");
    }
}

#[test]
fn cfg_combine_is_bit_identical() {
    let mut rng = Rng::new("cfg_combine");
    let n = 100_003;
    let (cond, uncond) = (rng.vec(n, 3.0), rng.vec(n, 3.0));
    let g = 1.0 + rng.vec(1, 6.0)[0].abs();
    let mut want = cond.clone();
    cpu::cfg_combine(&mut want, &uncond, g);
    let mut d = up(&cond);
    gpu().cfg_combine(&mut d, &up(&uncond), g).unwrap();
    assert_bits("cfg_combine", &down(&d), &want);
}

#[test]
fn blend_overlap_is_bit_identical() {
    let mut rng = Rng::new("blend_overlap");
    for (overlap, frame_len) in [(5, 16 * 60 * 104 / 8), (1, 7), (3, 1001)] {
        let (a, b) = (rng.vec(overlap * frame_len, 3.0), rng.vec(overlap * frame_len, 3.0));
        let (mut wl, mut wr) = (a.clone(), b.clone());
        cpu::blend_overlap(&mut wl, &mut wr, overlap, frame_len);
        let (mut l, mut r) = (up(&a), up(&b));
        gpu().blend_overlap(&mut l, &mut r, overlap, frame_len).unwrap();
        assert_bits(&format!("blend_overlap left O={overlap}"), &down(&l), &wl);
        assert_bits(&format!("blend_overlap right O={overlap}"), &down(&r), &wr);
    }
}

#[test]
fn lincomb_is_bit_identical() {
    let mut rng = Rng::new("lincomb");
    let n = 100_003;
    let srcs: Vec<Vec<f32>> = (0..4).map(|_| rng.vec(n, 3.0)).collect();
    let dev: Vec<_> = srcs.iter().map(|s| up(s)).collect();
    let coefs = rng.vec(4, 2.0);
    for terms in 1..=4 {
        let cpu_terms: Vec<(f32, &[f32])> = (0..terms).map(|k| (coefs[k], srcs[k].as_slice())).collect();
        let mut want = vec![0.0; n];
        cpu::lincomb(&mut want, &cpu_terms);
        let gpu_terms: Vec<_> = (0..terms).map(|k| (coefs[k], &dev[k])).collect();
        let mut out = poisoned(n);
        gpu().lincomb(&mut out, &gpu_terms).unwrap();
        assert_bits(&format!("lincomb ({terms} terms)"), &down(&out), &want);
    }
}
