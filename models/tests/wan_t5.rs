//! The umT5 text encoder, tokenizer and prompt cleaning against transformers 5.23 / diffusers 0.42
//! goldens (`scripts/goldens/wan.py`, component `t5`): a tiny umT5 pipeline directory in
//! `tests/fixtures/wan/umt5_tiny/` (random perturbed weights; a SentencePiece Unigram tokenizer
//! trained on a few sentences, with umT5's normaliser and special ids), expected values in
//! `cases/t5.safetensors`, cases listed in `manifest.json`.
//!
//! - Cleaned text and token ids must be equal to diffusers' `prompt_clean` and the pipeline's
//!   tokenizer call (`input_ids[:seq_len]`).
//! - Encoder error metric, per prompt: `max|ours − diffusers| / max|diffusers|` over the `seq_len`
//!   real rows of `prompt_embeds` (normalised by the output's scale so near-zero elements do not
//!   dominate); tolerance 1e-5. The reference is `WanPipeline._get_t5_prompt_embeds` itself (the
//!   masked 512-token run); rows `seq_len..512` must be exactly +0.0.
//!
//! A missing fixture, manifest entry or tensor fails the test.

use longshot_models::wan::t5::layers::relative_position_bucket;
use longshot_models::wan::t5::prompt::prompt_clean;
mod common;

use common::{assert_names, damaged_dir, fixtures, read_tensors, rel_error, serialize, Tensors};
use longshot_models::wan::{TextEncoder, UMT5Encoder, UmT5Tokenizer, WanError, T5_MAX_LENGTH};
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;

const TOLERANCE: f64 = 1e-5;

/// Prompts whose embeddings the goldens hold (they also check the tokenizer).
const ENCODER_CASES: &[&str] = &[
    "empty_negative",
    "simple",
    "html_whitespace",
    "unicode",
    "negative_en",
    "negative_zh",
    "special_literals",
    "control_chars",
    "long_truncated",
];
/// Prompts checked for `prompt_clean` and token ids only.
const TOKENIZER_CASES: &[&str] = &[
    "html_double",
    "html_legacy_prefix",
    "html_numeric",
    "html_not_refs",
    "whitespace_sets",
    "fullwidth",
];

fn pipeline_dir() -> PathBuf {
    fixtures().join("umt5_tiny")
}

/// The manifest entry of a `t5` case.
fn case(name: &str) -> serde_json::Value {
    common::manifest_entry("t5", name)
}

fn text_field(entry: &serde_json::Value, key: &str) -> String {
    entry[key]
        .as_str()
        .unwrap_or_else(|| panic!("case {} has no '{key}'", entry["name"]))
        .to_string()
}

