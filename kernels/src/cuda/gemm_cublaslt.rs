//! GEMMs through cuBLASLt: bf16 inputs, f32 accumulation, f32 or bf16 output, with the bias (and
//! tanh-GELU) fused into the epilogue (the Linear layers of the DiT and the text encoder). Built on
//! cudarc's `cublaslt::result` layer so the output type can differ from the inputs'.
//!
//! Every matmul's descriptors, layouts and heuristic-chosen algorithm are created once per
//! [`GemmKey`] (rows, in_f, out_f, epilogue, output type) and reused, so a forward repeated at the
//! same shapes makes no heuristic query after its first run, and a CUDA graph can capture the
//! matmuls (the bias pointer, the only per-call attribute, is set on the cached descriptor under
//! the handle's lock just before each call).
//!
//! `CUBLASLT_EPILOGUE_GELU_BIAS` is GELU's tanh approximation, `0.5·x·(1 + tanh(√(2/π)·(x +
//! 0.044715·x³)))` (PyTorch routes only `gelu(approximate="tanh")` to it, through
//! `_addmm_activation`): the `gelu_pytorch_tanh` of Wan's FFN. The device test
//! `linear_epilogues_match_the_reference` checks that it is nearer this than erf's GELU.

use super::backend::CudaBackend;
use super::error::{check_len, shape_error, CudaError};
use cudarc::cublaslt::{result as lt, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr};
use std::collections::hash_map::{Entry, HashMap};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// cuBLASLt workspace: 32 MiB, what NVIDIA recommends for Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;

/// What the matmul's epilogue does after `x·Wᵀ` (in f32, before the output is rounded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// Nothing.
    None,
    /// `+ bias[j]` (`CUBLASLT_EPILOGUE_BIAS`).
    Bias,
    /// `gelu_tanh(· + bias[j])` (`CUBLASLT_EPILOGUE_GELU_BIAS`).
    GeluBias,
}

impl Epilogue {
    fn has_bias(self) -> bool {
        !matches!(self, Epilogue::None)
    }

    fn lt(self) -> sys::cublasLtEpilogue_t {
        use sys::cublasLtEpilogue_t::*;
        match self {
            Epilogue::None => CUBLASLT_EPILOGUE_DEFAULT,
            Epilogue::Bias => CUBLASLT_EPILOGUE_BIAS,
            Epilogue::GeluBias => CUBLASLT_EPILOGUE_GELU_BIAS,
        }
    }
}

/// The element type a GEMM writes (its bias, when it has one, is of the same type: cuBLASLt's
/// default bias type is D's).
pub trait GemmOut: DeviceRepr {
    const TYPE: OutType;
}

impl GemmOut for f32 {
    const TYPE: OutType = OutType::F32;
}

/// bf16 bits.
impl GemmOut for u16 {
    const TYPE: OutType = OutType::Bf16;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutType {
    F32,
    Bf16,
}

impl OutType {
    fn cuda(self) -> sys::cudaDataType_t {
        match self {
            OutType::F32 => sys::cudaDataType_t::CUDA_R_32F,
            OutType::Bf16 => sys::cudaDataType_t::CUDA_R_16BF,
        }
    }
}

/// What a cached matmul plan is specific to: everything its descriptors and algorithm depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmKey {
    pub rows: usize,
    pub in_f: usize,
    pub out_f: usize,
    pub epilogue: Epilogue,
    pub out: OutType,
}

/// A cuBLASLt handle bound to the backend's stream, with its workspace and matmul plans.
pub struct BlasLt {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
    /// The cached plans. Held around every call into the handle, so one handle is never used by
    /// two host threads at once (what makes the `Sync` below sound without relying on cuBLASLt's
    /// threading rules), and a plan's descriptor is never changed while another call uses it.
    plans: Mutex<HashMap<GemmKey, Plan>>,
    heuristic_queries: AtomicU64,
}

