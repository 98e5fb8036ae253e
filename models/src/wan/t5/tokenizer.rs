//! The umT5 tokenizer of a Wan2.1 pipeline (`tokenizer/tokenizer.json`), tokenising as
//! `WanPipeline._get_t5_prompt_embeds` does: [`prompt_clean`], then `max_length = 512`,
//! `truncation = True`, `add_special_tokens = True` (so at most 511 pieces and `</s>`), padding
//! with id 0 (spec §3).
//!
//! The tokenisation itself is the `tokenizers` crate, the Rust library under Python's
//! `tokenizers`, so normaliser (SentencePiece's Precompiled `nmt_nfkc` map), Unigram model and
//! special-token matching are the same code. What we add is how transformers 5 builds its
//! `T5Tokenizer` from those files. It does not run `tokenizer.json` as shipped: it keeps the
//! vocabulary, the Precompiled normaliser and the special tokens, and sets the rest itself
//! (`tokenization_t5.py`):
//! - normaliser: the Precompiled map only (umT5's file adds `Replace(" {2,}", " ")`, which has no
//!   effect once the pre-tokeniser below splits on whitespace);
//! - pre-tokeniser: `WhitespaceSplit` then `Metaspace("▁", prepend always, split)` (the file has
//!   the Metaspace alone);
//! - Unigram without byte fallback, and the post-processor `$A </s>`.
//!
//! We apply the same changes, so ids equal those of diffusers' pipeline under transformers 5
//! (checked over every single code point in three contexts, and on the goldens). The file as
//! shipped — what transformers 4.x and the original Wan2.1 repo tokenise with — gives the same ids
//! for ordinary prompts but not when the normalised text keeps whitespace next to a special token
//! or a removed control character (e.g. `"a </s> b"`, `"x \u{1}"`: the shipped file emits an
//! extra `▁` piece there). The goldens record, per prompt, whether the two agree.

use super::prompt::prompt_clean;
use crate::wan::error::WanError;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{Tokenizer, TruncationParams};

/// WanPipeline's `max_sequence_length`: token rows per prompt, `</s>` included.
pub const T5_MAX_LENGTH: usize = 512;
/// The id the pipeline pads input ids with (umT5's `<pad>`).
pub const T5_PAD_ID: u32 = 0;

/// Tokenizer classes whose construction this module reproduces (transformers 5 maps the `Fast`
/// name to the same class).
const T5_CLASSES: &[&str] = &["T5Tokenizer", "T5TokenizerFast"];

/// A prompt after cleaning and tokenisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizedPrompt {
    /// [`prompt_clean`]'s output, what was tokenised.
    pub cleaned: String,
    /// The real tokens (ending with `</s>`), at most [`T5_MAX_LENGTH`]: the pipeline's
    /// `input_ids[:seq_len]`.
    pub ids: Vec<u32>,
}

impl TokenizedPrompt {
    /// `seq_len = attention_mask.sum()`.
    pub fn seq_len(&self) -> usize {
        self.ids.len()
    }

    /// The pipeline's `input_ids`: the real ids, then [`T5_PAD_ID`] up to `max_length`.
    pub fn padded_ids(&self, max_length: usize) -> Vec<u32> {
        let mut ids = self.ids.clone();
        ids.resize(max_length.max(ids.len()), T5_PAD_ID);
        ids
    }
}

/// umT5's tokenizer as the Wan pipeline uses it.
#[derive(Clone, Debug)]
pub struct UmT5Tokenizer {
    inner: Tokenizer,
    path: PathBuf,
    eos_id: u32,
}

impl UmT5Tokenizer {
    /// Loads `dir/tokenizer.json`, checking `dir/tokenizer_config.json` names a T5 tokenizer.
    pub fn load(dir: &Path) -> Result<Self, WanError> {
        let config_path = dir.join("tokenizer_config.json");
        let config = read_json(&config_path)?;
        let class = config
            .get("tokenizer_class")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !T5_CLASSES.contains(&class) {
            return Err(WanError::config(
                &config_path,
                format!(
                    "tokenizer_class '{class}' is not supported (only {})",
                    T5_CLASSES.join(", ")
                ),
            ));
        }
        let eos_token = special_token(&config, "eos_token").unwrap_or("</s>").to_string();
        let path = dir.join("tokenizer.json");
        let mut json = read_json(&path)?;
        as_transformers_t5(&mut json).map_err(|reason| WanError::config(&path, reason))?;
        let invalid = |e: tokenizers::Error| WanError::config(&path, format!("not a usable tokenizer: {e}"));
        let mut inner = Tokenizer::from_bytes(json.to_string().as_bytes()).map_err(invalid)?;
        let eos_id = inner.token_to_id(&eos_token).ok_or_else(|| {
            WanError::config(
                &path,
                format!("eos_token '{eos_token}' (from tokenizer_config.json) is not in the vocabulary"),
            )
        })?;
        let pre = Sequence::new(vec![
            PreTokenizerWrapper::WhitespaceSplit(WhitespaceSplit),
            PreTokenizerWrapper::Metaspace(Metaspace::new('▁', PrependScheme::Always, true)),
        ]);
        inner.with_pre_tokenizer(Some(pre));
        let post = TemplateProcessing::builder()
            .try_single(format!("$A {eos_token}"))
            .and_then(|b| b.try_pair(format!("$A {eos_token} $B {eos_token}")))
            .map_err(|e| WanError::config(&path, format!("cannot build the '$A {eos_token}' template: {e}")))?
            .special_tokens(vec![(eos_token.clone(), eos_id)])
            .build()
            .map_err(|e| WanError::config(&path, format!("cannot build the '$A {eos_token}' template: {e}")))?;
        inner.with_post_processor(Some(post));
        inner
            .with_truncation(Some(TruncationParams {
                max_length: T5_MAX_LENGTH,
                ..TruncationParams::default()
            }))
            .map_err(invalid)?;
        inner.with_padding(None);
        Ok(Self { inner, path, eos_id })
    }

