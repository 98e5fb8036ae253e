//! Small building blocks shared by the transformer's parts: a tensor fetcher that applies the
//! checkpoint's naming, and an f32 `Linear` layer.

use super::keys::TransformerKeys;
use crate::wan::error::WanError;
use crate::wan::weights::WeightStore;
use longshot_kernels::cpu::nn_linear::linear;

/// Fetches diffusers-named tensors from a store whose names may follow another convention.
pub struct Fetch<'a> {
    pub store: &'a WeightStore,
    pub keys: &'a TransformerKeys,
}

impl Fetch<'_> {
    /// Tensor `name` (diffusers naming) as f32 with exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, WanError> {
        self.store.get(&self.keys.stored_name(name), shape)
    }

    /// `{prefix}.weight [out, in]` and `{prefix}.bias [out]`.
    pub fn linear(&self, prefix: &str, in_f: usize, out_f: usize) -> Result<Linear, WanError> {
        Ok(Linear {
            weight: self.get(&format!("{prefix}.weight"), &[out_f, in_f])?,
            bias: self.get(&format!("{prefix}.bias"), &[out_f])?,
            in_f,
            out_f,
        })
    }
}

/// `torch.nn.Linear` with bias: `y = x·Wᵀ + b`, weight `[out_f, in_f]`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub in_f: usize,
    pub out_f: usize,
}

impl Linear {
    /// `x: [rows, in_f]` → `[rows, out_f]`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let rows = x.len() / self.in_f;
        let mut out = vec![0.0f32; rows * self.out_f];
        self.forward_into(x, &mut out);
        out
    }

    /// Like [`forward`](Self::forward), into `out` (`[rows, out_f]`).
    pub fn forward_into(&self, x: &[f32], out: &mut [f32]) {
        debug_assert_eq!(x.len() % self.in_f, 0);
        let rows = x.len() / self.in_f;
        linear(x, rows, self.in_f, &self.weight, Some(&self.bias), self.out_f, out);
    }
}
