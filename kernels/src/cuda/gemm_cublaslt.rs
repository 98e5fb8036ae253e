//! GEMMs through cuBLASLt: bf16 inputs, f32 accumulation and f32 output (the Linear layers of the
//! DiT and the text encoder). Built on cudarc's `cublaslt::result` layer so the output type can
//! differ from the inputs' (cudarc's safe `Matmul` writes C in the input type).

use super::backend::CudaBackend;
use super::error::{check_len, shape_error, CudaError};
use cudarc::cublaslt::{result as lt, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use std::ffi::c_void;
use std::sync::Arc;

/// cuBLASLt workspace: 32 MiB, what NVIDIA recommends for Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;

/// A cuBLASLt handle bound to the backend's stream, with its workspace.
pub struct BlasLt {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
    /// Held around every call into the handle, so one handle is never used by two host threads at
    /// once (what makes the `Sync` below sound without relying on cuBLASLt's threading rules).
    calls: std::sync::Mutex<()>,
}

// SAFETY: the handle is an opaque pointer to a cuBLASLt context that is not tied to the thread
// that created it (CUDA contexts are current per call via the stream), so moving it to another
// thread is sound.
unsafe impl Send for BlasLt {}
// SAFETY: `&self` methods take `calls` before touching the handle, so host calls into the handle
// never overlap; the workspace is only used by GEMMs enqueued on `stream`, which runs them in
// order, so two GEMMs never use it at the same time on the device either.
unsafe impl Sync for BlasLt {}

impl BlasLt {
    /// Fails with [`CudaError::NoCublasLt`] when libcublasLt cannot be loaded.
    pub fn new(backend: &CudaBackend) -> Result<Self, CudaError> {
        // SAFETY: a dlopen of cudarc's candidate names only (see `probe`).
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::NoCublasLt);
        }
        let stream = backend.stream().clone();
        let handle = lt::create_handle()?;
        let workspace = backend.filled(WORKSPACE_BYTES, 0u8)?;
        Ok(Self {
            handle,
            workspace,
            stream,
            calls: std::sync::Mutex::new(()),
        })
    }

    /// `out[rows, out_f] = x[rows, in_f] · weight[out_f, in_f]ᵀ` (PyTorch Linear without bias;
    /// add it with `CudaBackend::add_bias_rows`). `x` and `weight` hold bf16 bits.
    pub fn linear_bf16(
        &self,
        x: &CudaSlice<u16>,
        rows: usize,
        in_f: usize,
        weight: &CudaSlice<u16>,
        out_f: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const OP: &str = "linear_bf16";
        check_len(OP, "x", x.len(), rows * in_f)?;
        check_len(OP, "weight", weight.len(), out_f * in_f)?;
        check_len(OP, "out", out.len(), rows * out_f)?;
        if rows == 0 || out_f == 0 {
            return Ok(());
        }
        if in_f == 0 {
            return Err(shape_error(OP, "in_features is 0"));
        }
        // Column-major view: outᵀ (out_f × rows) = weightᵀᵀ… i.e. A = weight read as (in_f × out_f)
        // transposed, B = x read as (in_f × rows), D = outᵀ with leading dimension out_f.
        let objs = LtObjects::new(in_f as u64, out_f as u64, rows as u64)?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (a, _ga) = weight.device_ptr(&self.stream);
        let (b, _gb) = x.device_ptr(&self.stream);
        let (d, _gd) = out.device_ptr_mut(&self.stream);
        let (w, _gw) = self.workspace.device_ptr(&self.stream);
        let _one_caller = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the descriptors were created above for exactly these shapes and types; the
        // buffers hold the checked lengths; `beta = 0` with C = D, so C is not read; the
        // workspace is WORKSPACE_BYTES long, the size the preference announced.
        unsafe {
            let pref = objs.pref;
            let heuristic =
                lt::get_matmul_algo_heuristic(self.handle, objs.desc, objs.a, objs.b, objs.d, objs.d, pref)?;
            lt::matmul(
                self.handle,
                objs.desc,
                (&alpha as *const f32).cast::<c_void>(),
                (&beta as *const f32).cast::<c_void>(),
                a as *const c_void,
                objs.a,
                b as *const c_void,
                objs.b,
                d as *const c_void,
                objs.d,
                d as *mut c_void,
                objs.d,
                &heuristic.algo,
                w as *mut c_void,
                WORKSPACE_BYTES,
                self.stream.cu_stream() as sys::cudaStream_t,
            )?;
        }
        Ok(())
    }
}

impl Drop for BlasLt {
    fn drop(&mut self) {
        // SAFETY: the handle came from create_handle and is destroyed once, here.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

/// The descriptors of one bf16 × bf16 → f32 matmul, destroyed together.
struct LtObjects {
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    d: sys::cublasLtMatrixLayout_t,
    desc: sys::cublasLtMatmulDesc_t,
    pref: sys::cublasLtMatmulPreference_t,
}

impl LtObjects {
    fn new(k: u64, m: u64, n: u64) -> Result<Self, CudaError> {
        use sys::cudaDataType_t::{CUDA_R_16BF, CUDA_R_32F};
        let a = lt::create_matrix_layout(CUDA_R_16BF, k, m, k as i64)?;
        let b = lt::create_matrix_layout(CUDA_R_16BF, k, n, k as i64)?;
        let d = lt::create_matrix_layout(CUDA_R_32F, m, n, m as i64)?;
        let desc = lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, CUDA_R_32F)?;
        let pref = lt::create_matmul_pref()?;
        let objs = Self { a, b, d, desc, pref };
        let transpose: i32 = 1; // CUBLAS_OP_T
        let ws = WORKSPACE_BYTES as u64;
        // SAFETY: live descriptors; the attribute buffers have the sizes cuBLASLt expects
        // (int32 for TRANSA, uint64 for the workspace limit).
        unsafe {
            lt::set_matmul_desc_attribute(
                objs.desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                (&transpose as *const i32).cast(),
                std::mem::size_of::<i32>(),
            )?;
            lt::set_matmul_pref_attribute(
                objs.pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&ws as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )?;
        }
        Ok(objs)
    }
}

impl Drop for LtObjects {
    fn drop(&mut self) {
        // SAFETY: each object was created in `new` and is destroyed once, here.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.d);
            let _ = lt::destroy_matmul_desc(self.desc);
            let _ = lt::destroy_matmul_pref(self.pref);
        }
    }
}
