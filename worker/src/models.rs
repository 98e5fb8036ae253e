//! The models a worker serves: the built-in procedural model, plus the Wan2.1 pipelines loaded
//! from directories at start-up (`--model [NAME=]DIR`). Per job it encodes prompts (when asked)
//! and builds the denoiser and decoder of a shard.

use longshot_core::denoiser::{Conditioning, Denoiser, FrameDecoder, ModelInfo, TextEmbeddings};
use crate::device::Device;
use longshot_models::wan::WanModel;
use longshot_models::ProceduralModel;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A model directory to load, optionally under an explicit name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSource {
    pub name: Option<String>,
    pub dir: PathBuf,
}

impl std::str::FromStr for ModelSource {
    type Err = String;

    /// `DIR` or `NAME=DIR`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, dir) = match s.split_once('=') {
            Some((n, d)) => (Some(n.to_string()), d),
            None => (None, s),
        };
        if let Some(n) = &name {
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                let hint = if n.contains('/') { " (a directory whose path holds '=' needs an explicit NAME=DIR)" } else { "" };
                return Err(format!("model name {n:?} must be non-empty and use only letters, digits, '.', '_' and '-'{hint}"));
            }
        }
        if dir.is_empty() {
            return Err("the model directory is empty (expected DIR or NAME=DIR)".into());
        }
        Ok(Self { name, dir: PathBuf::from(dir) })
    }
}

impl ModelSource {
    /// The `--model` value that means this source.
    pub fn to_arg(&self) -> String {
        match &self.name {
            Some(n) => format!("{n}={}", self.dir.display()),
            None => self.dir.display().to_string(),
        }
    }
}

/// Why a model could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot load the model at {dir}: {reason}")]
    Load { dir: PathBuf, reason: String },
    #[error("model {name:?} is served twice ({first} and {second}): give one of them another name with NAME=DIR")]
    Duplicate { name: String, first: String, second: String },
    #[error("model {0:?} is not served by this worker")]
    NotServed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("model {name:?} failed: {reason}")]
    Failed { name: String, reason: String },
}

/// Everything one worker serves.
pub struct ModelSet {
    wan: Vec<Arc<WanModel>>,
}

impl ModelSet {
    /// Only the built-in procedural model.
    pub fn builtin() -> Self {
        Self { wan: Vec::new() }
    }

    /// The built-in model plus a Wan2.1 pipeline per source, its transformer on `device`.
    /// Blocking (reads gigabytes for real checkpoints): call it before serving, or off the async
    /// runtime.
    pub fn load(sources: &[ModelSource], device: &Device) -> Result<Self, ModelError> {
        let mut wan: Vec<Arc<WanModel>> = Vec::new();
        for s in sources {
            let m = WanModel::load(&s.dir, s.name.as_deref(), &device.wan_backend()).map_err(|e| ModelError::Load { dir: s.dir.clone(), reason: e.to_string() })?;
            let first = if m.name() == ProceduralModel::NAME {
                Some("the built-in procedural model".to_string())
            } else {
                wan.iter().find(|w| w.name() == m.name()).map(|w| w.root().display().to_string())
            };
            if let Some(first) = first {
                return Err(ModelError::Duplicate { name: m.name().into(), first, second: s.dir.display().to_string() });
            }
            tracing::info!("loaded {} from {} (transformer on {})", m.name(), s.dir.display(), m.backend_kind());
            wan.push(Arc::new(m));
        }
        Ok(Self { wan })
    }

    /// What this worker advertises.
    pub fn served(&self) -> Vec<ModelInfo> {
        let mut v = longshot_models::available_models();
        v.extend(self.wan.iter().map(|m| m.info().clone()));
        v
    }

    pub fn serves(&self, model: &str) -> bool {
        model == ProceduralModel::NAME || self.wan(model).is_some()
    }

    fn wan(&self, model: &str) -> Option<&Arc<WanModel>> {
        self.wan.iter().find(|m| m.name() == model)
    }

    /// The directory `model` was loaded from, if it is a loaded pipeline.
    pub fn dir_of(&self, model: &str) -> Option<&Path> {
        self.wan(model).map(|m| m.root())
    }

