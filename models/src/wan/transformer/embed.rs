//! The transformer's input and output edges (spec §1.3 steps 2–4 and 7): patch embedding, the
//! timestep sinusoid and time MLP, the text MLP, the image MLP (image-to-video), and unpatchify.

use super::config::TransformerConfig;
use super::layers::{Fetch, Linear};
use crate::wan::error::WanError;
use longshot_kernels::cpu::nn_act::{gelu_erf_in_place, gelu_tanh_in_place, silu_in_place};
use longshot_kernels::cpu::nn_norm::layer_norm;

/// Token grid `(f, h, w)` of a latent `[C, T, H, W]` for a patch `(pt, ph, pw)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenGrid {
    pub f: usize,
    pub h: usize,
    pub w: usize,
}

impl TokenGrid {
    /// The grid of a `t × h × w` latent; every extent must be a positive multiple of its patch.
    pub fn new(cfg: &TransformerConfig, t: usize, h: usize, w: usize) -> Result<Self, WanError> {
        let [pt, ph, pw] = cfg.patch_size;
        if t == 0 || h == 0 || w == 0 || !t.is_multiple_of(pt) || !h.is_multiple_of(ph) || !w.is_multiple_of(pw) {
            return Err(WanError::Input(format!(
                "latent {t}x{h}x{w} (frames x height x width) is not a positive multiple of the patch {pt}x{ph}x{pw}"
            )));
        }
        Ok(Self {
            f: t / pt,
            h: h / ph,
            w: w / pw,
        })
    }

    /// Sequence length `S = f·h·w`.
    pub fn tokens(&self) -> usize {
        self.f * self.h * self.w
    }
}

/// `Conv3d(C → D, kernel = stride = patch)`, applied as a Linear on flattened patches.
#[derive(Clone, Debug)]
pub struct PatchEmbedding {
    proj: Linear,
    patch: [usize; 3],
    channels: usize,
}

impl PatchEmbedding {
    pub fn load(f: &Fetch<'_>, cfg: &TransformerConfig) -> Result<Self, WanError> {
        let [pt, ph, pw] = cfg.patch_size;
        let (c, d) = (cfg.in_channels, cfg.inner_dim());
        let in_f = c * pt * ph * pw;
        // The conv weight [D, C, pt, ph, pw] is already a row-major [D, C·pt·ph·pw] matrix whose
        // column order (c, kt, kh, kw) is the patch vector order used by `forward`.
        let weight = f.get("patch_embedding.weight", &[d, c, pt, ph, pw])?;
        let bias = f.get("patch_embedding.bias", &[d])?;
        Ok(Self {
            proj: Linear {
                weight,
                bias,
                in_f,
                out_f: d,
            },
            patch: cfg.patch_size,
            channels: c,
        })
    }

    /// `x: [C, T, H, W]` → tokens `[S, D]`, tokens in row-major `(f, h, w)` order.
    pub fn forward(&self, x: &[f32], grid: TokenGrid) -> Vec<f32> {
        let [pt, ph, pw] = self.patch;
        let (t, h, w) = (grid.f * pt, grid.h * ph, grid.w * pw);
        let in_f = self.proj.in_f;
        let mut patches = vec![0.0f32; grid.tokens() * in_f];
        for (s, p) in patches.chunks_exact_mut(in_f).enumerate() {
            let (fi, hi, wi) = (s / (grid.h * grid.w), (s / grid.w) % grid.h, s % grid.w);
            let mut j = 0;
            for c in 0..self.channels {
                for kt in 0..pt {
                    for kh in 0..ph {
                        let row = ((c * t + fi * pt + kt) * h + hi * ph + kh) * w + wi * pw;
                        p[j..j + pw].copy_from_slice(&x[row..row + pw]);
                        j += pw;
                    }
                }
            }
        }
        self.proj.forward(&patches)
    }
}

/// `proj_out` rows `[S, pt·ph·pw·C_out]` → `[C_out, T, H, W]`; feature
/// `((kt·ph + kh)·pw + kw)·C_out + c` of token `(fi, hi, wi)` goes to channel `c`, pixel
/// `(fi·pt + kt, hi·ph + kh, wi·pw + kw)`.
pub fn unpatchify(y: &[f32], grid: TokenGrid, patch: [usize; 3], out_c: usize) -> Vec<f32> {
    let [pt, ph, pw] = patch;
    let (t, h, w) = (grid.f * pt, grid.h * ph, grid.w * pw);
    let feat = pt * ph * pw * out_c;
    let mut out = vec![0.0f32; out_c * t * h * w];
    for (s, row) in y.chunks_exact(feat).enumerate() {
        let (fi, hi, wi) = (s / (grid.h * grid.w), (s / grid.w) % grid.h, s % grid.w);
        for kt in 0..pt {
            for kh in 0..ph {
                for kw in 0..pw {
                    let base = ((kt * ph + kh) * pw + kw) * out_c;
                    for c in 0..out_c {
                        out[((c * t + fi * pt + kt) * h + hi * ph + kh) * w + wi * pw + kw] = row[base + c];
                    }
                }
            }
        }
    }
    out
}

