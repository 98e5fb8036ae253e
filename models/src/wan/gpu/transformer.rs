//! [`GpuWanTransformer`]: `WanTransformer3DModel` on one GPU, the forward of
//! `wan::transformer::WanTransformer` op for op (see the module doc of `wan::gpu` for the
//! precision policy). Layout at this edge is the CPU's: `[C, T, H, W]` per batch item.

use super::block::{GpuBlock, GpuCrossKv, Work};
use super::error::GpuWanError;
use super::linear::{bf16_bits, Gpu, GpuLinear};
use super::source::{RandomSource, Role, StoreSource, WeightSource};
use super::timing::{ForwardTimings, Laps, Phase};
use crate::wan::error::WanError;
use crate::wan::transformer::config::TransformerConfig;
use crate::wan::transformer::embed::{timestep_sinusoid, TokenGrid};
use crate::wan::transformer::keys::TransformerKeys;
use crate::wan::transformer::layers::{Fetch, Linear};
use crate::wan::transformer::rope::RopeTables;
use crate::wan::transformer::IGNORED_SUFFIXES;
use crate::wan::weights::WeightStore;
use cudarc::driver::CudaSlice;
use longshot_kernels::cpu::nn_act::silu_in_place;
use longshot_kernels::cuda::CudaBackend;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The text conditioning of one prompt on the device: each block's cross-attention K/V.
/// Reuse it across steps (it depends only on the text).
pub struct GpuTextContext {
    tokens: usize,
    per_block: Vec<GpuCrossKv>,
}

impl GpuTextContext {
    /// Number of text tokens (Wan's pipeline always passes 512, zero-padded).
    pub fn tokens(&self) -> usize {
        self.tokens
    }
}

/// Per-token RoPE tables of the last grid, kept on the device between forwards.
struct RopeCache {
    grid: TokenGrid,
    cos: CudaSlice<f32>,
    sin: CudaSlice<f32>,
}

pub struct GpuWanTransformer {
    cfg: TransformerConfig,
    gpu: Gpu,
    patch_embedding: GpuLinear,
    /// `time_embedder.linear_1/2` on the host in f32 (one token; diffusers keeps them in fp32).
    time_1: Linear,
    time_2: Linear,
    time_proj: GpuLinear,
    text_1: GpuLinear,
    text_2: GpuLinear,
    blocks: Vec<GpuBlock>,
    /// `[2, D]` on the host: shift, scale of the output head.
    head_table: Vec<f32>,
    proj_out: GpuLinear,
    rope: RopeTables,
    rope_cache: Mutex<Option<RopeCache>>,
}

impl GpuWanTransformer {
    /// Loads `dir/config.json` and the weights in `dir` (a diffusers `transformer/` directory or
    /// an original Wan2.1 checkpoint directory), like `WanTransformer::load`.
    pub fn load(backend: Arc<CudaBackend>, dir: &Path) -> Result<Self, GpuWanError> {
        let cfg = TransformerConfig::from_file(&dir.join("config.json"))?;
        let store = WeightStore::open(dir)?;
        Self::from_store(backend, cfg, &store)
    }

    /// Builds the model from `store` (either naming), one tensor at a time: linear weights are
    /// rounded to bf16 and uploaded, the rest kept in f32. Every tensor must be used, as on the CPU.
    pub fn from_store(
        backend: Arc<CudaBackend>,
        cfg: TransformerConfig,
        store: &WeightStore,
    ) -> Result<Self, GpuWanError> {
        cfg.validate()
            .map_err(|reason| WanError::config(store.source(), reason))?;
        let keys = TransformerKeys::detect(store)?;
        let mut src = StoreSource {
            fetch: Fetch { store, keys: &keys },
        };
        let model = Self::build(backend, cfg, &mut src)?;
        store.check_all_used(|n| IGNORED_SUFFIXES.iter().any(|s| n.ends_with(s)))?;
        Ok(model)
    }

