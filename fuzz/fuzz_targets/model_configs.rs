//! The JSON configs of a model directory, as a worker reads them with `--model DIR`: the
//! transformer's (diffusers and original layouts), the VAE's, umT5's and the scheduler's; each
//! parsed and validated. Any text must give a config or an error, never a panic. The first byte
//! picks the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use longshot_models::wan::{SchedulerConfig, TransformerConfig, UMT5Config, VaeConfig};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match which % 4 {
        0 => {
            let _ = TransformerConfig::from_json(text, Path::new("transformer/config.json"));
        }
        other => {
            let dir = std::env::temp_dir().join(format!("longshot-fuzz-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("scratch dir");
            let path = dir.join("config.json");
            std::fs::write(&path, text).expect("scratch file");
            match other {
                1 => {
                    if let Ok(c) = VaeConfig::from_file(&path) {
                        if c.validate().is_ok() {
                            let _ = (c.decoder_dims(), c.up_blocks(), c.decode_halo(), c.output_frames(3));
                        }
                    }
                }
                2 => {
                    if let Ok(c) = UMT5Config::from_file(&path) {
                        if c.validate().is_ok() {
                            let _ = c.parameter_count();
                        }
                    }
                }
                _ => {
                    if let Ok(c) = SchedulerConfig::from_file(&path) {
                        let _ = (c.kind(), c.effective_shift());
                    }
                }
            }
        }
    }
});
