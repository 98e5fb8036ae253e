//! The device handle the layers share ([`Gpu`]: backend + cuBLASLt) and a Linear layer with a
//! bf16 weight on the device ([`GpuLinear`]).

use super::error::GpuWanError;
use super::source::{Role, WeightSource};
use cudarc::driver::CudaSlice;
use longshot_kernels::cuda::{BlasLt, CudaBackend};
use std::sync::Arc;

/// One device: the kernel backend (stream, modules) and a cuBLASLt handle on its stream.
pub struct Gpu {
    pub backend: Arc<CudaBackend>,
    pub blas: BlasLt,
}

impl Gpu {
    pub fn new(backend: Arc<CudaBackend>) -> Result<Self, GpuWanError> {
        let blas = BlasLt::new(&backend)?;
        Ok(Self { backend, blas })
    }

    pub fn zeros_f32(&self, n: usize) -> Result<CudaSlice<f32>, GpuWanError> {
        Ok(self.backend.stream().alloc_zeros::<f32>(n)?)
    }

    pub fn zeros_bf16(&self, n: usize) -> Result<CudaSlice<u16>, GpuWanError> {
        Ok(self.backend.stream().alloc_zeros::<u16>(n)?)
    }

    pub fn upload(&self, host: &[f32]) -> Result<CudaSlice<f32>, GpuWanError> {
        Ok(self.backend.upload(host)?)
    }
}

/// `torch.nn.Linear` with bias on the device: weight `[out_f, in_f]` in bf16, bias `[out_f]` f32.
pub struct GpuLinear {
    weight: CudaSlice<u16>,
    bias: CudaSlice<f32>,
    pub in_f: usize,
    pub out_f: usize,
}

impl GpuLinear {
    /// `{prefix}.weight [out_f, in_f]` and `{prefix}.bias [out_f]`.
    pub fn load(
        src: &mut dyn WeightSource,
        gpu: &Gpu,
        prefix: &str,
        in_f: usize,
        out_f: usize,
    ) -> Result<Self, GpuWanError> {
        Self::load_shaped(src, gpu, prefix, &[out_f, in_f])
    }

    /// Like [`load`](Self::load) for a weight stored with more dimensions (the patch embedding's
    /// conv kernel `[D, C, pt, ph, pw]`, a row-major `[D, C·pt·ph·pw]` matrix).
    pub fn load_shaped(
        src: &mut dyn WeightSource,
        gpu: &Gpu,
        prefix: &str,
        weight_shape: &[usize],
    ) -> Result<Self, GpuWanError> {
        let out_f = weight_shape[0];
        let in_f = weight_shape[1..].iter().product();
        let weight = src.device_bf16(gpu, &format!("{prefix}.weight"), weight_shape)?;
        let bias = src.host(&format!("{prefix}.bias"), &[out_f], Role::Bias)?;
        Ok(Self {
            weight,
            bias: gpu.upload(&bias)?,
            in_f,
            out_f,
        })
    }

    /// `out[rows, out_f] = x[rows, in_f] · Wᵀ + b`; `x` holds bf16 bits.
    pub fn forward(
        &self,
        gpu: &Gpu,
        x: &CudaSlice<u16>,
        rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), GpuWanError> {
        gpu.blas
            .linear_bf16(x, rows, self.in_f, &self.weight, self.out_f, out)?;
        gpu.backend.add_bias_rows(out, &self.bias)?;
        Ok(())
    }

    /// Bytes of device memory held by the weight and bias.
    pub fn device_bytes(&self) -> usize {
        self.weight.len() * 2 + self.bias.len() * 4
    }
}

/// f32 → bf16 bits, round to nearest even (what `f32_to_bf16` in the kernels and PyTorch do).
pub fn bf16_bits(values: &[f32]) -> Vec<u16> {
    values.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect()
}
