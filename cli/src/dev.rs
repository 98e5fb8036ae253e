//! `longshot dev …`: stable single-component entry points that checks outside the repository call
//! (numerical comparisons against diffusers). Inputs and outputs are safetensors files.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use longshot_models::wan::tensor_io::{self, Tensor};
use longshot_models::wan::{PipelineDir, WanTransformer};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// One transformer forward: IN holds hidden_states [B,C,T,H,W] f32, timestep [B] (f32 or
    /// i64), encoder_hidden_states [B,N,text_dim] f32; OUT holds output f32.
    Dit(DevIo),
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
    }
}

fn dims<const N: usize>(t: &Tensor, name: &str) -> Result<[usize; N]> {
    t.shape.as_slice().try_into().map_err(|_| anyhow::anyhow!("{name} has shape {:?}, expected {N} dimensions", t.shape))
}

fn dit(io: &DevIo) -> Result<()> {
    let pipeline = PipelineDir::open(&io.model)?;
    let transformer = WanTransformer::load(&pipeline.component_dir("transformer")?).context("loading the transformer")?;
    let t = tensor_io::read(&io.inputs, &["hidden_states", "timestep", "encoder_hidden_states"])?;
    let x = &t["hidden_states"];
    let shape: [usize; 5] = dims(x, "hidden_states")?;
    let ts = &t["timestep"];
    if ts.data.len() != shape[0] {
        bail!("timestep has {} values, expected one per batch item ({})", ts.data.len(), shape[0]);
    }
    let ctx = &t["encoder_hidden_states"];
    let [cb, _, _]: [usize; 3] = dims(ctx, "encoder_hidden_states")?;
    if cb != shape[0] {
        bail!("encoder_hidden_states has batch {cb}, hidden_states has {}", shape[0]);
    }
    let out = transformer.forward_batch(&x.data, shape, &ts.data, &ctx.data)?;
    let c_out = transformer.config().out_channels();
    let out = Tensor { shape: vec![shape[0], c_out, shape[2], shape[3], shape[4]], data: out };
    tensor_io::write(&io.out, &[("output", &out)])?;
    Ok(())
}
