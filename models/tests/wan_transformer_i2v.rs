//! The Wan2.1 image-to-video transformer (the image embedder and `attn2`'s image K/V) against
//! diffusers goldens (`scripts/goldens/wan.py`, component `transformer_i2v`): tolerance 1e-5 of
//! `max|ours − diffusers| / max|diffusers|`, as for text-to-video (`wan_transformer.rs`).

mod common;

use common::assert_rel_error;
use longshot_models::wan::transformer::denoiser::WanForward;
use longshot_models::wan::{WanError, WanTransformer};
use safetensors::SafeTensors;

const TOLERANCE: f64 = 1e-5;
const CASES: &[&str] = &["i2v_test", "i2v_test_original", "flf2v_test"];

fn case(name: &str) -> common::Case {
    common::case("transformer_i2v", name)
}

struct Inputs {
    x: Vec<f32>,
    shape: [usize; 5],
    t: Vec<f32>,
    /// diffusers' `encoder_hidden_states` holds only the 512 text rows here.
    text: Vec<f32>,
    image: Vec<f32>,
    expected: Vec<f32>,
}

fn inputs(name: &str) -> Inputs {
    let bytes = std::fs::read(case(name).inputs).expect("case file");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let (xs, x) = common::tensor_f32(&st, "hidden_states");
    let (_, t) = common::tensor_f32_or_i64(&st, "timestep");
    let (_, text) = common::tensor_f32(&st, "encoder_hidden_states");
    let (_, image) = common::tensor_f32(&st, "encoder_hidden_states_image");
    let (_, expected) = common::tensor_f32(&st, "expected");
    Inputs {
        x,
        shape: xs.try_into().expect("5-D"),
        t,
        text,
        image,
        expected,
    }
}

fn check(name: &str) -> Vec<f32> {
    let model = WanTransformer::load(&case(name).model_dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(model.config().has_image_path(), "{name}");
    let i = inputs(name);
    let got = model
        .forward_batch(&i.x, i.shape, &i.t, &i.text, Some(&i.image))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_rel_error(name, &got, &i.expected, TOLERANCE);
    got
}

#[test]
fn manifest_lists_every_expected_case_and_its_files_exist() {
    common::assert_cases_exist("transformer_i2v", CASES);
}

#[test]
fn image_to_video_transformer_matches_diffusers_on_a_batch_of_two() {
    check("i2v_test");
}

#[test]
fn first_and_last_frame_transformer_matches_diffusers() {
    check("flf2v_test");
}

#[test]
fn original_i2v_names_give_bit_identical_output() {
    let a = check("i2v_test");
    let b = check("i2v_test_original");
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn an_image_model_needs_an_image_and_a_text_model_refuses_one() {
    let i2v = WanTransformer::load(&case("i2v_test").model_dir).unwrap();
    let i = inputs("i2v_test");
    let per_text = i.text.len() / i.shape[0];
    let e = i2v.encode_text(&i.text[..per_text]).expect_err("no image");
    assert!(
        matches!(e, WanError::Input(_)) && e.to_string().contains("needs the image encoder"),
        "{e}"
    );
    let e = i2v
        .encode_conditioning(&i.text[..per_text], Some(&[1.0; 3]))
        .expect_err("3 values");
    assert!(e.to_string().contains("image_dim 4"), "{e}");
    let flf = WanTransformer::load(&case("flf2v_test").model_dir).unwrap();
    let e = flf
        .encode_conditioning(&i.text[..per_text], Some(&[0.5; 20]))
        .expect_err("one image");
    assert!(e.to_string().contains("takes 10 (two images)"), "{e}");
    let t2v = WanTransformer::load(&common::case("transformer", "pipeline_test").model_dir).unwrap();
    let e = t2v
        .encode_conditioning(&vec![0.0; 512 * 32], Some(&[0.0; 4]))
        .expect_err("t2v + image");
    assert!(e.to_string().contains("text-to-video model: it takes no image"), "{e}");
}

/// `fixture`'s pipeline with `umt5_tiny`'s text encoder and tokenizer, as a worker loads it.
fn served_pipeline(root: &std::path::Path, fixture: &str) -> std::path::PathBuf {
    let (from, dir) = (common::fixtures(), root.join(fixture));
    let copy = |src: std::path::PathBuf, dst: std::path::PathBuf| {
        std::fs::create_dir_all(&dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    };
    for c in ["transformer", "vae", "scheduler", "image_encoder", "image_processor"] {
        copy(from.join(fixture).join(c), dir.join(c));
    }
    for c in ["text_encoder", "tokenizer"] {
        copy(from.join("umt5_tiny").join(c), dir.join(c));
    }
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(from.join(fixture).join("model_index.json")).unwrap()).unwrap();
    index["text_encoder"] = serde_json::json!(["transformers", "UMT5EncoderModel"]);
    index["tokenizer"] = serde_json::json!(["transformers", "T5TokenizerFast"]);
    std::fs::write(dir.join("model_index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    dir
}

/// Workers serve image-to-video pipelines: one reference image for I2V, two for FLF2V, 16 latent
/// channels denoised (the transformer's 36 inputs are latents, mask and condition), and the
/// image encoder's output shape checked against what the pipeline's CLIP makes.
#[test]
fn workers_serve_image_to_video_pipelines_and_say_how_many_images_they_take() {
    use longshot_core::inputs::{ImageEmbeddings, ReferenceImages};
    use longshot_models::wan::{WanBackend, WanModel};
    let tmp = tempfile::tempdir().unwrap();
    for (fixture, images) in [("pipeline_i2v", 1), ("pipeline_flf2v", 2)] {
        let dir = served_pipeline(tmp.path(), fixture);
        let m = WanModel::load(&dir, Some("tiny"), &WanBackend::Cpu).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert_eq!(
            (m.info().reference_images, m.info().latent_channels),
            (images, 16),
            "{fixture}"
        );
        let refs = ReferenceImages {
            width: 16,
            height: 16,
            first: vec![128; 16 * 16 * 3],
            last: (images == 2).then(|| vec![64; 16 * 16 * 3]),
        };
        let e = m.encode_images(&refs).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert_eq!(m.check_images(&refs, &e), Ok(()));
        assert_eq!(e.dim, 4, "{fixture}: the tiny CLIP's hidden size");
        let wrong = ImageEmbeddings {
            rows: e.rows + 1,
            dim: e.dim,
            data: vec![0.0; (e.rows + 1) * e.dim],
        };
        assert!(m
            .check_images(&refs, &wrong)
            .unwrap_err()
            .contains("image(s) × the image encoder's tokens"));
    }
}
