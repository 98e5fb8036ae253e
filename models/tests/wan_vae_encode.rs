//! The Wan VAE encoder against diffusers goldens (`scripts/goldens/wan.py`, component
//! `vae_encoder`; fixtures in `tests/fixtures/wan/`): `vae.encode(video).latent_dist.mean`.
//!
//! Error metric as in `wan_vae.rs`: `max|ours − diffusers| / max|diffusers|`, tolerance 1e-5,
//! against diffusers in f32 and in f64 on the same weights (`expected_f64`). diffusers encodes
//! frame 0 alone and then chunks of 4 frames with caches; this port runs whole sequences (the
//! module doc of `vae::encoder` shows why they are equal), so agreement is to rounding only.

mod common;

use common::{assert_rel_error, rel_error, tensor_f32 as tensor, tensor_f64};
use longshot_models::wan::{WanError, WanVaeEncoder, WAN21_ENCODE_HALO};
use safetensors::SafeTensors;

const TOLERANCE: f64 = 1e-5;

/// Every encoder case the manifest must list.
const CASES: &[&str] = &["vae_enc_unit_test", "vae_enc_unit_test_original", "vae_enc_small"];

fn case(name: &str) -> common::Case {
    common::case("vae_encoder", name)
}

fn load(name: &str) -> WanVaeEncoder {
    WanVaeEncoder::load(&case(name).model_dir).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Encodes a case, checks it against diffusers and prints the errors; returns the output.
fn check(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(case(name).inputs).expect("case file");
    let st = SafeTensors::deserialize(&bytes).expect("case file is safetensors");
    let (vs, video) = tensor(&st, "video");
    let (es, expected) = tensor(&st, "expected");
    let (_, exact) = tensor_f64(&st, "expected_f64");
    let vae = load(name);
    let start = std::time::Instant::now();
    let (got, shape) = vae
        .encode(&video, vs.clone().try_into().expect("video is 5-D"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(shape.to_vec(), es, "{name}: output shape");
    println!(
        "{name}: video {vs:?} -> {es:?} in {:.1} ms; diffusers f32 vs f64 {:.3e}",
        seconds * 1e3,
        rel_error(&expected, &exact)
    );
    assert_rel_error(&format!("{name} vs diffusers f32"), &got, &expected, TOLERANCE);
    assert_rel_error(&format!("{name} vs diffusers f64"), &got, &exact, TOLERANCE);
    got
}

#[test]
fn manifest_lists_every_expected_case_and_its_files_exist() {
    common::assert_cases_exist("vae_encoder", CASES);
}

#[test]
fn diffusers_unit_test_vae_encodes_a_batch_of_two_as_diffusers_does() {
    check("vae_enc_unit_test");
}

#[test]
fn wan21_structure_drops_a_trailing_partial_chunk_as_diffusers_does() {
    check("vae_enc_small");
}

#[test]
fn original_names_give_bit_identical_output() {
    let reference = check("vae_enc_unit_test");
    let original = check("vae_enc_unit_test_original");
    assert!(
        original.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits()),
        "original-name checkpoint differs from the diffusers one"
    );
}

#[test]
fn bad_videos_are_refused_naming_what_is_wrong() {
    let vae = load("vae_enc_small");
    let refused = |shape: [usize; 5]| -> String {
        let x = vec![0.0f32; shape.iter().product()];
        match vae.encode(&x, shape) {
            Err(e @ WanError::Input(_)) => e.to_string(),
            other => panic!("{shape:?}: expected an input error, got {:?}", other.map(|(_, s)| s)),
        }
    };
    assert!(refused([1, 4, 5, 16, 16]).contains("3 channels"));
    assert!(refused([1, 3, 5, 20, 16]).contains("multiples of 8"));
    assert!(refused([1, 3, 0, 16, 16]).contains("at least one frame"));
    let e = vae.encode(&[0.0; 7], [1, 3, 1, 8, 8]).expect_err("wrong length");
    assert!(e.to_string().contains("holds 7 values"), "{e}");
}

#[test]
fn wan21_encode_halo_is_28_latents() {
    assert_eq!(
        longshot_models::wan::vae::encoder::encode_halo(&longshot_models::wan::VaeConfig::wan2_1()),
        WAN21_ENCODE_HALO
    );
    assert_eq!(WAN21_ENCODE_HALO, 28);
}

/// Input frames in [−1, 1], frame-major `[frames, 3, h, w]`, deterministic.
fn video(frames: usize, h: usize, w: usize) -> Vec<f32> {
    (0..frames * 3 * h * w)
        .map(|i| ((i as f32 * 0.618_034).fract() * 2.0 - 1.0) * 0.9)
        .collect()
}

/// A shard owning latents `s..` encodes from the first frame of latent `s − halo` and gets the
/// sequential encode's bits; with one latent less of warm-up latent `s` is refused as inexact.
#[test]
fn a_sharded_encode_with_the_halo_is_bit_identical_to_the_sequential_one() {
    let vae = load("vae_enc_small"); // Wan2.1's structure: halo 28
    let halo = vae.encode_halo();
    assert_eq!(halo, WAN21_ENCODE_HALO);
    let (h, w, latents) = (16, 16, halo + 8);
    let frames = vae.first_frame_of_latent(latents - 1) + 4; // through the last latent's last frame
    let x = video(frames, h, w);
    let full = vae.encode_frames(&x, [frames, 3, h, w]).expect("sequential encode");
    assert_eq!(full.frames, latents);
    let len = full.channels * full.pixels();
    let frame_len = 3 * h * w;
    for s in [halo + 1, halo + 4, latents - 1] {
        let start = vae.first_frame_of_latent(s - halo);
        let (shard, first) = vae
            .encode_range(&x[start * frame_len..], [frames - start, 3, h, w], start, s)
            .expect("shard encode");
        assert_eq!((first, shard.frames), (s, latents - s));
        let same = shard
            .data
            .iter()
            .zip(&full.data[s * len..])
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "latents {s}.. of a shard from frame {start} differ from the sequential encode"
        );
        // With one latent less of warm-up, latent s is refused.
        let late = vae.first_frame_of_latent(s - halo + 1);
        let e = vae
            .encode_range(&x[late * frame_len..], [frames - late, 3, h, w], late, s)
            .expect_err("too little warm-up");
        assert!(e.to_string().contains("not exact"), "{e}");
    }
    // A segment must start and end on whole latents.
    let e = vae
        .encode_range(&x[2 * frame_len..], [frames - 2, 3, h, w], 2, halo + 2)
        .unwrap_err();
    assert!(e.to_string().contains("whole latents"), "{e}");
}

/// Image-to-video's condition channels cut per window (each window encodes only its own frames
/// with the warm-up) are bit-identical to the whole clip's, for the first image alone and with a
/// last image, and a range past the clip (a plan's padding) goes on with grey.
#[test]
fn image_conditions_per_window_equal_the_whole_clips() {
    use longshot_models::wan::image2video::{condition, ImageCondition, ReferenceImages};
    use std::sync::Arc;
    let dir = common::fixtures().join("pipeline_i2v").join("vae");
    let enc = Arc::new(WanVaeEncoder::load(&dir).expect("the I2V fixture's VAE"));
    let (h, w) = (16, 24);
    let pixels = |seed: u32| -> Vec<f32> {
        (0..h * w * 3)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(0x85eb_ca6b)) >> 24) as f32 / 255.0)
            .collect()
    };
    let (first, last) = (pixels(1), pixels(7));
    // 50 latents: three windows of 21 with overlap 5, as the cluster plans them.
    let frames = 1 + 4 * 49;
    let windows = [0..21, 16..37, 29..50];
    for last in [None, Some(last.as_slice())] {
        let refs = ReferenceImages {
            first: &first,
            last,
            height: h,
            width: w,
        };
        let whole = condition(enc.clone(), &refs, frames).expect("whole clip");
        let c = ImageCondition::new(enc.clone(), &refs, frames).expect("condition");
        let per_latent = c.channels() * (h / 8) * (w / 8);
        assert_eq!(whole.len(), 50 * per_latent);
        for r in windows.clone() {
            let got = c.latents(r.clone()).expect("window");
            let want = &whole[r.start * per_latent..r.end * per_latent];
            assert!(
                got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "window {r:?} (last image: {}) differs from the whole clip's",
                last.is_some()
            );
        }
        // The mask: 1 on frame 0 (latent 0's four channels), and on the last frame when given
        // (the last latent's fourth channel), 0 elsewhere.
        let cells = (h / 8) * (w / 8);
        let mask = |l: usize, j: usize| whole[l * per_latent + j * cells];
        assert_eq!((0..4).map(|j| mask(0, j)).collect::<Vec<_>>(), [1.0; 4]);
        assert_eq!(mask(1, 0), 0.0);
        assert_eq!(mask(49, 3), if last.is_some() { 1.0 } else { 0.0 });
        assert_eq!(mask(49, 2), 0.0);
        // Past the clip: still defined (grey, no mask), equal to itself however it is cut.
        let past = c.latents(45..55).expect("padding");
        assert_eq!(past[..5 * per_latent], whole[45 * per_latent..]);
        assert_eq!(past[5 * per_latent..], c.latents(50..55).expect("padding only")[..]);
    }
}