    /// The `tokenizer.json` this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id appended to every prompt (`</s>`, 1 for umT5).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Vocabulary size, added tokens included: every id this tokenizer can produce is below it.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// [`prompt_clean`], then [`encode_cleaned`](Self::encode_cleaned).
    pub fn encode(&self, prompt: &str) -> Result<TokenizedPrompt, WanError> {
        let cleaned = prompt_clean(prompt);
        let ids = self.encode_cleaned(&cleaned)?;
        Ok(TokenizedPrompt { cleaned, ids })
    }

    /// Token ids of already-cleaned text: the pieces, cut to 511, then `</s>`.
    pub fn encode_cleaned(&self, text: &str) -> Result<Vec<u32>, WanError> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| WanError::Input(format!("{}: cannot tokenise the prompt: {e}", self.path.display())))?;
        Ok(encoding.get_ids().to_vec())
    }
}

/// Rewrites a parsed `tokenizer.json` as transformers 5's `T5Tokenizer.__init__` rebuilds it
/// (module doc): normaliser reduced to its Precompiled part, Unigram without byte fallback. The
/// pre-tokeniser and post-processor are set afterwards, through the crate's types.
fn as_transformers_t5(json: &mut Value) -> Result<(), String> {
    let model = json.get_mut("model").ok_or("no 'model' section")?;
    if model.get("type").and_then(Value::as_str) != Some("Unigram") {
        return Err("the model is not a SentencePiece Unigram (umT5's tokenizer is)".into());
    }
    // transformers hard-codes unk id 2 (umT5's `<unk>`); a file that disagrees is another tokenizer.
    if model.get("unk_id").and_then(Value::as_u64) != Some(2) {
        return Err("the Unigram unk_id is not 2, which transformers' T5Tokenizer assumes".into());
    }
    model["byte_fallback"] = Value::Bool(false);
    let precompiled = match json.get("normalizer") {
        Some(n) if n.get("type").and_then(Value::as_str) == Some("Sequence") => n
            .get("normalizers")
            .and_then(Value::as_array)
            .and_then(|list| list.iter().find(|x| is_precompiled(x)).cloned()),
        Some(n) if is_precompiled(n) => Some(n.clone()),
        _ => None,
    };
    // tokenizers panics on a charsmap it cannot parse or whose trie points outside itself: check
    // it here so a damaged file is an error naming it (found by fuzz/fuzz_targets/tokenizer_files.rs).
    if let Some(p) = &precompiled {
        let charsmap = p
            .get("precompiled_charsmap")
            .and_then(Value::as_str)
            .unwrap_or_default();
        super::charsmap::check(charsmap)
            .map_err(|e| format!("its Precompiled normalizer's precompiled_charsmap is unusable: {e}"))?;
    }
    json["normalizer"] = precompiled.unwrap_or(Value::Null);
    Ok(())
}

fn is_precompiled(normalizer: &Value) -> bool {
    normalizer.get("type").and_then(Value::as_str) == Some("Precompiled")
}

/// A special token in `tokenizer_config.json`: a plain string or an `AddedToken` object.
fn special_token<'a>(config: &'a Value, key: &str) -> Option<&'a str> {
    let v = config.get(key)?;
    v.as_str().or_else(|| v.get("content").and_then(Value::as_str))
}

fn read_json(path: &Path) -> Result<Value, WanError> {
    let bytes = std::fs::read(path).map_err(|e| WanError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| WanError::Json {
        path: path.to_path_buf(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_ids_append_pad_after_the_real_tokens() {
        let t = TokenizedPrompt {
            cleaned: String::new(),
            ids: vec![5, 1],
        };
        assert_eq!(t.padded_ids(4), vec![5, 1, 0, 0]);
        assert_eq!(t.seq_len(), 2);
    }

    #[test]
    fn normaliser_is_reduced_to_its_precompiled_part() {
        // A trie of 256 empty units and no replacements: valid, maps nothing.
        let mut blob = 1024u32.to_le_bytes().to_vec();
        blob.resize(4 + 1024, 0);
        let charsmap = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, blob);
        let mut j: Value = serde_json::json!({
            "model": {"type": "Unigram", "unk_id": 2, "vocab": [], "byte_fallback": true},
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Precompiled", "precompiled_charsmap": charsmap},
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
            ]}
        });
        as_transformers_t5(&mut j).expect("rewrite");
        assert_eq!(j["normalizer"]["type"], "Precompiled");
        assert_eq!(j["model"]["byte_fallback"], false);
        j["normalizer"] = serde_json::json!({"type": "NFKC"});
        as_transformers_t5(&mut j).expect("rewrite");
        assert!(j["normalizer"].is_null());
        j["model"]["unk_id"] = 0.into();
        assert!(as_transformers_t5(&mut j).is_err());
    }

    /// The fuzzer's first find: an empty charsmap made `tokenizers` panic while loading.
    #[test]
    fn an_unparsable_charsmap_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"tokenizer_class": "T5Tokenizer"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("tokenizer.json"),
            r#"{"version": "1.0", "normalizer": {"type": "Sequence", "normalizers": [{"type": "Precompiled",
              "precompiled_charsmap": ""}]}, "model": {"type": "Unigram", "unk_id": 2,
              "vocab": [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0]]}}"#,
        )
        .unwrap();
        let Err(err) = UmT5Tokenizer::load(dir.path()) else {
            panic!("a tokenizer with an unusable charsmap loaded");
        };
        let err = err.to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains("precompiled_charsmap is unusable"),
            "{err}"
        );
    }
}
