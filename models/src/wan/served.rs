//! A Wan2.1 pipeline as a worker serves it: the transformer and VAE loaded at start-up, the text
//! encoder loaded on first use (only the worker the coordinator asks to encode a job's prompts
//! ever needs it; umT5-XXL is 5.7 B parameters), and per job a denoiser bound to the embeddings
//! the coordinator sent plus a [`WanFrameDecoder`]. An image-to-video pipeline also loads the
//! VAE encoder (each worker encodes its windows' condition) and, on first use like the text
//! encoder, the CLIP image encoder. The transformer runs on the CPU reference
//! backend ([`WanDenoiser`]) or, with the `cuda` feature and [`WanBackend::Cuda`], on the GPU
//! (`gpu::GpuWanDenoiser`), where the VAE decoder runs too (`gpu::GpuWanVaeDecoder`; with
//! `LONGSHOT_GPU_VAE=0` it stays on the CPU); the text encoder runs on the CPU either way. A
//! worker holds it as a [`ServedModel`].

use crate::served::{ConditioningError, ServedModel, ServedModelError, TextConditioning};
use crate::wan::clip::{ClipImageProcessor, ClipVisionConfig, ClipVisionEncoder};
use crate::wan::image2video::{ImageCondition, ReferenceImages as ImageRefs};
use crate::wan::pipeline::PipelineDir;
use crate::wan::t5::config::UMT5Config;
use crate::wan::t5::tokenizer::T5_MAX_LENGTH;
use crate::wan::t5::TextEncoder;
use crate::wan::transformer::config::TransformerConfig;
use crate::wan::transformer::denoiser::ImageConditioning;
use crate::wan::transformer::denoiser::{model_info_for, WanDenoiser};
use crate::wan::transformer::WanTransformer;
use crate::wan::vae::encoder::WanVaeEncoder;
use crate::wan::vae::frame_decoder::WanFrameDecoder;
use crate::wan::vae::{WanVae, WanVaeDecoder};
use crate::wan::video2video;
use crate::wan::WanError;
use longshot_core::denoiser::{Conditioning, Denoiser, FrameDecoder, ModelInfo, TextEmbeddings};
use longshot_core::inputs::{ImageEmbeddings, ReferenceImages, VideoSpan};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where the transformer runs.
#[derive(Clone)]
pub enum WanBackend {
    /// The f32 CPU reference ops.
    Cpu,
    /// The CUDA backend (bf16 GEMMs with f32 accumulation; see `gpu`).
    #[cfg(feature = "cuda")]
    Cuda(Arc<longshot_kernels::cuda::CudaBackend>),
}

/// The loaded transformer, on the backend it runs on.
enum Transformer {
    Cpu(Arc<WanTransformer>),
    #[cfg(feature = "cuda")]
    Cuda(Arc<super::gpu::GpuWanTransformer>),
}

/// The loaded VAE decoder, on the backend it runs on.
enum Vae {
    Cpu(Arc<WanVaeDecoder>),
    #[cfg(feature = "cuda")]
    Cuda(Arc<super::gpu::GpuWanVaeDecoder>),
}

/// Keeps a CUDA worker's VAE on the CPU when set to `0` (a fallback while the GPU decoder is new).
pub const GPU_VAE_ENV: &str = "LONGSHOT_GPU_VAE";

impl Vae {
    fn load(dir: &Path, backend: &WanBackend) -> Result<Self, WanError> {
        Ok(match backend {
            #[cfg(feature = "cuda")]
            WanBackend::Cuda(b) if std::env::var(GPU_VAE_ENV).map_or(true, |v| v != "0") => Self::Cuda(Arc::new(
                super::gpu::GpuWanVaeDecoder::load(b.clone(), dir)
                    .map_err(|e| WanError::Input(format!("{}: loading onto the GPU: {e}", dir.display())))?,
            )),
            _ => Self::Cpu(Arc::new(WanVaeDecoder::load(dir)?)),
        })
    }

    fn config(&self) -> &crate::wan::vae::config::VaeConfig {
        match self {
            Self::Cpu(v) => v.config(),
            #[cfg(feature = "cuda")]
            Self::Cuda(v) => v.config(),
        }
    }
}

