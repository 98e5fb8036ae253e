//! A cheap fingerprint of a pipeline's weights, so that two different checkpoints served under
//! one model name are never ganged into one job (their outputs differ, and a render's bits must
//! not depend on which workers ran it).
//!
//! Every file of the listed component directories (and `model_index.json`) contributes its name,
//! size and content: whole for files up to 1 MiB (configs, tokenizers), else 64 KiB samples every
//! 64 MiB plus the last 64 KiB. A fine-tune changes every tensor, so the samples tell it from its
//! base while a 28 GB checkpoint is fingerprinted from ~30 MB of reads.

use crate::wan::WanError;
use longshot_core::hash::Fnv1a;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const WHOLE: u64 = 1 << 20;
const SAMPLE: u64 = 64 << 10;
const STRIDE: u64 = 64 << 20;

/// Hex fingerprint of `root/model_index.json` and the files in `root/{component}/`.
pub fn pipeline_fingerprint(root: &Path, components: &[&str]) -> Result<String, WanError> {
    let mut h = Fnv1a::new();
    file(&mut h, root, Path::new("model_index.json"))?;
    for c in components {
        let dir = root.join(c);
        let io = |source| WanError::Io {
            path: dir.clone(),
            source,
        };
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        names.sort_by_key(|e| e.file_name());
        for e in names {
            if e.file_type().map_err(io)?.is_file() {
                file(&mut h, root, &Path::new(c).join(e.file_name()))?;
            }
        }
    }
    Ok(format!("{:016x}", h.finish()))
}

fn file(h: &mut Fnv1a, root: &Path, rel: &Path) -> Result<(), WanError> {
    let path = root.join(rel);
    let io = |source| WanError::Io {
        path: path.clone(),
        source,
    };
    let mut f = std::fs::File::open(&path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    h.write(rel.to_string_lossy().as_bytes());
    h.write(&size.to_le_bytes());
    let mut buf = vec![0u8; SAMPLE as usize];
    let mut read_at = |h: &mut Fnv1a, offset: u64, len: u64| -> Result<(), WanError> {
        let len = len.min(size.saturating_sub(offset)) as usize;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        f.read_exact(&mut buf[..len]).map_err(io)?;
        h.write(&buf[..len]);
        Ok(())
    };
    if size <= WHOLE {
        let mut offset = 0;
        while offset < size {
            read_at(h, offset, SAMPLE)?;
            offset += SAMPLE;
        }
    } else {
        let mut offset = 0;
        while offset < size {
            read_at(h, offset, SAMPLE)?;
            offset += STRIDE;
        }
        read_at(h, size - SAMPLE, SAMPLE)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(dir: &Path, weights: &[u8]) {
        std::fs::create_dir_all(dir.join("transformer")).unwrap();
        std::fs::write(dir.join("model_index.json"), b"{}").unwrap();
        std::fs::write(dir.join("transformer/config.json"), b"{\"num_layers\": 2}").unwrap();
        std::fs::write(dir.join("transformer/w.safetensors"), weights).unwrap();
    }

    #[test]
    fn equal_files_agree_and_any_sampled_change_differs() {
        let t = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..(3 * WHOLE as usize)).map(|i| (i * 7 % 251) as u8).collect();
        let (a, b, c, d) = (
            t.path().join("a"),
            t.path().join("b"),
            t.path().join("c"),
            t.path().join("d"),
        );
        pipeline(&a, &big);
        pipeline(&b, &big);
        let fp = |p: &Path| pipeline_fingerprint(p, &["transformer"]).unwrap();
        assert_eq!(fp(&a), fp(&b));
        // A change in the first sample, and one in the last 64 KiB.
        let mut first = big.clone();
        first[100] ^= 1;
        pipeline(&c, &first);
        let mut last = big.clone();
        *last.last_mut().unwrap() ^= 1;
        pipeline(&d, &last);
        assert_ne!(fp(&a), fp(&c));
        assert_ne!(fp(&a), fp(&d));
        assert_eq!(fp(&a).len(), 16);
        let e = pipeline_fingerprint(&t.path().join("missing"), &["transformer"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing/model_index.json"), "{e}");
    }
}