/// The expected-values file, read once per test.
fn goldens() -> Vec<u8> {
    let path = fixtures().join(text_field(&case("simple"), "inputs"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An I64 tensor of the goldens as u32 ids (or i64 values).
fn ints(st: &SafeTensors<'_>, name: &str) -> Vec<i64> {
    common::tensor_i64(st, name).1
}

fn floats(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    common::tensor_f32(st, name)
}

fn ids_of(st: &SafeTensors<'_>, name: &str) -> Vec<u32> {
    ints(st, &format!("{name}.input_ids"))
        .into_iter()
        .map(|v| u32::try_from(v).expect("id fits u32"))
        .collect()
}

fn load_encoder() -> TextEncoder {
    TextEncoder::load(&pipeline_dir()).unwrap_or_else(|e| panic!("umt5_tiny: {e}"))
}

#[test]
fn manifest_lists_every_case_and_the_fixture_files_exist() {
    for name in ENCODER_CASES
        .iter()
        .chain(TOKENIZER_CASES)
        .chain(&["relative_position_bucket"])
    {
        let c = case(name);
        let dir = fixtures().join(text_field(&c, "model_dir"));
        assert!(dir.join("config.json").is_file(), "{name}: {} missing", dir.display());
    }
    for f in [
        "model_index.json",
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
    ] {
        assert!(pipeline_dir().join(f).is_file(), "{f} missing");
    }
    let bytes = goldens();
    let st = SafeTensors::deserialize(&bytes).expect("t5 goldens");
    for name in ENCODER_CASES {
        floats(&st, &format!("{name}.prompt_embeds"));
    }
}

#[test]
fn prompt_clean_matches_diffusers() {
    for name in ENCODER_CASES.iter().chain(TOKENIZER_CASES) {
        let c = case(name);
        assert_eq!(
            prompt_clean(&text_field(&c, "prompt")),
            text_field(&c, "cleaned"),
            "{name}"
        );
    }
}

#[test]
fn token_ids_match_the_pipeline_tokenizer() {
    let tokenizer = UmT5Tokenizer::load(&pipeline_dir().join("tokenizer")).expect("tokenizer");
    let bytes = goldens();
    let st = SafeTensors::deserialize(&bytes).expect("t5 goldens");
    for name in ENCODER_CASES.iter().chain(TOKENIZER_CASES) {
        let c = case(name);
        let got = tokenizer.encode(&text_field(&c, "prompt")).expect("encode");
        let want = ids_of(&st, name);
        assert_eq!(got.ids, want, "{name}");
        assert_eq!(Some(got.seq_len() as u64), c["seq_len"].as_u64(), "{name}");
        assert_eq!(got.ids.last(), Some(&tokenizer.eos_id()), "{name}: ends with </s>");
        let padded = got.padded_ids(T5_MAX_LENGTH);
        assert_eq!(padded.len(), T5_MAX_LENGTH);
        assert!(padded[got.seq_len()..].iter().all(|&id| id == 0), "{name}: pad id 0");
    }
    // The default negative prompt is `</s>` alone; the long prompt keeps 511 pieces + `</s>`.
    assert_eq!(tokenizer.encode("").expect("empty").ids, vec![1]);
    let long = tokenizer
        .encode(&text_field(&case("long_truncated"), "prompt"))
        .expect("long");
    assert_eq!(long.seq_len(), T5_MAX_LENGTH);
}

#[test]
fn encoder_matches_transformers_and_pads_with_exact_zeros() {
    let encoder = load_encoder();
    let d = encoder.encoder().config().d_model;
    let bytes = goldens();
    let st = SafeTensors::deserialize(&bytes).expect("t5 goldens");
    for name in ENCODER_CASES {
        let prompt = text_field(&case(name), "prompt");
        let (shape, want) = floats(&st, &format!("{name}.prompt_embeds"));
        // Best of three, so the printed time is not one cold run.
        let mut seconds = f64::INFINITY;
        let mut got = None;
        for _ in 0..3 {
            let start = std::time::Instant::now();
            got = Some(encoder.encode(&prompt).unwrap_or_else(|e| panic!("{name}: {e}")));
            seconds = seconds.min(start.elapsed().as_secs_f64());
        }
        let got = got.expect("ran");
        assert_eq!(got.shape, [T5_MAX_LENGTH, d], "{name}");
        assert_eq!(shape, vec![got.seq_len, d], "{name}: seq_len");
        let (real, pad) = got.data.split_at(got.seq_len * d);
        let err = rel_error(real, &want);
        println!(
            "{name}: seq_len {}, max|a-b|/max|b| = {err:.3e}, encode {:.3} ms (best of 3)",
            got.seq_len,
            seconds * 1e3
        );
        assert!(err <= TOLERANCE, "{name}: relative error {err:.3e} > {TOLERANCE:e}");
        assert!(pad.iter().all(|v| v.to_bits() == 0), "{name}: padding is not +0.0");
    }
}

#[test]
fn relative_position_buckets_match_transformers() {
    let c = case("relative_position_bucket");
    let buckets = c["config"]["relative_attention_num_buckets"].as_u64().expect("buckets") as usize;
    let max_distance = c["config"]["relative_attention_max_distance"]
        .as_u64()
        .expect("distance") as usize;
    let bytes = goldens();
    let st = SafeTensors::deserialize(&bytes).expect("t5 goldens");
    let want = ints(&st, "relative_position_bucket");
    assert_eq!(want.len(), 1201);
    for (i, &w) in want.iter().enumerate() {
        let rel = i as i64 - 600;
        assert_eq!(
            relative_position_bucket(rel, buckets, max_distance) as i64,
            w,
            "rel {rel}"
        );
    }
}

#[test]
fn bad_token_ids_are_errors_not_panics() {
    let encoder = load_encoder();
    let model = encoder.encoder();
    let (vocab, d) = (model.config().vocab_size as u32, model.config().d_model);
    let input_err = |r: Result<Vec<f32>, WanError>| matches!(r, Err(WanError::Input(_)));
    assert!(input_err(model.forward(&[])), "no tokens");
    assert!(input_err(model.forward(&[5, vocab, 1])), "id past vocab_size");
    assert!(input_err(model.forward(&vec![4; T5_MAX_LENGTH + 1])), "513 tokens");
    assert_eq!(model.prompt_embeds(&[1]).expect("eos").len(), T5_MAX_LENGTH * d);
}

#[test]
fn text_encoder_can_be_shared_across_threads() {
    // Workers run it on a blocking thread and may share one loaded copy.
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TextEncoder>();
    let encoder = load_encoder();
    let want = encoder
        .encode("A cat walks on the grass, realistic style.")
        .expect("encode");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| encoder.encode("A cat walks on the grass, realistic style.")))
            .collect();
        for h in handles {
            let got = h.join().expect("thread").expect("encode");
            assert!(got.data.iter().zip(&want.data).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Loading: the embedding's two names, and errors on damaged copies of the tiny checkpoint.
// ---------------------------------------------------------------------------------------------

fn text_encoder_dir() -> PathBuf {
    pipeline_dir().join("text_encoder")
}

/// The tiny checkpoint's tensors, editable.
fn tiny_tensors() -> Tensors {
    read_tensors(&text_encoder_dir().join("model.safetensors"))
}

/// A `text_encoder/` copy holding `tensors` (and the fixture's config.json unless `config` is
/// given); returns the directory guard and the weights path.
fn copy_dir(tensors: &Tensors, config: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let (dir, weights) = damaged_dir(
        &text_encoder_dir().join("config.json"),
        "model.safetensors",
        &serialize(tensors),
    );
    if let Some(text) = config {
        std::fs::write(dir.path().join("config.json"), text).expect("write config");
    }
    (dir, weights)
}

#[test]
fn embedding_under_either_name_or_both_gives_identical_output() {
    let ids = [4u32, 68, 75, 69, 5, 1];
    let reference = UMT5Encoder::load(&text_encoder_dir())
        .expect("load")
        .forward(&ids)
        .expect("forward");
    let original = tiny_tensors();
    assert!(
        original.contains_key("shared.weight"),
        "save_pretrained stores the tied table as shared.weight"
    );
    let shared = original["shared.weight"].clone();

    let mut renamed = original.clone();
    renamed.remove("shared.weight");
    renamed.insert("encoder.embed_tokens.weight".into(), shared.clone());
    let mut both = original.clone();
    both.insert("encoder.embed_tokens.weight".into(), shared.clone());
    for (what, tensors) in [("embed_tokens only", &renamed), ("both names", &both)] {
        let (dir, _) = copy_dir(tensors, None);
        let got = UMT5Encoder::load(dir.path())
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .forward(&ids)
            .expect("forward");
        assert!(
            got.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{what}"
        );
    }

    let mut different = both;
    if let Some(e) = different.get_mut("encoder.embed_tokens.weight") {
        e.2[0] ^= 1;
    }
    let (dir, file) = copy_dir(&different, None);
    let err = UMT5Encoder::load(dir.path()).expect_err("two different tables");
    assert!(matches!(err, WanError::Config { .. }), "{err}");
    assert_names(&err, &file, "encoder.embed_tokens.weight");

    let mut none = original;
    none.remove("shared.weight");
    let (dir, file) = copy_dir(&none, None);
    let err = UMT5Encoder::load(dir.path()).expect_err("no embedding");
    assert!(matches!(err, WanError::MissingTensor { .. }), "{err}");
    assert_names(&err, &file, "shared.weight");
}

#[test]
fn damaged_checkpoints_name_the_file_and_tensor() {
    let mut t = tiny_tensors();
    t.remove("encoder.block.2.layer.1.DenseReluDense.wi_1.weight");
    let (dir, file) = copy_dir(&t, None);
    let err = UMT5Encoder::load(dir.path()).expect_err("missing tensor");
    assert!(matches!(err, WanError::MissingTensor { .. }), "{err}");
    assert_names(&err, &file, "encoder.block.2.layer.1.DenseReluDense.wi_1.weight");

    let mut t = tiny_tensors();
    let name = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight";
    if let Some(e) = t.get_mut(name) {
        e.1 = vec![4, 32]; // stored [32, 4]: buckets × heads
    }
    let (dir, file) = copy_dir(&t, None);
    let err = UMT5Encoder::load(dir.path()).expect_err("transposed bias table");
    assert!(matches!(&err, WanError::Shape { got, .. } if got == &[4, 32]), "{err}");
    assert_names(&err, &file, name);

    let mut t = tiny_tensors();
    t.insert(
        "decoder.block.0.layer.0.SelfAttention.q.weight".into(),
        (Dtype::F32, vec![1], vec![0; 4]),
    );
    let (dir, file) = copy_dir(&t, None);
    let err = UMT5Encoder::load(dir.path()).expect_err("a decoder tensor");
    assert!(matches!(err, WanError::UnusedTensors { count: 1, .. }), "{err}");
    assert_names(&err, &file, "decoder.block.0");

    let mut t = tiny_tensors();
    if let Some(e) = t.get_mut("encoder.final_layer_norm.weight") {
        e.2[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    }
    let (dir, file) = copy_dir(&t, None);
    let err = UMT5Encoder::load(dir.path()).expect_err("NaN weight");
    assert!(matches!(err, WanError::NonFinite { index: 2, .. }), "{err}");
    assert_names(&err, &file, "encoder.final_layer_norm.weight");
}

#[test]
fn config_and_tokenizer_problems_name_their_file() {
    let t = tiny_tensors();
    let config = std::fs::read_to_string(text_encoder_dir().join("config.json")).expect("config");
    for (from, to, says) in [
        ("\"gated-gelu\"", "\"relu\"", "feed_forward_proj 'relu'"),
        ("\"umt5\"", "\"t5\"", "model_type 't5'"),
    ] {
        assert!(config.contains(from), "fixture config has {from}");
        let (dir, _) = copy_dir(&t, Some(&config.replace(from, to)));
        let err = UMT5Encoder::load(dir.path()).expect_err(says);
        assert!(matches!(err, WanError::Config { .. }), "{err}");
        assert_names(&err, &dir.path().join("config.json"), says);
    }

    // Tokenizer directory without tokenizer.json, or naming another tokenizer class.
    let tok = tempfile::tempdir().expect("tempdir");
    let src = pipeline_dir().join("tokenizer/tokenizer_config.json");
    std::fs::copy(&src, tok.path().join("tokenizer_config.json")).expect("copy");
    let err = UmT5Tokenizer::load(tok.path()).expect_err("no tokenizer.json");
    assert!(matches!(err, WanError::Io { .. }), "{err}");
    assert_names(&err, &tok.path().join("tokenizer.json"), "tokenizer.json");
    let cfg_path = tok.path().join("tokenizer_config.json");
    std::fs::write(&cfg_path, r#"{"tokenizer_class": "LlamaTokenizer"}"#).expect("write");
    let err = UmT5Tokenizer::load(tok.path()).expect_err("other class");
    assert_names(&err, &cfg_path, "LlamaTokenizer");

    // The transformer-only fixture pipeline lists no text encoder.
    let err = TextEncoder::load(&fixtures().join("unit_test")).expect_err("no text encoder");
    assert!(err.to_string().contains("no 'text_encoder' component"), "{err}");
}
