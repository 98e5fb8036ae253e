//! The image-to-video image encoder (`CLIPVisionModel`'s penultimate hidden states) against
//! transformers goldens (`scripts/goldens/wan.py`, component `image_encoder`): tolerance 1e-5 of
//! `max|ours − transformers| / max|transformers|` on already preprocessed `pixel_values`.

mod common;

use common::{rel_error, tensor_f32};
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
    let err = rel_error(&got, &expected);
    println!("{name}: {es:?}, max|a-b|/max|b| = {err:.3e}");
    assert!(err <= TOLERANCE, "{name}: relative error {err:.3e} > {TOLERANCE:e}");
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

#[test]
fn the_image_processor_crops_the_centre_and_refuses_a_resize_it_cannot_do_yet() {
    let dir = common::fixtures().join("pipeline_i2v/image_processor");
    let p = longshot_models::wan::ClipImageProcessor::load(&dir).unwrap();
    assert_eq!(
        (p.crop_size.height, p.crop_size.width, p.size.shortest_edge),
        (32, 32, 32)
    );
    // 32×48: the middle 32 columns (8..40), normalised per channel.
    let image: Vec<f32> = (0..32 * 48 * 3).map(|i| (i % 251) as f32 / 250.0).collect();
    let out = p.preprocess(&image, 32, 48).unwrap();
    assert_eq!(out.len(), 3 * 32 * 32);
    let (y, x, c) = (5, 0, 2);
    let want = (image[(y * 48 + 8 + x) * 3 + c] - p.image_mean[c]) / p.image_std[c];
    assert_eq!(out[(c * 32 + y) * 32 + x], want);
    let e = p.preprocess(&vec![0.5; 480 * 832 * 3], 480, 832).unwrap_err();
    assert!(
        e.to_string()
            .contains("not implemented yet: give an image whose shorter side is 32"),
        "{e}"
    );
}
