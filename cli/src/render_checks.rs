//! `longshot render`'s checks before anything starts: the job spec (core's one validation, and
//! the built-in model's where the model is one) and every output path, so a bad flag or path fails
//! at once, naming it, instead of after a cluster started and a render ran.

use anyhow::{bail, Result};
use longshot_core::denoiser::ModelInfo;
use longshot_core::job::{FieldError, JobSpec, OutputKind};
use std::path::{Path, PathBuf};

/// Validates `spec`, and resolves it against the model when it is a built-in one (a pipeline
/// directory's own limits are checked by the coordinator once its workers serve it).
/// `extra`: the model of a pipeline directory the render serves, besides the built-in ones.
pub fn check_spec(spec: &JobSpec, extra: Option<&ModelInfo>) -> Result<()> {
    let valid = spec.clone().validated().map_err(invalid)?;
    if let Some(model) = longshot_models::available_models()
        .into_iter()
        .chain(extra.cloned())
        .find(|m| m.name == spec.model)
    {
        valid.resolve(&model, spec.seed.unwrap_or(0)).map_err(invalid)?;
    }
    Ok(())
}

fn invalid(errors: Vec<FieldError>) -> anyhow::Error {
    let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    anyhow::anyhow!("invalid job: {}", list.join("; "))
}

/// Checks that every output can be written: its directory exists and takes new files, a file
/// output does not name a directory, a PNG output does not name a file.
pub fn check_targets(targets: &[(OutputKind, PathBuf)]) -> Result<()> {
    for (kind, path) in targets {
        let png = *kind == OutputKind::Png;
        if path.is_dir() && !png {
            bail!(
                "output {} is a directory; a {kind} output is a file (or use a directory for png)",
                path.display()
            );
        }
        if path.exists() && !path.is_dir() && png {
            bail!("output {} is a file; png frames go into a directory", path.display());
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            bail!(
                "cannot write {}: directory {} does not exist",
                path.display(),
                parent.display()
            );
        }
        writable(&parent).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Whether `dir` takes a new file (tried, not guessed from permission bits: root, read-only
/// mounts and ACLs all decide).
fn writable(dir: &Path) -> Result<()> {
    match tempfile::Builder::new().prefix(".longshot-probe-").tempfile_in(dir) {
        Ok(_) => Ok(()),
        Err(e) => bail!("directory {} does not take new files ({e})", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked_before_rendering() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(check_targets(&[
            (OutputKind::Mp4, d.join("a.mp4")),
            (OutputKind::Png, d.join("a.frames"))
        ])
        .is_ok());
        let e = check_targets(&[(OutputKind::Mp4, d.join("no/such/a.mp4"))]).unwrap_err();
        assert!(e.to_string().contains("no/such does not exist"), "{e}");
        let e = check_targets(&[(OutputKind::Mp4, d.to_path_buf())]).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        std::fs::write(d.join("f"), b"x").unwrap();
        let e = check_targets(&[(OutputKind::Png, d.join("f"))]).unwrap_err();
        assert!(e.to_string().contains("is a file"), "{e}");
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 1, "the probe file is gone");
    }
}
