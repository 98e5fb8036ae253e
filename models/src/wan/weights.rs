//! [`WeightStore`]: every tensor of one model component (a diffusers component directory such as
//! `transformer/`, `vae/` or `text_encoder/`, or an original Wan2.1 checkpoint directory), looked
//! up by name and returned as f32 after a shape check.
//!
//! Layouts understood:
//! - one or more `*.safetensors` files in the directory (`diffusion_pytorch_model.safetensors`,
//!   `model.safetensors`, the original repo's single file, …);
//! - a sharded checkpoint: exactly one `*.safetensors.index.json` whose `weight_map` names the
//!   shard of every tensor (then only the index decides what is loaded).
//!
//! Weights stored as F32, BF16 or F16 are upcast to f32 (the CPU reference runs in f32). The store
//! remembers which tensors were taken so a loader can reject checkpoints with weights it does not
//! understand ([`WeightStore::unused`]) instead of silently running a different model.

use crate::wan::error::WanError;
use crate::wan::safetensors_file::SafetensorsFile;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The tensors of one model component. `Sync`: loaders may fetch tensors from several threads.
#[derive(Debug)]
pub struct WeightStore {
    /// What to name in "not found" messages: the index file, the single file, or the directory.
    source: PathBuf,
    files: Vec<SafetensorsFile>,
    /// Tensor name → index into `files`.
    index: HashMap<String, usize>,
    used: Mutex<HashSet<String>>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl WeightStore {
    /// Opens every checkpoint file of the component directory `dir` (see the module doc).
    pub fn open(dir: &Path) -> Result<Self, WanError> {
        let entries = std::fs::read_dir(dir).map_err(|e| WanError::io(dir, e))?;
        let mut indexes = Vec::new();
        let mut singles = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| WanError::io(dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.ends_with(".safetensors.index.json") {
                indexes.push(path);
            } else if name.ends_with(".safetensors") {
                singles.push(path);
            }
        }
        match indexes.len() {
            0 if singles.is_empty() => Err(WanError::config(dir, "no .safetensors checkpoint in this directory")),
            0 => {
                singles.sort();
                Self::open_files(&singles)
            }
            1 => Self::open_index(&indexes[0]),
            _ => Err(WanError::config(
                dir,
                format!("{} *.safetensors.index.json files; expected at most one", indexes.len()),
            )),
        }
    }

    /// Opens the given safetensors files as one store. A tensor stored twice is an error.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self, WanError> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = SafetensorsFile::open(path)?;
            for name in file.names() {
                if let Some(&prev) = index.get(name) {
                    let other: &SafetensorsFile = &files[prev];
                    return Err(WanError::DuplicateTensor {
                        path: path.clone(),
                        tensor: name.to_string(),
                        other: other.path().to_path_buf(),
                    });
                }
                index.insert(name.to_string(), i);
            }
            files.push(file);
        }
        let source = match paths {
            [one] => one.clone(),
            _ => paths
                .first()
                .and_then(|p| p.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        Ok(Self {
            source,
            files,
            index,
            used: Mutex::new(HashSet::new()),
        })
    }

    /// Opens a sharded checkpoint from its `*.safetensors.index.json`.
    pub fn open_index(index_path: &Path) -> Result<Self, WanError> {
        let parsed: ShardIndex = crate::wan::error::read_json(index_path)?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shard_of: BTreeMap<&str, usize> = BTreeMap::new();
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (tensor, shard) in &parsed.weight_map {
            if shard.contains('/') || shard.contains('\\') || shard == ".." {
                return Err(WanError::config(
                    index_path,
                    format!("shard name '{shard}' for tensor '{tensor}' is not a plain file name"),
                ));
            }
            let i = match shard_of.get(shard.as_str()) {
                Some(&i) => i,
                None => {
                    files.push(SafetensorsFile::open(&dir.join(shard))?);
                    shard_of.insert(shard, files.len() - 1);
                    files.len() - 1
                }
            };
            if files[i].entry(tensor).is_none() {
                return Err(WanError::MissingFromShard {
                    path: files[i].path().to_path_buf(),
                    tensor: tensor.clone(),
                });
            }
            index.insert(tensor.clone(), i);
        }
        Ok(Self {
            source: index_path.to_path_buf(),
            files,
            index,
            used: Mutex::new(HashSet::new()),
        })
    }

    /// The index file, the single checkpoint file, or the directory the store was opened from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.index.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The stored shape of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        let file = &self.files[*self.index.get(name)?];
        file.entry(name).map(|e| e.shape.as_slice())
    }

    /// The file holding `name`, if present.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.index.get(name).map(|&i| self.files[i].path())
    }

    /// Tensor `name` as f32, after checking that its shape is exactly `expected`.
    pub fn get(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, WanError> {
        let (shape, values) = self.get_with_shape(name)?;
        if shape != expected {
            let path = self.file_of(name).map(Path::to_path_buf).unwrap_or_default();
            return Err(WanError::Shape {
                path,
                tensor: name.to_string(),
                got: shape,
                want: expected.to_vec(),
            });
        }
        Ok(values)
    }

    /// Tensor `name` as f32 with its stored shape (for loaders whose shapes vary per checkpoint).
    pub fn get_with_shape(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), WanError> {
        let Some(&i) = self.index.get(name) else {
            return Err(WanError::MissingTensor {
                tensor: name.to_string(),
                searched: self.source.display().to_string(),
            });
        };
        let file = &self.files[i];
        let shape = file.entry(name).map(|e| e.shape.clone()).unwrap_or_default();
        let values = file.read_f32(name)?;
        // A poisoned lock only means another loader thread panicked; the set is still usable.
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        Ok((shape, values))
    }

    /// Names never fetched with [`get`](Self::get) / [`get_with_shape`](Self::get_with_shape),
    /// sorted.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = self.index.keys().filter(|k| !used.contains(*k)).cloned().collect();
        v.sort_unstable();
        v
    }

    /// Fails with [`WanError::UnusedTensors`] (naming the file of the first one) when a tensor
    /// other than those `ignored` was never fetched: a checkpoint with tensors the model does not
    /// read is a different model, not one to load silently.
    pub fn check_all_used(&self, ignored: impl Fn(&str) -> bool) -> Result<(), WanError> {
        let unused: Vec<String> = self.unused().into_iter().filter(|n| !ignored(n)).collect();
        match unused.first() {
            None => Ok(()),
            Some(example) => Err(WanError::UnusedTensors {
                path: self.file_of(example).unwrap_or(self.source()).to_path_buf(),
                count: unused.len(),
                example: example.clone(),
            }),
        }
    }
}
