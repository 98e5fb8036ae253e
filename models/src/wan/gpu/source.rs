//! Where the GPU model's weights come from: a checkpoint ([`StoreSource`], through the same
//! name mapping and shape checks as the CPU loader) or seeded random numbers ([`RandomSource`],
//! for benchmarks at the real model's shapes without a checkpoint). The VAE decoder reads its
//! tensors through [`VaeSource`], which both a checkpoint (`VaeFetch`) and [`RandomSource`] are.
//!
//! Weights are fetched one tensor at a time and dropped from the host once uploaded, so loading
//! never holds more than one tensor in f32 on the host.

use super::error::GpuWanError;
use super::linear::{bf16_bits, Gpu};
use crate::wan::transformer::layers::Fetch;
use crate::wan::vae::blocks::VaeFetch;
use cudarc::driver::CudaSlice;

/// What a host tensor is for (a random source draws each kind from its own distribution).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A norm's weight (around 1).
    NormWeight,
    /// A bias or a norm's bias (small).
    Bias,
    /// A modulation table (`scale_shift_table`).
    Table,
    /// A Linear weight kept on the host (`time_embedder`), `[out, in]`.
    HostWeight,
}

pub trait WeightSource {
    /// Tensor `name` (diffusers naming) with exactly `shape`, in f32 on the host.
    fn host(&mut self, name: &str, shape: &[usize], role: Role) -> Result<Vec<f32>, GpuWanError>;

    /// Linear weight `name` with `shape` (`[out, in…]`) as bf16 bits on the device.
    fn device_bf16(&mut self, gpu: &Gpu, name: &str, shape: &[usize]) -> Result<CudaSlice<u16>, GpuWanError>;
}

/// A checkpoint's tensors (either naming; f32/bf16/f16 upcast by the store, then rounded to bf16
/// for the device — exact for a bf16 checkpoint).
pub struct StoreSource<'a> {
    pub fetch: Fetch<'a>,
}

impl WeightSource for StoreSource<'_> {
    fn host(&mut self, name: &str, shape: &[usize], _role: Role) -> Result<Vec<f32>, GpuWanError> {
        Ok(self.fetch.get(name, shape)?)
    }

    fn device_bf16(&mut self, gpu: &Gpu, name: &str, shape: &[usize]) -> Result<CudaSlice<u16>, GpuWanError> {
        let values = self.fetch.get(name, shape)?;
        Ok(gpu.backend.upload(&bf16_bits(&values))?)
    }
}

/// Seeded random weights. Linear weights are drawn on the device (Philox Gaussians scaled by
/// `1/√in`, then rounded to bf16), so a 1.3B- or 14B-shaped model costs no host memory; the small
/// host tensors come from a SplitMix64 Box–Muller stream. Every tensor's stream is keyed by the
/// seed and its name, so the weights do not depend on the loading order.
pub struct RandomSource {
    pub seed: u64,
}

