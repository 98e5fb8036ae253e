//! [`GpuWanTransformer`]: `WanTransformer3DModel` on one GPU, the forward of
//! `wan::transformer::WanTransformer` op for op (see the module doc of `wan::gpu` for the
//! precision policy). Layout at this edge is the CPU's: `[C, T, H, W]` per batch item.
//!
//! A forward makes no host round trip: the time embedding's two small Linears run on the host
//! from `t` (an input), `timestep_proj` stays on the device, and every block's modulation is
//! `scale_shift_table + timestep_proj` computed there (the tables are resident, `[L, 6, D]`). The
//! buffers of one shape (token grid, text tokens: the residual stream, the scratch, RoPE tables,
//! modulation, a copy of the text's K/V) live in a [`ForwardState`] kept between forwards, so the
//! block stack, which neither allocates nor syncs, is captured into a CUDA graph on the second
//! forward of a shape and replayed from the third (the first runs eagerly: it compiles kernels
//! and makes cuBLASLt's heuristic queries, which must not happen inside a capture). Graphs are
//! off with `LONGSHOT_CUDA_GRAPHS=0` and for the per-phase timed forward (its laps synchronise).

use super::block::{modulation_row, GpuBlock, GpuCrossKv, Work};
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
use longshot_kernels::cuda::{CapturedGraph, CudaBackend, LnAffine};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Environment switch: `LONGSHOT_CUDA_GRAPHS=0` runs every forward eagerly.
pub const CUDA_GRAPHS_ENV: &str = "LONGSHOT_CUDA_GRAPHS";

/// Whether graphs are on for an environment value (anything but `0`, `false`, `off` or `no`).
pub fn graphs_enabled(value: Option<&str>) -> bool {
    !matches!(
        value.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("0" | "false" | "off" | "no")
    )
}

/// The text conditioning of one prompt on the device: each block's cross-attention K/V.
/// Reuse it across steps (it depends only on the text).
pub struct GpuTextContext {
    /// Unique per context (a forward copies the K/V into its shape's buffers only when the
    /// context changes).
    id: u64,
    tokens: usize,
    per_block: Vec<GpuCrossKv>,
}

impl GpuTextContext {
    /// Number of text tokens (Wan's pipeline always passes 512, zero-padded).
    pub fn tokens(&self) -> usize {
        self.tokens
    }
}

/// What a [`ForwardState`] is specific to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ShapeKey {
    grid: TokenGrid,
    text_tokens: usize,
}

