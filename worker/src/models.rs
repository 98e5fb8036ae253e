//! The models a worker serves: the built-in models, plus the Wan2.1 pipelines loaded from
//! directories at start-up (`--model [NAME=]DIR`), all behind `ServedModel`. Per job it encodes
//! prompts (when asked) and builds the denoiser and decoder of a shard.

use crate::device::Device;
use longshot_core::api::EncodedConditioning;
use longshot_core::denoiser::{Conditioning, Denoiser, FrameDecoder, ModelInfo};
use longshot_core::inputs::{ReferenceImages, VideoSpan};
use longshot_core::plan::WindowPlan;
use longshot_core::prompt_schedule::{PromptSchedule, WindowDenoisers};
use longshot_models::wan::WanModel;
use longshot_models::{ConditioningError, ServedModel, ServedModelError};
use std::collections::HashMap;
use std::ops::Range;
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
                let hint = if n.contains('/') {
                    " (a directory whose path holds '=' needs an explicit NAME=DIR)"
                } else {
                    ""
                };
                return Err(format!(
                    "model name {n:?} must be non-empty and use only letters, digits, '.', '_' and '-'{hint}"
                ));
            }
        }
        if dir.is_empty() {
            return Err("the model directory is empty (expected DIR or NAME=DIR)".into());
        }
        Ok(Self {
            name,
            dir: PathBuf::from(dir),
        })
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
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
    #[error("model {0:?} is not served by this worker")]
    NotServed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("model {name:?} failed: {reason}")]
    Failed { name: String, reason: String },
}

/// Everything one worker serves, each model behind [`ServedModel`]: the set looks a model up by
/// name and otherwise goes by what the model declares.
pub struct ModelSet {
    /// In the order they are advertised: the built-in models, then the loaded pipelines.
    models: Vec<Arc<dyn ServedModel>>,
    /// Name → index into `models`.
    by_name: HashMap<String, usize>,
}

impl ModelSet {
    /// Only the built-in models (the procedural model).
    pub fn builtin() -> Self {
        let mut set = Self {
            models: Vec::new(),
            by_name: HashMap::new(),
        };
        for m in longshot_models::builtin_models() {
            set.add(m).expect("the built-in models have distinct names");
        }
        set
    }

    /// The built-in models plus a Wan2.1 pipeline per source, its transformer on `device`.
    /// Blocking (reads gigabytes for real checkpoints): call it before serving, or off the async
    /// runtime.
    pub fn load(sources: &[ModelSource], device: &Device) -> Result<Self, ModelError> {
        let mut set = Self::builtin();
        for s in sources {
            let m = WanModel::load(&s.dir, s.name.as_deref(), &device.wan_backend()).map_err(|e| ModelError::Load {
                dir: s.dir.clone(),
                reason: e.to_string(),
            })?;
            let loaded = format!(
                "loaded {} from {} (transformer on {})",
                m.name(),
                s.dir.display(),
                m.backend_kind()
            );
            set.add(Arc::new(m))?;
            tracing::info!("{loaded}");
        }
        Ok(set)
    }

    /// Serves one more model; refuses a name already served.
    pub fn add(&mut self, model: Arc<dyn ServedModel>) -> Result<(), ModelError> {
        let name = model.name();
        if let Some(first) = self.get(&name) {
            return Err(ModelError::Duplicate {
                name,
                first: first.origin(),
                second: model.origin(),
            });
        }
        self.by_name.insert(name, self.models.len());
        self.models.push(model);
        Ok(())
    }

    /// What this worker advertises.
    pub fn served(&self) -> Vec<ModelInfo> {
        self.models.iter().map(|m| m.info()).collect()
    }

    pub fn serves(&self, model: &str) -> bool {
        self.by_name.contains_key(model)
    }

    fn get(&self, model: &str) -> Option<&Arc<dyn ServedModel>> {
        self.by_name.get(model).map(|&i| &self.models[i])
    }

    fn served_model(&self, model: &str) -> Result<&Arc<dyn ServedModel>, ModelError> {
        self.get(model).ok_or_else(|| ModelError::NotServed(model.into()))
    }

    /// The directory `model` was loaded from, if it is a loaded pipeline.
    pub fn dir_of(&self, model: &str) -> Option<&Path> {
        self.get(model).and_then(|m| m.dir())
    }

    /// Text embeddings of a job's prompts (`None` for models that take the text itself) and
    /// image embeddings of its reference images (for models that take them). Blocking and heavy:
    /// call it off the async runtime.
    pub fn encode_text(
        &self,
        model: &str,
        prompt: &str,
        negative_prompt: &str,
        reference: Option<&ReferenceImages>,
    ) -> Result<EncodedConditioning, ModelError> {
        let m = self.served_model(model)?;
        let failed = |e: ServedModelError| ModelError::Failed {
            name: model.into(),
            reason: e.to_string(),
        };
        // No images: the text alone (a shot list's further prompts; the job's image embeddings
        // come with its first).
        let (takes, given) = (m.info().reference_images, reference.map_or(0, ReferenceImages::count));
        if given > 0 && takes != given {
            return Err(ModelError::Invalid(format!(
                "model {model:?} {}",
                ConditioningError::ReferenceImages { takes, given }
            )));
        }
        Ok(EncodedConditioning {
            text: m.encode_text(prompt, negative_prompt).map_err(failed)?,
            image: reference.map(|r| m.encode_images(r)).transpose().map_err(failed)?,
        })
    }

