//! On-disk cache of compiled modules, keyed by (source and header text, NVRTC options,
//! architecture, NVRTC version), so a worker pays the NVRTC compile once per kernel version.
//! Location: `$LONGSHOT_KERNEL_CACHE`, else `~/.cache/longshot/kernels`. Entries are written to
//! a temporary name and renamed, so concurrent workers never read a half-written file; an
//! unreadable entry is recompiled, never trusted.

use super::error::CudaError;
use super::nvrtc::{self, ModuleImage};
use super::probe;
use super::sources::{KernelSource, HEADERS};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct KernelCache {
    dir: PathBuf,
}

impl KernelCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache at `$LONGSHOT_KERNEL_CACHE` or `~/.cache/longshot/kernels` (a temporary
    /// directory when neither is known).
    pub fn from_env() -> Self {
        if let Some(d) = std::env::var_os("LONGSHOT_KERNEL_CACHE").filter(|d| !d.is_empty()) {
            return Self::new(d);
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => Self::new(Path::new(&home).join(".cache/longshot/kernels")),
            None => Self::new(std::env::temp_dir().join("longshot-kernels")),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry path for `source` compiled for `arch` (the key is hashed into the name).
    pub fn entry_path(&self, source: &KernelSource, arch: &str) -> Result<PathBuf, CudaError> {
        let (major, minor) = probe::nvrtc_version()?;
        let mut h = Fnv64::new();
        h.write(source.text.as_bytes());
        for (name, text) in HEADERS {
            h.write(name.as_bytes());
            h.write(text.as_bytes());
        }
        for o in nvrtc::options_for(arch) {
            h.write(o.as_bytes());
        }
        h.write(format!("nvrtc {major}.{minor}").as_bytes());
        let stem = source.file.trim_end_matches(".cu");
        let ext = if arch.starts_with("sm_") { "cubin" } else { "ptx" };
        Ok(self.dir.join(format!("{stem}-{arch}-{:016x}.{ext}", h.finish())))
    }

    /// The cached image, or a fresh compile stored for next time.
    pub fn get_or_compile(&self, source: &KernelSource, arch: &str) -> Result<ModuleImage, CudaError> {
        nvrtc::check_arch(arch)?;
        let path = self.entry_path(source, arch)?;
        if let Ok(bytes) = std::fs::read(&path) {
            if !bytes.is_empty() {
                return Ok(if arch.starts_with("sm_") {
                    ModuleImage::Cubin(bytes)
                } else {
                    ModuleImage::Ptx(String::from_utf8_lossy(&bytes).into_owned())
                });
            }
        }
        let image = nvrtc::compile(source, arch)?;
        let bytes: &[u8] = match &image {
            ModuleImage::Cubin(b) => b,
            ModuleImage::Ptx(s) => s.as_bytes(),
        };
        self.store(&path, bytes)?;
        Ok(image)
    }

    fn store(&self, path: &Path, bytes: &[u8]) -> Result<(), CudaError> {
        let err = |p: &Path| {
            let path = p.display().to_string();
            move |source| CudaError::Cache { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(err(&self.dir))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(err(path))
    }
}

/// FNV-1a, 64-bit: a hash whose value is fixed by its definition (std's `DefaultHasher` may
/// change between Rust releases, which would silently orphan or, worse, alias cache entries).
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    /// Hashes `bytes` followed by their length, so ("ab", "c") and ("a", "bc") differ.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().chain(&(bytes.len() as u64).to_le_bytes()) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