/// The device buffers of forwards at one shape, kept between forwards (the one most recent shape:
/// a job's windows share it), and the CUDA graph of their block stack. Every address the graph
/// captured lives here, so replaying it is sound as long as the state is.
struct ForwardState {
    key: ShapeKey,
    /// Per-token RoPE tables `[S, head_dim]` of this grid.
    cos: CudaSlice<f32>,
    sin: CudaSlice<f32>,
    /// The residual stream `[S, D]`.
    h: CudaSlice<f32>,
    /// This step's `timestep_proj` `[6·D]` and every block's modulation `[L, 6, D]`.
    tp: CudaSlice<f32>,
    modulation: CudaSlice<f32>,
    work: Work,
    /// The text K/V the graph reads, and the id of the context copied there.
    text: Vec<GpuCrossKv>,
    text_id: Option<u64>,
    graph: Option<CapturedGraph>,
    /// Eager runs of the block stack so far (the capture waits for one).
    eager_runs: usize,
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
    /// Every block's `scale_shift_table`, `[L, 6, D]` on the device.
    tables: CudaSlice<f32>,
    /// `[2, D]` on the host: shift, scale of the output head.
    head_table: Vec<f32>,
    proj_out: GpuLinear,
    rope: RopeTables,
    state: Mutex<Option<ForwardState>>,
    graphs: bool,
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
        if cfg.has_image_path() {
            return Err(WanError::config(
                store.source(),
                "image-to-video transformers run on the CPU reference only in this build (no CUDA image path yet)",
            )
            .into());
        }
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
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        let mut tables = Vec::with_capacity(cfg.num_layers * 6 * d);
        for i in 0..cfg.num_layers {
            let (block, table) = GpuBlock::load(src, &gpu, &cfg, i)?;
            blocks.push(block);
            tables.extend(table);
        }
        let tables = gpu.upload(&tables)?;
        let head_table = src.host("scale_shift_table", &[1, 2, d], Role::Table)?;
        let proj_out = GpuLinear::load(src, &gpu, "proj_out", d, cfg.patch_volume() * cfg.out_channels())?;
        Ok(Self {
            rope: RopeTables::new(cfg.attention_head_dim, cfg.rope_split(), cfg.rope_max_seq_len),
            state: Mutex::new(None),
            graphs: graphs_enabled(std::env::var(CUDA_GRAPHS_ENV).ok().as_deref()),
            tables,
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

    /// Turns the CUDA graph of the block stack on or off (initially on unless
    /// `LONGSHOT_CUDA_GRAPHS=0`); off drops a captured graph.
    pub fn set_cuda_graphs(&mut self, on: bool) {
        self.graphs = on;
        if let Some(state) = self.state.get_mut().unwrap_or_else(|p| p.into_inner()) {
            state.graph = None;
        }
    }

    /// Whether the last shape's block stack has been captured into a graph.
    pub fn has_captured_graph(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.as_ref().is_some_and(|s| s.graph.is_some())
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
            + self.tables.len() * 4
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
        // text_2(GELU_tanh(text_1(ctx))), both in bf16 out of the GEMM epilogues (the next GEMMs'
        // inputs).
        let mut h1 = gpu.zeros_bf16(n * d)?;
        self.text_1.forward_gelu_bf16(gpu, &ctx_b, n, &mut h1)?;
        let mut hb = gpu.zeros_bf16(n * d)?;
        self.text_2.forward_bf16(gpu, &h1, n, &mut hb)?;
        let mut scratch = gpu.zeros_f32(n * 2 * d)?;
        let mut per_block = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let mut kv = GpuCrossKv::zeros(gpu, b.layout(n, 0))?;
            b.cross_kv(gpu, &hb, &mut scratch, &mut kv)?;
            per_block.push(kv);
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(GpuTextContext {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tokens: n,
            per_block,
        })
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
        let timed = timings.is_some();
        let mut laps = Laps::new(gpu, timings)?;

        // The buffers of this shape (allocated, with the RoPE tables built on the host in f64 →
        // f32 like the CPU's, on the first forward at it). Held for the whole forward: forwards
        // on one model are serialised.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = ShapeKey {
            grid,
            text_tokens: text.tokens,
        };
        if state.as_ref().map(|st| st.key) != Some(key) {
            *state = None; // free the previous shape's buffers (and graph) first
            *state = Some(self.new_state(key)?);
        }
        let st = state.as_mut().expect("set above");

        // Time: temb = linear_2(SiLU(linear_1(sinusoid(t)))) on the host in f32, then
        // timestep_proj = time_proj(SiLU(temb)) on the device (bf16 GEMM, as diffusers) into the
        // shape's buffer, where the block stack's modulation add reads it.
        let mut th = self.time_1.forward(&timestep_sinusoid(t, cfg.freq_dim));
        silu_in_place(&mut th);
        let temb = self.time_2.forward(&th);
        let mut act = temb.clone();
        silu_in_place(&mut act);
        let act_b = b.upload(&bf16_bits(&act))?;
        self.time_proj.forward(gpu, &act_b, 1, &mut st.tp)?;

        // Patch embedding: gather patches, bf16, GEMM (bias in the epilogue) into h.
        let patch_f = self.patch_embedding.in_f;
        let mut patches = gpu.zeros_f32(s * patch_f)?;
        let grid3 = [grid.f, grid.h, grid.w];
        b.patchify(x, cfg.in_channels, grid3, cfg.patch_size, &mut patches)?;
        let mut patches_b = gpu.zeros_bf16(s * patch_f)?;
        b.f32_to_bf16(&patches, &mut patches_b)?;
        drop(patches);
        self.patch_embedding.forward(gpu, &patches_b, s, &mut st.h)?;
        drop(patches_b);

        // The text's K/V where the graph reads them (a copy only when the context changed).
        if st.text_id != Some(text.id) {
            for (dst, src) in st.text.iter_mut().zip(&text.per_block) {
                if (src.k.len(), src.v.len()) != (dst.k.len(), dst.v.len()) {
                    return Err(WanError::Input("text context was prepared by a different model".into()).into());
                }
                b.stream().memcpy_dtod(&src.k, &mut dst.k)?;
                b.stream().memcpy_dtod(&src.v, &mut dst.v)?;
            }
            st.text_id = Some(text.id);
        }
        laps.lap(gpu, Phase::Edges)?;

        // The block stack: replayed, captured (second forward at this shape) or run eagerly.
        let graphs = self.graphs && !timed;
        match (&mut st.graph, graphs) {
            (Some(graph), true) => graph.launch()?,
            (None, true) if st.eager_runs > 0 => {
                b.begin_capture()?;
                // End the capture whatever happened, so the stream never stays in capture mode.
                let run = self.block_stack(st, &mut laps);
                let graph = b.end_capture();
                run?;
                let mut graph = graph?;
                graph.launch()?;
                st.graph = Some(graph);
            }
            _ => {
                self.block_stack(st, &mut laps)?;
                st.eager_runs += 1;
            }
        }

        // Head: shift, scale = table + temb (not timestep_proj); LN·(1 + scale) + shift → bf16;
        // proj_out (bias in the epilogue, f32).
        let shift: Vec<f32> = self.head_table[..d].iter().zip(&temb).map(|(a, b)| a + b).collect();
        let scale: Vec<f32> = self.head_table[d..].iter().zip(&temb).map(|(a, b)| a + b).collect();
        let (shift, scale) = (gpu.upload(&shift)?, gpu.upload(&scale)?);
        let (shift, scale) = (shift.as_view(), scale.as_view());
        let modulate = LnAffine::Modulate {
            scale: &scale,
            shift: &shift,
        };
        b.layer_norm_bf16(&st.h, d, cfg.eps, modulate, &mut st.work.nb)?;
        let out_f = self.proj_out.out_f;
        let mut y = gpu.zeros_f32(s * out_f)?;
        self.proj_out.forward(gpu, &st.work.nb, s, &mut y)?;
        let mut out = gpu.zeros_f32(x.len() / cfg.in_channels * cfg.out_channels())?;
        b.unpatchify(&y, cfg.out_channels(), grid3, cfg.patch_size, &mut out)?;
        laps.lap(gpu, Phase::Edges)?;
        Ok(out)
    }

    /// The buffers of forwards at `key`.
    fn new_state(&self, key: ShapeKey) -> Result<ForwardState, GpuWanError> {
        let (gpu, cfg) = (&self.gpu, &self.cfg);
        let (d, s, grid) = (cfg.inner_dim(), key.grid.tokens(), key.grid);
        let (cos, sin) = self.rope.for_grid(grid.f, grid.h, grid.w)?;
        let first = self.blocks.first();
        let layout = |rows| first.map(|b| b.layout(rows, 0));
        let work_layout = layout(s).ok_or_else(|| WanError::Input("a model without blocks".into()))?;
        Ok(ForwardState {
            key,
            cos: gpu.upload(&cos)?,
            sin: gpu.upload(&sin)?,
            h: gpu.zeros_f32(s * d)?,
            tp: gpu.zeros_f32(6 * d)?,
            modulation: gpu.zeros_f32(self.tables.len())?,
            work: Work::new(gpu, s, d, cfg.ffn_dim, work_layout)?,
            text: self
                .blocks
                .iter()
                .map(|b| GpuCrossKv::zeros(gpu, b.layout(key.text_tokens, 0)))
                .collect::<Result<_, _>>()?,
            text_id: None,
            graph: None,
            eager_runs: 0,
        })
    }

    /// Every block's modulation, then the blocks, on `st`'s buffers: no allocation, no host
    /// copy, no synchronisation unless `laps` times phases (what a capture needs).
    fn block_stack(&self, st: &mut ForwardState, laps: &mut Laps<'_>) -> Result<(), GpuWanError> {
        let (gpu, d) = (&self.gpu, self.cfg.inner_dim());
        // e = scale_shift_table + timestep_proj, in f32 (the CPU's arithmetic), for all blocks.
        gpu.backend.add_row_vector(&self.tables, &st.tp, &mut st.modulation)?;
        laps.lap(gpu, Phase::Pointwise)?;
        for (i, (block, kv)) in self.blocks.iter().zip(&st.text).enumerate() {
            let rows = modulation_row(i, 0, d).start..modulation_row(i, 5, d).end;
            let e = st.modulation.slice(rows);
            block.forward(gpu, &mut st.h, &e, &st.cos, &st.sin, kv, &mut st.work, laps)?;
        }
        Ok(())
    }
}

impl crate::wan::transformer::denoiser::WanForward for GpuWanTransformer {
    type Text = GpuTextContext;
    type Error = GpuWanError;

    /// The GPU transformer has no image path yet: its loader refuses image-to-video checkpoints,
    /// so `image` is always `None` here.
    fn encode_conditioning(&self, ctx: &[f32], image: Option<&[f32]>) -> Result<GpuTextContext, GpuWanError> {
        if image.is_some() {
            return Err(crate::wan::WanError::Input("the GPU transformer takes no image tokens yet".into()).into());
        }
        GpuWanTransformer::encode_text(self, ctx)
    }

    fn forward(&self, x: &[f32], dims: [usize; 4], t: f32, text: &GpuTextContext) -> Result<Vec<f32>, GpuWanError> {
        GpuWanTransformer::forward(self, x, dims, t, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphs_are_on_unless_switched_off() {
        assert!(graphs_enabled(None));
        assert!(graphs_enabled(Some("1")));
        assert!(graphs_enabled(Some("")));
        for off in ["0", "false", "OFF", " no "] {
            assert!(!graphs_enabled(Some(off)), "{off:?}");
        }
    }
}
