//! On-disk cache of compiled modules, keyed by (source and header text, NVRTC options,
//! architecture, NVRTC version), so a worker pays the NVRTC compile once per kernel version.
//! Location: `$LONGSHOT_KERNEL_CACHE`, else `~/.cache/longshot/kernels`.
//!
//! An entry is trusted only if it proves itself: each file is a short text header followed by the
//! image, and the header names the whole key (source hash, options, NVRTC version, architecture)
//! and the image's length and hash. A file whose key differs, whose length or hash does not match,
//! or which is not an entry at all (an older cache format, a partial copy) is recompiled and
//! replaced, never loaded. A cached image the driver refuses to load is recompiled once and the
//! entry replaced. Writes go to a unique temporary file in the cache directory and are renamed
//! into place, so concurrent workers (processes or threads) never see a torn file.
//!
//! Entry format (`{stem}-{arch}-{key hash}.cubin`, or `.ptx` for `compute_XX`):
//! ```text
//! longshot-kernel-cache 1
//! file denoise_update.cu
//! source fnv64:<16 hex digits>      (the source and every in-memory header)
//! options --gpu-architecture=sm_90 --fmad=false --std=c++17
//! nvrtc 13.0
//! arch sm_90
//! kind cubin
//! length <image bytes>
//! hash fnv64:<16 hex digits>        (the image)
//! end
//! <image bytes>
//! ```

use super::error::CudaError;
use super::nvrtc::{self, ModuleImage};
use super::probe;
use super::sources::{KernelSource, HEADERS};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &str = "longshot-kernel-cache 1\n";
const END: &str = "end\n";
/// A header is a few hundred bytes; a file without `end` in its first 4 KiB is not an entry.
const MAX_HEADER: usize = 4096;

/// Everything that decides the bytes of one compiled module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey {
    /// The source's file name (`denoise_update.cu`).
    pub file: String,
    /// FNV-1a of the source text and every in-memory header (names and texts).
    pub source_hash: u64,
    /// The full NVRTC option list, architecture included.
    pub options: Vec<String>,
    /// NVRTC's `(major, minor)`.
    pub nvrtc: (i32, i32),
    /// `sm_XX` (CUBIN) or `compute_XX` (PTX).
    pub arch: String,
}

impl CacheKey {
    /// The key of `source` for `arch` with the NVRTC that is loaded here.
    pub fn new(source: &KernelSource, arch: &str) -> Result<Self, CudaError> {
        Self::with_nvrtc(source, arch, probe::nvrtc_version()?)
    }

    /// The key of `source` for `arch` and a given NVRTC version (no NVRTC needed).
    pub fn with_nvrtc(source: &KernelSource, arch: &str, nvrtc: (i32, i32)) -> Result<Self, CudaError> {
        nvrtc::check_arch(arch)?;
        let mut h = Fnv64::new();
        h.write(source.text.as_bytes());
        for (name, text) in HEADERS {
            h.write(name.as_bytes());
            h.write(text.as_bytes());
        }
        Ok(Self {
            file: source.file.to_string(),
            source_hash: h.finish(),
            options: nvrtc::options_for(arch),
            nvrtc,
            arch: arch.to_string(),
        })
    }

    fn is_cubin(&self) -> bool {
        self.arch.starts_with("sm_")
    }

    /// The entry's file name: the whole key is hashed into it, so different keys never share a file.
    pub fn file_name(&self) -> String {
        let mut h = Fnv64::new();
        h.write(&self.source_hash.to_le_bytes());
        for o in &self.options {
            h.write(o.as_bytes());
        }
        h.write(format!("nvrtc {}.{}", self.nvrtc.0, self.nvrtc.1).as_bytes());
        let stem = self.file.trim_end_matches(".cu");
        let ext = if self.is_cubin() { "cubin" } else { "ptx" };
        format!("{stem}-{}-{:016x}.{ext}", self.arch, h.finish())
    }

    /// The header lines that name the key (everything before `length`).
    fn key_header(&self) -> String {
        format!(
            "{MAGIC}file {}\nsource fnv64:{:016x}\noptions {}\nnvrtc {}.{}\narch {}\nkind {}\n",
            self.file,
            self.source_hash,
            self.options.join(" "),
            self.nvrtc.0,
            self.nvrtc.1,
            self.arch,
            if self.is_cubin() { "cubin" } else { "ptx" },
        )
    }