    /// Video-to-video: the clean latents of latent frames `latents` of a job's input video.
    /// Blocking and heavy: call it off the async runtime.
    pub fn encode_video(&self, model: &str, video: &VideoSpan, latents: Range<usize>) -> Result<Vec<f32>, ModelError> {
        self.served_model(model)?
            .encode_video(video, latents)
            .map_err(|e| ModelError::Failed {
                name: model.into(),
                reason: e.to_string(),
            })
    }

    /// Cheap checks of an assignment's conditioning, before any work starts.
    pub fn check_conditioning(&self, model: &str, cond: &Conditioning) -> Result<(), ModelError> {
        self.served_model(model)?.check_conditioning(cond).map_err(|e| match e {
            ConditioningError::Invalid(r) => ModelError::Invalid(format!("conditioning for {model:?}: {r}")),
            e => ModelError::Invalid(format!("model {model:?} {e}")),
        })
    }

    /// A denoiser and decoder for one job of `latent: [frames, height, width]` latent frames
    /// and cells. Blocking (Wan precomputes its text K/V).
    pub fn instantiate(&self, model: &str, cond: &Conditioning, latent: [usize; 3]) -> Result<JobModel, ModelError> {
        self.check_conditioning(model, cond)?;
        let m = self.served_model(model)?;
        let failed = |e: ServedModelError| ModelError::Failed {
            name: model.into(),
            reason: e.to_string(),
        };
        Ok((m.job_denoiser(cond, latent).map_err(failed)?, m.frame_decoder()))
    }

    /// [`ModelSet::check_conditioning`] for a shot list: the schedule fits the plan, and each
    /// distinct conditioning of the shard's windows fits the model.
    pub fn check_scheduled(
        &self,
        model: &str,
        schedule: &PromptSchedule,
        base: &Conditioning,
        plan: &WindowPlan,
        windows: Range<usize>,
    ) -> Result<(), ModelError> {
        schedule
            .validate(plan.windows())
            .map_err(|m| ModelError::Invalid(format!("prompt schedule: {m}")))?;
        schedule
            .groups(windows)
            .iter()
            .try_for_each(|(_, ks)| self.check_conditioning(model, &schedule.conditioning(ks[0], base)))
    }

    /// [`ModelSet::instantiate`] for a shot list: one denoiser per distinct window
    /// conditioning among `windows` (each holds its own text state, e.g. Wan's K/V), behind one
    /// [`WindowDenoisers`].
    pub fn instantiate_scheduled(
        &self,
        model: &str,
        schedule: &PromptSchedule,
        base: &Conditioning,
        plan: &WindowPlan,
        windows: Range<usize>,
        latent: [usize; 3],
    ) -> Result<JobModel, ModelError> {
        self.check_scheduled(model, schedule, base, plan, windows.clone())?;
        let mut groups = Vec::new();
        let mut decoder = None;
        for (_, ks) in schedule.groups(windows.clone()) {
            let (d, dec) = self.instantiate(model, &schedule.conditioning(ks[0], base), latent)?;
            decoder.get_or_insert(dec);
            groups.push((d, ks));
        }
        let denoisers = WindowDenoisers::new(windows, groups).map_err(ModelError::Invalid)?;
        let decoder = decoder.ok_or_else(|| ModelError::Invalid("a shard with no windows".into()))?;
        Ok((Box::new(denoisers), decoder))
    }
}

/// What one job renders with: its denoiser (holding the job's conditioning) and a frame decoder.
pub type JobModel = (Box<dyn Denoiser>, Box<dyn FrameDecoder>);

#[cfg(test)]
mod tests {
    use super::*;
    use longshot_core::denoiser::TextEmbeddings;
    use longshot_models::ProceduralModel;

    #[test]
    fn model_sources_parse_dir_or_name_equals_dir() {
        assert_eq!(
            "/m/wan".parse(),
            Ok(ModelSource {
                name: None,
                dir: "/m/wan".into()
            })
        );
        assert_eq!(
            "tiny=/m/wan".parse(),
            Ok(ModelSource {
                name: Some("tiny".into()),
                dir: "/m/wan".into()
            })
        );
        assert!("=/m".parse::<ModelSource>().unwrap_err().contains("must be non-empty"));
        assert!("a b=/m".parse::<ModelSource>().unwrap_err().contains("only letters"));
        assert!("tiny="
            .parse::<ModelSource>()
            .unwrap_err()
            .contains("directory is empty"));
        assert!("/data/run=1/wan"
            .parse::<ModelSource>()
            .unwrap_err()
            .contains("needs an explicit NAME=DIR"));
        assert_eq!("tiny=/m/wan".parse::<ModelSource>().unwrap().to_arg(), "tiny=/m/wan");
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let e = ModelSet::load(
            &[ModelSource {
                name: None,
                dir: "/nonexistent/wan".into(),
            }],
            &Device::Cpu,
        )
        .err()
        .expect("must fail")
        .to_string();
        assert!(
            e.starts_with("cannot load the model at /nonexistent/wan: ") && e.contains("model_index.json"),
            "{e}"
        );
    }

