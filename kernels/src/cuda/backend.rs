//! [`CudaBackend`]: one device, one stream, and the kernel modules loaded on it (compiled on first
//! use through the [`KernelCache`]). The typed op wrappers are `impl CudaBackend` blocks in the
//! `ops_*` modules; this file holds what they share.

use super::error::CudaError;
use super::kernel_cache::KernelCache;
use super::nvrtc::ModuleImage;
use super::probe::{self, DeviceInfo};
use super::sources::KernelSource;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig};
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
        let stream = ctx.default_stream();
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