    /// The bytes of an entry holding `image` for this key.
    pub fn encode(&self, image: &ModuleImage) -> Vec<u8> {
        let payload = image_bytes(image);
        let mut out = self.key_header().into_bytes();
        out.extend_from_slice(
            format!(
                "length {}\nhash fnv64:{:016x}\n{END}",
                payload.len(),
                payload_hash(payload)
            )
            .as_bytes(),
        );
        out.extend_from_slice(payload);
        out
    }

    /// The image in `bytes` if they are a complete, intact entry for this key.
    pub fn decode(&self, bytes: &[u8]) -> Result<ModuleImage, Rejected> {
        let head = &bytes[..bytes.len().min(MAX_HEADER)];
        if !head.starts_with(MAGIC.as_bytes()) {
            return Err(Rejected::NotAnEntry);
        }
        let end = find(head, format!("\n{END}").as_bytes()).ok_or(Rejected::NotAnEntry)? + 1 + END.len();
        let header = std::str::from_utf8(&bytes[..end]).map_err(|_| Rejected::NotAnEntry)?;
        let key = self.key_header();
        let Some(rest) = header.strip_prefix(key.as_str()) else {
            return Err(Rejected::ForeignKey {
                differs: first_difference(&key, header),
            });
        };
        let mut length = None;
        let mut hash = None;
        for line in rest.lines() {
            if let Some(v) = line.strip_prefix("length ") {
                length = v.parse::<usize>().ok();
            } else if let Some(v) = line.strip_prefix("hash fnv64:") {
                hash = u64::from_str_radix(v, 16).ok();
            }
        }
        let (Some(length), Some(hash)) = (length, hash) else {
            return Err(Rejected::NotAnEntry);
        };
        let payload = &bytes[end..];
        if payload.len() != length {
            return Err(Rejected::Length {
                header: length,
                actual: payload.len(),
            });
        }
        if payload_hash(payload) != hash {
            return Err(Rejected::Hash);
        }
        Ok(if self.is_cubin() {
            ModuleImage::Cubin(payload.to_vec())
        } else {
            // The hash matched, so this is the UTF-8 text that was stored.
            ModuleImage::Ptx(String::from_utf8_lossy(payload).into_owned())
        })
    }
}

/// Why a cache file was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// No file at the entry's path.
    Missing,
    /// The file exists but could not be read.
    Unreadable(String),
    /// No valid header (another format, a partial copy, garbage).
    NotAnEntry,
    /// A valid entry for a different key; `differs` is the first header line that differs.
    ForeignKey { differs: String },
    /// The image is shorter or longer than the header says (a truncated or appended file).
    Length { header: usize, actual: usize },
    /// The image's bytes do not match the header's hash (corruption).
    Hash,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Missing => write!(f, "no entry"),
            Rejected::Unreadable(e) => write!(f, "unreadable: {e}"),
            Rejected::NotAnEntry => write!(f, "not a cache entry (no valid header)"),
            Rejected::ForeignKey { differs } => write!(f, "entry for another key (header line {differs:?})"),
            Rejected::Length { header, actual } => {
                write!(f, "image is {actual} bytes, the header says {header}")
            }
            Rejected::Hash => write!(f, "image hash does not match the header"),
        }
    }
}

/// How [`KernelCache::get_with`] came by its module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// A valid entry, which loaded.
    Hit,
    /// Compiled (and stored) because the entry was missing or rejected.
    Compiled(Rejected),
    /// The entry was valid but failed to load (the error's text): recompiled once, and the entry
    /// replaced by the fresh image, which loaded.
    Reloaded(String),
}

