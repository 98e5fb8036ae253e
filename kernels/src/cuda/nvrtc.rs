//! Compiling one `.cu` source with NVRTC for one architecture, through cudarc's raw NVRTC
//! bindings (its safe wrapper unwraps internally and cannot return CUBIN). `sm_XX` yields CUBIN
//! (ptxas has run, so register and resource errors surface here too), `compute_XX` yields PTX.

use super::error::CudaError;
use super::probe;
use super::sources::{KernelSource, COMPILE_OPTIONS, HEADERS};
use cudarc::nvrtc::sys::{self, nvrtcProgram, nvrtcResult};
use std::ffi::{c_char, CStr, CString};

/// A compiled module image, ready for `cuModuleLoadData`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleImage {
    /// Device code for a real architecture (`sm_XX`).
    Cubin(Vec<u8>),
    /// PTX text for a virtual architecture (`compute_XX`), JIT-compiled by the driver on load.
    Ptx(String),
}

/// Checks an architecture name: `sm_XX` or `compute_XX` with a numeric XX.
pub fn check_arch(arch: &str) -> Result<(), CudaError> {
    let digits = arch.strip_prefix("sm_").or_else(|| arch.strip_prefix("compute_"));
    match digits {
        Some(d) if !d.is_empty() && d.chars().all(|c| c.is_ascii_digit() || c == 'a') => Ok(()),
        _ => Err(CudaError::Nvrtc {
            stage: "checking the architecture",
            message: format!("architecture {arch:?} is not sm_XX or compute_XX"),
        }),
    }
}

/// The full option list for `arch` (what the cache key includes).
pub fn options_for(arch: &str) -> Vec<String> {
    let mut opts = vec![format!("--gpu-architecture={arch}")];
    opts.extend(COMPILE_OPTIONS.iter().map(|s| s.to_string()));
    opts
}

fn nvrtc_error(stage: &'static str, r: nvrtcResult) -> CudaError {
    // SAFETY: nvrtcGetErrorString returns a pointer to a static NUL-terminated string.
    let message = unsafe { CStr::from_ptr(sys::nvrtcGetErrorString(r)) }
        .to_string_lossy()
        .into_owned();
    CudaError::Nvrtc { stage, message }
}

fn check(stage: &'static str, r: nvrtcResult) -> Result<(), CudaError> {
    if r == nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(nvrtc_error(stage, r))
    }
}

/// Owns an nvrtcProgram and destroys it on every path out.
struct Program(nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: self.0 came from a successful nvrtcCreateProgram and is destroyed only here.
        // A failure to free is ignored: there is nothing useful to do with it in a destructor.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.0) };
    }
}

/// Compiles `source` for `arch`. A compile error carries NVRTC's log, which names the file.
pub fn compile(source: &KernelSource, arch: &str) -> Result<ModuleImage, CudaError> {
    check_arch(arch)?;
    probe::nvrtc_version()?; // NoNvrtc instead of cudarc's panic
    let nul = |s: &str, what: &'static str| {
        CString::new(s).map_err(|_| CudaError::Nvrtc {
            stage: what,
            message: "contains a NUL byte".into(),
        })
    };
    let src = nul(source.text, "reading the source")?;
    let name = nul(source.file, "naming the program")?;
    let header_texts = HEADERS
        .iter()
        .map(|(_, t)| nul(t, "reading a header"))
        .collect::<Result<Vec<_>, _>>()?;
    let header_names = HEADERS
        .iter()
        .map(|(n, _)| nul(n, "naming a header"))
        .collect::<Result<Vec<_>, _>>()?;
    let header_ptrs: Vec<*const c_char> = header_texts.iter().map(|c| c.as_ptr()).collect();
    let name_ptrs: Vec<*const c_char> = header_names.iter().map(|c| c.as_ptr()).collect();

    let mut raw: nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer refers to a NUL-terminated CString that outlives the program
    // (`src`, `name`, the header vectors live until the end of this function, after `program`
    // is dropped), and the two header arrays have HEADERS.len() entries.
    let r = unsafe {
        sys::nvrtcCreateProgram(
            &mut raw,
            src.as_ptr(),
            name.as_ptr(),
            HEADERS.len() as i32,
            header_ptrs.as_ptr(),
            name_ptrs.as_ptr(),
        )
    };
    check("creating the program", r)?;
    let program = Program(raw);

    let opts = options_for(arch);
    let opt_c = opts
        .iter()
        .map(|o| nul(o, "passing options"))
        .collect::<Result<Vec<_>, _>>()?;
    let opt_ptrs: Vec<*const c_char> = opt_c.iter().map(|c| c.as_ptr()).collect();
    // SAFETY: `program.0` is a live program; `opt_ptrs` holds opt_ptrs.len() valid C strings.
    let r = unsafe { sys::nvrtcCompileProgram(program.0, opt_ptrs.len() as i32, opt_ptrs.as_ptr()) };
    if r != nvrtcResult::NVRTC_SUCCESS {
        let log = program_log(&program).unwrap_or_else(|e| format!("(no log: {e})"));
        return Err(CudaError::Compile {
            file: source.file.to_string(),
            arch: arch.to_string(),
            log,
        });
    }
    if arch.starts_with("sm_") {
        let mut size = 0usize;
        // SAFETY: live, compiled program; `size` is a valid out-pointer.
        check("sizing the CUBIN", unsafe {
            sys::nvrtcGetCUBINSize(program.0, &mut size)
        })?;
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` has the `size` bytes NVRTC asked for.
        check("reading the CUBIN", unsafe {
            sys::nvrtcGetCUBIN(program.0, buf.as_mut_ptr().cast())
        })?;
        Ok(ModuleImage::Cubin(buf))
    } else {
        let mut size = 0usize;
        // SAFETY: as above, for the PTX.
        check("sizing the PTX", unsafe { sys::nvrtcGetPTXSize(program.0, &mut size) })?;
        let mut buf = vec![0u8; size];
        // SAFETY: as above.
        check("reading the PTX", unsafe {
            sys::nvrtcGetPTX(program.0, buf.as_mut_ptr().cast())
        })?;
        let text = CStr::from_bytes_until_nul(&buf).map(|c| c.to_string_lossy().into_owned());
        Ok(ModuleImage::Ptx(
            text.unwrap_or_else(|_| String::from_utf8_lossy(&buf).into_owned()),
        ))
    }
}

fn program_log(program: &Program) -> Result<String, CudaError> {
    let mut size = 0usize;
    // SAFETY: live program; valid out-pointer.
    check("sizing the log", unsafe {
        sys::nvrtcGetProgramLogSize(program.0, &mut size)
    })?;
    let mut buf = vec![0u8; size.max(1)];
    // SAFETY: `buf` has at least the `size` bytes NVRTC asked for.
    check("reading the log", unsafe {
        sys::nvrtcGetProgramLog(program.0, buf.as_mut_ptr().cast())
    })?;
    let log = CStr::from_bytes_until_nul(&buf).map(|c| c.to_string_lossy().into_owned());
    Ok(log.unwrap_or_else(|_| String::from_utf8_lossy(&buf).into_owned()))
}
