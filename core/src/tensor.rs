//! The latent tensor: one batch item, frame-major `[frames, channels, height, width]` in f32.
//!
//! Frame-major because everything the loop moves between windows and workers is a run of whole
//! frames (overlaps, owned frames); each frame is one contiguous slice. Models with a channel-major
//! layout (Wan's `[B,C,T,H,W]`) convert at their edge.
//!
//! Storage is an enum so that a device-resident variant (a CUDA buffer with its stream) can be added
//! without changing the loop: ops dispatch on the storage kind; only `to_host` copies.

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Shape of a latent tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LatentShape {
    pub frames: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl LatentShape {
    pub fn new(frames: usize, channels: usize, height: usize, width: usize) -> Self {
        Self {
            frames,
            channels,
            height,
            width,
        }
    }
    /// Values in one frame (`channels·height·width`).
    pub fn frame_len(&self) -> usize {
        self.channels * self.height * self.width
    }
    pub fn len(&self) -> usize {
        self.frames * self.frame_len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The same shape with another frame count.
    pub fn with_frames(&self, frames: usize) -> Self {
        Self { frames, ..*self }
    }
}

/// Where a tensor's values live. Only host memory exists today; the CUDA backend adds a variant.
#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    Cpu(Vec<f32>),
}

/// A latent video tensor (see the module doc for the layout).
#[derive(Clone, Debug, PartialEq)]
pub struct Latents {
    shape: LatentShape,
    storage: Storage,
}

impl Latents {
    pub fn zeros(shape: LatentShape) -> Self {
        Self {
            shape,
            storage: Storage::Cpu(vec![0.0; shape.len()]),
        }
    }

    /// Wraps host data; `None` if the length does not match the shape.
    pub fn from_vec(shape: LatentShape, data: Vec<f32>) -> Option<Self> {
        (data.len() == shape.len()).then_some(Self {
            shape,
            storage: Storage::Cpu(data),
        })
    }

    pub fn shape(&self) -> LatentShape {
        self.shape
    }

    /// Host view of all values.
    pub fn as_slice(&self) -> &[f32] {
        match &self.storage {
            Storage::Cpu(v) => v,
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Cpu(v) => v,
        }
    }

    pub fn into_vec(self) -> Vec<f32> {
        match self.storage {
            Storage::Cpu(v) => v,
        }
    }

    /// Host view of a run of whole frames.
    pub fn frames(&self, range: Range<usize>) -> &[f32] {
        let fl = self.shape.frame_len();
        &self.as_slice()[range.start * fl..range.end * fl]
    }

    pub fn frames_mut(&mut self, range: Range<usize>) -> &mut [f32] {
        let fl = self.shape.frame_len();
        &mut self.as_mut_slice()[range.start * fl..range.end * fl]
    }

    /// A new tensor holding a copy of a run of frames.
    pub fn slice_frames(&self, range: Range<usize>) -> Latents {
        let shape = self.shape.with_frames(range.len());
        Latents {
            shape,
            storage: Storage::Cpu(self.frames(range).to_vec()),
        }
    }

    /// Overwrites frames starting at `start` with `src` (whole frames).
    pub fn write_frames(&mut self, start: usize, src: &[f32]) {
        let fl = self.shape.frame_len();
        debug_assert_eq!(src.len() % fl, 0);
        self.as_mut_slice()[start * fl..start * fl + src.len()].copy_from_slice(src);
    }
}