/// A loaded module and how the cache came by it.
#[derive(Debug)]
pub struct Fetched<M> {
    pub module: M,
    pub outcome: CacheOutcome,
}

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

    /// The entry path for `source` compiled for `arch` with the NVRTC loaded here.
    pub fn entry_path(&self, source: &KernelSource, arch: &str) -> Result<PathBuf, CudaError> {
        Ok(self.path_of(&CacheKey::new(source, arch)?))
    }

    pub fn path_of(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(key.file_name())
    }

    /// The cached image, or a fresh compile stored for next time (no load check: see
    /// [`Self::load_or_compile`] for the form the backend uses).
    pub fn get_or_compile(&self, source: &KernelSource, arch: &str) -> Result<ModuleImage, CudaError> {
        Ok(self.load_or_compile(source, arch, |image| Ok(image.clone()))?.module)
    }

    /// `load` applied to the cached image of `source` for `arch`, compiling with NVRTC when the
    /// entry is missing or rejected, and once more when the cached image fails to load.
    pub fn load_or_compile<M>(
        &self,
        source: &KernelSource,
        arch: &str,
        load: impl FnMut(&ModuleImage) -> Result<M, CudaError>,
    ) -> Result<Fetched<M>, CudaError> {
        let key = CacheKey::new(source, arch)?;
        self.get_with(&key, || nvrtc::compile(source, arch), load)
    }

    /// The cache's logic with the compiler and the loader passed in (tests inject failures here).
    /// A fresh image is stored only once it has loaded, so an image the driver refuses is never
    /// cached by this call.
    pub fn get_with<M>(
        &self,
        key: &CacheKey,
        mut compile: impl FnMut() -> Result<ModuleImage, CudaError>,
        mut load: impl FnMut(&ModuleImage) -> Result<M, CudaError>,
    ) -> Result<Fetched<M>, CudaError> {
        let outcome = match self.read(key) {
            Ok(image) => match load(&image) {
                Ok(module) => {
                    return Ok(Fetched {
                        module,
                        outcome: CacheOutcome::Hit,
                    })
                }
                Err(e) => CacheOutcome::Reloaded(e.to_string()),
            },
            Err(rejected) => CacheOutcome::Compiled(rejected),
        };
        let image = compile()?;
        let module = load(&image)?;
        self.store(key, &image)?;
        Ok(Fetched { module, outcome })
    }

    /// The entry for `key`, if it is present and intact.
    pub fn read(&self, key: &CacheKey) -> Result<ModuleImage, Rejected> {
        match std::fs::read(self.path_of(key)) {
            Ok(bytes) => key.decode(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Rejected::Missing),
            Err(e) => Err(Rejected::Unreadable(e.to_string())),
        }
    }

    /// Writes the entry for `key` to a temporary file of its own in the cache directory, flushes
    /// it and renames it over the entry: a reader sees the old file or the new one, never a mix,
    /// whatever other threads and processes are writing.
    pub fn store(&self, key: &CacheKey, image: &ModuleImage) -> Result<PathBuf, CudaError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let err = |p: &Path| {
            let path = p.display().to_string();
            move |source| CudaError::Cache { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(err(&self.dir))?;
        let path = self.path_of(key);
        let bytes = key.encode(image);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // pid + per-process sequence number: unique among live writers; `create_new` refuses a
        // leftover of a dead process that happened to have the same pid, and we try again.
        let mut attempt = 0;
        let (tmp, mut file) = loop {
            let tmp = self.dir.join(format!(
                ".{}.{}-{}-{nanos:08x}.tmp",
                key.file_name(),
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
                Err(e) => return Err(err(&tmp)(e)),
            }
        };
        let written = file
            .write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(err(&tmp))
            .and_then(|()| {
                drop(file);
                std::fs::rename(&tmp, &path).map_err(err(&path))
            });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map(|()| path)
    }
}

fn image_bytes(image: &ModuleImage) -> &[u8] {
    match image {
        ModuleImage::Cubin(b) => b,
        ModuleImage::Ptx(s) => s.as_bytes(),
    }
}

fn payload_hash(payload: &[u8]) -> u64 {
    let mut h = Fnv64::new();
    h.write(payload);
    h.finish()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The first line of `found` that differs from `expected` (for the rejection message).
fn first_difference(expected: &str, found: &str) -> String {
    let mut want = expected.lines();
    for line in found.lines() {
        if want.next() != Some(line) {
            return line.to_string();
        }
    }
    String::new()
}

/// FNV-1a, 64-bit: a hash whose value is fixed by its definition (std's `DefaultHasher` may
/// change between Rust releases, which would silently orphan or, worse, alias cache entries).
/// It guards against accidents (truncation, bit rot, a copied file), not against an attacker who
/// can write to the cache directory.
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
