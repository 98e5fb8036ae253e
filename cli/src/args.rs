//! Job-spec flags shared by `render` and `submit`.

use crate::inputs::{read_shots, LocalImage, LocalInputs, LocalVideo};
use crate::prompt_cmd::PartFlags;
use crate::prompt_library;
use clap::Args;
use longshot_core::codenoise::BlendMode;
use longshot_core::job::{defaults, ClipLength, JobInputs, JobSpec, OutputKind};
use longshot_core::scheduler::Solver;
use longshot_core::shots::total_frames;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct JobArgs {
    /// What to render (or give its parts: --subject, --action, --environment, --camera,
    /// --style; or --saved NAME from the prompt library).
    #[arg(
        long,
        short = 'p',
        required_unless_present_any = ["shots", "saved", "subject", "action", "environment", "camera", "style"],
        conflicts_with_all = ["saved", "subject", "action", "environment", "camera", "style"]
    )]
    pub prompt: Option<String>,
    /// The prompt in parts, composed in the order subject, action, environment, camera, style
    /// (`longshot prompt lint` flags what is missing).
    #[command(flatten)]
    pub parts: PartFlags,
    /// A prompt saved with `longshot prompt save` (its negative prompt too, unless
    /// --negative-prompt is given). The library: $LONGSHOT_PROMPTS, else
    /// $XDG_CONFIG_HOME/longshot/prompts.yaml, else ~/.config/longshot/prompts.yaml.
    #[arg(long, conflicts_with_all = ["subject", "action", "environment", "camera", "style"])]
    pub saved: Option<String>,
    /// A shot list instead of --prompt: a YAML or JSON file of shots, each with its prompt and
    /// length, whose prompts blend into each other along one take (see the README's "Shot
    /// lists"). The clip's length is the shots' total.
    #[arg(long, conflicts_with_all = ["prompt", "duration", "frames", "saved", "subject", "action", "environment", "camera", "style"])]
    pub shots: Option<PathBuf>,
    /// With --shots: also write each video output once per shot, beside the clip
    /// (clip.shot-00.mp4, clip.shot-01.mp4, …; `fetch --shot N`).
    #[arg(long, requires = "shots")]
    pub split_shots: bool,
    /// What to steer away from (the unconditional branch of classifier-free guidance).
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Model name (see `longshot models`). `longshot render` also takes a Wan2.1 pipeline
    /// directory here and starts its workers with it.
    #[arg(long, default_value = longshot_models::ProceduralModel::NAME)]
    pub model: String,
    /// Random seed; drawn at random and reported when unset.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Clip length in seconds: the clip has exactly round(duration × fps) frames.
    #[arg(long, short = 'd', conflicts_with = "frames")]
    pub duration: Option<f64>,
    /// Clip length in output frames, exactly.
    #[arg(long)]
    pub frames: Option<u32>,
    #[arg(long, default_value_t = defaults::FPS)]
    pub fps: u32,
    /// Width in pixels, a multiple of 16 [default: --image's or --video's width, else 832].
    #[arg(long)]
    pub width: Option<u32>,
    /// Height in pixels, a multiple of 16 [default: --image's or --video's height, else 480].
    #[arg(long)]
    pub height: Option<u32>,
    /// Image-to-video: the clip's first frame, a PNG or JPEG of the clip's size (an
    /// image-to-video model, such as Wan2.1-I2V-14B-480P, is needed). Uploaded to the
    /// coordinator once, by content.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// First-and-last-frame: the clip's last frame, as --image (a first-and-last-frame model,
    /// such as Wan2.1-FLF2V-14B-720P, is needed).
    #[arg(long, requires = "image")]
    pub last_image: Option<PathBuf>,
    /// Video-to-video: the video the clip starts from, a file ffmpeg reads (MP4, MOV, …) or a
    /// directory of PNG frames (in name order). The clip keeps its size and frame count; a
    /// text-to-video model is needed (a Wan2.1 T2V pipeline, or the built-in model). Decoded
    /// here, uploaded once by content.
    #[arg(long, conflicts_with = "image")]
    pub video: Option<PathBuf>,
    /// Video-to-video: how much of the schedule runs, in (0, 1]: low keeps the video, 1 starts
    /// from pure noise [default: 0.8].
    #[arg(long, requires = "video")]
    pub strength: Option<f64>,
    /// Denoising steps.
    #[arg(long, default_value_t = defaults::STEPS)]
    pub steps: u32,
    /// Classifier-free guidance scale (CFG runs when > 1).
    #[arg(long, default_value_t = defaults::GUIDANCE)]
    pub guidance: f32,
    /// Flow-matching timestep shift.
    #[arg(long, default_value_t = defaults::SHIFT)]
    pub shift: f64,
    /// Sampler: unipc or euler.
    #[arg(long, default_value_t = defaults::SOLVER)]
    pub solver: Solver,
    /// Overlap between windows in latent frames (model default when unset).
    #[arg(long)]
    pub overlap: Option<u32>,
    /// Output formats: mp4, prores, png, latents (comma-separated; default from -o's extension).
    #[arg(long = "format", value_delimiter = ',')]
    pub formats: Vec<OutputKind>,
    /// Higher runs first (-100..=100).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Ablation: render windows independently (no overlap exchange, hard cuts at the seams).
    #[arg(long)]
    pub no_exchange: bool,
    /// A quick draft: half the width and height, a quarter of the steps, the same seed and shots,
    /// its noise the full-size job's summed 2×2; `longshot promote JOB` then renders the full job.
    #[arg(long)]
    pub draft: bool,
    /// Live previews every N steps: each worker projects its frames' current x0 prediction to a
    /// low-resolution picture; `longshot watch JOB --preview DIR` keeps the clip on disk.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preview_every: u32,
}

