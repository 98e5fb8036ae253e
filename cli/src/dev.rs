//! `longshot dev …`: stable single-component entry points that checks outside the repository call
//! (numerical comparisons against diffusers). Inputs and outputs are safetensors files.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use longshot_core::scheduler::{strength, Schedule, Solver};
use longshot_core::tensor::{LatentShape, Latents};
use longshot_models::wan::image2video::{ImageCondition, ReferenceImages};
use longshot_models::wan::layout::{
    channel_major_to_frame_major, frame_major_to_channel_major, unit_rgb_to_signed_frames,
};
use longshot_models::wan::sample;
use longshot_models::wan::tensor_io::{self, Tensor};
use longshot_models::wan::transformer::denoiser::{model_info, ImageConditioning, WanDenoiser, WanForward};
use longshot_models::wan::{
    forward_flops_breakdown, ClipImageProcessor, ClipVisionEncoder, PipelineDir, TextEncoder, TransformerConfig,
    WanTransformer, WanVae, WanVaeDecoder, WanVaeEncoder,
};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// One transformer forward: IN holds hidden_states [B,C,T,H,W] f32, timestep [B] (f32 or
    /// i64), encoder_hidden_states [B,N,text_dim] f32, and for an image-to-video transformer
    /// encoder_hidden_states_image [B·images,M,image_dim] (images: 2 for first-and-last-frame);
    /// OUT holds output f32.
    Dit(DevIo),
    /// VAE encode: IN holds video [B,3,F,H,W] in [−1, 1]; OUT holds output [B,16,1+⌊(F−1)/4⌋,H/8,W/8],
    /// the posterior mean (`vae.encode(video).latent_dist.mean`, not normalised).
    VaeEncode(DevIo),
    /// Image encoder (image-to-video): IN holds pixel_values [B,3,S,S] (already preprocessed:
    /// CLIPImageProcessor's resize, crop and normalisation); OUT holds output [B,tokens,hidden],
    /// the penultimate hidden states.
    ImageEncode(DevIo),
    /// VAE decode: IN holds z [B,16,T,H,W] (already denormalised, as passed to vae.decode); OUT
    /// holds output [B,3,1+4(T−1),8H,8W] clamped to [−1, 1].
    VaeDecode(DevIo),
    /// The whole sampler: IN holds latents [1,16,T,H,W], prompt_embeds and negative_prompt_embeds
    /// [1,512,text_dim]; OUT holds the final latents and the decoded video [F,H,W,3] in [0, 1].
    /// With --strength (video-to-video), IN also holds video [F,H,W,3] in [0, 1], and latents is
    /// the noise it is mixed with at the first step run.
    Sample(SampleArgs),
    /// umT5 prompt embeddings as the pipeline makes them: OUT holds prompt_embeds [1,512,text_dim],
    /// zero-padded after the prompt's tokens.
    TextEncode(TextEncodeArgs),
    /// FLOPs of one transformer forward (multiply-add = 2), for a real config or a pipeline dir.
    Flops(FlopsArgs),
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    pub io: DevIo,
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    #[arg(long, default_value_t = 5.0)]
    pub guidance: f32,
    #[arg(long, default_value_t = 3.0)]
    pub shift: f64,
    /// unipc or euler.
    #[arg(long, default_value = "unipc")]
    pub solver: String,
    /// Video-to-video: how much of the schedule runs, in (0, 1] (steps from
    /// `steps − ⌊steps·strength⌋` on), starting from IN's `video`.
    #[arg(long)]
    pub strength: Option<f64>,
}

#[derive(Args, Debug)]
pub struct TextEncodeArgs {
    /// A diffusers-layout pipeline directory (uses text_encoder/ and tokenizer/).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub prompt: String,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct FlopsArgs {
    /// `1.3b` or `14b` (Wan2.1 T2V), or a pipeline directory.
    #[arg(long, default_value = "1.3b")]
    pub model: String,
    #[arg(long, default_value_t = 832)]
    pub width: usize,
    #[arg(long, default_value_t = 480)]
    pub height: usize,
    /// Output frames of one window (4k+1).
    #[arg(long, default_value_t = 81)]
    pub frames: usize,
}

#[derive(Args, Debug)]
pub struct DevIo {
    /// A diffusers-layout pipeline directory (model_index.json, transformer/, vae/, …).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub inputs: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: DevCommand) -> Result<()> {
    match cmd {
        DevCommand::Dit(io) => dit(&io),
        DevCommand::VaeEncode(io) => vae_encode(&io),
        DevCommand::ImageEncode(io) => image_encode(&io),
        DevCommand::VaeDecode(io) => vae_decode(&io),
        DevCommand::Sample(a) => sample(&a),
        DevCommand::TextEncode(a) => text_encode(&a),
        DevCommand::Flops(a) => flops(&a),
    }
}