/// FNV-1a of `name`, mixed with the seed.
fn tensor_key(seed: u64, name: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Standard Gaussians from SplitMix64 + Box–Muller (host side; quality is ample for weights).
pub fn host_gaussians(key: u64, n: usize) -> Vec<f32> {
    let mut state = key;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // u1 in (0, 1], u2 in [0, 1).
        let u1 = ((next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}

impl RandomSource {
    /// Host tensor `name` with `shape`, drawn for `role`.
    fn tensor(&self, name: &str, shape: &[usize], role: Role) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let g = host_gaussians(tensor_key(self.seed, name), n);
        let fan_in = shape.get(1..).map_or(1, |s| s.iter().product::<usize>().max(1));
        match role {
            Role::NormWeight => g.iter().map(|v| 1.0 + 0.1 * v).collect(),
            Role::Bias => g.iter().map(|v| 0.02 * v).collect(),
            Role::Table => g.iter().map(|v| 0.1 * v).collect(),
            Role::HostWeight => {
                let s = 1.0 / (fan_in as f32).sqrt();
                g.iter().map(|v| s * v).collect()
            }
        }
    }
}

impl WeightSource for RandomSource {
    fn host(&mut self, name: &str, shape: &[usize], role: Role) -> Result<Vec<f32>, GpuWanError> {
        Ok(self.tensor(name, shape, role))
    }

    fn device_bf16(&mut self, gpu: &Gpu, name: &str, shape: &[usize]) -> Result<CudaSlice<u16>, GpuWanError> {
        let rows = shape[0];
        let in_f: usize = shape[1..].iter().product();
        let n = rows * in_f;
        let key = tensor_key(self.seed, name);
        let mut g = gpu.zeros_f32(n)?;
        // One "frame" of `rows × in_f` Philox Gaussians (core::noise's layout), then
        // w = 0 + g·(1/√in) through the gated-residual kernel, then bf16.
        gpu.backend.philox_gaussian(&mut g, key, 0, 0, [1, 1, rows, in_f])?;
        let mut w = gpu.zeros_f32(n)?;
        let scale = gpu.upload(&vec![1.0 / (in_f as f32).sqrt(); in_f])?;
        gpu.backend.gated_residual(&mut w, &g, &scale)?;
        drop(g);
        let mut bits = gpu.zeros_bf16(n)?;
        gpu.backend.f32_to_bf16(&w, &mut bits)?;
        Ok(bits)
    }
}

/// The VAE decoder's tensors by diffusers name, f32 on the host (conv weights are packed for the
/// tensor cores by the loader, whatever their source).
pub(crate) trait VaeSource {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, GpuWanError>;
}

impl VaeSource for VaeFetch<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, GpuWanError> {
        Ok(VaeFetch::get(self, name, shape)?)
    }
}

/// Random VAE tensors, the role read off the name: `gamma` a norm, `bias` a bias, any other a
/// conv weight `[cout, cin, …]` scaled by `1/√(cin·k…)`, which keeps activations O(1) through
/// the decoder (every conv but the first follows an RMS norm).
impl VaeSource for RandomSource {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, GpuWanError> {
        let role = if name.ends_with(".gamma") {
            Role::NormWeight
        } else if name.ends_with(".bias") {
            Role::Bias
        } else {
            Role::HostWeight
        };
        Ok(self.tensor(name, shape, role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_gaussians_are_seeded_and_standard() {
        let a = host_gaussians(7, 20001);
        assert_eq!(a, host_gaussians(7, 20001));
        assert_ne!(a[..8], host_gaussians(8, 8)[..]);
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
        assert_ne!(tensor_key(1, "a.weight"), tensor_key(1, "b.weight"));
    }

    #[test]
    fn random_vae_tensors_take_their_role_from_the_name() {
        let src = RandomSource { seed: 3 };
        let gamma = VaeSource::get(&src, "decoder.norm_out.gamma", &[64, 1, 1, 1]).unwrap();
        assert!(gamma.iter().all(|&v| (v - 1.0).abs() < 0.6), "{gamma:?}");
        let bias = VaeSource::get(&src, "decoder.conv_in.bias", &[64]).unwrap();
        assert!(bias.iter().all(|&v| v.abs() < 0.15), "{bias:?}");
        // A [cout, cin, kt, ks, ks] conv weight: variance 1/(cin·kt·ks·ks).
        let w = VaeSource::get(&src, "decoder.conv_in.weight", &[64, 16, 3, 3, 3]).unwrap();
        assert_eq!(w.len(), 64 * 16 * 27);
        let var = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64;
        assert!((var * 432.0 - 1.0).abs() < 0.1, "variance {var}");
        assert_eq!(
            w,
            VaeSource::get(&RandomSource { seed: 3 }, "decoder.conv_in.weight", &[64, 16, 3, 3, 3]).unwrap()
        );
    }
}