impl JobArgs {
    /// The job's inputs, read and checked: reference images (decodable PNG or JPEG), the input
    /// video (decoded).
    pub fn inputs(&self) -> anyhow::Result<LocalInputs> {
        let images = [("--image", &self.image), ("--last-image", &self.last_image)]
            .into_iter()
            .filter_map(|(flag, p)| p.as_ref().map(|p| LocalImage::read(p, flag)))
            .collect::<anyhow::Result<_>>()?;
        let video = self.video.as_deref().map(LocalVideo::read).transpose()?;
        let shots = self.shots.as_deref().map(read_shots).transpose()?.unwrap_or_default();
        let saved = match &self.saved {
            Some(name) => Some(prompt_library::get(&prompt_library::library_path(None)?, name)?),
            None => None,
        };
        Ok(LocalInputs {
            images,
            video,
            shots,
            saved,
        })
    }

    /// The spec, naming `inputs` (from [`Self::inputs`]) by digest; the size defaults to the
    /// first image's or the video's, the length to the video's frame count.
    pub fn to_spec(&self, default_formats: &[OutputKind], inputs: &LocalInputs) -> anyhow::Result<JobSpec> {
        let (images, video) = (&inputs.images, inputs.video.as_ref().map(|v| &v.header));
        let size = images
            .first()
            .map(|i| (i.width, i.height))
            .or(video.map(|v| (v.width, v.height)));
        let shots = &inputs.shots;
        let length = match (self.duration, self.frames, video) {
            // The shots' total; 1 when a shot's length is bad (validation names it).
            _ if !shots.is_empty() => ClipLength::Frames(total_frames(shots, self.fps).unwrap_or(1)),
            (_, Some(f), _) => ClipLength::Frames(f),
            (Some(s), None, _) => ClipLength::Seconds(s),
            (None, None, Some(v)) => ClipLength::Frames(v.frames),
            (None, None, None) => ClipLength::Seconds(5.0),
        };
        let outputs = if self.formats.is_empty() {
            default_formats.to_vec()
        } else {
            self.formats.clone()
        };
        let spec = JobSpec {
            draft: None,
            preview_every: self.preview_every,
            shots: shots.clone(),
            rerender: None,
            split_shots: self.split_shots,
            strength: self.strength,
            model: self.model.clone(),
            prompt: match (&self.prompt, &inputs.saved) {
                (Some(p), _) => p.clone(),
                (None, Some(saved)) => saved.prompt.clone(),
                (None, None) => self.parts.parts().compose(),
            },
            negative_prompt: match (&inputs.saved, self.negative_prompt.is_empty()) {
                (Some(saved), true) => saved.negative_prompt.clone().unwrap_or_default(),
                _ => self.negative_prompt.clone(),
            },
            seed: self.seed,
            length,
            fps: self.fps,
            width: self.width.or(size.map(|s| s.0)).unwrap_or(defaults::WIDTH),
            height: self.height.or(size.map(|s| s.1)).unwrap_or(defaults::HEIGHT),
            steps: self.steps,
            guidance: self.guidance,
            shift: self.shift,
            solver: self.solver,
            overlap: self.overlap,
            outputs,
            priority: self.priority,
            blend: if self.no_exchange {
                BlendMode::Independent
            } else {
                BlendMode::CoDenoise
            },
            inputs: JobInputs {
                image: images.first().map(|i| i.digest.clone()),
                last_image: images.get(1).map(|i| i.digest.clone()),
                video: inputs.video.as_ref().map(|v| v.digest.clone()),
            },
        };
        match self.draft {
            true => spec
                .into_draft()
                .map_err(|e| anyhow::anyhow!("--draft: {}: {}", e.field, e.message)),
            false => Ok(spec),
        }
    }
}
