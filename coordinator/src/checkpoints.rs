//! The checkpoint store: every window's state at one step, so a job resumes after a lost worker
//! or a coordinator restart (docs/long-clips.md §10).
//!
//! Each window's state is one safetensors blob under `<data dir>/checkpoints/<job id>/`, named by
//! the SHA-256 of its bytes: written to a temporary file, synced and renamed, so a blob is either
//! whole or absent, and read back only if its bytes still hash to its name. Which blobs form the
//! job's last complete checkpoint is a [`CheckpointRef`] in the job's record, written through the
//! job table with the plan id that produced it; a run of an older plan cannot replace it. The
//! store's calls block (file I/O): callers run them off the async runtime.

use longshot_core::checkpoint::{SolverState, WindowState};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A job's last complete checkpoint: every window at `step`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// The plan that produced it (its fencing token).
    pub plan_id: u64,
    /// Steps done.
    pub step: u32,
    /// The blob of each window, in window order (SHA-256, hex).
    pub windows: Vec<String>,
}

#[derive(Debug, Error)]
pub enum CheckpointStoreError {
    #[error("checkpoint i/o at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("checkpoint blob {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

/// Blobs of every job's checkpoints (see the module doc).
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    root: PathBuf,
}

const FORMAT: &str = "longshot-window-checkpoint-1";