/// diffusers' `Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)` in f32:
/// `freq_i = exp((−ln 10000 · i) / (dim/2))`, `a = t·freq`, output `[cos a | sin a]`.
pub fn timestep_sinusoid(t: f32, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    // PyTorch multiplies the f32 arange by the Python float −ln(10000), rounded to f32 first.
    let neg_ln = -(10000f64.ln()) as f32;
    let args: Vec<f32> = (0..half)
        .map(|i| t * ((neg_ln * i as f32) / half as f32).exp())
        .collect();
    args.iter()
        .map(|a| a.cos())
        .chain(args.iter().map(|a| a.sin()))
        .collect()
}

/// Per-forward time conditioning.
#[derive(Clone, Debug)]
pub struct TimeConditioning {
    /// `temb [D]`, used by the output head.
    pub temb: Vec<f32>,
    /// `timestep_proj [6, D]`, used by every block's modulation.
    pub timestep_proj: Vec<f32>,
}

/// `time_embedder` (Linear–SiLU–Linear) and `time_proj` (SiLU–Linear to 6·D).
#[derive(Clone, Debug)]
pub struct TimeEmbedding {
    freq_dim: usize,
    linear_1: Linear,
    linear_2: Linear,
    time_proj: Linear,
}

impl TimeEmbedding {
    pub fn load(f: &Fetch<'_>, cfg: &TransformerConfig) -> Result<Self, WanError> {
        let d = cfg.inner_dim();
        Ok(Self {
            freq_dim: cfg.freq_dim,
            linear_1: f.linear("condition_embedder.time_embedder.linear_1", cfg.freq_dim, d)?,
            linear_2: f.linear("condition_embedder.time_embedder.linear_2", d, d)?,
            time_proj: f.linear("condition_embedder.time_proj", d, 6 * d)?,
        })
    }

    pub fn forward(&self, t: f32) -> TimeConditioning {
        let mut h = self.linear_1.forward(&timestep_sinusoid(t, self.freq_dim));
        silu_in_place(&mut h);
        let temb = self.linear_2.forward(&h);
        let mut act = temb.clone();
        silu_in_place(&mut act);
        TimeConditioning {
            timestep_proj: self.time_proj.forward(&act),
            temb,
        }
    }
}

/// `text_embedder`: Linear(text_dim → D) – GELU(tanh) – Linear(D → D), over every token,
/// zero-padded ones included (they become a constant non-zero vector, spec §1.3 step 4).
#[derive(Clone, Debug)]
pub struct TextEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TextEmbedding {
    pub fn load(f: &Fetch<'_>, cfg: &TransformerConfig) -> Result<Self, WanError> {
        let d = cfg.inner_dim();
        Ok(Self {
            linear_1: f.linear("condition_embedder.text_embedder.linear_1", cfg.text_dim, d)?,
            linear_2: f.linear("condition_embedder.text_embedder.linear_2", d, d)?,
        })
    }

    /// `ctx: [N, text_dim]` → `[N, D]`.
    pub fn forward(&self, ctx: &[f32]) -> Vec<f32> {
        let mut h = self.linear_1.forward(ctx);
        gelu_tanh_in_place(&mut h);
        self.linear_2.forward(&h)
    }
}

/// `condition_embedder.image_embedder` (`WanImageEmbedding`): an optional learned position
/// embedding (first-and-last-frame), then LayerNorm(image_dim) – Linear(image_dim → image_dim) –
/// GELU (exact) – Linear(image_dim → D) – LayerNorm(D), both norms affine with eps 1e-5
/// (`FP32LayerNorm`'s default).
#[derive(Clone, Debug)]
pub struct ImageEmbedding {
    image_dim: usize,
    pos_embed: Option<Vec<f32>>,
    norm1: (Vec<f32>, Vec<f32>),
    ff_in: Linear,
    ff_out: Linear,
    norm2: (Vec<f32>, Vec<f32>),
}

