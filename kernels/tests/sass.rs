//! The tensor-core kernels' machine code, checked without a GPU: NVRTC compiles
//! `attention_flash.cu` and `vae_conv_tc.cu` to sm_90 CUBINs and `attention_wgmma.cu` to an sm_90a
//! one, `cuobjdump` lists their SASS and resource usage. Each mma.sync kernel (attention, conv)
//! must run on tensor cores (HMMA), stage its tiles with cp.async (LDGSTS) and ldmatrix (LDSM);
//! each wgmma kernel must run on warpgroup tensor cores (HGMMA, every one of them, each batch in
//! flight together), load with TMA (UTMALDG) and synchronise through mbarriers (SYNCS.*); all of
//! them keep everything in registers: a 0-byte stack frame, no local memory, no spill loads or
//! stores (LDL/STL). The fused memory-bound kernels must also read with 128-bit loads.
//!
//! Needs libnvrtc, cuobjdump and the nvdisasm it runs for `-sass` (pip `nvidia-cuda-cuobjdump`,
//! `nvidia-cuda-nvdisasm`; scripts/test.sh installs them into `.nvrtc/`). A missing tool is a failure, never a skip. Run:
//! `cargo test -p longshot-kernels --features cuda --test sass` with libnvrtc on LD_LIBRARY_PATH.
//! `LONGSHOT_CUOBJDUMP` names another cuobjdump.

use longshot_kernels::cuda::nvrtc::{self, ModuleImage};
use longshot_kernels::cuda::sources::KernelSource;
use longshot_kernels::cuda::{probe, sources};
use longshot_kernels::tensor_core::wgmma::{wgmma_kernel_name, WgmmaOut, WG_BLOCK_N, WG_HEAD_DIMS, WG_SPAN};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const ARCH: &str = "sm_90";
const ATTENTION_KERNELS: &[&str] = &[
    "attention_bf16_d64",
    "attention_bf16_d64_bias",
    "attention_bf16_d128",
    "attention_bf16_d128_bias",
    "attention_bf16_d64_obf16",
    "attention_bf16_d128_obf16",
];
/// The DiT's memory-bound kernels of the fused bf16 path, by source: each must keep everything
/// in registers and read its rows with 128-bit global loads (`LDG.E.128`).
const MEMORY_BOUND_KERNELS: &[(&KernelSource, &[&str])] = &[
    (
        &sources::TRANSFORMER_NORM,
        &[
            "layer_norm_f32",
            "layer_norm_modulate_f32",
            "rms_norm_f32",
            "layer_norm_bf16",
            "qkv_rms_rope_bf16",
        ],
    ),
    (
        &sources::TRANSFORMER_POINTWISE,
        &["gated_residual_f32x4", "add_row_vector_f32x4"],
    ),
];
const CONV_KERNELS: &[&str] = &["causal_conv3d_bf16_tc"];
/// The conv's K loop: 2 k-steps × 4 × 4 mma tiles per warp per K tile, fully unrolled.
const CONV_HMMA_PER_K_TILE: usize = 32;
const INSTALL: &str = "python3 -m pip install --target .nvrtc 'nvidia-cuda-nvrtc==13.0.*' \
     'nvidia-cuda-cuobjdump==13.2.*' 'nvidia-cuda-nvdisasm==13.2.*' && export LD_LIBRARY_PATH=$PWD/.nvrtc/nvidia/cu13/lib:$LD_LIBRARY_PATH";

