//! Finding CUDA without panicking. cudarc loads libcuda and libnvrtc on first use and panics when
//! they are missing, so every entry point of this backend asks here first: the presence checks
//! only `dlopen` the candidate library names (cudarc's own search list) and report a
//! [`CudaError`] when none loads.

use super::error::CudaError;
use cudarc::driver::{result as drv, sys as drv_sys};
use cudarc::nvrtc::sys as nvrtc_sys;

/// What the driver reports about one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    /// Compute capability (9, 0) on an H100.
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
    /// The driver's UUID, as nvidia-smi prints it (`GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`):
    /// tells whether two processes (or hosts) use the same physical GPU.
    pub uuid: String,
}

impl DeviceInfo {
    /// The NVRTC architecture of this device's own SASS, e.g. `sm_90`.
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.compute_capability.0, self.compute_capability.1)
    }
}

/// Loads and initialises the driver, or says why it cannot.
pub fn driver() -> Result<(), CudaError> {
    // SAFETY: `is_culib_present` only tries `dlopen` on cudarc's candidate names and drops the
    // handles; it calls no CUDA function.
    if !unsafe { drv_sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    drv::init()?;
    Ok(())
}

/// Number of CUDA devices (0 is not an error here).
pub fn device_count() -> Result<usize, CudaError> {
    driver()?;
    Ok(drv::device::get_count()?.max(0) as usize)
}

/// Describes device `ordinal`: [`CudaError::NoDriver`], [`CudaError::NoDevice`] or
/// [`CudaError::NoSuchDevice`] when there is none to describe.
pub fn device(ordinal: usize) -> Result<DeviceInfo, CudaError> {
    let count = device_count()?;
    if count == 0 {
        return Err(CudaError::NoDevice);
    }
    if ordinal >= count {
        return Err(CudaError::NoSuchDevice { ordinal, count });
    }
    let dev = drv::device::get(ordinal as i32)?;
    let attr = |a| -> Result<i32, CudaError> {
        // SAFETY: `dev` is a valid device handle returned by the initialised driver.
        Ok(unsafe { drv::device::get_attribute(dev, a) }?)
    };
    use drv_sys::CUdevice_attribute::*;
    let compute_capability = (
        attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
        attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
    );
    Ok(DeviceInfo {
        ordinal,
        name: drv::device::get_name(dev)?,
        compute_capability,
        // SAFETY: as above.
        total_memory: unsafe { drv::device::total_mem(dev) }?,
        uuid: format_uuid(&drv::device::get_uuid(dev)?.bytes.map(|b| b as u8)),
    })
}

/// `GPU-` and the 16 bytes in the 8-4-4-4-12 hex groups of nvidia-smi.
fn format_uuid(b: &[u8; 16]) -> String {
    let hex = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// NVRTC's version `(major, minor)`, or [`CudaError::NoNvrtc`] when libnvrtc cannot be loaded.
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    // SAFETY: as in `driver`: a dlopen of candidate names, nothing else.
    if !unsafe { nvrtc_sys::is_culib_present() } {
        return Err(CudaError::NoNvrtc);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; nvrtcVersion writes two ints through valid pointers.
    let r = unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) };
    if r != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(CudaError::Nvrtc {
            stage: "reading its version",
            message: format!("{r:?}"),
        });
    }
    Ok((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_print_as_nvidia_smi_does() {
        let b: [u8; 16] = std::array::from_fn(|i| (i * 17) as u8);
        assert_eq!(format_uuid(&b), "GPU-00112233-4455-6677-8899-aabbccddeeff");
    }

    /// On a machine without CUDA this must be an error value, not cudarc's panic; with CUDA it
    /// describes a real device. Either way it returns.
    #[test]
    fn probing_never_panics() {
        match device(0) {
            Ok(info) => assert!(info.arch().starts_with("sm_"), "{info:?}"),
            Err(e) => assert!(
                matches!(e, CudaError::NoDriver | CudaError::NoDevice | CudaError::Driver(_)),
                "{e}"
            ),
        }
        let _ = nvrtc_version();
    }
}
