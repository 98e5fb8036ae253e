//! The kernel cache's trust rules, with the compiler and the loader injected as closures, so these
//! run without NVRTC and without a GPU: corrupt, truncated, foreign and old-format entries are
//! rejected and recompiled, a cached image that fails to load is recompiled once and replaced,
//! and threads racing to store one entry never leave a torn file. (The same cache over real
//! NVRTC output is checked in `nvrtc_compile.rs`.)
//! Run: `cargo test -p longshot-kernels --features cuda --test kernel_cache`.

use longshot_kernels::cuda::kernel_cache::Rejected;
use longshot_kernels::cuda::nvrtc::ModuleImage;
use longshot_kernels::cuda::sources::KernelSource;
use longshot_kernels::cuda::{CacheKey, CacheOutcome, CudaError, KernelCache};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

const SOURCE: KernelSource = KernelSource {
    file: "fake_kernel.cu",
    text: "extern \"C\" __global__ void k(float* x) { x[0] = 1.0f; }",
    arch_specific: false,
};
const OTHER: KernelSource = KernelSource {
    file: "fake_kernel.cu",
    text: "extern \"C\" __global__ void k(float* x) { x[0] = 2.0f; }",
    arch_specific: false,
};
const NVRTC: (i32, i32) = (13, 0);

/// Whether a rejection is the expected one.
type RejectedAs = fn(&Rejected) -> bool;