// SAFETY: the handle and the plans' descriptors are opaque pointers to cuBLASLt objects that are
// not tied to the thread that created them (CUDA contexts are current per call via the stream),
// so moving them to another thread is sound.
unsafe impl Send for BlasLt {}
// SAFETY: `&self` methods take `plans` before touching the handle or a descriptor, so host calls
// into them never overlap; the workspace is only used by GEMMs enqueued on `stream`, which runs
// them in order, so two GEMMs never use it at the same time on the device either.
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
            plans: Mutex::new(HashMap::new()),
            heuristic_queries: AtomicU64::new(0),
        })
    }

    /// How many algorithm heuristic queries this handle has made (one per new [`GemmKey`]).
    pub fn heuristic_queries(&self) -> u64 {
        self.heuristic_queries.load(Ordering::Relaxed)
    }

    /// `out[rows, out_f] = x[rows, in_f] · weight[out_f, in_f]ᵀ` in f32 (PyTorch Linear without
    /// bias). `x` and `weight` hold bf16 bits.
    pub fn linear_bf16(
        &self,
        x: &CudaSlice<u16>,
        rows: usize,
        in_f: usize,
        weight: &CudaSlice<u16>,
        out_f: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        self.linear(x, rows, in_f, weight, out_f, Epilogue::None, None, out)
    }

    /// `out[rows, out_f] = epilogue(x · weightᵀ, bias)`, written as `O` (f32, or bf16 bits rounded
    /// to nearest even from the f32 epilogue result). `bias` (`[out_f]`, of the output's type) is
    /// required exactly when the epilogue has one.
    #[allow(clippy::too_many_arguments)]
    pub fn linear<O: GemmOut>(
        &self,
        x: &CudaSlice<u16>,
        rows: usize,
        in_f: usize,
        weight: &CudaSlice<u16>,
        out_f: usize,
        epilogue: Epilogue,
        bias: Option<&CudaSlice<O>>,
        out: &mut CudaSlice<O>,
    ) -> Result<(), CudaError> {
        const OP: &str = "linear";
        check_len(OP, "x", x.len(), rows * in_f)?;
        check_len(OP, "weight", weight.len(), out_f * in_f)?;
        check_len(OP, "out", out.len(), rows * out_f)?;
        match (epilogue.has_bias(), bias) {
            (true, Some(b)) => check_len(OP, "bias", b.len(), out_f)?,
            (false, None) => {}
            (need, _) => {
                return Err(shape_error(
                    OP,
                    format!(
                        "epilogue {epilogue:?} {} a bias",
                        if need { "needs" } else { "takes no" }
                    ),
                ))
            }
        }
        if rows == 0 || out_f == 0 {
            return Ok(());
        }
        if in_f == 0 {
            return Err(shape_error(OP, "in_features is 0"));
        }
        let key = GemmKey {
            rows,
            in_f,
            out_f,
            epilogue,
            out: O::TYPE,
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (a, _ga) = weight.device_ptr(&self.stream);
        let (b, _gb) = x.device_ptr(&self.stream);
        let bias_ptr = bias.map(|bias| bias.device_ptr(&self.stream));
        let (d, _gd) = out.device_ptr_mut(&self.stream);
        let (w, _gw) = self.workspace.device_ptr(&self.stream);
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        let plan = match plans.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.heuristic_queries.fetch_add(1, Ordering::Relaxed);
                e.insert(Plan::new(self.handle, key, bias_ptr.as_ref().map(|p| p.0))?)
            }
        };
        // SAFETY: the plan's descriptors were created for exactly this key (shapes, types,
        // epilogue); the buffers hold the checked lengths, the bias out_f values of D's type;
        // `beta = 0` with C = D, so C is not read; the workspace is WORKSPACE_BYTES long, the size
        // the preference announced; the lock is held, so no other call changes the descriptor's
        // bias pointer before cublasLtMatmul has read it.
        unsafe {
            if let Some((ptr, _)) = &bias_ptr {
                plan.set_bias(*ptr)?;
            }
            lt::matmul(
                self.handle,
                plan.objs.desc,
                (&alpha as *const f32).cast::<c_void>(),
                (&beta as *const f32).cast::<c_void>(),
                a as *const c_void,
                plan.objs.a,
                b as *const c_void,
                plan.objs.b,
                d as *const c_void,
                plan.objs.d,
                d as *mut c_void,
                plan.objs.d,
                &plan.algo,
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
        // The plans' descriptors first, then the handle.
        self.plans.get_mut().unwrap_or_else(|p| p.into_inner()).clear();
        // SAFETY: the handle came from create_handle and is destroyed once, here.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

/// One cached matmul: its descriptors and the algorithm the heuristic chose for them.
struct Plan {
    objs: LtObjects,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Plan {
    fn new(handle: sys::cublasLtHandle_t, key: GemmKey, bias: Option<u64>) -> Result<Self, CudaError> {
        let objs = LtObjects::new(key)?;
        let plan_without_algo = Self {
            objs,
            algo: sys::cublasLtMatmulAlgo_t { data: [0; 8] },
        };
        // SAFETY: live descriptors made for `key`; the heuristic reads only them (and the bias
        // pointer's alignment, hence it is set first).
        unsafe {
            if let Some(ptr) = bias {
                plan_without_algo.set_bias(ptr)?;
            }
            let o = &plan_without_algo.objs;
            let heuristic = lt::get_matmul_algo_heuristic(handle, o.desc, o.a, o.b, o.d, o.d, o.pref)?;
            Ok(Self {
                algo: heuristic.algo,
                ..plan_without_algo
            })
        }
    }

    /// # Safety
    /// `ptr` must be a device pointer to `out_f` values of D's type, live until the matmul using
    /// it has run; the caller holds the handle's lock.
    unsafe fn set_bias(&self, ptr: u64) -> Result<(), CudaError> {
        let p = ptr as *const c_void;
        lt::set_matmul_desc_attribute(
            self.objs.desc,
            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
            (&p as *const *const c_void).cast(),
            std::mem::size_of::<*const c_void>(),
        )?;
        Ok(())
    }
}

/// The descriptors of one bf16 × bf16 → O matmul, destroyed together.
struct LtObjects {
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    d: sys::cublasLtMatrixLayout_t,
    desc: sys::cublasLtMatmulDesc_t,
    pref: sys::cublasLtMatmulPreference_t,
}

impl LtObjects {
    /// Column-major view: outᵀ (out_f × rows) = A·B with A = weight read as (in_f × out_f) and
    /// transposed, B = x read as (in_f × rows), D = outᵀ with leading dimension out_f; the bias
    /// runs along D's rows (out_f), as a Linear's does.
    fn new(key: GemmKey) -> Result<Self, CudaError> {
        use sys::cudaDataType_t::{CUDA_R_16BF, CUDA_R_32F};
        let (k, m, n) = (key.in_f as u64, key.out_f as u64, key.rows as u64);
        let a = lt::create_matrix_layout(CUDA_R_16BF, k, m, k as i64)?;
        let b = lt::create_matrix_layout(CUDA_R_16BF, k, n, k as i64)?;
        let d = lt::create_matrix_layout(key.out.cuda(), m, n, m as i64)?;
        let desc = lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, CUDA_R_32F)?;
        let pref = lt::create_matmul_pref()?;
        let objs = Self { a, b, d, desc, pref };
        let transpose: i32 = 1; // CUBLAS_OP_T
        let epilogue = key.epilogue.lt();
        let ws = WORKSPACE_BYTES as u64;
        // SAFETY: live descriptors; the attribute buffers have the sizes cuBLASLt expects
        // (int32 for TRANSA, the epilogue enum (uint32), uint64 for the workspace limit).
        unsafe {
            lt::set_matmul_desc_attribute(
                objs.desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                (&transpose as *const i32).cast(),
                std::mem::size_of::<i32>(),
            )?;
            lt::set_matmul_desc_attribute(
                objs.desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
                (&epilogue as *const sys::cublasLtEpilogue_t).cast(),
                std::mem::size_of::<sys::cublasLtEpilogue_t>(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn plan_keys_tell_every_field_apart() {
        let base = GemmKey {
            rows: 77,
            in_f: 1536,
            out_f: 4608,
            epilogue: Epilogue::Bias,
            out: OutType::F32,
        };
        let variants = [
            base,
            GemmKey { rows: 78, ..base },
            GemmKey {
                in_f: 4608,
                out_f: 1536,
                ..base
            },
            GemmKey { out_f: 1536, ..base },
            GemmKey {
                epilogue: Epilogue::GeluBias,
                ..base
            },
            GemmKey {
                epilogue: Epilogue::None,
                ..base
            },
            GemmKey {
                out: OutType::Bf16,
                ..base
            },
        ];
        let distinct: HashSet<GemmKey> = variants.iter().copied().collect();
        assert_eq!(distinct.len(), variants.len());
        assert!(distinct.contains(&base));
    }

    #[test]
    fn output_types_and_epilogues_map_to_cublaslt() {
        assert_eq!(<f32 as GemmOut>::TYPE.cuda(), sys::cudaDataType_t::CUDA_R_32F);
        assert_eq!(<u16 as GemmOut>::TYPE.cuda(), sys::cudaDataType_t::CUDA_R_16BF);
        assert_eq!(Epilogue::GeluBias.lt() as u32, 36);
        assert_eq!(Epilogue::Bias.lt() as u32, 4);
        assert_eq!(Epilogue::None.lt() as u32, 1);
        assert!(Epilogue::GeluBias.has_bias() && !Epilogue::None.has_bias());
    }
}
