//! [`ServedModel`]: a model as a worker serves it, whatever its family. The procedural model and
//! every loaded Wan2.1 pipeline implement it, so a worker handles them alike and tells them apart
//! only by what they declare (their name is a lookup key, never a branch).

use crate::wan::WanError;
use longshot_core::denoiser::{Conditioning, Denoiser, FrameDecoder, ModelInfo, TextEmbeddings};
use longshot_core::inputs::{ImageEmbeddings, ReferenceImages, VideoSpan};
use std::ops::Range;
use std::path::Path;
use thiserror::Error;

/// What a model is conditioned on besides the prompt text every assignment carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextConditioning {
    /// The prompt text alone; an assignment carries no embeddings.
    PromptText,
    /// Text embeddings, computed once per job by one worker's [`ServedModel::encode_text`] and
    /// sent with every assignment, so every worker conditions on the same bits.
    Embeddings,
}

/// Why an assignment's conditioning does not fit a model.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum ConditioningError {
    #[error("takes no text embeddings, but some were sent")]
    Unexpected,
    #[error("needs the job's text embeddings (EncodeText), none were sent")]
    Missing,
    #[error("takes {takes} reference image(s), the job gives {given}")]
    ReferenceImages { takes: u32, given: u32 },
    #[error("renders from no input video (video-to-video takes a text-to-video model: a Wan2.1 T2V pipeline or the procedural model)")]
    TakesNoVideo,
    /// The embeddings' shape or values do not fit the model.
    #[error("{0}")]
    Invalid(String),
}