    /// Text embeddings of a job's prompts (`None` for models that take the text itself).
    /// Blocking and heavy: call it off the async runtime.
    pub fn encode_text(&self, model: &str, prompt: &str, negative_prompt: &str) -> Result<Option<TextEmbeddings>, ModelError> {
        if model == ProceduralModel::NAME {
            return Ok(None);
        }
        let m = self.wan(model).ok_or_else(|| ModelError::NotServed(model.into()))?;
        let e = m.encode(prompt, negative_prompt).map_err(|e| ModelError::Failed { name: model.into(), reason: e.to_string() })?;
        Ok(Some(e))
    }

    /// Cheap checks of an assignment's conditioning, before any work starts.
    pub fn check_conditioning(&self, model: &str, cond: &Conditioning) -> Result<(), ModelError> {
        match (self.wan(model), &cond.embeddings) {
            (None, _) if model != ProceduralModel::NAME => Err(ModelError::NotServed(model.into())),
            (None, Some(_)) => Err(ModelError::Invalid(format!("model {model:?} takes no text embeddings, but some were sent"))),
            (None, None) => Ok(()),
            (Some(_), None) => Err(ModelError::Invalid(format!("model {model:?} needs the job's text embeddings (EncodeText), none were sent"))),
            (Some(m), Some(e)) => m.check_embeddings(e).map_err(|r| ModelError::Invalid(format!("text embeddings for {model:?}: {r}"))),
        }
    }

    /// A denoiser and decoder for one job. Blocking (Wan precomputes its text K/V).
    pub fn instantiate(&self, model: &str, cond: &Conditioning, latent_h: usize, latent_w: usize) -> Result<(Box<dyn Denoiser>, Box<dyn FrameDecoder>), ModelError> {
        self.check_conditioning(model, cond)?;
        if model == ProceduralModel::NAME {
            let m = ProceduralModel::new();
            return Ok((m.denoiser(cond, latent_h, latent_w), m.decoder()));
        }
        let m = self.wan(model).ok_or_else(|| ModelError::NotServed(model.into()))?;
        let e = cond.embeddings.as_ref().ok_or_else(|| ModelError::Invalid("no text embeddings".into()))?;
        let d = m.denoiser(e).map_err(|e| ModelError::Failed { name: model.into(), reason: e.to_string() })?;
        Ok((d, Box::new(m.decoder())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_sources_parse_dir_or_name_equals_dir() {
        assert_eq!("/m/wan".parse(), Ok(ModelSource { name: None, dir: "/m/wan".into() }));
        assert_eq!("tiny=/m/wan".parse(), Ok(ModelSource { name: Some("tiny".into()), dir: "/m/wan".into() }));
        assert!("=/m".parse::<ModelSource>().unwrap_err().contains("must be non-empty"));
        assert!("a b=/m".parse::<ModelSource>().unwrap_err().contains("only letters"));
        assert!("tiny=".parse::<ModelSource>().unwrap_err().contains("directory is empty"));
        assert!("/data/run=1/wan".parse::<ModelSource>().unwrap_err().contains("needs an explicit NAME=DIR"));
        assert_eq!("tiny=/m/wan".parse::<ModelSource>().unwrap().to_arg(), "tiny=/m/wan");
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let e = ModelSet::load(&[ModelSource { name: None, dir: "/nonexistent/wan".into() }], &Device::Cpu).err().expect("must fail").to_string();
        assert!(e.starts_with("cannot load the model at /nonexistent/wan: ") && e.contains("model_index.json"), "{e}");
    }

    #[test]
    fn the_procedural_model_takes_no_embeddings() {
        let set = ModelSet::builtin();
        assert_eq!(set.encode_text("procedural", "a", "b").unwrap(), None);
        let mut cond = Conditioning::new("a", "");
        set.check_conditioning("procedural", &cond).unwrap();
        cond.embeddings = Some(TextEmbeddings { rows: 1, dim: 1, prompt: vec![0.0], negative: vec![0.0] });
        assert!(set.check_conditioning("procedural", &cond).unwrap_err().to_string().contains("takes no text embeddings"));
        assert!(matches!(set.encode_text("wan", "a", "b"), Err(ModelError::NotServed(_))));
    }
}
