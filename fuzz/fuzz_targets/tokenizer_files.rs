//! umT5's tokenizer files as a worker reads them from a model directory (`tokenizer_config.json`
//! and `tokenizer.json`, through the `tokenizers` crate), then a prompt encoded with the result.
//! Any bytes must give a tokenizer or an error naming the file, never a panic. The first byte
//! picks the file the rest replaces (the other is a valid one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use longshot_models::wan::UmT5Tokenizer;

const CONFIG: &str = r#"{"tokenizer_class": "T5Tokenizer", "eos_token": "</s>"}"#;
const TOKENIZER: &str = r#"{"version": "1.0", "model": {"type": "Unigram", "unk_id": 2,
  "vocab": [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0], ["▁a", -1.0], ["▁red", -2.0], ["▁sun", -2.5]]}}"#;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("longshot-fuzz-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let (config, tokenizer): (&[u8], &[u8]) = if which % 2 == 0 {
        (CONFIG.as_bytes(), bytes)
    } else {
        (bytes, TOKENIZER.as_bytes())
    };
    std::fs::write(dir.join("tokenizer_config.json"), config).expect("scratch file");
    std::fs::write(dir.join("tokenizer.json"), tokenizer).expect("scratch file");
    if let Ok(t) = UmT5Tokenizer::load(&dir) {
        if let Ok(p) = t.encode("a red sun, a red sun") {
            let _ = p.padded_ids(16);
        }
    }
});