/// A fresh, empty cache directory for one test.
fn cache(test: &str) -> (KernelCache, PathBuf) {
    let dir = std::env::temp_dir().join(format!("longshot-kernel-cache-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (KernelCache::new(&dir), dir)
}

fn key(source: &KernelSource) -> CacheKey {
    CacheKey::with_nvrtc(source, "sm_90", NVRTC).expect("key")
}

/// A fake CUBIN: an ELF magic and `n` bytes of a pattern seeded by `seed`.
fn image(seed: u8, n: usize) -> ModuleImage {
    let mut b = b"\x7fELF".to_vec();
    b.extend((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    ModuleImage::Cubin(b)
}

/// `get_with` with a compiler that counts its calls and an always-successful loader.
fn fetch(cache: &KernelCache, key: &CacheKey, fresh: &ModuleImage, compiles: &Cell<usize>) -> CacheOutcome {
    let f = cache
        .get_with(
            key,
            || {
                compiles.set(compiles.get() + 1);
                Ok(fresh.clone())
            },
            |img| Ok(img.clone()),
        )
        .expect("get_with");
    assert_eq!(&f.module, fresh, "the loaded image is the fresh one");
    f.outcome
}

#[test]
fn a_stored_entry_is_served_without_compiling_again() {
    let (cache, dir) = cache("hit");
    let k = key(&SOURCE);
    let img = image(1, 1000);
    let n = Cell::new(0);
    assert_eq!(fetch(&cache, &k, &img, &n), CacheOutcome::Compiled(Rejected::Missing));
    assert_eq!(n.get(), 1);
    assert_eq!(fetch(&cache, &k, &img, &n), CacheOutcome::Hit);
    assert_eq!(n.get(), 1, "a hit must not compile");
    assert_eq!(cache.read(&k), Ok(img));
    // A PTX entry keeps its text.
    let kp = CacheKey::with_nvrtc(&SOURCE, "compute_90", NVRTC).expect("key");
    assert_ne!(cache.path_of(&kp), cache.path_of(&k));
    let ptx = ModuleImage::Ptx(".version 9.0\n.target sm_90\n".into());
    cache.store(&kp, &ptx).expect("store");
    assert_eq!(cache.read(&kp), Ok(ptx));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn corrupt_truncated_and_foreign_entries_are_rejected_and_recompiled() {
    let (cache, dir) = cache("corrupt");
    let k = key(&SOURCE);
    let old = image(2, 5000);
    let fresh = image(3, 4000);
    let good = k.encode(&old);
    let payload_at = good.len() - 5004;
    let flipped = {
        let mut b = good.clone();
        b[payload_at + 2500] ^= 0x10;
        b
    };
    let other_key = key(&OTHER).encode(&old);
    let other_nvrtc = CacheKey::with_nvrtc(&SOURCE, "sm_90", (12, 8))
        .expect("key")
        .encode(&old);
    let other_arch = CacheKey::with_nvrtc(&SOURCE, "sm_80", NVRTC).expect("key").encode(&old);
    let lying_length = String::from_utf8_lossy(&good[..payload_at])
        .replace("length 5004", "length 4004")
        .into_bytes()
        .into_iter()
        .chain(good[payload_at..payload_at + 4004].iter().copied())
        .collect::<Vec<u8>>();
    let old_bytes = match &old {
        ModuleImage::Cubin(b) => b.clone(),
        ModuleImage::Ptx(_) => unreachable!(),
    };
    let cases: Vec<(&str, Vec<u8>, RejectedAs)> = vec![
        ("empty file", vec![], |r| *r == Rejected::NotAnEntry),
        ("raw CUBIN of the old format", old_bytes, |r| *r == Rejected::NotAnEntry),
        ("header cut short", good[..40].to_vec(), |r| *r == Rejected::NotAnEntry),
        ("header without its image", good[..payload_at].to_vec(), |r| {
            *r == Rejected::Length {
                header: 5004,
                actual: 0,
            }
        }),
        ("truncated image", good[..good.len() - 100].to_vec(), |r| {
            *r == Rejected::Length {
                header: 5004,
                actual: 4904,
            }
        }),
        ("bytes appended", [good.as_slice(), b"xx"].concat(), |r| {
            matches!(r, Rejected::Length { actual: 5006, .. })
        }),
        ("one bit flipped in the image", flipped, |r| *r == Rejected::Hash),
        ("length and image cut consistently", lying_length, |r| {
            *r == Rejected::Hash
        }),
        (
            "another source's entry",
            other_key,
            |r| matches!(r, Rejected::ForeignKey { differs } if differs.starts_with("source fnv64:")),
        ),
        (
            "another NVRTC's entry",
            other_nvrtc,
            |r| matches!(r, Rejected::ForeignKey { differs } if differs == "nvrtc 12.8"),
        ),
        (
            "another architecture's entry",
            other_arch,
            |r| matches!(r, Rejected::ForeignKey { differs } if differs.contains("sm_80")),
        ),
    ];
    for (what, bytes, expected) in cases {
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(cache.path_of(&k), &bytes).expect("write the bad entry");
        let n = Cell::new(0);
        match fetch(&cache, &k, &fresh, &n) {
            CacheOutcome::Compiled(r) => assert!(expected(&r), "{what}: rejected for the wrong reason: {r}"),
            other => panic!("{what}: expected a recompile, got {other:?}"),
        }
        assert_eq!(n.get(), 1, "{what}: compiled once");
        assert_eq!(cache.read(&k), Ok(fresh.clone()), "{what}: the entry was replaced");
        assert_eq!(fetch(&cache, &k, &fresh, &n), CacheOutcome::Hit, "{what}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_cached_image_that_fails_to_load_is_recompiled_once_and_replaced() {
    let (cache, dir) = cache("reload");
    let k = key(&SOURCE);
    let (old, fresh) = (image(4, 3000), image(5, 3000));
    cache.store(&k, &old).expect("store");
    let n = Cell::new(0);
    let loads = Cell::new(0);
    let f = cache
        .get_with(
            &k,
            || {
                n.set(n.get() + 1);
                Ok(fresh.clone())
            },
            |img| {
                loads.set(loads.get() + 1);
                if *img == old {
                    Err(CudaError::Nvrtc {
                        stage: "loading (test)",
                        message: "CUDA_ERROR_INVALID_IMAGE".into(),
                    })
                } else {
                    Ok(img.clone())
                }
            },
        )
        .expect("recovered");
    assert!(
        matches!(&f.outcome, CacheOutcome::Reloaded(e) if e.contains("CUDA_ERROR_INVALID_IMAGE")),
        "{:?}",
        f.outcome
    );
    assert_eq!((f.module, n.get(), loads.get()), (fresh.clone(), 1, 2));
    assert_eq!(cache.read(&k), Ok(fresh), "the entry was replaced");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_image_that_never_loads_is_an_error_after_one_recompile_and_is_not_stored() {
    let (cache, dir) = cache("noload");
    let k = key(&SOURCE);
    let fail = |_: &ModuleImage| -> Result<(), CudaError> {
        Err(CudaError::Nvrtc {
            stage: "loading (test)",
            message: "no".into(),
        })
    };
    // A valid entry that does not load: one recompile, then the loader's error.
    cache.store(&k, &image(6, 100)).expect("store");
    let n = Cell::new(0);
    let r = cache.get_with(
        &k,
        || {
            n.set(n.get() + 1);
            Ok(image(7, 100))
        },
        fail,
    );
    assert!(matches!(r, Err(CudaError::Nvrtc { .. })));
    assert_eq!(n.get(), 1, "recompiled exactly once");
    // No entry: the fresh image does not load, so nothing is written.
    let k2 = key(&OTHER);
    assert!(cache.get_with(&k2, || Ok(image(8, 100)), fail).is_err());
    assert_eq!(cache.read(&k2), Err(Rejected::Missing));
    // A compile error comes back as itself, and leaves no entry either.
    let r = cache.get_with(
        &k2,
        || {
            Err(CudaError::Compile {
                file: "fake_kernel.cu".into(),
                arch: "sm_90".into(),
                log: "error".into(),
            })
        },
        |img| Ok(img.clone()),
    );
    assert!(matches!(r, Err(CudaError::Compile { .. })));
    assert_eq!(cache.read(&k2), Err(Rejected::Missing));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn threads_racing_to_store_one_entry_never_leave_a_torn_file() {
    let (cache, dir) = cache("race");
    let k = key(&SOURCE);
    const WRITERS: usize = 6;
    const STORES: usize = 8;
    // Large enough that one write is many syscalls, so a shared temporary file would tear.
    const BYTES: usize = 1 << 19;
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cache, k, done, reads) = (cache.clone(), k.clone(), done.clone(), reads.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    match cache.read(&k) {
                        // Valid means header, length and hash all agree: the image is one writer's whole image.
                        Ok(ModuleImage::Cubin(b)) => {
                            assert_eq!(b.len(), 4 + BYTES);
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(other) => panic!("a PTX image in a CUBIN entry: {other:?}"),
                        Err(Rejected::Missing) => {}
                        Err(r) => panic!("a reader saw a torn or invalid entry: {r}"),
                    }
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (cache, k) = (cache.clone(), k.clone());
            std::thread::spawn(move || {
                for i in 0..STORES {
                    cache.store(&k, &image((w * STORES + i) as u8, BYTES)).expect("store");
                }
            })
        })
        .collect();
    for t in writers {
        t.join().expect("writer");
    }
    done.store(true, Ordering::Relaxed);
    for t in readers {
        t.join().expect("reader (a torn file fails here)");
    }
    // Every writer's last image is a candidate; the file holds exactly one of them, intact.
    let last: Vec<ModuleImage> = (0..WRITERS)
        .map(|w| image((w * STORES + STORES - 1) as u8, BYTES))
        .collect();
    let got = cache.read(&k).expect("a valid entry after the race");
    assert!(last.contains(&got), "the entry is not any writer's last image");
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert_eq!(names, vec![k.file_name()], "leftovers in the cache directory");
    eprintln!("{} valid reads during the race", reads.load(Ordering::Relaxed));
    let _ = std::fs::remove_dir_all(dir);
}