    /// A model of shape `cfg` with seeded random weights (linear weights drawn on the device,
    /// `N(0, 1/in)` in bf16; norm weights ≈ 1, small biases and tables): for benchmarks at the
    /// real shapes without a checkpoint. Needs no host memory beyond the small tensors.
    pub fn random(backend: Arc<CudaBackend>, cfg: TransformerConfig, seed: u64) -> Result<Self, GpuWanError> {
        cfg.validate()
            .map_err(|reason| WanError::config(Path::new("<random weights>"), reason))?;
        Self::build(backend, cfg, &mut RandomSource { seed })
    }

    fn build(
        backend: Arc<CudaBackend>,
        cfg: TransformerConfig,
        src: &mut dyn WeightSource,
    ) -> Result<Self, GpuWanError> {
        let gpu = Gpu::new(backend)?;
        let d = cfg.inner_dim();
        let [pt, ph, pw] = cfg.patch_size;
        let host_linear = |src: &mut dyn WeightSource, prefix: &str, in_f: usize, out_f: usize| {
            Ok::<_, GpuWanError>(Linear {
                weight: src.host(&format!("{prefix}.weight"), &[out_f, in_f], Role::HostWeight)?,
                bias: src.host(&format!("{prefix}.bias"), &[out_f], Role::Bias)?,
                in_f,
                out_f,
            })
        };
        let patch_embedding = GpuLinear::load_shaped(src, &gpu, "patch_embedding", &[d, cfg.in_channels, pt, ph, pw])?;
        let time_1 = host_linear(src, "condition_embedder.time_embedder.linear_1", cfg.freq_dim, d)?;
        let time_2 = host_linear(src, "condition_embedder.time_embedder.linear_2", d, d)?;
        let time_proj = GpuLinear::load(src, &gpu, "condition_embedder.time_proj", d, 6 * d)?;
        let text_1 = GpuLinear::load(src, &gpu, "condition_embedder.text_embedder.linear_1", cfg.text_dim, d)?;
        let text_2 = GpuLinear::load(src, &gpu, "condition_embedder.text_embedder.linear_2", d, d)?;
        let blocks = (0..cfg.num_layers)
            .map(|i| GpuBlock::load(src, &gpu, &cfg, i))
            .collect::<Result<Vec<_>, _>>()?;
        let head_table = src.host("scale_shift_table", &[1, 2, d], Role::Table)?;
        let proj_out = GpuLinear::load(src, &gpu, "proj_out", d, cfg.patch_volume() * cfg.out_channels())?;
        Ok(Self {
            rope: RopeTables::new(cfg.attention_head_dim, cfg.rope_split(), cfg.rope_max_seq_len),
            rope_cache: Mutex::new(None),
            cfg,
            gpu,
            patch_embedding,
            time_1,
            time_2,
            time_proj,
            text_1,
            text_2,
            blocks,
            head_table,
            proj_out,
        })
    }

    pub fn config(&self) -> &TransformerConfig {
        &self.cfg
    }

    pub fn backend(&self) -> &Arc<CudaBackend> {
        &self.gpu.backend
    }

    /// Device memory held by the weights, in bytes.
    pub fn weight_bytes(&self) -> usize {
        [
            &self.patch_embedding,
            &self.time_proj,
            &self.text_1,
            &self.text_2,
            &self.proj_out,
        ]
        .iter()
        .map(|l| l.device_bytes())
        .sum::<usize>()
            + self.blocks.iter().map(GpuBlock::device_bytes).sum::<usize>()
    }