impl Transformer {
    fn load(dir: &Path, backend: &WanBackend) -> Result<Self, WanError> {
        Ok(match backend {
            WanBackend::Cpu => Self::Cpu(Arc::new(WanTransformer::load(dir)?)),
            #[cfg(feature = "cuda")]
            WanBackend::Cuda(b) => Self::Cuda(Arc::new(
                super::gpu::GpuWanTransformer::load(b.clone(), dir)
                    .map_err(|e| WanError::Input(format!("{}: loading onto the GPU: {e}", dir.display())))?,
            )),
        })
    }

    fn config(&self) -> &TransformerConfig {
        match self {
            Self::Cpu(t) => t.config(),
            #[cfg(feature = "cuda")]
            Self::Cuda(t) => t.config(),
        }
    }
}

/// One loaded Wan2.1 pipeline directory, served under a model name.
pub struct WanModel {
    info: ModelInfo,
    root: PathBuf,
    transformer: Transformer,
    vae: Vae,
    /// The VAE's live-preview map, fitted on the first shard that previews.
    preview: super::vae::frame_decoder::PreviewCache,
    text_encoder_dir: PathBuf,
    tokenizer_dir: PathBuf,
    text: Mutex<Option<Arc<TextEncoder>>>,
    image: Option<ImagePath>,
    /// Text-to-video pipelines serve video-to-video too: the VAE encoder, loaded on first use.
    video_encoder: Option<LazyVideoEncoder>,
}

struct LazyVideoEncoder {
    vae_dir: PathBuf,
    encoder: Mutex<Option<Arc<WanVaeEncoder>>>,
}

impl LazyVideoEncoder {
    fn get(&self) -> Result<Arc<WanVaeEncoder>, WanError> {
        let mut slot = self.encoder.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        let e = Arc::new(WanVaeEncoder::load(&self.vae_dir)?);
        *slot = Some(e.clone());
        Ok(e)
    }
}

/// An image-to-video pipeline's image side (CPU reference).
struct ImagePath {
    vae_encoder: Arc<WanVaeEncoder>,
    image_encoder_dir: PathBuf,
    clip_config: ClipVisionConfig,
    processor: ClipImageProcessor,
    clip: Mutex<Option<Arc<ClipVisionEncoder>>>,
}

impl ImagePath {
    fn load(pipeline: &PipelineDir, tcfg: &TransformerConfig) -> Result<Self, WanError> {
        let image_encoder_dir = pipeline.component_dir("image_encoder")?;
        let clip_config = ClipVisionConfig::load(&image_encoder_dir)?;
        if Some(clip_config.hidden_size) != tcfg.image_dim {
            return Err(WanError::config(
                image_encoder_dir.join("config.json"),
                format!(
                    "hidden_size {} does not match the transformer's image_dim {:?}",
                    clip_config.hidden_size, tcfg.image_dim
                ),
            ));
        }
        Ok(Self {
            vae_encoder: Arc::new(WanVaeEncoder::load(&pipeline.component_dir("vae")?)?),
            processor: ClipImageProcessor::load(&pipeline.component_dir("image_processor")?)?,
            image_encoder_dir,
            clip_config,
            clip: Mutex::new(None),
        })
    }

    /// The CLIP image encoder, loaded on the first call.
    fn clip(&self) -> Result<Arc<ClipVisionEncoder>, WanError> {
        let mut slot = self.clip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new(ClipVisionEncoder::load(&self.image_encoder_dir)?);
        *slot = Some(c.clone());
        Ok(c)
    }
}

/// 8-bit RGB to the pipelines' `[H, W, 3]` in [0, 1].
fn unit_rgb(rgb8: &[u8]) -> Vec<f32> {
    rgb8.iter().map(|&v| f32::from(v) / 255.0).collect()
}

/// The name a pipeline is served under when none is given: `wan2.1-t2v-1.3b` / `wan2.1-t2v-14b`
/// when the transformer has those shapes, else `wan2.1-` and the directory's name.
pub fn default_name(dir: &Path, cfg: &TransformerConfig) -> String {
    let shape = |c: &TransformerConfig| {
        (
            c.num_layers,
            c.num_attention_heads,
            c.attention_head_dim,
            c.ffn_dim,
            c.in_channels,
            c.text_dim,
        )
    };
    if shape(cfg) == shape(&TransformerConfig::t2v_1_3b()) {
        return "wan2.1-t2v-1.3b".into();
    }
    if shape(cfg) == shape(&TransformerConfig::t2v_14b()) {
        return "wan2.1-t2v-14b".into();
    }
    let base = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let base = base
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("wan2.1-{}", clean.trim_matches('-'))
}

