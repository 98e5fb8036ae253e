//! A latents file (safetensors with one f32 tensor) as `longshot dev`, re-decoding and a rerender
//! read it:
//! any bytes must give latents or an error naming the file and tensor, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("longshot-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join("latents.safetensors");
    std::fs::write(&path, data).expect("scratch file");
    let _ = longshot_media::read_latents(&path, "latents", None);
    let _ = longshot_media::read_latents(&path, "latents", Some(&[1, 16, 2, 2]));
    // A rerender reads a shard's frames of its source's latents this way.
    let _ = longshot_media::read_latent_frames(&path, "latents", &[2, 16, 2, 2], 1..2);
});