fn cuobjdump() -> PathBuf {
    if let Some(p) = std::env::var_os("LONGSHOT_CUOBJDUMP") {
        return PathBuf::from(p);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.nvrtc/nvidia/cu13/bin/cuobjdump");
    if local.is_file() {
        return local;
    }
    let on_path = PathBuf::from("cuobjdump");
    match Command::new(&on_path).arg("--version").output() {
        Ok(o) if o.status.success() => on_path,
        _ => panic!(
            "cuobjdump not found (looked at $LONGSHOT_CUOBJDUMP, {}, and PATH)\nto install it: {INSTALL}",
            local.display()
        ),
    }
}

fn cubin(dir: &Path, source: &KernelSource) -> PathBuf {
    if let Err(e) = probe::nvrtc_version() {
        panic!("{e}\nto install it: {INSTALL}");
    }
    let arch = source.arch_for(ARCH);
    let bytes = match nvrtc::compile(source, &arch).unwrap_or_else(|e| panic!("{} compiles: {e}", source.file)) {
        ModuleImage::Cubin(b) => b,
        ModuleImage::Ptx(_) => panic!("expected a CUBIN for {arch}"),
    };
    let path = dir.join(format!("{}.{arch}.cubin", source.file.trim_end_matches(".cu")));
    std::fs::write(&path, bytes).expect("write the CUBIN");
    path
}

/// The resource usage and SASS of every kernel of `source`, from a temporary CUBIN.
#[allow(clippy::type_complexity)]
fn disassemble(source: &KernelSource) -> (BTreeMap<String, BTreeMap<String, u64>>, BTreeMap<String, Vec<String>>) {
    let tool = cuobjdump();
    let stem = source.file.trim_end_matches(".cu");
    let dir = std::env::temp_dir().join(format!("longshot-sass-{}-{stem}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cubin = cubin(&dir, source);
    let usage = resource_usage(&run(&tool, &["-res-usage"], &cubin));
    let sass = sass_by_function(&run(&tool, &["-sass"], &cubin));
    let _ = std::fs::remove_dir_all(&dir);
    (usage, sass)
}

/// Failures common to every tensor-core kernel: stack, local memory, spills.
fn check_registers_only(kernel: &str, res: &BTreeMap<String, u64>, code: &[String], failures: &mut Vec<String>) {
    let count = |op: &str| code.iter().filter(|l| opcode(l) == op).count();
    for k in ["STACK", "LOCAL"] {
        match res.get(k).copied() {
            Some(0) => {}
            other => failures.push(format!("{kernel}: {k} {other:?}, expected 0 bytes")),
        }
    }
    let (ldl, stl) = (count("LDL"), count("STL"));
    if ldl + stl > 0 {
        failures.push(format!(
            "{kernel}: {ldl} LDL and {stl} STL (register spills or local arrays)"
        ));
    }
}

fn run(tool: &Path, args: &[&str], cubin: &Path) -> String {
    // `-sass` runs nvdisasm, which cuobjdump looks for on PATH: the pip wheels put both in one bin/.
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(bin) = tool.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut dirs = vec![bin.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        path = std::env::join_paths(dirs).expect("PATH entries");
    }
    let out = Command::new(tool)
        .env("PATH", path)
        .args(args)
        .arg(cubin)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}\nto install it: {INSTALL}", tool.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        tool.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cuobjdump prints UTF-8")
}

/// `cuobjdump -res-usage`: "Function NAME:" then "REG:n STACK:n SHARED:n LOCAL:n ..." per kernel.
fn resource_usage(text: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut all = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("Function ").and_then(|l| l.strip_suffix(':')) {
            current = Some(name.to_string());
        } else if let (Some(name), true) = (&current, line.starts_with("REG:")) {
            let fields = line
                .split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once(':')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect();
            all.insert(name.clone(), fields);
            current = None;
        }
    }
    all
}

/// `cuobjdump -sass`: the instruction lines of each "Function : NAME" section.
fn sass_by_function(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("Function : ") {
            current = Some(name.trim().to_string());
            all.entry(name.trim().to_string()).or_default();
        } else if let Some(name) = &current {
            // Instruction lines look like "        /*0120*/                   HMMA.16816.F32.BF16 R4, ..."
            if let Some(rest) = line.trim().strip_prefix("/*").and_then(|l| l.split_once("*/")) {
                let text = rest.1.trim();
                if !text.is_empty() {
                    all.get_mut(name).expect("section").push(text.to_string());
                }
            }
        }
    }
    all
}

/// The mnemonic of one SASS line, without a predicate (`@P0 STL ...` → `STL`).
fn opcode(line: &str) -> &str {
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or("");
    let op = if first.starts_with('@') {
        words.next().unwrap_or("")
    } else {
        first
    };
    op.split('.').next().unwrap_or("")
}

/// One kernel's facts from the SASS listing and the resource usage.
struct Facts {
    hmma: usize,
    failures: Vec<String>,
}