    /// Embeds `ctx: [N, text_dim]` (text MLP on the device) and computes every block's
    /// cross-attention K/V, as `WanTransformer::encode_text`. Padded rows are not masked.
    pub fn encode_text(&self, ctx: &[f32]) -> Result<GpuTextContext, GpuWanError> {
        let (td, d, gpu) = (self.cfg.text_dim, self.cfg.inner_dim(), &self.gpu);
        if ctx.is_empty() || !ctx.len().is_multiple_of(td) {
            return Err(WanError::Input(format!(
                "text embeddings of {} values are not N x text_dim {td} with N > 0",
                ctx.len()
            ))
            .into());
        }
        let n = ctx.len() / td;
        let ctx_b = gpu.backend.upload(&bf16_bits(ctx))?;
        let mut h = gpu.zeros_f32(n * d)?;
        self.text_1.forward(gpu, &ctx_b, n, &mut h)?;
        gpu.backend.gelu_tanh(&mut h)?;
        let mut hb = gpu.zeros_bf16(n * d)?;
        gpu.backend.f32_to_bf16(&h, &mut hb)?;
        self.text_2.forward(gpu, &hb, n, &mut h)?;
        gpu.backend.f32_to_bf16(&h, &mut hb)?;
        let per_block = self
            .blocks
            .iter()
            .map(|b| b.cross_kv(gpu, &hb, n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GpuTextContext { tokens: n, per_block })
    }

    /// One forward for one batch item: `x: [C_in, T, H, W]` at timestep `t` → `[C_out, T, H, W]`,
    /// as `WanTransformer::forward` (host buffers in and out).
    pub fn forward(&self, x: &[f32], dims: [usize; 4], t: f32, text: &GpuTextContext) -> Result<Vec<f32>, GpuWanError> {
        self.check_latent_len(x.len(), dims)?;
        let xd = self.gpu.upload(x)?;
        let out = self.forward_device(&xd, dims, t, text)?;
        Ok(self.gpu.backend.download(&out)?)
    }

    /// Like [`forward`](Self::forward) on device buffers (the result is ready when the stream is).
    pub fn forward_device(
        &self,
        x: &CudaSlice<f32>,
        dims: [usize; 4],
        t: f32,
        text: &GpuTextContext,
    ) -> Result<CudaSlice<f32>, GpuWanError> {
        self.forward_impl(x, dims, t, text, None)
    }

    /// [`forward_device`](Self::forward_device) with the stream synchronised at every phase
    /// boundary and the wall time of each phase added to `timings`.
    pub fn forward_device_timed(
        &self,
        x: &CudaSlice<f32>,
        dims: [usize; 4],
        t: f32,
        text: &GpuTextContext,
        timings: &mut ForwardTimings,
    ) -> Result<CudaSlice<f32>, GpuWanError> {
        self.forward_impl(x, dims, t, text, Some(timings))
    }

    fn check_latent_len(&self, len: usize, dims: [usize; 4]) -> Result<(), GpuWanError> {
        let want = dims.iter().try_fold(1usize, |acc, &v| acc.checked_mul(v));
        if dims[0] != self.cfg.in_channels || Some(len) != want {
            return Err(WanError::Input(format!(
                "latent of {len} values with dims {dims:?} does not match in_channels {}",
                self.cfg.in_channels
            ))
            .into());
        }
        Ok(())
    }

    fn forward_impl(
        &self,
        x: &CudaSlice<f32>,
        dims: [usize; 4],
        t: f32,
        text: &GpuTextContext,
        timings: Option<&mut ForwardTimings>,
    ) -> Result<CudaSlice<f32>, GpuWanError> {
        let [_, lt, lh, lw] = dims;
        self.check_latent_len(x.len(), dims)?;
        if text.per_block.len() != self.blocks.len() {
            return Err(WanError::Input("text context was prepared by a different model".into()).into());
        }
        if !t.is_finite() {
            return Err(WanError::Input(format!("timestep {t} is not finite")).into());
        }
        let (gpu, cfg) = (&self.gpu, &self.cfg);
        let b = &gpu.backend;
        let d = cfg.inner_dim();
        let grid = TokenGrid::new(cfg, lt, lh, lw)?;
        let s = grid.tokens();
        let mut laps = Laps::new(gpu, timings)?;

        // RoPE tables for this grid (built on the host in f64 → f32 like the CPU; cached).
        let mut rope = self.rope_cache.lock().unwrap_or_else(|p| p.into_inner());
        if rope.as_ref().map(|r| r.grid) != Some(grid) {
            let (cos, sin) = self.rope.for_grid(grid.f, grid.h, grid.w)?;
            *rope = Some(RopeCache {
                grid,
                cos: gpu.upload(&cos)?,
                sin: gpu.upload(&sin)?,
            });
        }
        let rope = rope.as_ref().expect("set above");

        // Time: temb = linear_2(SiLU(linear_1(sinusoid(t)))) on the host in f32, then
        // timestep_proj = time_proj(SiLU(temb)) on the device (bf16 GEMM, as diffusers).
        let mut th = self.time_1.forward(&timestep_sinusoid(t, cfg.freq_dim));
        silu_in_place(&mut th);
        let temb = self.time_2.forward(&th);
        let mut act = temb.clone();
        silu_in_place(&mut act);
        let act_b = b.upload(&bf16_bits(&act))?;
        let mut tp_d = gpu.zeros_f32(6 * d)?;
        self.time_proj.forward(gpu, &act_b, 1, &mut tp_d)?;
        let timestep_proj = b.download(&tp_d)?;

        // Patch embedding: gather patches, bf16, GEMM.
        let patch_f = self.patch_embedding.in_f;
        let mut patches = gpu.zeros_f32(s * patch_f)?;
        let grid3 = [grid.f, grid.h, grid.w];
        b.patchify(x, cfg.in_channels, grid3, cfg.patch_size, &mut patches)?;
        let mut patches_b = gpu.zeros_bf16(s * patch_f)?;
        b.f32_to_bf16(&patches, &mut patches_b)?;
        drop(patches);
        let mut h = gpu.zeros_f32(s * d)?;
        self.patch_embedding.forward(gpu, &patches_b, s, &mut h)?;
        drop(patches_b);
        laps.lap(gpu, Phase::Edges)?;

        let mut work = Work::new(gpu, s, d, cfg.ffn_dim)?;
        let mut e = vec![0.0f32; 6 * d];
        for (block, kv) in self.blocks.iter().zip(&text.per_block) {
            // e = scale_shift_table + timestep_proj in f32 on the host (the CPU's arithmetic).
            for ((ev, a), p) in e.iter_mut().zip(&block.scale_shift_table).zip(&timestep_proj) {
                *ev = a + p;
            }
            block.forward(gpu, &mut h, &e, &rope.cos, &rope.sin, kv, &mut work, &mut laps)?;
        }
        drop(work);

        // Head: shift, scale = table + temb (not timestep_proj); LN·(1 + scale) + shift; proj_out.
        let shift: Vec<f32> = self.head_table[..d].iter().zip(&temb).map(|(a, b)| a + b).collect();
        let scale: Vec<f32> = self.head_table[d..].iter().zip(&temb).map(|(a, b)| a + b).collect();
        let (shift, scale) = (gpu.upload(&shift)?, gpu.upload(&scale)?);
        let mut n = gpu.zeros_f32(s * d)?;
        b.layer_norm_modulate(&h, d, cfg.eps, &scale, &shift, &mut n)?;
        drop(h);
        let mut nb = gpu.zeros_bf16(s * d)?;
        b.f32_to_bf16(&n, &mut nb)?;
        drop(n);
        let out_f = self.proj_out.out_f;
        let mut y = gpu.zeros_f32(s * out_f)?;
        self.proj_out.forward(gpu, &nb, s, &mut y)?;
        let mut out = gpu.zeros_f32(x.len() / cfg.in_channels * cfg.out_channels())?;
        b.unpatchify(&y, cfg.out_channels(), grid3, cfg.patch_size, &mut out)?;
        laps.lap(gpu, Phase::Edges)?;
        Ok(out)
    }
}

impl crate::wan::transformer::denoiser::WanForward for GpuWanTransformer {
    type Text = GpuTextContext;
    type Error = GpuWanError;

    fn encode_text(&self, ctx: &[f32]) -> Result<GpuTextContext, GpuWanError> {
        GpuWanTransformer::encode_text(self, ctx)
    }

    fn forward(&self, x: &[f32], dims: [usize; 4], t: f32, text: &GpuTextContext) -> Result<Vec<f32>, GpuWanError> {
        GpuWanTransformer::forward(self, x, dims, t, text)
    }
}