impl CheckpointStore {
    /// The store under `<data_dir>/checkpoints`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("checkpoints"),
        }
    }

    fn job_dir(&self, job_id: &str) -> PathBuf {
        self.root.join(job_id)
    }

    /// Stores `state` for `job_id`; returns its blob name.
    pub fn put(&self, job_id: &str, state: &WindowState) -> Result<String, CheckpointStoreError> {
        let bytes = encode(state);
        let hash = hex(&Sha256::digest(&bytes));
        let dir = self.job_dir(job_id);
        let path = dir.join(&hash);
        if path.exists() {
            return Ok(hash);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointStoreError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io(&dir))?;
        tmp.write_all(&bytes).map_err(io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io(tmp.path()))?;
        tmp.persist(&path).map_err(|e| CheckpointStoreError::Io {
            path: path.clone(),
            source: e.error,
        })?;
        Ok(hash)
    }

    /// The state stored as `hash` for `job_id`, checked against its name.
    pub fn get(&self, job_id: &str, hash: &str) -> Result<WindowState, CheckpointStoreError> {
        let path = self.job_dir(job_id).join(hash);
        let bytes = std::fs::read(&path).map_err(|source| CheckpointStoreError::Io {
            path: path.clone(),
            source,
        })?;
        let damaged = |reason: String| CheckpointStoreError::Damaged {
            path: path.clone(),
            reason,
        };
        let actual = hex(&Sha256::digest(&bytes));
        if actual != hash {
            return Err(damaged(format!("its bytes hash to {actual}")));
        }
        decode(&bytes).map_err(damaged)
    }

    /// Removes `job_id`'s blobs that `keep` does not name (older checkpoints).
    pub fn retain(&self, job_id: &str, keep: &[String]) {
        let Ok(entries) = std::fs::read_dir(self.job_dir(job_id)) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if !keep.iter().any(|k| name.to_str() == Some(k)) {
                // A blob that cannot be removed now is removed with the job.
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Removes every checkpoint of `job_id` (the job ended).
    pub fn remove_job(&self, job_id: &str) {
        let dir = self.job_dir(job_id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(job = %job_id, "cannot remove checkpoints in {}: {e}", dir.display());
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A window state as safetensors: its arrays as F32 tensors, the rest as metadata.
fn encode(s: &WindowState) -> Vec<u8> {
    let mut tensors: Vec<(&str, Vec<u8>)> = vec![("latents", f32_bytes(&s.latents))];
    // One metadata entry: a map's iteration order would make equal states differ in bytes.
    let mut fields = vec![("window", s.window.to_string()), ("step", s.step.to_string())];
    match &s.solver {
        SolverState::Euler => fields.push(("solver", "euler".into())),
        SolverState::UniPc {
            history,
            last_sample,
            last_order,
        } => {
            fields.push(("solver", "unipc".into()));
            fields.push(("last_order", last_order.to_string()));
            tensors.push(("last_sample", f32_bytes(last_sample)));
            for (name, m) in ["m0", "m1"].into_iter().zip(history) {
                if let Some(m) = m {
                    tensors.push((name, f32_bytes(m)));
                }
            }
        }
    }
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, b)| {
            let view = TensorView::new(Dtype::F32, vec![b.len() / 4], b).expect("a flat f32 tensor is valid");
            (*name, view)
        })
        .collect();
    let line: Vec<String> = fields.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let meta = HashMap::from([(FORMAT.to_string(), line.join(";"))]);
    safetensors::serialize(views, &Some(meta)).expect("serialising in-memory tensors cannot fail")
}

fn decode(bytes: &[u8]) -> Result<WindowState, String> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta = header.metadata().clone().unwrap_or_default();
    let line = meta
        .get(FORMAT)
        .ok_or_else(|| format!("no {FORMAT} entry in its metadata"))?;
    let fields: HashMap<&str, &str> = line.split(';').filter_map(|kv| kv.split_once('=')).collect();
    let field = |k: &str| {
        fields
            .get(k)
            .map(|v| v.to_string())
            .ok_or_else(|| format!("no {k} in its metadata"))
    };
    let number = |k: &str| field(k)?.parse::<usize>().map_err(|e| format!("{k}: {e}"));
    let st = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let array = |name: &str| -> Result<Option<Vec<f32>>, String> {
        match st.tensor(name) {
            Ok(t) if t.dtype() == Dtype::F32 => Ok(Some(
                t.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )),
            Ok(t) => Err(format!("{name} is {:?}, not F32", t.dtype())),
            Err(_) => Ok(None),
        }
    };
    let need = |name: &str| array(name)?.ok_or_else(|| format!("no {name} tensor"));
    let solver = match field("solver")?.as_str() {
        "euler" => SolverState::Euler,
        "unipc" => SolverState::UniPc {
            history: [array("m0")?, array("m1")?],
            last_sample: need("last_sample")?,
            last_order: number("last_order")?,
        },
        other => return Err(format!("unknown solver {other:?}")),
    };
    Ok(WindowState {
        window: number("window")?,
        step: number("step")?,
        latents: need("latents")?,
        solver,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unipc(window: usize) -> WindowState {
        WindowState {
            window,
            step: 3,
            latents: vec![1.5, -0.0, f32::MIN_POSITIVE, 7.0],
            solver: SolverState::UniPc {
                history: [Some(vec![0.25; 4]), None],
                last_sample: vec![-2.0; 4],
                last_order: 2,
            },
        }
    }

    #[test]
    fn blobs_round_trip_by_content_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        let a = unipc(0);
        let euler = WindowState {
            solver: SolverState::Euler,
            ..unipc(1)
        };
        let ha = store.put("job-1", &a).unwrap();
        assert_eq!(
            store.put("job-1", &a).unwrap(),
            ha,
            "content-addressed: same bytes, same name"
        );
        let he = store.put("job-1", &euler).unwrap();
        assert_ne!(ha, he);
        let back = store.get("job-1", &ha).unwrap();
        assert_eq!(
            back.latents.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            a.latents.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(back, a);
        assert_eq!(store.get("job-1", &he).unwrap(), euler);

        let path = dir.path().join("checkpoints/job-1").join(&ha);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = store.get("job-1", &ha).unwrap_err().to_string();
        assert!(err.contains("is damaged: its bytes hash to"), "{err}");

        store.retain("job-1", std::slice::from_ref(&he));
        assert!(!path.exists() && store.get("job-1", &he).is_ok());
        store.remove_job("job-1");
        assert!(!dir.path().join("checkpoints/job-1").exists());
        // No temporary files are left behind by a put.
        assert!(std::fs::read_dir(dir.path().join("checkpoints"))
            .unwrap()
            .next()
            .is_none());
    }
}
