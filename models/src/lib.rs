//! Longshot's models: implementations of the `Denoiser` / `FrameDecoder` traits of
//! `longshot-core`.
//!
//! Layout:
//! - [`procedural`]: the procedural reference model (an exact denoiser for a Gaussian prior
//!   derived from the prompt; no weights, no GPU).
//! - [`wan`]: Wan2.1 text-to-video (CPU reference in f32), served by workers from a pipeline directory.
//! - [`standin`]: a fixed-cost stand-in for a GPU model (its forward waits a set time), for
//!   measuring the cluster's own costs without GPUs; served only when a worker asks for it.
//! - [`served`]: [`ServedModel`], a model as a worker serves it (both families implement it).
//! - [`builtin_models`] / [`available_models`]: the models every worker serves, and the registry
//!   the CLI and the coordinator list models from.
#![forbid(unsafe_code)]

pub mod procedural;
pub mod served;
pub mod standin;
pub mod wan;

pub use procedural::ProceduralModel;
pub use served::{ConditioningError, ServedModel, ServedModelError, TextConditioning};
pub use standin::StandinModel;

use longshot_core::denoiser::ModelInfo;
use std::sync::Arc;

/// The models every worker serves with no weights (the procedural model). Wan2.1 pipelines are
/// added per worker from a directory (`longshot worker --model DIR`, [`wan::WanModel`]).
pub fn builtin_models() -> Vec<Arc<dyn ServedModel>> {
    vec![Arc::new(ProceduralModel::new())]
}

/// What [`builtin_models`] advertise.
pub fn available_models() -> Vec<ModelInfo> {
    builtin_models().iter().map(|m| m.info()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_lists_the_procedural_model_with_wan_geometry() {
        let models = available_models();
        assert_eq!(models.len(), 1);
        let m = &models[0];
        assert_eq!(m.name, ProceduralModel::NAME);
        assert_eq!(
            (
                m.window_frames,
                m.latent_channels,
                m.temporal_compression,
                m.spatial_compression,
                m.default_overlap
            ),
            (21, 16, 4, 8, 5)
        );
        assert_eq!(m.output_frames_for(21), 81);
    }
}