fn dims<const N: usize>(t: &Tensor, name: &str) -> Result<[usize; N]> {
    t.shape
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("{name} has shape {:?}, expected {N} dimensions", t.shape))
}

fn dit(io: &DevIo) -> Result<()> {
    let pipeline = PipelineDir::open(&io.model)?;
    let transformer =
        WanTransformer::load(&pipeline.component_dir("transformer")?).context("loading the transformer")?;
    let t = tensor_io::read(&io.inputs, &["hidden_states", "timestep", "encoder_hidden_states"])?;
    let x = &t["hidden_states"];
    let shape: [usize; 5] = dims(x, "hidden_states")?;
    let ts = &t["timestep"];
    if ts.data.len() != shape[0] {
        bail!(
            "timestep has {} values, expected one per batch item ({})",
            ts.data.len(),
            shape[0]
        );
    }
    let ctx = &t["encoder_hidden_states"];
    let [cb, _, _]: [usize; 3] = dims(ctx, "encoder_hidden_states")?;
    if cb != shape[0] {
        bail!("encoder_hidden_states has batch {cb}, hidden_states has {}", shape[0]);
    }
    let image = match transformer.config().has_image_path() {
        true => Some(tensor_io::read(&io.inputs, &["encoder_hidden_states_image"])?),
        false => None,
    };
    let image = image.as_ref().map(|t| t["encoder_hidden_states_image"].data.as_slice());
    let out = transformer.forward_batch(&x.data, shape, &ts.data, &ctx.data, image)?;
    let c_out = transformer.config().out_channels();
    let out = Tensor {
        shape: vec![shape[0], c_out, shape[2], shape[3], shape[4]],
        data: out,
    };
    tensor_io::write(&io.out, &[("output", &out)])?;
    Ok(())
}

fn flops(a: &FlopsArgs) -> Result<()> {
    let cfg = match a.model.as_str() {
        "1.3b" => TransformerConfig::t2v_1_3b(),
        "14b" => TransformerConfig::t2v_14b(),
        dir => PipelineDir::open(std::path::Path::new(dir))?.transformer_config()?,
    };
    if !a.width.is_multiple_of(16) || !a.height.is_multiple_of(16) || a.frames == 0 || !(a.frames - 1).is_multiple_of(4)
    {
        bail!(
            "width and height must be multiples of 16 and frames of the form 4k+1, got {}x{}x{}",
            a.width,
            a.height,
            a.frames
        );
    }
    let (t, h, w) = ((a.frames - 1) / 4 + 1, a.height / 8, a.width / 8);
    let f = forward_flops_breakdown(&cfg, t, h, w, 512);
    let total = f.total();
    println!(
        "one forward of {} at {}x{}x{} (latent {t}x{h}x{w}, 512 text tokens):",
        a.model, a.height, a.width, a.frames
    );
    println!("  linears          {:.3e}", f.block_linears + f.text_kv + f.embeddings);
    println!("  self-attention   {:.3e}", f.self_attention);
    println!("  cross-attention  {:.3e}", f.cross_attention);
    println!(
        "  total            {total:.3e} FLOP ({:.0}% attention)",
        100.0 * (f.self_attention + f.cross_attention) / total
    );
    println!(
        "  per step with CFG {:.3e}; 50 steps {:.3e}",
        2.0 * total,
        100.0 * total
    );
    Ok(())
}

fn text_encode(a: &TextEncodeArgs) -> Result<()> {
    let encoder = TextEncoder::load(&a.model).context("loading the text encoder")?;
    let e = encoder.encode(&a.prompt)?;
    let t = Tensor {
        shape: vec![1, e.shape[0], e.shape[1]],
        data: e.data,
    };
    tensor_io::write(&a.out, &[("prompt_embeds", &t)])?;
    Ok(())
}

fn image_encode(io: &DevIo) -> Result<()> {
    let pipeline = PipelineDir::open(&io.model)?;
    let encoder =
        ClipVisionEncoder::load(&pipeline.component_dir("image_encoder")?).context("loading the image encoder")?;
    let t = tensor_io::read(&io.inputs, &["pixel_values"])?;
    let shape: [usize; 4] = dims(&t["pixel_values"], "pixel_values")?;
    let data = encoder.penultimate(&t["pixel_values"].data, shape)?;
    let cfg = encoder.config();
    let out = Tensor {
        shape: vec![shape[0], cfg.tokens(), cfg.hidden_size],
        data,
    };
    tensor_io::write(&io.out, &[("output", &out)])?;
    Ok(())
}

