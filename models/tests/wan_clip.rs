//! The image-to-video image encoder (`CLIPVisionModel`'s penultimate hidden states) against
//! transformers goldens (`scripts/goldens/wan.py`, component `image_encoder`): tolerance 1e-5 of
//! `max|ours − transformers| / max|transformers|` on already preprocessed `pixel_values`.

mod common;

use common::{assert_rel_error, tensor_f32};
use longshot_models::wan::{ClipVisionEncoder, WanError};
use safetensors::SafeTensors;

const TOLERANCE: f64 = 1e-5;

fn case(name: &str) -> common::Case {
    common::case("image_encoder", name)
}

fn check(name: &str) {
    let c = case(name);
    let model = ClipVisionEncoder::load(&c.model_dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let bytes = std::fs::read(&c.inputs).expect("case file");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let (ps, pixels) = tensor_f32(&st, "pixel_values");
    let (es, expected) = tensor_f32(&st, "expected");
    let got = model
        .penultimate(&pixels, ps.try_into().expect("4-D"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(got.len(), es.iter().product::<usize>(), "{name}: output length");
    assert_rel_error(&format!("{name} {es:?}"), &got, &expected, TOLERANCE);
}

#[test]
fn diffusers_test_image_encoder_matches_transformers() {
    check("clip_test");
}

#[test]
fn vit_h_structure_with_exact_gelu_matches_transformers_on_a_batch_of_two() {
    check("clip_vit_h_small");
}

#[test]
fn transformers_4_names_load_too() {
    check("clip_test_v4_names");
}

#[test]
fn pixel_values_of_the_wrong_size_are_refused_naming_the_size() {
    let model = ClipVisionEncoder::load(&case("clip_vit_h_small").model_dir).unwrap();
    let e = model.penultimate(&[0.0; 3 * 28 * 28], [1, 3, 28, 28]).unwrap_err();
    assert!(
        matches!(e, WanError::Input(_)) && e.to_string().contains("[B ≥ 1, 3, 56, 56]"),
        "{e}"
    );
}

/// Pillow's bicubic resize, bit for bit (shrinking with antialiasing, enlarging, one side only).
#[test]
fn pillow_bicubic_resize_is_reproduced_bit_for_bit() {
    let entry = common::manifest_entry("pil_resize", "pil_resize");
    let bytes = std::fs::read(common::fixture_path(&entry, "inputs")).expect("case file");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let (shape, image) = tensor_f32(&st, "image");
    let levels: Vec<u8> = image.iter().map(|&v| v as u8).collect();
    let sizes = entry["sizes"].as_array().expect("sizes");
    assert!(sizes.len() >= 5);
    for size in sizes {
        let (h, w) = (size[0].as_u64().unwrap() as usize, size[1].as_u64().unwrap() as usize);
        let (_, want) = tensor_f32(&st, &format!("out_{h}x{w}"));
        let got = longshot_models::wan::pil_resize::resize_bicubic(&levels, (shape[0], shape[1]), 3, (h, w));
        let differ = got.iter().zip(&want).filter(|(a, b)| f32::from(**a) != **b).count();
        assert_eq!(
            differ,
            0,
            "{h}x{w}: {differ} of {} levels differ from Pillow",
            got.len()
        );
    }
}

/// The processor's `pixel_values` for each image-to-video case, resized or not, as transformers'
/// PIL backend makes them.
#[test]
fn the_image_processor_matches_transformers_pil_backend() {
    for name in ["i2v", "flf2v", "i2v_resized"] {
        let c = common::case("image2video", name);
        let p = longshot_models::wan::ClipImageProcessor::load(&c.model_dir.join("image_processor")).unwrap();
        let bytes = std::fs::read(&c.inputs).expect("case file");
        let st = SafeTensors::deserialize(&bytes).expect("safetensors");
        let (shape, image) = tensor_f32(&st, "image");
        let (ps, want) = tensor_f32(&st, "pixel_values");
        let mut got = p.preprocess(&image, shape[0], shape[1]).unwrap();
        if ps[0] == 2 {
            let (_, last) = tensor_f32(&st, "last_image");
            got.extend(p.preprocess(&last, shape[0], shape[1]).unwrap());
        }
        assert_rel_error(
            &format!("{name}: image {shape:?} -> pixel_values {ps:?}"),
            &got,
            &want,
            1e-6,
        );
    }
}

#[test]
fn the_image_processor_crops_the_centre_of_the_resized_image() {
    let dir = common::fixtures().join("pipeline_i2v/image_processor");
    let p = longshot_models::wan::ClipImageProcessor::load(&dir).unwrap();
    assert_eq!(
        (p.crop_size.height, p.crop_size.width, p.size.shortest_edge),
        (32, 32, 32)
    );
    // 32×48 needs no resize: the middle 32 columns (8..40), normalised per channel.
    let image: Vec<f32> = (0..32 * 48 * 3).map(|i| (i % 256) as f32 / 255.0).collect();
    let out = p.preprocess(&image, 32, 48).unwrap();
    assert_eq!(out.len(), 3 * 32 * 32);
    let (y, x, c) = (5, 0, 2);
    let level = (5 * 48 + 8) * 3 + 2;
    let v = ((level % 256) as f64 * p.rescale_factor) as f32;
    assert_eq!(out[(c * 32 + y) * 32 + x], (v - p.image_mean[c]) / p.image_std[c]);
    let e = p.preprocess(&[0.5; 7], 2, 2).unwrap_err();
    assert!(e.to_string().contains("not [2, 2, 3]"), "{e}");
}
