//! [`CudaBackend`]: one device, one stream, and the kernel modules loaded on it (compiled on first
//! use through the [`KernelCache`]). The typed op wrappers are `impl CudaBackend` blocks in the
//! `ops_*` modules; this file holds what they share, and the stream capture into CUDA graphs
//! ([`CapturedGraph`]).
//!
//! The stream is a non-blocking stream of its own (not the legacy default stream, which cannot be
//! captured and synchronises with every other stream), and the context's per-buffer event
//! tracking is off: every buffer of the backend is used on this one stream, where order is
//! implicit, and a capture must not wait on events recorded outside it. Work on another stream
//! (NCCL's communication stream) is ordered with explicit events (`nccl_exchange`).

use super::error::CudaError;
use super::kernel_cache::KernelCache;
use super::nvrtc::ModuleImage;
use super::probe::{self, DeviceInfo};
use super::sources::KernelSource;
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig,
};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Threads per block of the element-wise (grid-stride) kernels.
pub(crate) const POINTWISE_THREADS: u32 = 256;

pub struct CudaBackend {
    info: DeviceInfo,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    cache: KernelCache,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl CudaBackend {
    /// Opens device `ordinal` with the kernel cache of [`KernelCache::from_env`]. Fails with
    /// [`CudaError::NoDriver`], [`CudaError::NoDevice`] or [`CudaError::NoNvrtc`] instead of
    /// panicking when CUDA is not usable here.
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        Self::open_with_cache(ordinal, KernelCache::from_env())
    }

    pub fn open_with_cache(ordinal: usize, cache: KernelCache) -> Result<Self, CudaError> {
        let info = probe::device(ordinal)?;
        probe::nvrtc_version()?;
        let ctx = CudaContext::new(ordinal)?;
        // SAFETY: called before this context has any buffer, so none is left half-tracked; the
        // module doc states the ordering rule that replaces the events (one stream, explicit
        // events across streams).
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        Ok(Self {
            info,
            ctx,
            stream,
            cache,
            modules: Mutex::new(HashMap::new()),
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Copies `host` to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>, CudaError> {
        Ok(self.stream.clone_htod(host)?)
    }

    /// Copies a device buffer back (waits for the stream).
    pub fn download<T: DeviceRepr>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>, CudaError> {
        Ok(self.stream.clone_dtoh(dev)?)
    }

    /// A device buffer of `len` values, all set to `value` (tests poison outputs with NaN).
    pub fn filled<T: DeviceRepr + Clone>(&self, len: usize, value: T) -> Result<CudaSlice<T>, CudaError> {
        self.upload(&vec![value; len])
    }

    pub fn synchronize(&self) -> Result<(), CudaError> {
        Ok(self.stream.synchronize()?)
    }

    /// Device memory in use (every process's: total − free, as `cuMemGetInfo` reports it), bytes.
    pub fn memory_in_use(&self) -> Result<u64, CudaError> {
        let (free, total) = self.ctx.mem_get_info()?;
        Ok(total.saturating_sub(free) as u64)
    }

    /// Starts capturing this thread's work on the stream into a graph (nothing runs until the
    /// graph is launched). Thread-local mode: other threads' CUDA calls are not affected. Every
    /// buffer the captured work touches must outlive the graph, and nothing may allocate, free,
    /// copy from the host or synchronise until [`end_capture`](Self::end_capture).
    pub fn begin_capture(&self) -> Result<(), CudaError> {
        Ok(self
            .stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?)
    }

    /// Ends the capture begun by [`begin_capture`](Self::begin_capture) and instantiates it.
    pub fn end_capture(&self) -> Result<CapturedGraph, CudaError> {
        match self.stream.end_capture(CUgraphInstantiate_flags(0))? {
            Some(graph) => Ok(CapturedGraph { graph }),
            None => Err(super::error::shape_error("end_capture", "the capture recorded no work")),
        }
    }

    /// Kernel `name` of `source`, loading (and if need be compiling) its module on first use.
    pub(crate) fn function(&self, source: &KernelSource, name: &str) -> Result<CudaFunction, CudaError> {
        let module = {
            // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
            let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            match modules.get(source.file) {
                Some(m) => m.clone(),
                None => {
                    // A cached image the driver refuses (cuModuleLoadData) is recompiled once.
                    // The arch is the device's own, or its `a` variant for a source that needs it.
                    let arch = source.arch_for(&self.info.arch());
                    let m = self
                        .cache
                        .load_or_compile(source, &arch, |image| {
                            let ptx = match image {
                                ModuleImage::Cubin(bytes) => Ptx::from_binary(bytes.clone()),
                                ModuleImage::Ptx(text) => Ptx::from_src(text.clone()),
                            };
                            Ok(self.ctx.load_module(ptx)?)
                        })?
                        .module;
                    modules.insert(source.file, m.clone());
                    m
                }
            }
        };
        Ok(module.load_function(name)?)
    }
}

/// A grid-stride launch over `n` elements: enough blocks to fill the device, capped because every
/// kernel loops over the remainder.
pub(crate) fn pointwise_config(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(POINTWISE_THREADS as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (POINTWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A `u32` kernel argument, or a shape error naming `what` when it does not fit.
pub(crate) fn as_u32(op: &'static str, what: &str, v: usize) -> Result<u32, CudaError> {
    u32::try_from(v).map_err(|_| super::error::shape_error(op, format!("{what} {v} does not fit in 32 bits")))
}

/// An instantiated CUDA graph of work captured on the backend's stream; [`launch`](Self::launch)
/// replays it there.
pub struct CapturedGraph {
    graph: CudaGraph,
}

// SAFETY: a CUgraph / CUgraphExec is not bound to the thread that created it; the CUDA rule is
// only that calls on one graph are not concurrent, which `launch(&mut self)` and the absence of
// `Sync` guarantee.
unsafe impl Send for CapturedGraph {}

impl CapturedGraph {
    /// Enqueues the whole graph on the stream it was captured on.
    pub fn launch(&mut self) -> Result<(), CudaError> {
        Ok(self.graph.launch()?)
    }
}