fn vae_encode(io: &DevIo) -> Result<()> {
    let pipeline = PipelineDir::open(&io.model)?;
    let vae = WanVaeEncoder::load(&pipeline.component_dir("vae")?).context("loading the VAE")?;
    let t = tensor_io::read(&io.inputs, &["video"])?;
    let (data, shape) = vae.encode(&t["video"].data, dims(&t["video"], "video")?)?;
    let out = Tensor {
        shape: shape.to_vec(),
        data,
    };
    tensor_io::write(&io.out, &[("output", &out)])?;
    Ok(())
}

/// IN's `video` [F,H,W,3] in [0, 1] through the VAE encoder and the pipeline's normalisation:
/// frame-major latents of shape `want` [T, C, H, W].
fn encode_video(pipeline: &PipelineDir, inputs: &std::path::Path, want: [usize; 4]) -> Result<Vec<f32>> {
    let encoder = WanVaeEncoder::load(&pipeline.component_dir("vae")?).context("loading the VAE encoder")?;
    let t = tensor_io::read(inputs, &["video"])?;
    let [f, vh, vw, rgb]: [usize; 4] = dims(&t["video"], "video")?;
    if rgb != 3 {
        bail!("video is [F, H, W, {rgb}]; video-to-video takes [F, H, W, 3] RGB in [0, 1]");
    }
    let frames = unit_rgb_to_signed_frames(&t["video"].data, f, vh, vw);
    let mut mean = encoder.encode_frames(&frames, [f, 3, vh, vw])?;
    let got = [mean.frames, mean.channels, mean.height, mean.width];
    if got != want {
        bail!("the video encodes to latents {got:?} ([T, C, H, W]) but latents are {want:?}");
    }
    encoder.normalize(&mut mean.data, want[0], want[2] * want[3])?;
    Ok(mean.data)
}

fn vae_decode(io: &DevIo) -> Result<()> {
    let pipeline = PipelineDir::open(&io.model)?;
    let vae = WanVaeDecoder::load(&pipeline.component_dir("vae")?).context("loading the VAE")?;
    let t = tensor_io::read(&io.inputs, &["z"])?;
    let shape: [usize; 5] = dims(&t["z"], "z")?;
    let out = vae.decode(&t["z"].data, shape)?;
    let [b, _, lt, h, w] = shape;
    let (f, s) = (vae.config().output_frames(lt), vae.config().spatial_factor());
    let out = Tensor {
        shape: vec![b, out.len() / (b * f * h * s * w * s), f, h * s, w * s],
        data: out,
    };
    tensor_io::write(&io.out, &[("output", &out)])?;
    Ok(())
}

fn sample(a: &SampleArgs) -> Result<()> {
    let solver: Solver = a.solver.parse()?;
    let schedule = Schedule::new(solver, a.steps, a.shift)?;
    let pipeline = PipelineDir::open(&a.io.model)?;
    let transformer =
        Arc::new(WanTransformer::load(&pipeline.component_dir("transformer")?).context("loading the transformer")?);
    let vae = WanVaeDecoder::load(&pipeline.component_dir("vae")?).context("loading the VAE")?;
    let t = tensor_io::read(&a.io.inputs, &["latents", "prompt_embeds", "negative_prompt_embeds"])?;
    let [b, c, lt, h, w]: [usize; 5] = dims(&t["latents"], "latents")?;
    if b != 1 {
        bail!("latents have batch {b}; dev sample runs one clip (batch 1)");
    }
    if transformer.config().has_image_path() {
        if a.strength.is_some() {
            bail!("--strength is for video-to-video; this is an image-to-video pipeline (it takes `image`)");
        }
        let x = Latents::from_vec(
            LatentShape::new(lt, c, h, w),
            channel_major_to_frame_major(&t["latents"].data, c, lt, h * w),
        )
        .ok_or_else(|| anyhow::anyhow!("latents do not match their shape"))?;
        let final_latents = image_to_video(&pipeline, transformer, &a.io.inputs, &t, x, &schedule, a.guidance)?;
        return write_sample(&a.io.out, &vae, final_latents);
    }
    let info = model_info("wan2.1", &transformer);
    let mut denoiser = WanDenoiser::new(
        info,
        transformer,
        &t["prompt_embeds"].data,
        &t["negative_prompt_embeds"].data,
    )?;
    let noise = channel_major_to_frame_major(&t["latents"].data, c, lt, h * w);
    let (x, first) = match a.strength {
        None => (noise, 0),
        Some(strength) => {
            let first = strength::first_step(a.steps, strength)?;
            let clean = encode_video(&pipeline, &a.io.inputs, [lt, c, h, w])?;
            let mut x = vec![0.0f32; noise.len()];
            strength::noise_to(schedule.sigma(first), &clean, &noise, &mut x);
            (x, first)
        }
    };
    let x = Latents::from_vec(LatentShape::new(lt, c, h, w), x)
        .ok_or_else(|| anyhow::anyhow!("latents do not match their shape"))?;
    let final_latents = longshot_models::wan::sample::sample_from(&mut denoiser, x, &schedule, a.guidance, first)?;
    write_sample(&a.io.out, &vae, final_latents)
}