/// Why a served model could not encode a prompt or build a job's denoiser.
#[derive(Debug, Error)]
pub enum ServedModelError {
    #[error(transparent)]
    Conditioning(#[from] ConditioningError),
    #[error(transparent)]
    Wan(#[from] WanError),
}

/// A model a worker serves: what it advertises, what it is conditioned on, and per job a
/// denoiser and a frame decoder. Blocking methods are marked; call them off the async runtime.
pub trait ServedModel: Send + Sync {
    /// What workers advertise: the name jobs ask for, the latent geometry, and the weights'
    /// fingerprint the coordinator gangs by.
    fn info(&self) -> ModelInfo;

    fn name(&self) -> String {
        self.info().name
    }

    /// Identifies the weights behind the name (empty for a model without weights).
    fn fingerprint(&self) -> String {
        self.info().weights
    }

    /// Where the model comes from, for messages (a directory, or that it is built in).
    fn origin(&self) -> String;

    /// The directory the model was loaded from, if any.
    fn dir(&self) -> Option<&Path> {
        None
    }

    fn text_conditioning(&self) -> TextConditioning;

    /// Checks that embeddings can condition this model (called only for
    /// [`TextConditioning::Embeddings`]); the message says what does not fit.
    fn check_embeddings(&self, e: &TextEmbeddings) -> Result<(), String> {
        e.validate()
    }

    /// Checks that reference images and their embeddings can condition this model (called only
    /// when the model takes reference images and both are present).
    fn check_images(&self, images: &ReferenceImages, e: &ImageEmbeddings) -> Result<(), String> {
        images.validate()?;
        e.validate()
    }

    /// Cheap checks of an assignment's conditioning, before any work starts.
    fn check_conditioning(&self, cond: &Conditioning) -> Result<(), ConditioningError> {
        match (self.text_conditioning(), &cond.embeddings) {
            (TextConditioning::PromptText, None) => {}
            (TextConditioning::PromptText, Some(_)) => return Err(ConditioningError::Unexpected),
            (TextConditioning::Embeddings, None) => return Err(ConditioningError::Missing),
            (TextConditioning::Embeddings, Some(e)) => self.check_embeddings(e).map_err(ConditioningError::Invalid)?,
        }
        let takes = self.info().reference_images;
        let given = cond.reference.as_ref().map_or(0, ReferenceImages::count);
        if takes != given {
            return Err(ConditioningError::ReferenceImages { takes, given });
        }
        match (&cond.reference, &cond.image_embeddings) {
            (None, None) => Ok(()),
            (Some(_), None) => Err(ConditioningError::Invalid(
                "the reference images' embeddings (EncodeText) are missing".into(),
            )),
            (None, Some(_)) => Err(ConditioningError::Invalid(
                "image embeddings were sent without reference images".into(),
            )),
            (Some(r), Some(e)) => self.check_images(r, e).map_err(ConditioningError::Invalid),
        }
    }

    /// The image encoder's embeddings of a job's reference images, for a model that takes them.
    /// Blocking and heavy.
    fn encode_images(&self, images: &ReferenceImages) -> Result<ImageEmbeddings, ServedModelError> {
        Err(ConditioningError::ReferenceImages {
            takes: self.info().reference_images,
            given: images.count(),
        }
        .into())
    }

    /// Video-to-video: the clean latents of latent frames `latents` of the job's input video,
    /// frame-major `[len, C, h, w]`, bit-identical to the same frames of a whole-video encode.
    /// `video` holds the frames [`longshot_core::inputs::video_frames_for`] names with the
    /// model's `video_warmup`. Blocking and heavy.
    fn encode_video(&self, video: &VideoSpan, latents: Range<usize>) -> Result<Vec<f32>, ServedModelError> {
        let _ = (video, latents);
        Err(ConditioningError::TakesNoVideo.into())
    }

    /// Text embeddings of a job's prompts; `None` for a model conditioned on the text itself.
    /// Blocking and heavy for a text encoder.
    fn encode_text(&self, prompt: &str, negative_prompt: &str) -> Result<Option<TextEmbeddings>, ServedModelError>;

    /// A denoiser bound to one job's conditioning, for a clip of `latent: [frames, height,
    /// width]` LATENT frames and cells (the plan's, padding included). Blocking (a model may
    /// precompute per-job work here).
    fn job_denoiser(&self, cond: &Conditioning, latent: [usize; 3]) -> Result<Box<dyn Denoiser>, ServedModelError>;

    fn frame_decoder(&self) -> Box<dyn FrameDecoder>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProceduralModel;

    /// A model that takes `[2, 3]` embeddings, to check the provided methods without weights.
    struct NeedsEmbeddings;

    impl ServedModel for NeedsEmbeddings {
        fn info(&self) -> ModelInfo {
            ModelInfo {
                name: "needs-embeddings".into(),
                weights: "w".into(),
                ..ProceduralModel::new().info()
            }
        }
        fn origin(&self) -> String {
            "a test".into()
        }
        fn text_conditioning(&self) -> TextConditioning {
            TextConditioning::Embeddings
        }
        fn check_embeddings(&self, e: &TextEmbeddings) -> Result<(), String> {
            e.validate()?;
            if (e.rows, e.dim) == (2, 3) {
                Ok(())
            } else {
                Err(format!("shape [{}, {}] is not [2, 3]", e.rows, e.dim))
            }
        }
        fn encode_text(&self, _: &str, _: &str) -> Result<Option<TextEmbeddings>, ServedModelError> {
            Ok(Some(embeddings(2, 3)))
        }
        fn job_denoiser(&self, _: &Conditioning, _: [usize; 3]) -> Result<Box<dyn Denoiser>, ServedModelError> {
            Err(ConditioningError::Missing.into())
        }
        fn frame_decoder(&self) -> Box<dyn FrameDecoder> {
            ProceduralModel::new().decoder()
        }
    }

    fn embeddings(rows: usize, dim: usize) -> TextEmbeddings {
        TextEmbeddings {
            rows,
            dim,
            prompt: vec![0.0; rows * dim],
            negative: vec![0.0; rows * dim],
        }
    }

    #[test]
    fn a_prompt_text_model_refuses_embeddings() {
        let m: &dyn ServedModel = &ProceduralModel::new();
        assert_eq!(m.text_conditioning(), TextConditioning::PromptText);
        assert_eq!(
            (m.name(), m.fingerprint()),
            (ProceduralModel::NAME.to_string(), String::new())
        );
        assert_eq!(m.encode_text("a", "b").unwrap(), None);
        let mut cond = Conditioning::new("a", "");
        assert_eq!(m.check_conditioning(&cond), Ok(()));
        cond.embeddings = Some(embeddings(1, 1));
        assert_eq!(m.check_conditioning(&cond), Err(ConditioningError::Unexpected));
    }

    #[test]
    fn an_embeddings_model_requires_fitting_embeddings() {
        let m: &dyn ServedModel = &NeedsEmbeddings;
        let mut cond = Conditioning::new("a", "");
        assert_eq!(m.check_conditioning(&cond), Err(ConditioningError::Missing));
        cond.embeddings = Some(embeddings(1, 3));
        assert_eq!(
            m.check_conditioning(&cond),
            Err(ConditioningError::Invalid("shape [1, 3] is not [2, 3]".into()))
        );
        cond.embeddings = m.encode_text("a", "").unwrap();
        assert_eq!(m.check_conditioning(&cond), Ok(()));
    }

    #[test]
    fn reference_images_must_match_what_the_model_takes() {
        let m: &dyn ServedModel = &ProceduralModel::new();
        let mut cond = Conditioning::new("a", "");
        let images = ReferenceImages {
            width: 1,
            height: 1,
            first: vec![0; 3],
            last: None,
        };
        cond.reference = Some(images.clone());
        assert_eq!(
            m.check_conditioning(&cond),
            Err(ConditioningError::ReferenceImages { takes: 0, given: 1 })
        );
        assert!(m
            .encode_images(&images)
            .unwrap_err()
            .to_string()
            .contains("takes 0 reference image(s)"));
    }
}
