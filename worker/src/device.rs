//! Which device a worker computes on. `--device auto` (the default) takes the GPU when this build
//! has CUDA support and a usable device is found, and otherwise falls back to the CPU reference
//! backend with one log line saying why; `--device cuda` refuses to start without a GPU;
//! `--device cpu` never looks. A missing libcuda, NVRTC or GPU is always an error value, never a
//! panic (`longshot_kernels::cuda::probe` checks before cudarc could panic).

use longshot_models::wan::WanBackend;

/// What the operator asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda,
}

impl std::str::FromStr for DeviceRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!("device {other:?} is not one of auto, cpu, cuda")),
        }
    }
}

/// The device a worker runs on.
#[derive(Clone)]
pub enum Device {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(std::sync::Arc<longshot_kernels::cuda::CudaBackend>),
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

/// `--device cuda` could not be honoured.
#[derive(Debug, thiserror::Error)]
#[error("--device cuda: {0}")]
pub struct DeviceError(pub String);

impl Device {
    /// `cpu` or `cuda`, as workers advertise it.
    pub fn kind(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => "cuda",
        }
    }

    /// The device's name and memory, for `WorkerInfo` (`None` for the CPU: the caller reads it).
    pub fn describe(&self) -> Option<(String, u64)> {
        match self {
            Device::Cpu => None,
            #[cfg(feature = "cuda")]
            Device::Cuda(b) => {
                let i = b.info();
                Some((format!("{} ({})", i.name, i.arch()), i.total_memory as u64))
            }
        }
    }

    /// Where Wan2.1's transformer runs on this device.
    pub fn wan_backend(&self) -> WanBackend {
        match self {
            Device::Cpu => WanBackend::Cpu,
            #[cfg(feature = "cuda")]
            Device::Cuda(b) => WanBackend::Cuda(b.clone()),
        }
    }
}

/// Opens GPU 0, or says why there is none.
#[cfg(feature = "cuda")]
fn open_gpu() -> Result<Device, String> {
    longshot_kernels::cuda::CudaBackend::open(0)
        .map(|b| Device::Cuda(std::sync::Arc::new(b)))
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn open_gpu() -> Result<Device, String> {
    Err("this build has no CUDA support (build with `cargo build --release --features cuda`)".into())
}

/// Picks the device for `request`: `auto` falls back to the CPU with one clear log line.
pub fn select(request: DeviceRequest) -> Result<Device, DeviceError> {
    match request {
        DeviceRequest::Cpu => Ok(Device::Cpu),
        DeviceRequest::Cuda => open_gpu().map_err(DeviceError),
        DeviceRequest::Auto => Ok(open_gpu().unwrap_or_else(|why| {
            tracing::warn!("no usable GPU ({why}); running on the CPU reference backend");
            Device::Cpu
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_name_what_is_allowed() {
        assert_eq!("auto".parse(), Ok(DeviceRequest::Auto));
        assert_eq!("cuda".parse(), Ok(DeviceRequest::Cuda));
        assert_eq!(
            "gpu".parse::<DeviceRequest>().unwrap_err(),
            "device \"gpu\" is not one of auto, cpu, cuda"
        );
    }

    /// Whatever this machine has: with a usable GPU, `auto` and `cuda` take it; without one (or
    /// without CUDA support in the build), `auto` falls back to the CPU and `cuda` is an error
    /// that says why. Nothing panics either way.
    #[test]
    fn auto_falls_back_and_cuda_refuses_without_a_gpu() {
        assert_eq!(select(DeviceRequest::Cpu).unwrap().kind(), "cpu");
        match open_gpu() {
            Ok(_) => {
                assert_eq!(select(DeviceRequest::Auto).unwrap().kind(), "cuda");
                assert_eq!(select(DeviceRequest::Cuda).unwrap().kind(), "cuda");
            }
            Err(why) => {
                assert_eq!(select(DeviceRequest::Auto).unwrap().kind(), "cpu");
                let e = select(DeviceRequest::Cuda).unwrap_err().to_string();
                assert_eq!(e, format!("--device cuda: {why}"));
                if cfg!(not(feature = "cuda")) {
                    assert!(e.contains("--features cuda"), "{e}");
                }
            }
        }
    }
}
