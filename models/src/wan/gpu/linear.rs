//! The device handle the layers share ([`Gpu`]: backend + cuBLASLt) and a Linear layer with a
//! bf16 weight on the device ([`GpuLinear`]), its bias fused into the cuBLASLt epilogue.

use super::error::GpuWanError;
use super::source::{Role, WeightSource};
use cudarc::driver::CudaSlice;
use longshot_kernels::cuda::{BlasLt, CudaBackend, Epilogue};
use std::ops::Range;
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

/// `torch.nn.Linear` with bias on the device: weight `[out_f, in_f]` in bf16, bias `[out_f]` in
/// f32 (for the f32-output GEMMs) and rounded to bf16 (for the bf16-output ones: cuBLASLt's bias
/// has the output's type; diffusers in bf16 holds it in bf16 too).
pub struct GpuLinear {
    weight: CudaSlice<u16>,
    bias: CudaSlice<f32>,
    bias_bf16: CudaSlice<u16>,
    pub in_f: usize,
    pub out_f: usize,
}

/// Where each part of a row-concatenated weight `[Σ out_f, in_f]` lies, in elements, in the
/// order given (the fused QKV weight is to_q's rows, then to_k's, then to_v's, so its output
/// row is `[q | k | v]`).
pub fn concat_ranges(parts_out_f: &[usize], in_f: usize) -> Vec<Range<usize>> {
    let mut start = 0;
    parts_out_f
        .iter()
        .map(|&out_f| {
            let r = start..start + out_f * in_f;
            start = r.end;
            r
        })
        .collect()
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
        Self::from_parts(gpu, weight, &bias, in_f, out_f)
    }

    /// Several Linears of the same input as one: `prefixes`' weights `[out_f, in_f]` stacked in
    /// order into `[n·out_f, in_f]`, their biases concatenated the same way (the fused QKV
    /// projection; one GEMM instead of three).
    pub fn load_concat(
        src: &mut dyn WeightSource,
        gpu: &Gpu,
        prefixes: &[&str],
        in_f: usize,
        out_f: usize,
    ) -> Result<Self, GpuWanError> {
        let ranges = concat_ranges(&vec![out_f; prefixes.len()], in_f);
        let total = prefixes.len() * out_f;
        let mut weight = gpu.zeros_bf16(total * in_f)?;
        let mut bias = Vec::with_capacity(total);
        for (prefix, range) in prefixes.iter().zip(ranges) {
            let part = src.device_bf16(gpu, &format!("{prefix}.weight"), &[out_f, in_f])?;
            gpu.backend.stream().memcpy_dtod(&part, &mut weight.slice_mut(range))?;
            bias.extend(src.host(&format!("{prefix}.bias"), &[out_f], Role::Bias)?);
        }
        Self::from_parts(gpu, weight, &bias, in_f, total)
    }

    fn from_parts(
        gpu: &Gpu,
        weight: CudaSlice<u16>,
        bias: &[f32],
        in_f: usize,
        out_f: usize,
    ) -> Result<Self, GpuWanError> {
        Ok(Self {
            weight,
            bias: gpu.upload(bias)?,
            bias_bf16: gpu.backend.upload(&bf16_bits(bias))?,
            in_f,
            out_f,
        })
    }

    /// `out[rows, out_f] = x[rows, in_f] · Wᵀ + b` in f32 (bias in the epilogue); `x` holds bf16
    /// bits.
    pub fn forward(
        &self,
        gpu: &Gpu,
        x: &CudaSlice<u16>,
        rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), GpuWanError> {
        let (w, b) = (&self.weight, Some(&self.bias));
        gpu.blas
            .linear(x, rows, self.in_f, w, self.out_f, Epilogue::Bias, b, out)?;
        Ok(())
    }

    /// [`forward`](Self::forward) written as bf16 (the input of another GEMM).
    pub fn forward_bf16(
        &self,
        gpu: &Gpu,
        x: &CudaSlice<u16>,
        rows: usize,
        out: &mut CudaSlice<u16>,
    ) -> Result<(), GpuWanError> {
        let (w, b) = (&self.weight, Some(&self.bias_bf16));
        gpu.blas
            .linear(x, rows, self.in_f, w, self.out_f, Epilogue::Bias, b, out)?;
        Ok(())
    }

    /// `gelu_tanh(x · Wᵀ + b)` written as bf16, the GELU in the epilogue (the FFN's first half,
    /// the text MLP's).
    pub fn forward_gelu_bf16(
        &self,
        gpu: &Gpu,
        x: &CudaSlice<u16>,
        rows: usize,
        out: &mut CudaSlice<u16>,
    ) -> Result<(), GpuWanError> {
        let (w, b) = (&self.weight, Some(&self.bias_bf16));
        gpu.blas
            .linear(x, rows, self.in_f, w, self.out_f, Epilogue::GeluBias, b, out)?;
        Ok(())
    }

    /// Bytes of device memory held by the weight and biases.
    pub fn device_bytes(&self) -> usize {
        self.weight.len() * 2 + self.bias.len() * 4 + self.bias_bf16.len() * 2
    }
}

/// f32 → bf16 bits, round to nearest even (what `f32_to_bf16` in the kernels and PyTorch do).
pub fn bf16_bits(values: &[f32]) -> Vec<u16> {
    values.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_weights_stack_the_parts_in_order() {
        // to_q, to_k, to_v of width 24 over 24 inputs: q's rows first, then k's, then v's.
        let r = concat_ranges(&[24, 24, 24], 24);
        assert_eq!(r, [0..576, 576..1152, 1152..1728]);
        // Output column j of the fused GEMM is row j of the stacked weight: part j / out_f.
        let row_of = |j: usize| r.iter().position(|p| p.contains(&(j * 24))).unwrap();
        assert_eq!([row_of(0), row_of(23), row_of(24), row_of(71)], [0, 0, 1, 2]);
        assert_eq!(concat_ranges(&[2, 3], 4), [0..8, 8..20]);
        assert!(concat_ranges(&[], 4).is_empty());
    }
}