/// The model name `dir` would be served under (reads only `model_index.json` and the
/// transformer's `config.json`).
pub fn served_name(dir: &Path) -> Result<String, WanError> {
    Ok(served_info(dir)?.name)
}

/// What `dir` would be served as, without its weights' fingerprint (reads only
/// `model_index.json` and the transformer's `config.json`): enough to check a job against it.
pub fn served_info(dir: &Path) -> Result<ModelInfo, WanError> {
    let cfg = PipelineDir::open(dir)?.transformer_config()?;
    Ok(model_info_for(&default_name(dir, &cfg), &cfg))
}

impl WanModel {
    /// Loads the pipeline at `dir` (holding `model_index.json`): transformer (onto `backend`) and
    /// VAE now; the text encoder's config and tokenizer files are checked now and its weights
    /// loaded on first use. `name` defaults to [`default_name`].
    pub fn load(dir: &Path, name: Option<&str>, backend: &WanBackend) -> Result<Self, WanError> {
        let pipeline = PipelineDir::open(dir)?;
        let transformer = Transformer::load(&pipeline.component_dir("transformer")?, backend)?;
        let vae = Vae::load(&pipeline.component_dir("vae")?, backend)?;
        let text_encoder_dir = pipeline.component_dir("text_encoder")?;
        let tokenizer_dir = pipeline.component_dir("tokenizer")?;
        let t5 = UMT5Config::from_file(&text_encoder_dir.join("config.json"))?;
        let tcfg = transformer.config();
        if t5.d_model != tcfg.text_dim {
            return Err(WanError::config(
                text_encoder_dir.join("config.json"),
                format!(
                    "d_model {} does not match the transformer's text_dim {}",
                    t5.d_model, tcfg.text_dim
                ),
            ));
        }
        // Text-to-video reads the latents; image-to-video also the mask and the condition latents.
        let (z, r) = (vae.config().z_dim, vae.config().temporal_factor());
        let want_in = if tcfg.has_image_path() { z + r + z } else { z };
        if tcfg.in_channels != want_in || tcfg.out_channels() != z {
            return Err(WanError::config(
                pipeline.component_dir("vae")?.join("config.json"),
                format!(
                    "z_dim {z} does not fit the transformer's in_channels {} and out_channels {} (want {want_in} \
                     and {z})",
                    tcfg.in_channels,
                    tcfg.out_channels()
                ),
            ));
        }
        let image = if tcfg.has_image_path() {
            Some(ImagePath::load(&pipeline, tcfg)?)
        } else {
            None
        };
        let name = name.map(str::to_string).unwrap_or_else(|| default_name(dir, tcfg));
        let mut info = model_info_for(&name, tcfg);
        let video_encoder = match image {
            Some(_) => None,
            None => {
                info.video_warmup = Some(crate::wan::vae::encoder::encode_halo(vae.config()) as u32);
                Some(LazyVideoEncoder {
                    vae_dir: pipeline.component_dir("vae")?,
                    encoder: Mutex::new(None),
                })
            }
        };
        let mut components = vec!["transformer", "vae", "text_encoder", "tokenizer"];
        if image.is_some() {
            components.extend(["image_encoder", "image_processor"]);
        }
        info.weights = crate::wan::fingerprint::pipeline_fingerprint(dir, &components)?;
        Ok(Self {
            info,
            root: dir.to_path_buf(),
            transformer,
            vae,
            preview: Default::default(),
            text_encoder_dir,
            tokenizer_dir,
            text: Mutex::new(None),
            image,
            video_encoder,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The pipeline directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The text encoder, loaded on the first call.
    fn text_encoder(&self) -> Result<Arc<TextEncoder>, WanError> {
        let mut slot = self.text.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let t = Arc::new(TextEncoder::from_dirs(&self.text_encoder_dir, &self.tokenizer_dir)?);
        *slot = Some(t.clone());
        Ok(t)
    }

    /// `prompt_embeds` and `negative_prompt_embeds` as WanPipeline computes them (each
    /// `[512, text_dim]`, zero-padded). Heavy: call it off the async runtime.
    pub fn encode(&self, prompt: &str, negative_prompt: &str) -> Result<TextEmbeddings, WanError> {
        let t = self.text_encoder()?;
        let p = t.encode(prompt)?;
        let n = t.encode(negative_prompt)?;
        Ok(TextEmbeddings {
            rows: p.shape[0],
            dim: p.shape[1],
            prompt: p.data,
            negative: n.data,
        })
    }

    /// Checks that `e` can condition this transformer: `[512, text_dim]`, finite.
    pub fn check_embeddings(&self, e: &TextEmbeddings) -> Result<(), String> {
        e.validate()?;
        let want = (T5_MAX_LENGTH, self.transformer.config().text_dim);
        if (e.rows, e.dim) != want {
            return Err(format!(
                "shape [{}, {}] is not [{}, {}] (512 tokens × the transformer's text_dim)",
                e.rows, e.dim, want.0, want.1
            ));
        }
        Ok(())
    }

    /// The CLIP embeddings of a job's reference images as WanImageToVideoPipeline computes them:
    /// each image preprocessed (`CLIPImageProcessor`), the penultimate hidden states of all of
    /// them in one batch, `[images · tokens, hidden]`. Heavy: call it off the async runtime.
    pub fn encode_images(&self, images: &ReferenceImages) -> Result<ImageEmbeddings, WanError> {
        let ip = self.image_path()?;
        images.validate().map_err(WanError::Input)?;
        let (h, w) = (images.height as usize, images.width as usize);
        let mut pixels = Vec::new();
        for img in std::iter::once(&images.first).chain(&images.last) {
            pixels.extend(ip.processor.preprocess(&unit_rgb(img), h, w)?);
        }
        let n = images.count() as usize;
        let (ch, cw) = (ip.processor.crop_size.height, ip.processor.crop_size.width);
        let data = ip.clip()?.penultimate(&pixels, [n, 3, ch, cw])?;
        Ok(ImageEmbeddings {
            rows: n * ip.clip_config.tokens(),
            dim: ip.clip_config.hidden_size,
            data,
        })
    }

    fn image_path(&self) -> Result<&ImagePath, WanError> {
        self.image.as_ref().ok_or_else(|| {
            WanError::Input(format!(
                "{} is a text-to-video pipeline: it takes no reference image",
                self.root.display()
            ))
        })
    }

    /// Video-to-video: the clean latents of latent frames `latents` of the video `span` is part
    /// of ([`video2video::window_latents`]), for a clip of `latent: [height, width]` cells.
    /// Heavy: call it off the async runtime.
    pub fn encode_video(&self, span: &VideoSpan, latents: Range<usize>) -> Result<Vec<f32>, WanError> {
        let lazy = self.video_encoder.as_ref().ok_or_else(|| {
            WanError::Input(format!(
                "{} is an image-to-video pipeline: it renders from no input video",
                self.root.display()
            ))
        })?;
        Ok(video2video::window_latents(lazy.get()?.as_ref(), span, latents)?.data)
    }

    /// Checks that reference images and their embeddings fit this pipeline.
    pub fn check_images(&self, images: &ReferenceImages, e: &ImageEmbeddings) -> Result<(), String> {
        let ip = self.image_path().map_err(|e| e.to_string())?;
        images.validate()?;
        e.validate()?;
        let want = (
            images.count() as usize * ip.clip_config.tokens(),
            ip.clip_config.hidden_size,
        );
        if (e.rows, e.dim) != want {
            return Err(format!(
                "image embedding [{}, {}] is not [{}, {}] ({} image(s) × the image encoder's tokens, its hidden size)",
                e.rows,
                e.dim,
                want.0,
                want.1,
                images.count()
            ));
        }
        Ok(())
    }

    /// A denoiser for one job of `latent: [frames, height, width]` latent frames and cells.
    /// Precomputes every block's cross-attention K/V of both branches: heavy, call it off the
    /// async runtime.
    pub fn denoiser(&self, cond: &Conditioning, latent: [usize; 3]) -> Result<Box<dyn Denoiser>, WanError> {
        let e = cond
            .embeddings
            .as_ref()
            .ok_or_else(|| WanError::Input("the job's text embeddings are missing".into()))?;
        self.check_embeddings(e)
            .map_err(|m| WanError::Input(format!("text embeddings: {m}")))?;
        let image_inputs = match (&self.image, &cond.reference, &cond.image_embeddings) {
            (None, None, None) => None,
            (Some(ip), Some(r), Some(ie)) => {
                self.check_images(r, ie).map_err(WanError::Input)?;
                let [frames, lh, lw] = latent;
                let s = ip.vae_encoder.config().spatial_factor();
                if (r.height as usize, r.width as usize) != (lh * s, lw * s) {
                    return Err(WanError::Input(format!(
                        "reference images are {}x{}, the clip's latents {lw}x{lh} decode to {}x{}",
                        r.width,
                        r.height,
                        lw * s,
                        lh * s
                    )));
                }
                let (first, last) = (unit_rgb(&r.first), r.last.as_deref().map(unit_rgb));
                let refs = ImageRefs {
                    first: &first,
                    last: last.as_deref(),
                    height: r.height as usize,
                    width: r.width as usize,
                };
                let frames = ip.vae_encoder.config().output_frames(frames);
                Some((ImageCondition::new(ip.vae_encoder.clone(), &refs, frames)?, ie))
            }
            _ => {
                return Err(WanError::Input(format!(
                    "this pipeline takes {} reference image(s); the job's conditioning does not match",
                    self.info.reference_images
                )))
            }
        };
        Ok(match &self.transformer {
            Transformer::Cpu(t) => {
                let image = image_inputs.map(|(condition, ie)| ImageConditioning {
                    tokens: &ie.data,
                    condition,
                });
                Box::new(WanDenoiser::conditioned(
                    self.info.clone(),
                    t.clone(),
                    &e.prompt,
                    &e.negative,
                    image,
                )?)
            }
            #[cfg(feature = "cuda")]
            Transformer::Cuda(t) => {
                if image_inputs.is_some() {
                    return Err(WanError::Input("the GPU transformer has no image path yet".into()));
                }
                Box::new(
                    super::gpu::GpuWanDenoiser::new(self.info.clone(), t.clone(), &e.prompt, &e.negative)
                        .map_err(|err| WanError::Input(format!("GPU text conditioning: {err}")))?,
                )
            }
        })
    }

    /// `cpu` or `cuda`: where the transformer runs.
    pub fn backend_kind(&self) -> &'static str {
        match &self.transformer {
            Transformer::Cpu(_) => "cpu",
            #[cfg(feature = "cuda")]
            Transformer::Cuda(_) => "cuda",
        }
    }

    /// The frame decoder, on the VAE's backend.
    pub fn decoder(&self) -> Box<dyn FrameDecoder> {
        match &self.vae {
            Vae::Cpu(v) => Box::new(WanFrameDecoder::sharing(v.clone(), self.preview.clone())),
            #[cfg(feature = "cuda")]
            Vae::Cuda(v) => Box::new(super::gpu::GpuWanFrameDecoder::sharing(v.clone(), self.preview.clone())),
        }
    }
}

/// Conditioned on umT5 (and for image-to-video CLIP) embeddings that one worker computes per
/// job. The calls below name the inherent methods, which take precedence over the trait's.
impl ServedModel for WanModel {
    fn info(&self) -> ModelInfo {
        WanModel::info(self).clone()
    }

    fn origin(&self) -> String {
        self.root.display().to_string()
    }

    fn dir(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn text_conditioning(&self) -> TextConditioning {
        TextConditioning::Embeddings
    }

    fn check_embeddings(&self, e: &TextEmbeddings) -> Result<(), String> {
        WanModel::check_embeddings(self, e)
    }

    fn encode_text(&self, prompt: &str, negative_prompt: &str) -> Result<Option<TextEmbeddings>, ServedModelError> {
        Ok(Some(self.encode(prompt, negative_prompt)?))
    }

    fn check_images(&self, images: &ReferenceImages, e: &ImageEmbeddings) -> Result<(), String> {
        WanModel::check_images(self, images, e)
    }

    fn encode_images(&self, images: &ReferenceImages) -> Result<ImageEmbeddings, ServedModelError> {
        Ok(WanModel::encode_images(self, images)?)
    }

    fn encode_video(&self, video: &VideoSpan, latents: Range<usize>) -> Result<Vec<f32>, ServedModelError> {
        Ok(WanModel::encode_video(self, video, latents)?)
    }

    fn job_denoiser(&self, cond: &Conditioning, latent: [usize; 3]) -> Result<Box<dyn Denoiser>, ServedModelError> {
        cond.embeddings.as_ref().ok_or(ConditioningError::Missing)?;
        Ok(self.denoiser(cond, latent)?)
    }

    fn frame_decoder(&self) -> Box<dyn FrameDecoder> {
        self.decoder()
    }
}
