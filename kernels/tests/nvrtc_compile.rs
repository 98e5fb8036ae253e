//! Every `.cu` source compiles with NVRTC for sm_90 (the H100 of the device machine), with the
//! options the backend uses; an architecture-specific source (attention_wgmma.cu) for sm_90a,
//! the target the backend gives it there, and never for plain sm_90. Needs libnvrtc but no GPU; a missing NVRTC is a failure, not a skip.
//! Run: `cargo test -p longshot-kernels --features cuda --test nvrtc_compile` with the directory
//! of libnvrtc.so.13 on LD_LIBRARY_PATH (scripts/test.sh installs it).

use longshot_kernels::cuda::nvrtc::{self, ModuleImage};
use longshot_kernels::cuda::sources::{self, KernelSource};
use longshot_kernels::cuda::{probe, CacheKey, CacheOutcome, CudaError, KernelCache};

const ARCH: &str = "sm_90";

fn require_nvrtc() -> (i32, i32) {
    match probe::nvrtc_version() {
        Ok(v) => v,
        Err(e) => panic!(
            "{e}\nto install it: python3 -m pip install --target .nvrtc 'nvidia-cuda-nvrtc==13.0.*' \
             && export LD_LIBRARY_PATH=$PWD/.nvrtc/nvidia/cu13/lib:$LD_LIBRARY_PATH"
        ),
    }
}

