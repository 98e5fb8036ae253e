//! `StagedOutput`: write to `<name>.partial`, rename onto `<name>` only when complete.
//!
//! A render node may die mid-clip; downstream tools (and people) must never mistake a
//! truncated MP4 without its `moov` box for a finished file.

use std::path::{Path, PathBuf};

use crate::MediaError;

/// A target path plus the `.partial` sibling that is written first.
#[derive(Debug)]
pub(crate) struct StagedOutput {
    partial: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagedOutput {
    /// Plans `target`; fails early if its directory does not exist.
    pub(crate) fn new(target: &Path) -> Result<Self, MediaError> {
        let Some(file_name) = target.file_name() else {
            return Err(MediaError::io(
                format!("cannot write {}", target.display()),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
            ));
        };
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(MediaError::io(
                format!("cannot write {}", target.display()),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("directory {} does not exist", parent.display()),
                ),
            ));
        }
        let mut partial_name = file_name.to_os_string();
        partial_name.push(".partial");
        Ok(StagedOutput {
            partial: parent.join(partial_name),
            target: target.to_path_buf(),
            committed: false,
        })
    }

    /// Where the writer should put bytes until `commit`.
    pub(crate) fn partial(&self) -> &Path {
        &self.partial
    }

    pub(crate) fn target(&self) -> &Path {
        &self.target
    }

    /// Renames the finished partial file onto the target; returns its size in bytes.
    pub(crate) fn commit(&mut self) -> Result<u64, MediaError> {
        std::fs::rename(&self.partial, &self.target).map_err(|e| {
            MediaError::io(
                format!("cannot rename {} to {}", self.partial.display(), self.target.display()),
                e,
            )
        })?;
        self.committed = true;
        let meta = std::fs::metadata(&self.target)
            .map_err(|e| MediaError::io(format!("cannot stat {}", self.target.display()), e))?;
        Ok(meta.len())
    }
}

impl Drop for StagedOutput {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: an abandoned partial file is garbage, and there is no caller to tell.
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
