//! A window checkpoint blob as a coordinator reads it back from its data dir to resume a job
//! (`CheckpointStore::get`): named by its SHA-256, so the bytes here are given their own name and
//! reach the decoder. Any bytes must give a window state or an error naming the blob, never a
//! panic or an allocation the blob's length does not justify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use longshot_coordinator::checkpoints::CheckpointStore;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let root = std::env::temp_dir().join(format!("longshot-fuzz-ckpt-{}", std::process::id()));
    let dir = root.join("checkpoints").join("job");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let hash: String = Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join(&hash), data).expect("scratch file");
    let store = CheckpointStore::new(&root);
    if let Ok(state) = store.get("job", &hash) {
        assert!(state.latents.len() * 4 <= data.len(), "more latents than the blob holds");
    }
    let _ = std::fs::remove_file(dir.join(&hash));
});
