//! TMA tensor maps (`CUtensorMap`) for attention_wgmma.cu, encoded by the driver's
//! `cuTensorMapEncodeTiled` from the parameters of [`TmaBox2d`] (which the CPU tests check against
//! the kernel's shared-memory layout) and passed to the kernel by value.

use super::error::{shape_error, CudaError};
use crate::tensor_core::wgmma::TmaBox2d;
use cudarc::driver::sys;
use cudarc::driver::DeviceRepr;

/// A tensor map as a kernel argument (`const __grid_constant__ CUtensorMap`).
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct TensorMap(sys::CUtensorMap);

// SAFETY: 128 bytes of plain data (no pointers the host owns: the global address inside is a
// device address), with the layout of the driver's CUtensorMap that the kernel declares as its
// parameter type; the launch copies it into the parameter space by value.
unsafe impl DeviceRepr for TensorMap {}

/// The driver's encoding of `map` over the bf16 matrix at device address `global`: SWIZZLE_128B
/// (the kernel's shared-memory layout), out-of-bounds elements zero-filled, 128-byte L2 promotion.
pub fn encode_bf16(map: &TmaBox2d, global: sys::CUdeviceptr) -> Result<TensorMap, CudaError> {
    if !global.is_multiple_of(16) {
        return Err(shape_error(
            "attention",
            format!("tensor map base {global:#x} is not 16-byte aligned"),
        ));
    }
    let dims = [map.cols, map.rows];
    let strides = [map.row_stride_bytes]; // rank − 1 entries: dimension 0 is contiguous
    let boxes = [map.box_cols, map.box_rows];
    let element_strides = [1u32, 1];
    let mut raw = sys::CUtensorMap { opaque: [0; 16] };
    // SAFETY: `raw` is a writable CUtensorMap; the four arrays hold `rank` = 2 entries each
    // (`strides` rank − 1), as the driver reads them; `global` is a device address the driver only
    // records (it is read by the kernel's TMA copies while the caller keeps the buffer alive).
    let r = unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut raw,
            sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            2,
            global as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    r.result()?;
    Ok(TensorMap(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tensor_map_is_the_drivers_128_byte_aligned_struct() {
        assert_eq!(std::mem::size_of::<TensorMap>(), 128);
        assert_eq!(std::mem::align_of::<TensorMap>(), 128);
        // attention_wgmma.cu declares the same: `struct __align__(128) CUtensorMap { u64 opaque[16]; }`.
        let source = include_str!("../../cuda/attention_wgmma.cu");
        assert!(source.contains("struct __align__(128) CUtensorMap {\n    u64 opaque[16];\n};"));
    }
}