/// Video-to-video's clean latents cut per window, each from only the frames its shard receives
/// (`video_frames_for` with the encoder's warm-up), are bit-identical to the whole video's
/// normalised encode; past the video (the plan's padding) the frames are grey, however the range
/// is cut; and a span missing a frame the encode reads is refused, naming it.
#[test]
fn video_latents_per_window_equal_the_whole_videos() {
    use longshot_core::inputs::{video_frames_for, VideoSpan};
    use longshot_models::wan::layout::unit_rgb_to_signed_frames;
    use longshot_models::wan::video2video::window_latents;
    let dir = common::fixtures().join("pipeline_tiny").join("vae");
    let enc = WanVaeEncoder::load(&dir).expect("the tiny pipeline's VAE");
    let (h, w) = (16, 24);
    // 50 latents: three windows of 21 with overlap 5, as the cluster plans them.
    let frames = 1 + 4 * 49;
    let rgb: Vec<u8> = (0..frames * h * w * 3)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let unit: Vec<f32> = rgb.iter().map(|&v| f32::from(v) / 255.0).collect();
    let mut whole = enc
        .encode_frames(&unit_rgb_to_signed_frames(&unit, frames, h, w), [frames, 3, h, w])
        .expect("whole video");
    let per_latent = whole.channels * whole.pixels();
    let (t, pixels) = (whole.frames, whole.pixels());
    enc.normalize(&mut whole.data, t, pixels).unwrap();
    assert_eq!(whole.frames, 50);
    let span_for = |latents: std::ops::Range<usize>| {
        let f = video_frames_for(latents, enc.encode_halo(), 4, frames);
        VideoSpan {
            first_frame: f.start,
            width: w as u32,
            height: h as u32,
            video_frames: frames,
            rgb: rgb[f.start * h * w * 3..f.end * h * w * 3].to_vec(),
        }
    };
    for r in [0..21, 16..37, 29..50] {
        let got = window_latents(&enc, &span_for(r.clone()), r.clone()).expect("window");
        let want = &whole.data[r.start * per_latent..r.end * per_latent];
        assert!(
            got.data.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()),
            "window {r:?} differs from the whole video's encode"
        );
    }
    // Past the video: grey, the same however it is cut.
    let past = window_latents(&enc, &span_for(45..55), 45..55).expect("padding");
    assert_eq!(past.data[..5 * per_latent], whole.data[45 * per_latent..]);
    let tail = window_latents(&enc, &span_for(50..55), 50..55).expect("padding only");
    assert_eq!(past.data[5 * per_latent..], tail.data[..]);
    // A span that starts too late for the warm-up.
    let mut short = span_for(29..50);
    let fb = h * w * 3;
    short.first_frame += 4;
    short.rgb.drain(..4 * fb);
    let e = window_latents(&enc, &short, 29..50).unwrap_err();
    assert!(e.to_string().contains("the encode reads frame 1,"), "{e}");
}
