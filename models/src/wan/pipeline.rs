//! A diffusers pipeline directory (`model_index.json` and one sub-directory per component) and
//! the scheduler's `scheduler_config.json`: what a Wan2.1 checkpoint holds besides its models.

use crate::wan::error::WanError;
use crate::wan::transformer::config::TransformerConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which scheduler a pipeline ships.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchedulerKind {
    UniPc,
    FlowMatchEuler,
    Other(String),
}

/// The fields of `scheduler/scheduler_config.json` the port needs (spec §4.2). Unknown fields are
/// ignored; missing ones take diffusers' defaults where the port relies on them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name")]
    pub class_name: String,
    #[serde(default = "default_train_timesteps")]
    pub num_train_timesteps: usize,
    /// UniPC's shift.
    #[serde(default)]
    pub flow_shift: Option<f64>,
    /// FlowMatchEuler's shift.
    #[serde(default)]
    pub shift: Option<f64>,
    #[serde(default)]
    pub use_flow_sigmas: bool,
    #[serde(default)]
    pub prediction_type: Option<String>,
    #[serde(default)]
    pub solver_order: Option<usize>,
    #[serde(default)]
    pub solver_type: Option<String>,
    #[serde(default)]
    pub predict_x0: Option<bool>,
    #[serde(default)]
    pub lower_order_final: Option<bool>,
    #[serde(default)]
    pub final_sigmas_type: Option<String>,
}

fn default_train_timesteps() -> usize {
    1000
}

impl SchedulerConfig {
    pub fn from_file(path: &Path) -> Result<Self, WanError> {
        crate::wan::error::read_json(path)
    }

    pub fn kind(&self) -> SchedulerKind {
        match self.class_name.as_str() {
            "UniPCMultistepScheduler" => SchedulerKind::UniPc,
            "FlowMatchEulerDiscreteScheduler" => SchedulerKind::FlowMatchEuler,
            other => SchedulerKind::Other(other.to_string()),
        }
    }

    /// The flow shift, whichever field this scheduler keeps it in.
    pub fn effective_shift(&self) -> Option<f64> {
        match self.kind() {
            SchedulerKind::UniPc => self.flow_shift,
            SchedulerKind::FlowMatchEuler => self.shift.or(Some(1.0)),
            SchedulerKind::Other(_) => self.flow_shift.or(self.shift),
        }
    }
}

/// A diffusers pipeline directory: `model_index.json` plus one sub-directory per component.
#[derive(Clone, Debug)]
pub struct PipelineDir {
    root: PathBuf,
    class_name: String,
    /// Component name → `(library, class)`, or `None` for a `[null, null]` entry.
    components: BTreeMap<String, Option<(String, String)>>,
}

impl PipelineDir {
    /// Reads `root/model_index.json`.
    pub fn open(root: &Path) -> Result<Self, WanError> {
        let path = root.join("model_index.json");
        let map: BTreeMap<String, serde_json::Value> = crate::wan::error::read_json(&path)?;
        let class_name = map
            .get("_class_name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        // Components are the `[library, class]` pairs; other keys (`_diffusers_version`, Wan2.2's
        // `boundary_ratio`, …) are settings.
        let mut components = BTreeMap::new();
        for (k, v) in &map {
            if let Some([lib, class]) = v.as_array().map(Vec::as_slice) {
                let entry = match (lib.as_str(), class.as_str()) {
                    (Some(l), Some(c)) => Some((l.to_string(), c.to_string())),
                    _ => None,
                };
                components.insert(k.clone(), entry);
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            class_name,
            components,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `_class_name`, e.g. `WanPipeline`.
    pub fn class_name(&self) -> &str {
        &self.class_name
    }

    /// `(library, class)` of a component, `None` if absent or null.
    pub fn component(&self, name: &str) -> Option<&(String, String)> {
        self.components.get(name).and_then(Option::as_ref)
    }

    /// The directory of a component the index lists; an error if it is null, absent or missing
    /// on disk.
    pub fn component_dir(&self, name: &str) -> Result<PathBuf, WanError> {
        let index = self.root.join("model_index.json");
        if self.component(name).is_none() {
            return Err(WanError::config(
                index,
                format!("the pipeline has no '{name}' component"),
            ));
        }
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(WanError::config(
                dir,
                format!("component '{name}' is listed in model_index.json but its directory is missing"),
            ));
        }
        Ok(dir)
    }

    pub fn transformer_config(&self) -> Result<TransformerConfig, WanError> {
        TransformerConfig::from_file(&self.component_dir("transformer")?.join("config.json"))
    }

    pub fn scheduler_config(&self) -> Result<SchedulerConfig, WanError> {
        SchedulerConfig::from_file(&self.component_dir("scheduler")?.join("scheduler_config.json"))
    }
}