/// Checks every kernel of `kernels` in `source`: HMMA, LDSM and LDGSTS present, a 0-byte stack
/// frame, no local memory, no LDL/STL. Prints one line of facts per kernel.
fn check_tensor_core_kernels(source: &KernelSource, kernels: &[&str]) -> BTreeMap<String, Facts> {
    let (usage, sass) = disassemble(source);
    let mut all = BTreeMap::new();
    for &kernel in kernels {
        let mut failures = Vec::new();
        let (Some(res), Some(code)) = (usage.get(kernel), sass.get(kernel)) else {
            failures.push(format!("{kernel}: not in the CUBIN (have {:?})", usage.keys()));
            all.insert(kernel.to_string(), Facts { hmma: 0, failures });
            continue;
        };
        let count = |op: &str| code.iter().filter(|l| opcode(l) == op).count();
        let (hmma, ldsm, ldgsts) = (count("HMMA"), count("LDSM"), count("LDGSTS"));
        let (ldl, stl) = (count("LDL"), count("STL"));
        let field = |k: &str| res.get(k).copied();
        eprintln!(
            "{kernel:<26} REG {:>3} STACK {} LOCAL {} SHARED {} | HMMA {hmma} LDSM {ldsm} LDGSTS {ldgsts} LDL {ldl} STL {stl}",
            field("REG").unwrap_or(0),
            field("STACK").unwrap_or(0),
            field("LOCAL").unwrap_or(0),
            field("SHARED").unwrap_or(0),
        );
        if hmma == 0 {
            failures.push(format!("{kernel}: no HMMA instruction (not on tensor cores)"));
        }
        if ldsm == 0 || ldgsts == 0 {
            failures.push(format!(
                "{kernel}: LDSM {ldsm}, LDGSTS {ldgsts}: expected ldmatrix and cp.async"
            ));
        }
        check_registers_only(kernel, res, code, &mut failures);
        all.insert(kernel.to_string(), Facts { hmma, failures });
    }
    all
}