#[test]
fn every_kernel_source_compiles_for_sm_90() {
    let (major, minor) = require_nvrtc();
    eprintln!("NVRTC {major}.{minor}");
    let mut failures = Vec::new();
    for source in sources::ALL {
        let arch = source.arch_for(ARCH);
        match nvrtc::compile(source, &arch) {
            Ok(ModuleImage::Cubin(bytes)) => {
                assert!(
                    bytes.starts_with(b"\x7fELF"),
                    "{}: the CUBIN is not an ELF image",
                    source.file
                );
                eprintln!("{:<28} {:>8} bytes of {arch} CUBIN", source.file, bytes.len());
            }
            Ok(ModuleImage::Ptx(_)) => failures.push(format!("{}: expected CUBIN for {arch}, got PTX", source.file)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "{} source(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_source_is_listed_once() {
    // The packed device harness has no source tree: it points here at its copy of the sources.
    let dir = match std::env::var_os("LONGSHOT_KERNEL_SOURCES") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda"),
    };
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = sources::ALL.iter().map(|s| s.file.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "kernels/cuda/*.cu and sources::ALL disagree");
}

#[test]
fn a_compile_error_names_the_file_and_keeps_the_log() {
    require_nvrtc();
    let broken = KernelSource {
        file: "broken_example.cu",
        text: "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }",
        arch_specific: false,
    };
    match nvrtc::compile(&broken, ARCH) {
        Err(CudaError::Compile { file, arch, log }) => {
            assert_eq!((file.as_str(), arch.as_str()), ("broken_example.cu", ARCH));
            assert!(
                log.contains("broken_example.cu") && log.contains("undefined_name"),
                "log: {log}"
            );
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
fn the_cache_stores_once_and_serves_the_same_image() {
    require_nvrtc();
    let dir = std::env::temp_dir().join(format!("longshot-kernel-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = KernelCache::new(&dir);
    let source = &sources::DENOISE_UPDATE;
    let path = cache.entry_path(source, ARCH).expect("cache key");
    assert!(path.starts_with(&dir) && !path.exists());
    let first = cache.get_or_compile(source, ARCH).expect("compile");
    let stored = std::fs::read(&path).expect("the entry was written");
    let second = cache.get_or_compile(source, ARCH).expect("cached");
    assert_eq!(first, second);
    // The entry is a header naming the key, then the image.
    let key = CacheKey::new(source, ARCH).expect("cache key");
    assert_eq!(key.decode(&stored), Ok(first.clone()));
    // A different architecture is a different entry; a PTX target gives PTX text.
    let ptx_path = cache.entry_path(source, "compute_90").expect("cache key");
    assert_ne!(ptx_path, path);
    match cache.get_or_compile(source, "compute_90").expect("compile PTX") {
        ModuleImage::Ptx(text) => assert!(text.contains(".entry cfg_combine_f32"), "PTX without the kernel"),
        other => panic!("expected PTX, got {other:?}"),
    }
    assert!(matches!(
        cache.get_or_compile(source, "sm90"),
        Err(CudaError::Nvrtc { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_truncated_or_corrupt_entry_of_real_nvrtc_output_is_recompiled() {
    require_nvrtc();
    let dir = std::env::temp_dir().join(format!("longshot-kernel-cache-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = KernelCache::new(&dir);
    let source = &sources::TRANSFORMER_ROPE;
    let path = cache.entry_path(source, ARCH).expect("cache key");
    let first = cache.get_or_compile(source, ARCH).expect("compile");
    let good = std::fs::read(&path).expect("the entry was written");
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    for (what, bytes) in [("truncated", good[..good.len() / 2].to_vec()), ("corrupt", flipped)] {
        std::fs::write(&path, bytes).expect("damage the entry");
        let fetched = cache
            .load_or_compile(source, ARCH, |image| Ok(image.clone()))
            .expect("recompiled");
        assert!(
            matches!(fetched.outcome, CacheOutcome::Compiled(_)),
            "{what}: {:?}",
            fetched.outcome
        );
        match &fetched.module {
            ModuleImage::Cubin(b) => assert!(b.starts_with(b"\x7fELF"), "{what}: not an ELF image"),
            other => panic!("{what}: expected CUBIN, got {other:?}"),
        }
        let key = CacheKey::new(source, ARCH).expect("cache key");
        assert_eq!(cache.read(&key).expect("a valid entry again"), fetched.module, "{what}");
        let again = cache
            .load_or_compile(source, ARCH, |image| Ok(image.clone()))
            .expect("hit");
        assert_eq!(again.outcome, CacheOutcome::Hit, "{what}");
    }
    // NVRTC is deterministic: the recompiled image is the first one.
    assert_eq!(cache.get_or_compile(source, ARCH).expect("hit"), first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_attention_kernels_are_built_from_tensor_core_instructions() {
    require_nvrtc();
    let ptx = match nvrtc::compile(&sources::ATTENTION_FLASH, "compute_90").expect("compile PTX") {
        ModuleImage::Ptx(text) => text,
        other => panic!("expected PTX, got {other:?}"),
    };
    for d in longshot_kernels::tensor_core::ATTN_HEAD_DIMS {
        for bias in [false, true] {
            let name = longshot_kernels::tensor_core::attention_kernel_name(d, bias).expect("instantiated");
            assert!(ptx.contains(&format!(".entry {name}(")), "no entry {name}");
        }
    }
    for instruction in [
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
        "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16",
        "cp.async.cg.shared.global",
        "ex2.approx.ftz.f32",
    ] {
        assert!(
            ptx.contains(instruction),
            "attention_flash.cu's PTX has no {instruction}"
        );
    }
}

#[test]
fn the_wgmma_attention_compiles_for_sm_90a_only_and_is_built_from_wgmma_and_tma() {
    require_nvrtc();
    let source = &sources::ATTENTION_WGMMA;
    let specific: Vec<&str> = sources::ALL
        .iter()
        .filter(|s| s.arch_specific)
        .map(|s| s.file)
        .collect();
    assert_eq!(specific, ["attention_wgmma.cu"]);
    assert_eq!(source.arch_for("sm_90"), "sm_90a");
    assert_eq!(source.arch_for("sm_90a"), "sm_90a");
    assert_eq!(sources::ATTENTION_FLASH.arch_for("sm_90"), "sm_90");
    match nvrtc::compile(source, "sm_90a").expect("attention_wgmma.cu compiles for sm_90a") {
        ModuleImage::Cubin(bytes) => assert!(bytes.starts_with(b"\x7fELF")),
        other => panic!("expected a CUBIN, got {other:?}"),
    }
    // Plain sm_90 has no wgmma: ptxas refuses it, which is why the source asks for the variant.
    match nvrtc::compile(source, "sm_90") {
        Err(CudaError::Compile { log, .. }) => assert!(log.contains("wgmma"), "log: {log}"),
        other => panic!("expected sm_90 to refuse wgmma, got {other:?}"),
    }
    let ptx = match nvrtc::compile(source, "compute_90a").expect("compile PTX") {
        ModuleImage::Ptx(text) => text,
        other => panic!("expected PTX, got {other:?}"),
    };
    use longshot_kernels::tensor_core::wgmma::{wgmma_kernel_name, WgmmaOut, WG_HEAD_DIMS};
    for d in WG_HEAD_DIMS {
        for out in [WgmmaOut::F32, WgmmaOut::Bf16] {
            let name = wgmma_kernel_name(d, out).expect("instantiated");
            // The tensor maps are 128-byte aligned by-value params (__grid_constant__).
            let param = format!(".entry {name}(\n\t.param .align 128 .b8 {name}_param_0[128],");
            assert!(
                ptx.contains(&param),
                "no entry {name} taking a tensor map first:\n{param}"
            );
        }
    }
    for instruction in [
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16",
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16",
        "wgmma.fence.sync.aligned",
        "wgmma.commit_group.sync.aligned",
        "wgmma.wait_group.sync.aligned",
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes",
        "mbarrier.init.shared::cta.b64",
        "mbarrier.arrive.expect_tx.shared::cta.b64",
        "mbarrier.try_wait.parity.shared::cta.b64",
        "fence.mbarrier_init.release.cluster",
        "ex2.approx.ftz.f32",
    ] {
        assert!(
            ptx.contains(instruction),
            "attention_wgmma.cu's PTX has no {instruction}"
        );
    }
    // Its cache entry is its own: the arch (and so the options and file name) differ from sm_90's.
    let (a, b) = (
        CacheKey::new(source, "sm_90a").expect("key"),
        CacheKey::new(source, "sm_90").expect("key"),
    );
    assert_ne!(a.file_name(), b.file_name());
    assert!(a.file_name().contains("-sm_90a-") && a.options.contains(&"--gpu-architecture=sm_90a".to_string()));
}
