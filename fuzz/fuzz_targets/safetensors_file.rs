//! A model weights file (safetensors) as a worker opens it: header, tensor table, and every
//! tensor read as f32. Any bytes must give tensors or an error naming the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use longshot_models::wan::safetensors_file::SafetensorsFile;

fuzz_target!(|data: &[u8]| {
    let path = scratch("weights.safetensors");
    std::fs::write(&path, data).expect("scratch file");
    if let Ok(f) = SafetensorsFile::open(&path) {
        let names: Vec<String> = f.names().map(String::from).collect();
        for name in names {
            let _ = f.read_f32(&name);
        }
    }
});

/// A per-process file in the memory-backed temp dir.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("longshot-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}