    #[test]
    fn the_procedural_model_takes_no_embeddings() {
        let set = ModelSet::builtin();
        assert_eq!(
            set.encode_text(ProceduralModel::NAME, "a", "b", None).unwrap(),
            EncodedConditioning::default()
        );
        let mut cond = Conditioning::new("a", "");
        set.check_conditioning(ProceduralModel::NAME, &cond).unwrap();
        cond.embeddings = Some(TextEmbeddings {
            rows: 1,
            dim: 1,
            prompt: vec![0.0],
            negative: vec![0.0],
        });
        let e = set
            .check_conditioning(ProceduralModel::NAME, &cond)
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes no text embeddings"));
        assert!(matches!(
            set.encode_text("wan", "a", "b", None),
            Err(ModelError::NotServed(_))
        ));
    }

    /// Takes `[2, 3]` embeddings; its name is only ever used as a key.
    struct NeedsEmbeddings(&'static str);

    impl ServedModel for NeedsEmbeddings {
        fn info(&self) -> ModelInfo {
            ModelInfo {
                name: self.0.into(),
                weights: "w".into(),
                ..ProceduralModel::new().info()
            }
        }
        fn origin(&self) -> String {
            format!("the test model {}", self.0)
        }
        fn text_conditioning(&self) -> longshot_models::TextConditioning {
            longshot_models::TextConditioning::Embeddings
        }
        fn check_embeddings(&self, e: &TextEmbeddings) -> Result<(), String> {
            if (e.rows, e.dim) == (2, 3) {
                Ok(())
            } else {
                Err(format!("shape [{}, {}] is not [2, 3]", e.rows, e.dim))
            }
        }
        fn encode_text(&self, _: &str, _: &str) -> Result<Option<TextEmbeddings>, ServedModelError> {
            Ok(Some(TextEmbeddings {
                rows: 2,
                dim: 3,
                prompt: vec![0.0; 6],
                negative: vec![0.0; 6],
            }))
        }
        fn job_denoiser(&self, c: &Conditioning, latent: [usize; 3]) -> Result<Box<dyn Denoiser>, ServedModelError> {
            ProceduralModel::new().job_denoiser(&Conditioning::new(c.prompt.clone(), ""), latent)
        }
        fn frame_decoder(&self) -> Box<dyn FrameDecoder> {
            ProceduralModel::new().decoder()
        }
    }

    #[test]
    fn a_model_that_needs_embeddings_gets_them_checked() {
        let mut set = ModelSet::builtin();
        set.add(Arc::new(NeedsEmbeddings("needs"))).unwrap();
        let mut cond = Conditioning::new("a", "");
        let missing = set.check_conditioning("needs", &cond).unwrap_err().to_string();
        assert_eq!(
            missing,
            r#"model "needs" needs the job's text embeddings (EncodeText), none were sent"#
        );
        assert!(set.instantiate("needs", &cond, [3, 2, 2]).is_err());
        cond.embeddings = Some(TextEmbeddings {
            rows: 1,
            dim: 3,
            prompt: vec![0.0; 3],
            negative: vec![0.0; 3],
        });
        let invalid = set.check_conditioning("needs", &cond).unwrap_err().to_string();
        assert_eq!(invalid, r#"conditioning for "needs": shape [1, 3] is not [2, 3]"#);
        cond.embeddings = set.encode_text("needs", "a", "", None).unwrap().text;
        set.check_conditioning("needs", &cond).unwrap();
        set.instantiate("needs", &cond, [3, 2, 2]).unwrap();
        // A reference image for a model that takes none is refused before any encoder runs.
        let image = ReferenceImages {
            width: 1,
            height: 1,
            first: vec![0; 3],
            last: None,
        };
        let refused = set.encode_text("needs", "a", "", Some(&image)).unwrap_err().to_string();
        assert_eq!(refused, r#"model "needs" takes 0 reference image(s), the job gives 1"#);
        // The built-in model, for contrast, refuses those same embeddings.
        let unexpected = set
            .check_conditioning(ProceduralModel::NAME, &cond)
            .unwrap_err()
            .to_string();
        assert_eq!(
            unexpected,
            format!(
                "model {:?} takes no text embeddings, but some were sent",
                ProceduralModel::NAME
            )
        );
    }

    #[test]
    fn a_name_is_served_once() {
        let mut set = ModelSet::builtin();
        set.add(Arc::new(NeedsEmbeddings("twice"))).unwrap();
        let e = set.add(Arc::new(NeedsEmbeddings("twice"))).unwrap_err().to_string();
        assert!(
            e.starts_with(r#"model "twice" is served twice (the test model twice and the test model twice)"#),
            "{e}"
        );
        let e = set
            .add(Arc::new(NeedsEmbeddings(ProceduralModel::NAME)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("(the built-in procedural model and "), "{e}");
        assert_eq!(set.served().len(), 2);
    }
}