/// `FP32LayerNorm`'s epsilon (torch's LayerNorm default), not the transformer's.
const IMAGE_NORM_EPS: f64 = 1e-5;

impl ImageEmbedding {
    /// `None` for a text-to-video model.
    pub fn load(f: &Fetch<'_>, cfg: &TransformerConfig) -> Result<Option<Self>, WanError> {
        let Some(i) = cfg.image_dim else { return Ok(None) };
        let d = cfg.inner_dim();
        let p = "condition_embedder.image_embedder";
        let norm = |name: &str, n: usize| -> Result<(Vec<f32>, Vec<f32>), WanError> {
            Ok((
                f.get(&format!("{p}.{name}.weight"), &[n])?,
                f.get(&format!("{p}.{name}.bias"), &[n])?,
            ))
        };
        Ok(Some(Self {
            image_dim: i,
            pos_embed: match cfg.pos_embed_seq_len {
                Some(n) => Some(f.get(&format!("{p}.pos_embed"), &[1, n, i])?),
                None => None,
            },
            norm1: norm("norm1", i)?,
            ff_in: f.linear(&format!("{p}.ff.net.0.proj"), i, i)?,
            ff_out: f.linear(&format!("{p}.ff.net.2"), i, d)?,
            norm2: norm("norm2", d)?,
        }))
    }

    /// `img: [N, image_dim]` (first-and-last-frame: both images' tokens, first image first) →
    /// `[N, D]`.
    pub fn forward(&self, img: &[f32]) -> Result<Vec<f32>, WanError> {
        let i = self.image_dim;
        if img.is_empty() || !img.len().is_multiple_of(i) {
            return Err(WanError::Input(format!(
                "image embeddings of {} values are not N x image_dim {i} with N > 0",
                img.len()
            )));
        }
        let mut x = img.to_vec();
        if let Some(pos) = &self.pos_embed {
            if pos.len() != x.len() {
                return Err(WanError::Input(format!(
                    "image embeddings have {} tokens; this first-and-last-frame model takes {} (two images)",
                    x.len() / i,
                    pos.len() / i
                )));
            }
            for (v, p) in x.iter_mut().zip(pos) {
                *v += p;
            }
        }
        let mut n = vec![0.0f32; x.len()];
        layer_norm(&x, i, IMAGE_NORM_EPS, Some((&self.norm1.0, &self.norm1.1)), &mut n);
        let mut h = self.ff_in.forward(&n);
        gelu_erf_in_place(&mut h);
        let y = self.ff_out.forward(&h);
        let d = y.len() / (x.len() / i);
        let mut out = vec![0.0f32; y.len()];
        layer_norm(&y, d, IMAGE_NORM_EPS, Some((&self.norm2.0, &self.norm2.1)), &mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoid_is_cos_first_and_starts_at_frequency_one() {
        let e = timestep_sinusoid(3.0, 8);
        assert_eq!(e.len(), 8);
        assert_eq!(e[0], 3.0f32.cos());
        assert_eq!(e[4], 3.0f32.sin());
        // freq_1 = exp(−ln(10000)/4) = 0.1.
        assert!((e[1] - (0.3f32).cos()).abs() < 1e-6);
    }

    #[test]
    fn unpatchify_inverts_the_patch_gather() {
        // With an identity projection, unpatchify(patchify(x)) == x (C_out = C, D = C·pt·ph·pw).
        let cfg = TransformerConfig {
            patch_size: [1, 2, 2],
            in_channels: 3,
            ..TransformerConfig::default()
        };
        let grid = TokenGrid::new(&cfg, 2, 4, 6).expect("grid");
        let (c, n) = (3, 3 * 2 * 4 * 6);
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        // Patch order (c, kh, kw) → unpatchify order ((kh, kw), c): a permutation matrix.
        let in_f = c * 4;
        let mut weight = vec![0.0f32; in_f * in_f];
        for ch in 0..c {
            for k in 0..4 {
                weight[(k * c + ch) * in_f + ch * 4 + k] = 1.0;
            }
        }
        let pe = PatchEmbedding {
            proj: Linear {
                weight,
                bias: vec![0.0; in_f],
                in_f,
                out_f: in_f,
            },
            patch: [1, 2, 2],
            channels: c,
        };
        let y = unpatchify(&pe.forward(&x, grid), grid, [1, 2, 2], c);
        assert_eq!(y, x);
        assert!(TokenGrid::new(&cfg, 2, 5, 6).is_err());
    }
}
