//! Read-only memory-mapped files, the one place the workspace calls `memmap2`'s unsafe
//! `Mmap::map` (every other crate is `#![forbid(unsafe_code)]`).
//!
//! Why map instead of `std::fs::read`: checkpoints are large (Wan2.1-1.3B is 5.7 GB in f32, the
//! 14B model 28 GB in bf16) and are converted to f32 tensor by tensor anyway. A mapping lets the
//! loader touch each tensor's bytes once, straight from the page cache, without first holding a
//! second full copy of the file in process memory; pages already converted can be dropped by the
//! kernel under memory pressure.

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::path::Path;

/// A whole file mapped read-only. Derefs to its bytes.
#[derive(Debug)]
pub struct MappedFile {
    map: memmap2::Mmap,
}

impl MappedFile {
    /// Maps `path` read-only. An empty file maps to an empty slice.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        // SAFETY: the mapping is read-only and private to this value, and we never hand out
        // anything but shared `&[u8]` borrows of it. The remaining hazard, inherent to any file
        // mapping, is another process truncating or rewriting the file while it is mapped
        // (reads could then fault or see changing bytes). Model checkpoints are immutable inputs
        // by contract — the same assumption `safetensors` and `candle` make — and the loader
        // copies every tensor out (converting it to f32) right after validating it.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Self { map })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

impl Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_file_contents_and_reports_missing_files() {
        let dir = std::env::temp_dir().join(format!("longshot-mmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bytes.bin");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(b"longshot"))
            .expect("write");
        let m = MappedFile::open(&path).expect("map");
        assert_eq!(&m[..], b"longshot");
        assert!(MappedFile::open(&dir.join("missing.bin")).is_err());
        let empty = dir.join("empty.bin");
        std::fs::File::create(&empty).expect("create");
        assert!(MappedFile::open(&empty).expect("map empty").is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}