/// The image-to-video sample: IN's `image` (and `last_image`) through the image encoder and the
/// VAE condition, then the conditioned loop from `x`.
fn image_to_video(
    pipeline: &PipelineDir,
    transformer: Arc<WanTransformer>,
    inputs: &std::path::Path,
    t: &std::collections::BTreeMap<String, Tensor>,
    x: Latents,
    schedule: &Schedule,
    guidance: f32,
) -> Result<Latents> {
    let shape = x.shape();
    let image = tensor_io::read(inputs, &["image"])?;
    let [ih, iw, rgb]: [usize; 3] = dims(&image["image"], "image")?;
    if rgb != 3 {
        bail!("image is [H, W, {rgb}]; image-to-video takes [H, W, 3] RGB in [0, 1]");
    }
    let two = transformer.config().pos_embed_seq_len.is_some();
    let last = match two {
        true => Some(tensor_io::read(inputs, &["last_image"])?),
        false => None,
    };
    let last = last.as_ref().map(|l| &l["last_image"]);
    if let Some(l) = last {
        if l.shape != image["image"].shape {
            bail!(
                "last_image is {:?}; it must have image's shape {:?}",
                l.shape,
                image["image"].shape
            );
        }
    }
    let processor = ClipImageProcessor::load(&pipeline.component_dir("image_processor")?)?;
    let clip =
        ClipVisionEncoder::load(&pipeline.component_dir("image_encoder")?).context("loading the image encoder")?;
    let (cs, cw) = (processor.crop_size.height, processor.crop_size.width);
    let mut pixels = processor.preprocess(&image["image"].data, ih, iw)?;
    if let Some(l) = last {
        pixels.extend(processor.preprocess(&l.data, ih, iw)?);
    }
    let embeds = clip.penultimate(&pixels, [1 + usize::from(two), 3, cs, cw])?;
    let encoder = WanVaeEncoder::load(&pipeline.component_dir("vae")?).context("loading the VAE encoder")?;
    let frames = encoder.config().output_frames(shape.frames);
    let refs = ReferenceImages {
        first: &image["image"].data,
        last: last.map(|l| l.data.as_slice()),
        height: ih,
        width: iw,
    };
    let condition = ImageCondition::new(Arc::new(encoder), &refs, frames)?;
    let info = model_info("wan2.1", &transformer);
    let mut denoiser = WanDenoiser::conditioned(
        info,
        transformer,
        &t["prompt_embeds"].data,
        &t["negative_prompt_embeds"].data,
        Some(ImageConditioning {
            tokens: &embeds,
            condition,
        }),
    )?;
    Ok(sample::sample(&mut denoiser, x, schedule, guidance)?)
}

/// Decodes `final_latents` and writes OUT: `latents` [1,C,T,H,W] and `video` [F,H,W,3].
fn write_sample(out: &std::path::Path, vae: &WanVaeDecoder, final_latents: Latents) -> Result<()> {
    let LatentShape {
        frames: lt,
        channels: c,
        height: h,
        width: w,
    } = final_latents.shape();
    let mut z = final_latents.as_slice().to_vec();
    vae.denormalize(&mut z, lt, h * w)?;
    let decoded = vae.decode_window(&z, [lt, c, h, w], 0)?;
    let mut video = Vec::with_capacity(decoded.frames * decoded.height * decoded.width * 3);
    for i in 0..decoded.frames {
        video.extend(
            decoded
                .rgb_frame(i)
                .ok_or_else(|| anyhow::anyhow!("the VAE does not decode to RGB"))?
                .data,
        );
    }
    let latents_out = Tensor {
        shape: vec![1, c, lt, h, w],
        data: frame_major_to_channel_major(final_latents.as_slice(), lt, c, h * w),
    };
    let video = Tensor {
        shape: vec![decoded.frames, decoded.height, decoded.width, 3],
        data: video,
    };
    tensor_io::write(out, &[("latents", &latents_out), ("video", &video)])?;
    Ok(())
}
