//! The prompt library: named prompts in one YAML file, `prompts.yaml` under
//! `$XDG_CONFIG_HOME/longshot/` (else `~/.config/longshot/`), or the file `--library` or
//! `LONGSHOT_PROMPTS` names.
//!
//! ```yaml
//! prompts:
//!   fox-ridge:
//!     prompt: a red fox trots along a ridge, wide aerial shot, soft golden light
//!     negative_prompt: people        # optional
//!     subject: a red fox             # the parts, when it was saved from them
//!     action: trots along a ridge
//! ```

use anyhow::{anyhow, bail, Context, Result};
use longshot_core::prompt_parts::PromptParts;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One saved prompt (its parts flattened beside it, so unknown keys are not refused here).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedPrompt {
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    #[serde(flatten)]
    pub parts: PromptParts,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LibraryFile {
    #[serde(default)]
    prompts: BTreeMap<String, SavedPrompt>,
}

/// The library file: `flag`, else `LONGSHOT_PROMPTS`, else the config directory's.
pub fn library_path(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("LONGSHOT_PROMPTS").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| {
            anyhow!("no prompt library: set HOME, XDG_CONFIG_HOME or LONGSHOT_PROMPTS, or pass --library")
        })?;
    Ok(config.join("longshot").join("prompts.yaml"))
}

/// The library at `path`; an absent file is an empty library.
pub fn load(path: &Path) -> Result<BTreeMap<String, SavedPrompt>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("prompt library {}", path.display())),
    };
    let file: LibraryFile =
        serde_yaml_ng::from_str(&text).map_err(|e| anyhow!("prompt library {}: {e}", path.display()))?;
    Ok(file.prompts)
}

/// Saved prompt `name` from the library at `path`.
pub fn get(path: &Path, name: &str) -> Result<SavedPrompt> {
    let mut all = load(path)?;
    all.remove(name).ok_or_else(|| {
        let names: Vec<&String> = all.keys().collect();
        anyhow!(
            "no prompt {name:?} in {} (it has: {})",
            path.display(),
            if names.is_empty() {
                "none; save one with `longshot prompt save`".to_string()
            } else {
                names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
            }
        )
    })
}

/// Names are what a shell and a YAML key take without quoting.
fn check_name(name: &str) -> Result<()> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!("prompt name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// Saves `prompt` as `name` (an existing one only with `replace`), writing the file atomically.
pub fn save(path: &Path, name: &str, prompt: SavedPrompt, replace: bool) -> Result<()> {
    check_name(name)?;
    let mut all = load(path)?;
    if all.contains_key(name) && !replace {
        bail!(
            "prompt {name:?} is already in {}: pass --force to replace it",
            path.display()
        );
    }
    all.insert(name.to_string(), prompt);
    let text = serde_yaml_ng::to_string(&LibraryFile { prompts: all })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
