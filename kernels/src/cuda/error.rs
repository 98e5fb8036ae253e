//! The one error type of the CUDA backend. Every failure to find, load or use CUDA is a value of
//! [`CudaError`], never a panic, so a worker can fall back to the CPU with one log line.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CudaError {
    #[error("no CUDA driver: libcuda could not be loaded (install the NVIDIA driver, or put the directory of libcuda.so.1 on LD_LIBRARY_PATH)")]
    NoDriver,
    #[error("the CUDA driver found no GPU")]
    NoDevice,
    #[error("CUDA device {ordinal} does not exist: the driver sees {count} device(s)")]
    NoSuchDevice { ordinal: usize, count: usize },
    #[error("no NVRTC: libnvrtc could not be loaded (pip install 'nvidia-cuda-nvrtc==13.0.*' and put the directory of libnvrtc.so.13, site-packages/nvidia/cu13/lib, on LD_LIBRARY_PATH)")]
    NoNvrtc,
    #[error("no cuBLASLt: libcublasLt could not be loaded (pip install the nvidia-cublas package of the CUDA 13 line and put its lib directory on LD_LIBRARY_PATH)")]
    NoCublasLt,
    #[error("no NCCL: libnccl could not be loaded (pip install the nvidia-nccl package of the CUDA 13 line; cudarc opens the unversioned name libnccl.so, so put a directory holding libnccl.so (a link to the package's libnccl.so.2) on LD_LIBRARY_PATH, as scripts/gpu/pack.sh's run.sh does)")]
    NoNccl,
    #[error("NCCL call {call} failed: {result}")]
    Nccl { call: &'static str, result: String },
    #[error("NCCL unique id: {0}")]
    NcclId(String),
    #[error("NVRTC failed while {stage}: {message}")]
    Nvrtc { stage: &'static str, message: String },
    #[error("NVRTC could not compile {file} for {arch}:\n{log}")]
    Compile { file: String, arch: String, log: String },
    #[error("CUDA driver call failed: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    #[error("cuBLASLt call failed: {0:?}")]
    Blas(cudarc::cublaslt::result::CublasError),
    #[error("kernel cache {path}: {source}")]
    Cache { path: String, source: std::io::Error },
    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },
}

impl From<cudarc::cublaslt::result::CublasError> for CudaError {
    fn from(e: cudarc::cublaslt::result::CublasError) -> Self {
        CudaError::Blas(e)
    }
}

/// An NCCL failure of `call`, keeping NCCL's result code (cudarc's `NcclError` prints no detail).
pub(crate) fn nccl_error(call: &'static str, e: cudarc::nccl::result::NcclError) -> CudaError {
    CudaError::Nccl {
        call,
        result: format!("{:?}", e.0),
    }
}

/// A shape error for `op`, in the house style ("what was wrong and what is allowed").
pub(crate) fn shape_error(op: &'static str, message: impl Into<String>) -> CudaError {
    CudaError::Shape {
        op,
        message: message.into(),
    }
}

/// Checks that buffer `what` of `op` holds exactly `want` elements.
pub(crate) fn check_len(op: &'static str, what: &str, got: usize, want: usize) -> Result<(), CudaError> {
    if got == want {
        Ok(())
    } else {
        Err(shape_error(
            op,
            format!("{what} has {got} elements, the shape needs {want}"),
        ))
    }
}