#[test]
fn wgmma_attention_kernels_use_hgmma_tma_and_mbarriers_and_never_spill() {
    let (usage, sass) = disassemble(&sources::ATTENTION_WGMMA);
    let mut failures = Vec::new();
    for d in WG_HEAD_DIMS {
        for out in [WgmmaOut::F32, WgmmaOut::Bf16] {
            let kernel = wgmma_kernel_name(d, out).expect("instantiated");
            let (Some(res), Some(code)) = (usage.get(kernel), sass.get(kernel)) else {
                failures.push(format!("{kernel}: not in the CUBIN (have {:?})", usage.keys()));
                continue;
            };
            let count = |op: &str| code.iter().filter(|l| opcode(l) == op).count();
            let lines = |needle: &str| code.iter().filter(|l| l.contains(needle)).count();
            let (hgmma, utmaldg, syncs, hmma) = (count("HGMMA"), count("UTMALDG"), count("SYNCS"), count("HMMA"));
            // One HGMMA per wgmma of the unrolled loops: D/16 for S = Q·Kᵀ, 64/16 for O += P·V.
            let want_hgmma = d / 16 + WG_BLOCK_N / 16;
            // Q, K and V: one box per 64-column span each.
            let want_tma = 3 * (d / WG_SPAN);
            // Each batch of wgmmas is issued back to back and waited for once (gsb0 on its last
            // HGMMA, one WARPGROUP.DEPBAR): ptxas did not serialise them.
            let (waits, batch_ends) = (
                lines("WARPGROUP.DEPBAR"),
                code.iter()
                    .filter(|l| opcode(l) == "HGMMA" && l.contains("gsb0"))
                    .count(),
            );
            eprintln!(
                "{kernel:<30} REG {:>3} STACK {} LOCAL {} | HGMMA {hgmma} UTMALDG {utmaldg} SYNCS {syncs} DEPBAR {waits}",
                res.get("REG").copied().unwrap_or(0),
                res.get("STACK").copied().unwrap_or(0),
                res.get("LOCAL").copied().unwrap_or(0),
            );
            if hgmma != want_hgmma {
                failures.push(format!("{kernel}: {hgmma} HGMMA, expected {want_hgmma}"));
            }
            if (waits, batch_ends) != (2, 2) {
                failures.push(format!(
                    "{kernel}: {waits} WARPGROUP.DEPBAR and {batch_ends} batch-ending HGMMA, expected 2 and 2 (serialised wgmma?)"
                ));
            }
            if utmaldg != want_tma {
                failures.push(format!(
                    "{kernel}: {utmaldg} UTMALDG, expected {want_tma} (TMA tensor loads)"
                ));
            }
            for sync in ["SYNCS.ARRIVE", "SYNCS.PHASECHK"] {
                if lines(sync) == 0 {
                    failures.push(format!("{kernel}: no {sync} (mbarrier arrive / wait)"));
                }
            }
            if hmma != 0 {
                failures.push(format!("{kernel}: {hmma} HMMA: the mma.sync path leaked in"));
            }
            check_registers_only(kernel, res, code, &mut failures);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn assert_no_failures(facts: &BTreeMap<String, Facts>) {
    let failures: Vec<&str> = facts
        .values()
        .flat_map(|f| f.failures.iter().map(String::as_str))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A 128-bit global load: `LDG.E.128`, with or without a cache qualifier (`LDG.E.128.CONSTANT`).
fn is_ldg128(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or("");
    let op = if first.starts_with('@') {
        words.next().unwrap_or("")
    } else {
        first
    };
    op.starts_with("LDG.") && op.split('.').any(|m| m == "128")
}

#[test]
fn fused_memory_bound_kernels_use_128_bit_loads_and_never_spill() {
    let mut failures = Vec::new();
    for &(source, kernels) in MEMORY_BOUND_KERNELS {
        let (usage, sass) = disassemble(source);
        for &kernel in kernels {
            let (Some(res), Some(code)) = (usage.get(kernel), sass.get(kernel)) else {
                failures.push(format!("{kernel}: not in {} (have {:?})", source.file, usage.keys()));
                continue;
            };
            let ldg128 = code.iter().filter(|l| is_ldg128(l)).count();
            eprintln!(
                "{kernel:<26} REG {:>3} STACK {} LOCAL {} | LDG.E.128 {ldg128}",
                res.get("REG").copied().unwrap_or(0),
                res.get("STACK").copied().unwrap_or(0),
                res.get("LOCAL").copied().unwrap_or(0),
            );
            check_registers_only(kernel, res, code, &mut failures);
            if ldg128 == 0 {
                failures.push(format!("{kernel}: no 128-bit global load (LDG.E.128)"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn attention_kernels_use_tensor_cores_and_never_spill() {
    assert_no_failures(&check_tensor_core_kernels(&sources::ATTENTION_FLASH, ATTENTION_KERNELS));
}

#[test]
fn conv_kernels_use_tensor_cores_and_never_spill() {
    let facts = check_tensor_core_kernels(&sources::VAE_CONV_TC, CONV_KERNELS);
    assert_no_failures(&facts);
    for (kernel, f) in &facts {
        // The unrolled K-tile body is in the code once (the loop is not unrolled further: a
        // multiple of it is fine, a partial body means fragments went missing).
        assert!(
            f.hmma >= CONV_HMMA_PER_K_TILE && f.hmma % CONV_HMMA_PER_K_TILE == 0,
            "{kernel}: {} HMMA, expected a multiple of {CONV_HMMA_PER_K_TILE}",
            f.hmma
        );
    }
}

#[test]
fn the_parsers_read_cuobjdump_output() {
    let usage = resource_usage(
        " Function k1:\n  REG:40 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:400 TEXTURE:0\n\
         Function k2:\n  REG:255 STACK:1152 SHARED:32768 LOCAL:8 CONSTANT[0]:380\n",
    );
    assert_eq!(usage["k1"]["REG"], 40);
    assert_eq!((usage["k2"]["STACK"], usage["k2"]["LOCAL"]), (1152, 8));
    let sass = sass_by_function(
        "\t\tFunction : k1\n        /*0000*/  HMMA.16816.F32.BF16 R4, R8, R12, R4 ;  /* 0x... */\n\
         \t\tFunction : k2\n        /*0000*/  @P0 STL [R1], R2 ;\n        /*0010*/  LDL.64 R2, [R1] ;\n",
    );
    assert_eq!(opcode(&sass["k1"][0]), "HMMA");
    let ops: Vec<&str> = sass["k2"].iter().map(|l| opcode(l)).collect();
    assert_eq!(ops, ["STL", "LDL"]);
    assert!(is_ldg128("LDG.E.128 R4, desc[UR4][R2.64] ;"));
    assert!(is_ldg128("@!P0 LDG.E.128.CONSTANT R8, desc[UR6][R6.64] ;"));
    assert!(!is_ldg128("LDG.E.64 R4, desc[UR4][R2.64] ;"));
    assert!(!is_ldg128("STG.E.128 desc[UR4][R2.64], R4 ;"));
}
