//! [`GpuWanError`]: a loading or input error of the model ([`WanError`]) or a CUDA failure.

use crate::wan::error::WanError;
use cudarc::driver::DriverError;
use longshot_kernels::cuda::CudaError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GpuWanError {
    /// Loading or input validation, as on the CPU.
    #[error(transparent)]
    Wan(#[from] WanError),
    /// The CUDA backend (driver, NVRTC, cuBLASLt, a launch's shape check).
    #[error("CUDA: {0}")]
    Cuda(#[from] CudaError),
}

impl From<DriverError> for GpuWanError {
    fn from(e: DriverError) -> Self {
        GpuWanError::Cuda(CudaError::from(e))
    }
}
