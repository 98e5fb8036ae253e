//! The Hopper attention kernel (kernels/cuda/attention_wgmma.cu) on the CPU: its geometry (the
//! launch wrapper's single source of it: tensor-map boxes, shared memory, kernel names), the PTX
//! ISA's contracts it relies on (the `wgmma .m64nNk16` register fragments, the shared-memory
//! matrix descriptor and its canonical 128-byte-swizzled layouts, TMA's SWIZZLE_128B write
//! pattern, mbarrier phases) as `isa_*` functions, the kernel's own index maps under the `.cu`
//! helpers' names, and its whole block emulated thread by thread over those (TMA boxes into a
//! byte-addressed shared memory, wgmma reading it back through the kernel's descriptors), compared
//! with [`crate::cpu::nn_attention`].
//!
//! As in [`super::fragments`], the `isa_*` functions are the hardware's contract as the PTX ISA
//! (and the CUDA driver API for the tensor map) define it and are used only by the emulated
//! instructions; everything else mirrors the kernel, and `the_kernel_source_spells_these_maps`
//! pins the shared formulas to the `.cu` text.

use super::fragments::{bf16_bits, bf16_value, pack_bf16x2};
use crate::cpu::nn_attention::AttentionShape;

// ---- Geometry (attention_wgmma.cu's #defines) ---------------------------------------------------

/// Threads of a warpgroup (4 warps), the unit that issues one wgmma.
pub const WARPGROUP: usize = 128;
/// Consumer warpgroups per block, 64 query rows each (`WG_CONSUMERS`).
pub const WG_CONSUMERS: usize = 2;
/// Consumer warps, the arrival count of each "empty" barrier (`WG_CONSUMER_WARPS`).
pub const WG_CONSUMER_WARPS: usize = WG_CONSUMERS * 4;
/// Threads per block: the consumers and one producer warp (`WG_THREADS`).
pub const WG_THREADS: usize = WG_CONSUMERS * WARPGROUP + 32;
/// Query rows per block (`WG_BLOCK_M`).
pub const WG_BLOCK_M: usize = WG_CONSUMERS * 64;
/// Keys per K/V tile (`WG_BLOCK_N`).
pub const WG_BLOCK_N: usize = 64;
/// Depth of the K/V ring (`WG_STAGES`).
pub const WG_STAGES: usize = 2;
/// bf16 columns per 128-byte swizzled row, the width of every TMA box (`WG_SPAN`).
pub const WG_SPAN: usize = 64;
/// The head sizes the kernel is instantiated for.
pub const WG_HEAD_DIMS: [usize; 2] = [64, 128];
/// `WG_K_MAJOR_LBO`, `WG_K_MAJOR_SBO`, `WG_V_LBO`, `WG_V_SBO`: descriptor byte offsets.
pub const WG_K_MAJOR_LBO: u32 = 16;
pub const WG_K_MAJOR_SBO: u32 = 1024;
pub const WG_V_LBO: u32 = (WG_BLOCK_N * 128) as u32;
pub const WG_V_SBO: u32 = 1024;

/// Dynamic shared memory of one block: 1024 bytes of alignment slack, the Q tile, `WG_STAGES`
/// K and V tiles (bf16), and the 1 + 2·`WG_STAGES` 8-byte mbarriers.
pub const fn wgmma_smem_bytes(head_dim: usize) -> usize {
    1024 + WG_BLOCK_M * head_dim * 2 + WG_STAGES * 2 * WG_BLOCK_N * head_dim * 2 + 8 * (1 + 2 * WG_STAGES)
}

/// The element type the kernel writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgmmaOut {
    F32,
    Bf16,
}

/// The kernel for head size `head_dim` writing `out`, if one is instantiated.
pub fn wgmma_kernel_name(head_dim: usize, out: WgmmaOut) -> Option<&'static str> {
    Some(match (head_dim, out) {
        (64, WgmmaOut::F32) => "attention_wgmma_d64_f32out",
        (64, WgmmaOut::Bf16) => "attention_wgmma_d64_bf16out",
        (128, WgmmaOut::F32) => "attention_wgmma_d128_f32out",
        (128, WgmmaOut::Bf16) => "attention_wgmma_d128_bf16out",
        _ => return None,
    })
}

/// One 2-D bf16 tensor map of the kernel (the arguments of `cuTensorMapEncodeTiled`): a row-major
/// `[rows, cols]` matrix, boxes of `box_rows × box_cols`, SWIZZLE_128B, no interleave, element
/// strides 1, out-of-bounds elements zero (OOB_FILL_NONE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmaBox2d {
    /// globalDim[0], the contiguous extent (heads·d).
    pub cols: u64,
    /// globalDim[1] (tokens).
    pub rows: u64,
    /// globalStrides[0]: bytes from one row to the next.
    pub row_stride_bytes: u64,
    pub box_cols: u32,
    pub box_rows: u32,
}

impl TmaBox2d {
    /// The map of a `[rows, cols]` bf16 matrix read in boxes of `box_rows` rows by [`WG_SPAN`]
    /// columns, or why the driver would refuse it (its documented limits for a tiled map).
    pub fn bf16(rows: usize, cols: usize, box_rows: usize) -> Result<Self, String> {
        let m = Self {
            cols: cols as u64,
            rows: rows as u64,
            row_stride_bytes: cols as u64 * 2,
            box_cols: WG_SPAN as u32,
            box_rows: box_rows as u32,
        };
        if rows == 0 || cols == 0 || m.rows > 1 << 32 || m.cols > 1 << 32 {
            return Err(format!("extent {rows} × {cols} is not in 1..=2^32"));
        }
        if !m.row_stride_bytes.is_multiple_of(16) || m.row_stride_bytes >= 1 << 40 {
            return Err(format!(
                "row stride {} bytes is not a multiple of 16 below 2^40",
                m.row_stride_bytes
            ));
        }
        // SWIZZLE_128B: the inner box extent, in bytes, must not exceed the 128-byte span.
        if m.box_cols as usize * 2 > 128 || m.box_rows == 0 || m.box_rows > 256 {
            return Err(format!("box {} × {} is not allowed", m.box_rows, m.box_cols));
        }
        Ok(m)
    }

    /// Bytes one box writes to shared memory (out-of-bounds elements included, zero-filled): the
    /// transaction count an mbarrier expects for it.
    pub fn box_bytes(&self) -> u32 {
        self.box_cols * self.box_rows * 2
    }
}

/// The kernel's three tensor maps (q, k, v) for a call on inputs packed to head size `d`.
pub fn wgmma_tensor_maps(shape: AttentionShape, d: usize) -> Result<[TmaBox2d; 3], String> {
    let cols = shape.heads * d;
    Ok([
        TmaBox2d::bf16(shape.q_tokens, cols, WG_BLOCK_M)?,
        TmaBox2d::bf16(shape.kv_tokens, cols, WG_BLOCK_N)?,
        TmaBox2d::bf16(shape.kv_tokens, cols, WG_BLOCK_N)?,
    ])
}

// ---- The hardware's contract (PTX ISA, CUDA driver API) -----------------------------------------

/// wgmma `.m64nNk16` f32 accumulator D: register `i` (0..N/2) of thread `t` of the warpgroup holds
/// (row, column): warp `t / 32` owns rows 16·warp.., and each 8-column block repeats the
/// m16n8 layout (two rows 8 apart, two adjacent columns).
pub fn isa_wgmma_d_element(t: usize, i: usize) -> (usize, usize) {
    let (warp, lane) = (t / 32, t % 32);
    (
        16 * warp + lane / 4 + 8 * ((i / 2) % 2),
        8 * (i / 4) + 2 * (lane % 4) + i % 2,
    )
}

/// wgmma `.m64nNk16` A (64×16 bf16) from registers: element `i` (0..8; register `i / 2`, low half
/// for even `i`) of thread `t` is at (row, column).
pub fn isa_wgmma_a_element(t: usize, i: usize) -> (usize, usize) {
    let (warp, lane) = (t / 32, t % 32);
    (
        16 * warp + lane / 4 + 8 * ((i / 2) % 2),
        2 * (lane % 4) + i % 2 + 8 * (i / 4),
    )
}

/// The fields of a shared-memory matrix descriptor, decoded by the ISA's bit positions: start
/// address bits 0..13, leading byte offset 16..29, stride byte offset 32..45 (each in 16-byte
/// units), matrix base offset 49..51, swizzle mode 62..63 (0 none, 1 128B, 2 64B, 3 32B).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsaDescriptor {
    pub start: usize,
    pub lbo: usize,
    pub sbo: usize,
    pub base_offset: usize,
    pub swizzle: u64,
}

pub fn isa_descriptor_decode(desc: u64) -> IsaDescriptor {
    let field = |lo: u32, bits: u32| ((desc >> lo) & ((1 << bits) - 1)) as usize;
    IsaDescriptor {
        start: field(0, 14) << 4,
        lbo: field(16, 14) << 4,
        sbo: field(32, 14) << 4,
        base_offset: field(49, 3),
        swizzle: desc >> 62,
    }
}

/// Which dimension of a wgmma operand is contiguous in shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Major {
    /// The reduction dimension (imm-trans = 0): rows of 128 bytes along K.
    K,
    /// The M or N dimension (imm-trans = 1): rows of 128 bytes along M/N, one per k.
    Mn,
}

/// The canonical 128B-swizzled layouts of a bf16 operand (T = 8 elements per 16 bytes):
/// K-major `((8, m), (T, 2)) : ((8T, SBO), (1, T))` and MN-major `((T, 8, m), (8, k)) :
/// ((1, T, LBO), (8T, SBO))`: the byte address, before the swizzle, of element (`mn`, `k`) of one
/// wgmma's operand (k < 16).
pub fn isa_operand_address(desc: &IsaDescriptor, major: Major, mn: usize, k: usize) -> usize {
    match major {
        Major::K => desc.start + (mn % 8) * 128 + (mn / 8) * desc.sbo + k * 2,
        Major::Mn => desc.start + (mn % 64) * 2 + (mn / 64) * desc.lbo + (k % 8) * 128 + (k / 8) * desc.sbo,
    }
}

/// The 128-byte swizzle as wgmma applies it to a shared-memory byte address: the 16-byte chunk
/// bits 4..6 XORed with bits 7..9 (the row within a 1024-byte, 8-row pattern).
pub fn isa_swizzle_128b(addr: usize) -> usize {
    addr ^ (((addr >> 7) & 7) << 4)
}

/// TMA's SWIZZLE_128B write pattern (CUDA programming guide, "TMA swizzle"): in a box whose rows
/// are 128 bytes, 16-byte chunk `chunk` of row `row` lands at chunk `chunk ^ (row % 8)` of that
/// row, counted from a destination aligned to the 1024-byte pattern.
pub fn isa_tma_swizzle_128b_offset(row: usize, chunk: usize) -> usize {
    row * 128 + ((chunk ^ (row % 8)) * 16)
}

/// An mbarrier as the ISA defines it: a phase completes when its pending arrivals and its
/// pending transaction bytes both reach zero, then the next phase starts with `count` arrivals.
#[derive(Clone, Debug)]
pub struct IsaMbarrier {
    count: usize,
    pending: usize,
    tx: i64,
    /// Completed phases so far (the current phase's number).
    phase: usize,
}

impl IsaMbarrier {
    pub fn init(count: usize) -> Self {
        Self {
            count,
            pending: count,
            tx: 0,
            phase: 0,
        }
    }
    fn maybe_complete(&mut self) {
        if self.pending == 0 && self.tx == 0 {
            self.phase += 1;
            self.pending = self.count;
        }
    }
    /// `mbarrier.arrive.expect_tx`: `bytes` more transactions expected, then one arrival.
    pub fn arrive_expect_tx(&mut self, bytes: u32) {
        self.tx += i64::from(bytes);
        self.arrive();
    }
    pub fn arrive(&mut self) {
        assert!(self.pending > 0, "more arrivals than the barrier's count");
        self.pending -= 1;
        self.maybe_complete();
    }
    /// A TMA copy's `complete_tx::bytes`.
    pub fn complete_tx(&mut self, bytes: u32) {
        self.tx -= i64::from(bytes);
        self.maybe_complete();
    }
    /// `mbarrier.try_wait.parity`: true once the phase of parity `parity` (the current phase or
    /// the one before it) has completed, i.e. when the current phase's parity differs.
    pub fn try_wait_parity(&self, parity: usize) -> bool {
        self.phase % 2 != parity
    }
}

// ---- The kernel's maps (attention_wgmma.cu's helpers of the same names) -------------------------

/// `smem_desc`: a descriptor with start address `addr`, offsets `lbo`, `sbo`, 128-byte swizzle.
pub fn smem_desc(addr: u32, lbo: u32, sbo: u32) -> u64 {
    ((addr & 0x3FFFF) >> 4) as u64
        | ((((lbo & 0x3FFFF) >> 4) as u64) << 16)
        | ((((sbo & 0x3FFFF) >> 4) as u64) << 32)
        | (1 << 62)
}

/// `k_major_offset`: k-step `kk` (16 columns) of rows `row0..` of a K-major tile of `rows` rows
/// per 64-column span.
pub fn k_major_offset(rows: u32, row0: u32, kk: u32) -> u32 {
    (kk >> 2) * rows * 128 + row0 * 128 + (kk & 3) * 32
}

/// `v_offset`: key step `kk` (16 keys) of the V tile.
pub fn v_offset(kk: u32) -> u32 {
    kk * 16 * 128
}

/// The key and the row (0..64 of the warpgroup) of S's accumulator register `i` of thread `t`, as
/// the kernel computes them (`key0 + 8·(i >> 2) + 2·quad + (i & 1)`, row `16·warp + group + 8·r`).
pub fn s_key_row(t: usize, i: usize) -> (usize, usize) {
    let (warp, lane) = (t / 32, t % 32);
    let (group, quad) = (lane / 4, lane % 4);
    (
        8 * (i >> 2) + 2 * quad + (i & 1),
        16 * warp + group + 8 * ((i >> 1) & 1),
    )
}

/// The phase parity the producer waits on before refilling a stage with tile `j` (≥ `WG_STAGES`):
/// the consumers' release of tile `j − WG_STAGES`, completion number `j / WG_STAGES − 1`.
pub fn producer_empty_parity(j: usize) -> usize {
    ((j / WG_STAGES) + 1) & 1
}

/// The phase parity consumers wait on for tile `j`: completion number `j / WG_STAGES` of its
/// stage's "full" barrier.
pub fn consumer_full_parity(j: usize) -> usize {
    (j / WG_STAGES) & 1
}

/// The shared-memory layout of one block given the dynamic-smem base address `base`: Q tile,
/// the first K tile (stage `s`: K at `kv_base + 2s·kv_bytes`, V `kv_bytes` after), and the
/// barriers `q_full`, `full0 + 8s`, `empty0 + 8s`.
#[derive(Clone, Copy, Debug)]
pub struct SmemLayout {
    pub q_tile: usize,
    pub kv_base: usize,
    pub kv_bytes: usize,
    pub q_full: usize,
    pub full0: usize,
    pub empty0: usize,
}

impl SmemLayout {
    pub fn new(base: usize, d: usize) -> Self {
        let q_tile = (base + 1023) & !1023;
        let kv_bytes = WG_BLOCK_N * d * 2;
        let kv_base = q_tile + WG_BLOCK_M * d * 2;
        let q_full = kv_base + WG_STAGES * 2 * kv_bytes;
        Self {
            q_tile,
            kv_base,
            kv_bytes,
            q_full,
            full0: q_full + 8,
            empty0: q_full + 8 + 8 * WG_STAGES,
        }
    }
    pub fn k_tile(&self, stage: usize) -> usize {
        self.kv_base + 2 * stage * self.kv_bytes
    }
    pub fn v_tile(&self, stage: usize) -> usize {
        self.k_tile(stage) + self.kv_bytes
    }
    /// One past the last byte used.
    pub fn end(&self) -> usize {
        self.empty0 + 8 * WG_STAGES
    }
}

// ---- Emulated instructions ----------------------------------------------------------------------

/// Shared memory, byte-addressed, holding bf16 values (every access here is 2-byte aligned).
pub struct Smem(Vec<u16>);

impl Smem {
    pub fn new(bytes: usize) -> Self {
        Self(vec![0; bytes.div_ceil(2)])
    }
    fn read(&self, addr: usize) -> u16 {
        assert_eq!(addr % 2, 0);
        self.0[addr / 2]
    }
    fn write(&mut self, addr: usize, v: u16) {
        assert_eq!(addr % 2, 0);
        self.0[addr / 2] = v;
    }
}

/// `cp.async.bulk.tensor.2d` with SWIZZLE_128B: the box at (column `c0`, row `c1`) of `map` over
/// `global` (bf16 bits, row-major) into `dst`; elements outside the matrix are written as zero.
/// Returns the bytes written (the transaction count it completes).
pub fn tma_load_2d(smem: &mut Smem, dst: usize, map: &TmaBox2d, global: &[u16], c0: usize, c1: usize) -> u32 {
    assert_eq!(dst % 1024, 0, "a 128B-swizzled box must start on the 1024-byte pattern");
    assert_eq!(
        map.box_cols as usize * 2,
        128,
        "the kernel's boxes are one 128-byte span wide"
    );
    for r in 0..map.box_rows as usize {
        for c in 0..map.box_cols as usize {
            let (row, col) = (c1 + r, c0 + c);
            let inside = (row as u64) < map.rows && (col as u64) < map.cols;
            let v = if inside {
                global[row * (map.row_stride_bytes as usize / 2) + col]
            } else {
                0
            };
            smem.write(dst + isa_tma_swizzle_128b_offset(r, c / 8) + (c % 8) * 2, v);
        }
    }
    map.box_bytes()
}

/// One element of a wgmma operand read through `desc` (128B swizzle, base offset 0).
fn operand(smem: &Smem, desc: u64, major: Major, mn: usize, k: usize) -> f32 {
    let d = isa_descriptor_decode(desc);
    assert_eq!(d.swizzle, 1, "the kernel's operands are 128B-swizzled");
    // Base offset 0 is right only when the start address sits at the pattern's row 0.
    assert_eq!((d.base_offset, (d.start >> 7) & 7), (0, 0), "descriptor {d:?}");
    bf16_value(smem.read(isa_swizzle_128b(isa_operand_address(&d, major, mn, k))))
}

/// D of one warpgroup: `[thread][register]`.
pub type WgAcc = Vec<Vec<f32>>;

fn wgmma(d: &mut WgAcc, n: usize, a: impl Fn(usize, usize) -> f32, b: impl Fn(usize, usize) -> f32, accumulate: bool) {
    let am: Vec<Vec<f32>> = (0..64).map(|m| (0..16).map(|k| a(m, k)).collect()).collect();
    let bm: Vec<Vec<f32>> = (0..16).map(|k| (0..n).map(|j| b(k, j)).collect()).collect();
    for (t, regs) in d.iter_mut().enumerate() {
        assert_eq!(regs.len(), n / 2);
        for (i, value) in regs.iter_mut().enumerate() {
            let (row, col) = isa_wgmma_d_element(t, i);
            let mut acc = if accumulate { *value } else { 0.0 };
            for kk in 0..16 {
                acc += am[row][kk] * bm[kk][col];
            }
            *value = acc;
        }
    }
}

/// `wgmma.mma_async.m64nNk16.f32.bf16.bf16` with A and B in shared memory, both K-major (B's N
/// rows hold its K columns): `d = [d +] A·B` (products exact, sums in f32 in k order).
pub fn wgmma_ss(d: &mut WgAcc, n: usize, smem: &Smem, a_desc: u64, b_desc: u64, accumulate: bool) {
    let a = |m, k| operand(smem, a_desc, Major::K, m, k);
    let b = |k, j| operand(smem, b_desc, Major::K, j, k);
    wgmma(d, n, a, b, accumulate);
}

/// The same with A from registers (`a[t]`: 4 × bf16x2 of thread `t`) and B MN-major
/// (imm-trans-b = 1): `d += A·B`.
pub fn wgmma_rs(d: &mut WgAcc, n: usize, smem: &Smem, a: &[[u32; 4]], b_desc: u64) {
    let mut am = [[f32::NAN; 16]; 64];
    for (t, regs) in a.iter().enumerate() {
        for i in 0..8 {
            let (row, col) = isa_wgmma_a_element(t, i);
            am[row][col] = bf16_value((regs[i / 2] >> (16 * (i % 2))) as u16);
        }
    }
    let b = |k, j| operand(smem, b_desc, Major::Mn, j, k);
    wgmma(d, n, |m, k| am[m][k], b, true);
}

// ---- The kernel, emulated -----------------------------------------------------------------------

const LOG2E: f32 = std::f32::consts::LOG2_E;

/// attention_wgmma_d{d}_{out}: `out = softmax(scale·q·kᵀ)·v` on inputs packed to head size `d`
/// (`[tokens, heads·d]` bf16 bits), writing the first `out_dim` columns of each head (f32, or bf16
/// values when `out` is [`WgmmaOut::Bf16`]). `smem_base` is the dynamic shared memory's address
/// (the kernel aligns it itself).
#[allow(clippy::too_many_arguments)]
pub fn emulate_wgmma_kernel(
    q: &[u16],
    k: &[u16],
    v: &[u16],
    shape: AttentionShape,
    d: usize,
    out_dim: usize,
    scale: f32,
    out: WgmmaOut,
    smem_base: usize,
) -> Vec<f32> {
    assert!(WG_HEAD_DIMS.contains(&d) && out_dim <= d);
    let maps = wgmma_tensor_maps(shape, d).expect("valid tensor maps");
    let mut result = vec![f32::NAN; shape.q_tokens * shape.heads * out_dim];
    for head in 0..shape.heads {
        for m0 in (0..shape.q_tokens).step_by(WG_BLOCK_M) {
            let block = Block {
                maps: &maps,
                q,
                k,
                v,
                shape,
                d,
                out_dim,
                scale_log2: scale * LOG2E,
                out,
                smem_base,
                layout: SmemLayout::new(smem_base, d),
            };
            block.run(head, m0, &mut result);
        }
    }
    result
}

struct Block<'a> {
    maps: &'a [TmaBox2d; 3],
    q: &'a [u16],
    k: &'a [u16],
    v: &'a [u16],
    shape: AttentionShape,
    d: usize,
    out_dim: usize,
    scale_log2: f32,
    out: WgmmaOut,
    smem_base: usize,
    layout: SmemLayout,
}

/// One consumer warpgroup's registers across the tile loop.
struct Consumer {
    wg: usize,
    o: WgAcc,
    row_max: Vec<[f32; 2]>,
    row_sum: Vec<[f32; 2]>,
}

impl Block<'_> {
    fn run(&self, head: usize, m0: usize, result: &mut [f32]) {
        let (d, l) = (self.d, self.layout);
        let spans = d / WG_SPAN;
        let col0 = head * d;
        let n_tiles = self.shape.kv_tokens.div_ceil(WG_BLOCK_N);
        // The block's dynamic shared memory is [base, base + wgmma_smem_bytes(d)): any access
        // outside it indexes past `smem` and panics.
        let mut smem = Smem::new(self.smem_base + wgmma_smem_bytes(d));
        assert!(
            l.end() <= self.smem_base + wgmma_smem_bytes(d),
            "the layout overruns the allocation"
        );
        // The producer's copies. The emulation runs them in program order and the consumers after
        // each; `the_ring_protocol_never_races` checks the concurrent schedule separately.
        let mut q_bytes = 0;
        for span in 0..spans {
            let dst = l.q_tile + span * WG_BLOCK_M * 128;
            q_bytes += tma_load_2d(&mut smem, dst, &self.maps[0], self.q, col0 + span * WG_SPAN, m0);
        }
        assert_eq!(q_bytes as usize, WG_BLOCK_M * d * 2, "Q_BYTES");
        let mut consumers: Vec<Consumer> = (0..WG_CONSUMERS)
            .map(|wg| Consumer {
                wg,
                o: vec![vec![0.0; d / 2]; WARPGROUP],
                row_max: vec![[f32::NEG_INFINITY; 2]; WARPGROUP],
                row_sum: vec![[0.0; 2]; WARPGROUP],
            })
            .collect();
        for j in 0..n_tiles {
            let stage = j % WG_STAGES;
            let mut bytes = 0;
            for span in 0..spans {
                let col = col0 + span * WG_SPAN;
                let k_dst = l.k_tile(stage) + span * WG_BLOCK_N * 128;
                bytes += tma_load_2d(&mut smem, k_dst, &self.maps[1], self.k, col, j * WG_BLOCK_N);
                let v_dst = l.v_tile(stage) + span * WG_BLOCK_N * 128;
                bytes += tma_load_2d(&mut smem, v_dst, &self.maps[2], self.v, col, j * WG_BLOCK_N);
            }
            assert_eq!(bytes as usize, 2 * l.kv_bytes, "expect_tx of a stage");
            for c in &mut consumers {
                self.tile(c, &smem, stage, j * WG_BLOCK_N);
            }
        }
        for c in &consumers {
            self.finish(c, m0, head, result);
        }
    }

    fn tile(&self, c: &mut Consumer, smem: &Smem, stage: usize, key0: usize) {
        let (d, l) = (self.d, self.layout);
        let (q_tile, k_tile, v_tile) = (l.q_tile as u32, l.k_tile(stage) as u32, l.v_tile(stage) as u32);
        // S = Q·Kᵀ.
        let mut s: WgAcc = vec![vec![f32::NAN; WG_BLOCK_N / 2]; WARPGROUP];
        for kk in 0..(d / 16) as u32 {
            let a = smem_desc(
                q_tile + k_major_offset(WG_BLOCK_M as u32, 64 * c.wg as u32, kk),
                WG_K_MAJOR_LBO,
                WG_K_MAJOR_SBO,
            );
            let b = smem_desc(
                k_tile + k_major_offset(WG_BLOCK_N as u32, 0, kk),
                WG_K_MAJOR_LBO,
                WG_K_MAJOR_SBO,
            );
            wgmma_ss(&mut s, WG_BLOCK_N, smem, a, b, kk > 0);
        }
        for (t, regs) in s.iter_mut().enumerate() {
            for (i, x) in regs.iter_mut().enumerate() {
                let key = key0 + s_key_row(t, i).0;
                *x = if key < self.shape.kv_tokens {
                    *x * self.scale_log2
                } else {
                    f32::NEG_INFINITY
                };
            }
        }
        online_softmax(&mut s, &mut c.o, &mut c.row_max, &mut c.row_sum);
        // O += P·V.
        for kk in 0..WG_BLOCK_N / 16 {
            let p: Vec<[u32; 4]> = s
                .iter()
                .map(|r| {
                    let b = 8 * kk;
                    [
                        pack_bf16x2(r[b], r[b + 1]),
                        pack_bf16x2(r[b + 2], r[b + 3]),
                        pack_bf16x2(r[b + 4], r[b + 5]),
                        pack_bf16x2(r[b + 6], r[b + 7]),
                    ]
                })
                .collect();
            let b = smem_desc(v_tile + v_offset(kk as u32), WG_V_LBO, WG_V_SBO);
            wgmma_rs(&mut c.o, d, smem, &p, b);
        }
    }

    fn finish(&self, c: &Consumer, m0: usize, head: usize, result: &mut [f32]) {
        let sums = quad_reduce(&c.row_sum, |a, b| a + b);
        for (t, o) in c.o.iter().enumerate() {
            let (warp, lane) = (t / 32, t % 32);
            let (group, quad) = (lane / 4, lane % 4);
            for r in 0..2 {
                let sum = sums[t][r];
                let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
                let query = m0 + 64 * c.wg + 16 * warp + group + 8 * r;
                if query >= self.shape.q_tokens {
                    continue;
                }
                let row = (query * self.shape.heads + head) * self.out_dim;
                for nd in 0..self.d / 8 {
                    let col = 8 * nd + 2 * quad;
                    for (e, x) in [o[4 * nd + 2 * r] * inv, o[4 * nd + 2 * r + 1] * inv]
                        .into_iter()
                        .enumerate()
                    {
                        if col + e < self.out_dim {
                            result[row + col + e] = match self.out {
                                WgmmaOut::F32 => x,
                                WgmmaOut::Bf16 => bf16_value(bf16_bits(x)),
                            };
                        }
                    }
                }
            }
        }
    }
}

/// `x` combined over the 4 threads of each quad (`__shfl_xor_sync` by 1, then 2), per row.
fn quad_reduce(x: &[[f32; 2]], f: impl Fn(f32, f32) -> f32) -> Vec<[f32; 2]> {
    let mut y = x.to_vec();
    for mask in [1, 2] {
        let prev = y.clone();
        for (t, v) in y.iter_mut().enumerate() {
            for r in 0..2 {
                v[r] = f(prev[t][r], prev[t ^ mask][r]);
            }
        }
    }
    y
}

/// The kernel's online-softmax update of one tile, per thread and row `r` (S registers with
/// `(i / 2) % 2 == r`): new running max over the quad, rescale of the sum and O, `s ← 2^(s − max)`.
pub fn online_softmax(s: &mut WgAcc, o: &mut WgAcc, row_max: &mut [[f32; 2]], row_sum: &mut [[f32; 2]]) {
    let local: Vec<[f32; 2]> = s
        .iter()
        .zip(row_max.iter())
        .map(|(regs, m)| {
            std::array::from_fn(|r| {
                (0..regs.len() / 4).fold(m[r], |mx, nb| {
                    mx.max(regs[4 * nb + 2 * r].max(regs[4 * nb + 2 * r + 1]))
                })
            })
        })
        .collect();
    let mx = quad_reduce(&local, f32::max);
    for t in 0..s.len() {
        for r in 0..2 {
            let base = if mx[t][r] == f32::NEG_INFINITY { 0.0 } else { mx[t][r] };
            let correction = (row_max[t][r] - base).exp2();
            row_max[t][r] = mx[t][r];
            row_sum[t][r] *= correction;
            for nd in 0..o[t].len() / 4 {
                o[t][4 * nd + 2 * r] *= correction;
                o[t][4 * nd + 2 * r + 1] *= correction;
            }
            for nb in 0..s[t].len() / 4 {
                for e in 0..2 {
                    let x = &mut s[t][4 * nb + 2 * r + e];
                    *x = (*x - base).exp2();
                    row_sum[t][r] += *x;
                }
            }
        }
    }
}

/// f32 activations → the kernel's inputs: bf16 bits, each head zero-padded from `head_dim` to `d`.
pub fn pack_heads(x: &[f32], head_dim: usize, d: usize) -> Vec<u16> {
    x.chunks(head_dim)
        .flat_map(|h| (0..d).map(move |c| if c < head_dim { bf16_bits(h[c]) } else { 0 }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::nn_attention::attention;
    use crate::tensor_core::fragments::{isa_a_element, isa_c_element};

    const SOURCE: &str = include_str!("../../cuda/attention_wgmma.cu");

    /// xorshift64*, values in ±scale.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, scale: f32) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let u = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0) * scale
        }
        fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
            (0..len).map(|_| self.next(scale)).collect()
        }
        fn below(&mut self, n: usize) -> usize {
            ((self.next(0.5) + 0.5) * n as f32) as usize % n
        }
    }

    fn shape(q_tokens: usize, kv_tokens: usize, heads: usize, head_dim: usize) -> AttentionShape {
        AttentionShape {
            q_tokens,
            kv_tokens,
            heads,
            head_dim,
        }
    }

    #[test]
    fn the_kernel_source_spells_these_maps() {
        for (name, value) in [
            ("WG_CONSUMERS", WG_CONSUMERS),
            ("WG_BLOCK_N", WG_BLOCK_N),
            ("WG_STAGES", WG_STAGES),
            ("WG_SPAN", WG_SPAN),
        ] {
            let line = format!("#define {name} {value} ");
            assert!(SOURCE.contains(&line), "attention_wgmma.cu lacks {line:?}");
        }
        for line in [
            "#define WG_CONSUMER_WARPS (WG_CONSUMERS * 4) ",
            "#define WG_THREADS (WG_CONSUMERS * 128 + 32) ",
            "#define WG_BLOCK_M (WG_CONSUMERS * 64) ",
            "#define WG_K_MAJOR_LBO 16u\n",
            "#define WG_K_MAJOR_SBO 1024u\n",
            "#define WG_V_LBO (WG_BLOCK_N * 128u)\n",
            "#define WG_V_SBO 1024u\n",
            // smem_desc, k_major_offset, v_offset, the accumulator's key, P's A fragments, the
            // parities and the layout, as this file has them.
            "return (u64)((addr & 0x3FFFFu) >> 4) | ((u64)((lbo & 0x3FFFFu) >> 4) << 16) |",
            "((u64)((sbo & 0x3FFFFu) >> 4) << 32) | (1ull << 62);",
            "return (kk >> 2) * rows * 128u + row0 * 128u + (kk & 3u) * 32u;",
            "return kk * 16u * 128u;",
            "const u32 key = key0 + 8 * (i >> 2) + 2 * quad + (i & 1u);",
            "const u32 query = m0 + 64 * wg + 16 * wg_warp + group + 8 * r;",
            "p[kk][0] = pack_bf16x2(s[8 * kk], s[8 * kk + 1]);",
            "p[kk][1] = pack_bf16x2(s[8 * kk + 2], s[8 * kk + 3]);",
            "p[kk][2] = pack_bf16x2(s[8 * kk + 4], s[8 * kk + 5]);",
            "p[kk][3] = pack_bf16x2(s[8 * kk + 6], s[8 * kk + 7]);",
            "mbar_wait(empty0 + 8 * stage, ((j / WG_STAGES) + 1u) & 1u);",
            "mbar_wait(full0 + 8 * stage, (j / WG_STAGES) & 1u);",
            "mbar_init(empty0 + 8 * s, WG_CONSUMER_WARPS);",
            "const u32 q_tile = (shared_address(wgmma_smem) + 1023u) & ~1023u;",
            "const u32 full0 = q_full + 8, empty0 = full0 + 8 * WG_STAGES;",
            "smem_desc(q_tile + k_major_offset(WG_BLOCK_M, 64 * wg, kk), WG_K_MAJOR_LBO, WG_K_MAJOR_SBO);",
            "smem_desc(k_tile + k_major_offset(WG_BLOCK_N, 0, kk), WG_K_MAJOR_LBO, WG_K_MAJOR_SBO);",
            "wgmma_rs<D>(o, p[kk], smem_desc(v_tile + v_offset(kk), WG_V_LBO, WG_V_SBO));",
            "tma_load_2d(q_tile + span * WG_BLOCK_M * 128u, tmap_q, col0 + (int)(span * WG_SPAN), (int)m0, q_full);",
            "tma_load_2d(k_tile + span * WG_BLOCK_N * 128u, tmap_k, col, row, full);",
            "tma_load_2d(k_tile + KV_BYTES + span * WG_BLOCK_N * 128u, tmap_v, col, row, full);",
            // S from shared memory K-major (trans 0, 0); P·V with V MN-major (trans-b 1).
            "%32, %33, p, 1, 1, 0, 0;",
            "{%32, %33, %34, %35}, %36, 1, 1, 1, 1;",
            "{%64, %65, %66, %67}, %68, 1, 1, 1, 1;",
        ] {
            assert!(SOURCE.contains(line), "attention_wgmma.cu no longer has {line:?}");
        }
        for d in WG_HEAD_DIMS {
            for (out, ty) in [(WgmmaOut::F32, "float"), (WgmmaOut::Bf16, "bf16_bits")] {
                let name = wgmma_kernel_name(d, out).expect("instantiated");
                let line = format!("ATTENTION_WGMMA_KERNEL({name}, {d}, {ty})\n");
                assert!(SOURCE.contains(&line), "attention_wgmma.cu lacks {line:?}");
            }
        }
        assert_eq!(SOURCE.matches("\nATTENTION_WGMMA_KERNEL(").count(), 4);
        assert_eq!(WG_THREADS, 288);
        // 1 KiB slack + Q 32 KiB + 2 stages of K and V 64 KiB + 5 barriers.
        assert_eq!(wgmma_smem_bytes(128), 1024 + 32768 + 65536 + 40);
        assert!(wgmma_smem_bytes(64) > 48 * 1024 && wgmma_smem_bytes(128) <= 227 * 1024);
    }

    #[test]
    fn the_isa_fragments_cover_each_matrix_once_and_extend_mma_sync() {
        for n in [64, 128] {
            let mut seen = vec![vec![0; n]; 64];
            for t in 0..WARPGROUP {
                for i in 0..n / 2 {
                    let (row, col) = isa_wgmma_d_element(t, i);
                    seen[row][col] += 1;
                    // Warp w's rows 16w.., each 8-column block the m16n8 C fragment.
                    let (crow, ccol) = isa_c_element(t % 32, i % 4);
                    assert_eq!((row, col), (16 * (t / 32) + crow, 8 * (i / 4) + ccol));
                    // The kernel's key (column) and row of an S register.
                    if n == WG_BLOCK_N {
                        assert_eq!(s_key_row(t, i), (col, row));
                    }
                    // The epilogue's o[4nd + 2r + e] → column 8nd + 2quad + e, row group + 8r.
                    let (nd, r, e) = (i / 4, (i / 2) % 2, i % 2);
                    let lane = t % 32;
                    assert_eq!(
                        (row, col),
                        (16 * (t / 32) + lane / 4 + 8 * r, 8 * nd + 2 * (lane % 4) + e)
                    );
                }
            }
            assert!(seen.iter().flatten().all(|&c| c == 1), "D, N = {n}");
        }
        let mut a = [[0; 16]; 64];
        for t in 0..WARPGROUP {
            for i in 0..8 {
                let (row, col) = isa_wgmma_a_element(t, i);
                a[row][col] += 1;
                let (r16, c16) = isa_a_element(t % 32, i);
                assert_eq!((row, col), (16 * (t / 32) + r16, c16));
                // P's A fragment kk is S's registers 8kk.. of the same thread, same positions.
                for kk in 0..WG_BLOCK_N / 16 {
                    let (key, srow) = s_key_row(t, 8 * kk + i);
                    assert_eq!((srow, key), (row, 16 * kk + col), "thread {t}, element {i}");
                }
            }
        }
        assert!(a.iter().flatten().all(|&c| c == 1));
    }

    #[test]
    fn descriptor_fields_sit_at_the_isa_bit_positions() {
        // Start 0x400 → 0x40, LBO 16 → 1 at bit 16, SBO 1024 → 0x40 at bit 32, 128B swizzle = 1
        // in bits 62..63, base offset 0.
        assert_eq!(smem_desc(0x400, 16, 1024), 0x4000_0040_0001_0040);
        assert_eq!(smem_desc(0x3fff0, 8192, 1024), 0x4000_0040_0200_3fff);
        for (addr, lbo, sbo) in [(0u32, 16, 1024), (0x1_2340, 8192, 1024), (0x3_fff0, 0x3_fff0, 0x10)] {
            let d = isa_descriptor_decode(smem_desc(addr, lbo, sbo));
            assert_eq!(
                d,
                IsaDescriptor {
                    start: addr as usize,
                    lbo: lbo as usize,
                    sbo: sbo as usize,
                    base_offset: 0,
                    swizzle: 1
                }
            );
        }
        // Nothing leaks into the reserved bits (14..15, 30..31, 46..48, 52..61).
        let reserved = (3u64 << 14) | (3 << 30) | (7 << 46) | (0x3ff << 52);
        assert_eq!(smem_desc(u32::MAX, u32::MAX, u32::MAX) & reserved, 0);
    }

    #[test]
    fn tma_swizzle_128b_is_the_address_swizzle_wgmma_reads_with() {
        for dst in [0, 1024, 7 * 1024, 200 * 1024] {
            for row in 0..256 {
                for chunk in 0..8 {
                    assert_eq!(
                        dst + isa_tma_swizzle_128b_offset(row, chunk),
                        isa_swizzle_128b(dst + row * 128 + chunk * 16),
                        "dst {dst}, row {row}, chunk {chunk}"
                    );
                }
            }
        }
        // Off the 1024-byte pattern the two disagree: why every tile is aligned to it.
        assert_ne!(512 + isa_tma_swizzle_128b_offset(0, 1), isa_swizzle_128b(512 + 16));
        // A permutation within each 1024-byte atom, and the 8 rows a wgmma core matrix reads
        // (one logical chunk) fall in 8 different 16-byte bank groups.
        let mut seen = [false; 64];
        for row in 0..8 {
            let mut groups: Vec<usize> = (0..8)
                .map(|chunk| {
                    let at = isa_tma_swizzle_128b_offset(row, chunk) / 16;
                    assert!(!seen[at]);
                    seen[at] = true;
                    at % 8
                })
                .collect();
            groups.sort();
            assert_eq!(groups, (0..8).collect::<Vec<_>>());
        }
        for chunk in 0..8 {
            let mut groups: Vec<usize> = (0..8)
                .map(|row| isa_tma_swizzle_128b_offset(row, chunk) / 16 % 8)
                .collect();
            groups.sort();
            assert_eq!(groups, (0..8).collect::<Vec<_>>(), "chunk {chunk}");
        }
    }

    #[test]
    fn the_tensor_maps_are_valid_and_count_their_bytes() {
        let [q, k, v] = wgmma_tensor_maps(shape(32760, 512, 12, 128), 128).expect("Wan cross-attention");
        assert_eq!((q.cols, q.rows, q.row_stride_bytes), (1536, 32760, 3072));
        assert_eq!((q.box_cols, q.box_rows, k.box_rows), (64, 128, 64));
        assert_eq!((k.rows, v), (512, k));
        assert_eq!(q.box_bytes() as usize, WG_BLOCK_M * WG_SPAN * 2);
        assert!(TmaBox2d::bf16(0, 64, 64).is_err());
        assert!(
            TmaBox2d::bf16(4, 60, 64).is_err(),
            "a 120-byte row stride is not a multiple of 16"
        );
        assert!(TmaBox2d::bf16(4, 64, 257).is_err());
    }

    #[test]
    fn the_smem_layout_is_aligned_and_fits_for_any_base() {
        for d in WG_HEAD_DIMS {
            for base in (0..4096).step_by(16) {
                let l = SmemLayout::new(base, d);
                assert!(l.end() <= base + wgmma_smem_bytes(d), "d {d}, base {base}");
                for s in 0..WG_STAGES {
                    assert_eq!((l.k_tile(s) % 1024, l.v_tile(s) % 1024), (0, 0));
                    assert!(l.v_tile(s) + l.kv_bytes <= l.q_full);
                }
                assert_eq!((l.q_tile % 1024, l.q_full % 8, l.q_tile >= base), (0, 0, true));
            }
        }
    }

    /// Tiles of random bf16 values loaded by the emulated TMA exactly as the kernel's producer
    /// does, then read back through the kernel's descriptors element by element.
    #[test]
    fn the_descriptors_read_back_the_tiles_tma_wrote() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for d in WG_HEAD_DIMS {
            let sh = shape(150, 100, 3, d);
            let cols = sh.heads * d;
            let [mq, mk, mv] = wgmma_tensor_maps(sh, d).unwrap();
            let q: Vec<u16> = rng.vec(sh.q_tokens * cols, 2.0).into_iter().map(bf16_bits).collect();
            let k: Vec<u16> = rng.vec(sh.kv_tokens * cols, 2.0).into_iter().map(bf16_bits).collect();
            let v: Vec<u16> = rng.vec(sh.kv_tokens * cols, 2.0).into_iter().map(bf16_bits).collect();
            let l = SmemLayout::new(48, d);
            let (head, m0, j, stage) = (2, 128, 1, 1);
            let col0 = head * d;
            let mut smem = Smem::new(48 + wgmma_smem_bytes(d));
            for span in 0..d / WG_SPAN {
                let col = col0 + span * WG_SPAN;
                tma_load_2d(&mut smem, l.q_tile + span * WG_BLOCK_M * 128, &mq, &q, col, m0);
                tma_load_2d(
                    &mut smem,
                    l.k_tile(stage) + span * WG_BLOCK_N * 128,
                    &mk,
                    &k,
                    col,
                    j * 64,
                );
                tma_load_2d(
                    &mut smem,
                    l.v_tile(stage) + span * WG_BLOCK_N * 128,
                    &mv,
                    &v,
                    col,
                    j * 64,
                );
            }
            let at = |x: &[u16], rows: usize, r: usize, c: usize| {
                if r < rows {
                    bf16_value(x[r * cols + col0 + c])
                } else {
                    0.0 // zero-filled past the matrix
                }
            };
            for kk in 0..d / 16 {
                for wg in 0..WG_CONSUMERS {
                    let off = k_major_offset(WG_BLOCK_M as u32, 64 * wg as u32, kk as u32);
                    let a = smem_desc(l.q_tile as u32 + off, WG_K_MAJOR_LBO, WG_K_MAJOR_SBO);
                    for m in 0..64 {
                        for kx in 0..16 {
                            let want = at(&q, sh.q_tokens, m0 + 64 * wg + m, 16 * kk + kx);
                            assert_eq!(operand(&smem, a, Major::K, m, kx), want, "Q d{d} kk {kk} ({m}, {kx})");
                        }
                    }
                }
                let off = k_major_offset(WG_BLOCK_N as u32, 0, kk as u32);
                let b = smem_desc(l.k_tile(stage) as u32 + off, WG_K_MAJOR_LBO, WG_K_MAJOR_SBO);
                for key in 0..64 {
                    for kx in 0..16 {
                        let want = at(&k, sh.kv_tokens, j * 64 + key, 16 * kk + kx);
                        assert_eq!(operand(&smem, b, Major::K, key, kx), want, "K d{d} kk {kk}");
                    }
                }
            }
            for kk in 0..WG_BLOCK_N / 16 {
                let b = smem_desc(l.v_tile(stage) as u32 + v_offset(kk as u32), WG_V_LBO, WG_V_SBO);
                for n in 0..d {
                    for kx in 0..16 {
                        let want = at(&v, sh.kv_tokens, j * 64 + 16 * kk + kx, n);
                        assert_eq!(operand(&smem, b, Major::Mn, n, kx), want, "V d{d} kk {kk} ({kx}, {n})");
                    }
                }
            }
        }
    }

    #[test]
    fn the_emulated_wgmmas_are_matmuls_over_the_fragments() {
        let mut rng = Rng(99);
        let l = SmemLayout::new(0, 128);
        let mut smem = Smem::new(wgmma_smem_bytes(128));
        // A: a 64×16 K-major block of the Q tile; B: 16 rows of the V tile, MN-major, N = 128.
        let a: Vec<Vec<f32>> = (0..64).map(|_| rng.vec(16, 2.0)).collect();
        let b: Vec<Vec<f32>> = (0..16).map(|_| rng.vec(128, 2.0)).collect();
        for (m, row) in a.iter().enumerate() {
            for (kx, &x) in row.iter().enumerate() {
                let addr = isa_swizzle_128b(l.q_tile + m * 128 + kx * 2);
                smem.write(addr, bf16_bits(x));
            }
        }
        for (kx, row) in b.iter().enumerate() {
            for (n, &x) in row.iter().enumerate() {
                let addr = isa_swizzle_128b(l.v_tile(0) + (n / 64) * WG_V_LBO as usize + kx * 128 + (n % 64) * 2);
                smem.write(addr, bf16_bits(x));
            }
        }
        let r = |x: f32| bf16_value(bf16_bits(x)) as f64;
        let want = |m: usize, n: usize, bt: &dyn Fn(usize, usize) -> f64| -> f64 {
            (0..16).map(|kx| r(a[m][kx]) * bt(kx, n)).sum()
        };
        // SS: B = Aᵀ-shaped read of the same Q block as a K-major N×K operand (N = 64).
        let desc_a = smem_desc(l.q_tile as u32, WG_K_MAJOR_LBO, WG_K_MAJOR_SBO);
        let mut d: WgAcc = vec![vec![f32::NAN; 32]; WARPGROUP];
        wgmma_ss(&mut d, 64, &smem, desc_a, desc_a, false);
        for (t, regs) in d.iter().enumerate() {
            for (i, &x) in regs.iter().enumerate() {
                let (m, n) = isa_wgmma_d_element(t, i);
                let w = want(m, n, &|kx, n| r(a[n][kx]));
                assert!((x as f64 - w).abs() < 1e-4, "SS ({m}, {n}): {x} vs {w}");
            }
        }
        // RS: A from registers in the ISA's fragment order, B = the MN-major V block.
        let regs: Vec<[u32; 4]> = (0..WARPGROUP)
            .map(|t| {
                std::array::from_fn(|reg| {
                    let lo = isa_wgmma_a_element(t, 2 * reg);
                    let hi = isa_wgmma_a_element(t, 2 * reg + 1);
                    pack_bf16x2(a[lo.0][lo.1], a[hi.0][hi.1])
                })
            })
            .collect();
        let mut d: WgAcc = vec![vec![1.0; 64]; WARPGROUP];
        let desc_b = smem_desc(l.v_tile(0) as u32, WG_V_LBO, WG_V_SBO);
        wgmma_rs(&mut d, 128, &smem, &regs, desc_b);
        for (t, regs) in d.iter().enumerate() {
            for (i, &x) in regs.iter().enumerate() {
                let (m, n) = isa_wgmma_d_element(t, i);
                let w = 1.0 + want(m, n, &|kx, n| r(b[kx][n]));
                assert!((x as f64 - w).abs() < 1e-4, "RS ({m}, {n}): {x} vs {w}");
            }
        }
    }

    /// The producer/consumer ring under random interleavings of the producer thread, the 8
    /// consumer warps and the in-flight TMA copies, over emulated mbarriers with the kernel's
    /// counts, byte counts and parities: a consumer only ever reads a stage holding its tile,
    /// completely landed; the producer never refills a stage a warp still reads or has not read;
    /// and the schedule never deadlocks.
    #[test]
    fn the_ring_protocol_never_races_or_deadlocks() {
        #[derive(Clone, Copy, PartialEq, Debug)]
        enum Stage {
            Empty,
            Filling(usize),
            Landed(usize),
        }
        let mut rng = Rng(0xdead_beef);
        for run in 0..400 {
            let n_tiles = [1, 2, 3, 4, 5, 9][run % 6];
            let spans = 1 + run % 2;
            let kv_bytes = (WG_BLOCK_N * WG_SPAN * 2 * spans) as u32;
            let copy_bytes = kv_bytes / spans as u32;
            let mut q_full = IsaMbarrier::init(1);
            let mut full: Vec<_> = (0..WG_STAGES).map(|_| IsaMbarrier::init(1)).collect();
            let mut empty: Vec<_> = (0..WG_STAGES).map(|_| IsaMbarrier::init(WG_CONSUMER_WARPS)).collect();
            let mut stages = [Stage::Empty; WG_STAGES];
            let mut landed_bytes = [0u32; WG_STAGES];
            let mut q_landed = false;
            let mut readers = [0usize; WG_STAGES];
            // Producer: next tile to issue (after the Q copy, which is step 0).
            let mut producer_q_issued = false;
            let mut producer_j = 0;
            // Consumer warps: (next tile, reading).
            let mut warps = vec![(0usize, false); WG_CONSUMER_WARPS];
            let mut done_by_warp = [0usize; WG_CONSUMER_WARPS];
            // In flight: (stage or None for Q, bytes).
            let mut flight: Vec<(Option<usize>, u32)> = Vec::new();
            loop {
                // Everything that can take a step now.
                let mut ready: Vec<usize> = Vec::new();
                let producer_can = !producer_q_issued
                    || (producer_j < n_tiles
                        && (producer_j < WG_STAGES
                            || empty[producer_j % WG_STAGES].try_wait_parity(producer_empty_parity(producer_j))));
                if producer_can {
                    ready.push(0);
                }
                for (w, &(j, reading)) in warps.iter().enumerate() {
                    let can = reading
                        || (j < n_tiles
                            && q_full.try_wait_parity(0)
                            && full[j % WG_STAGES].try_wait_parity(consumer_full_parity(j)));
                    if can {
                        ready.push(1 + w);
                    }
                }
                for f in 0..flight.len() {
                    ready.push(1 + WG_CONSUMER_WARPS + f);
                }
                if ready.is_empty() {
                    let finished = warps.iter().all(|&(j, r)| j == n_tiles && !r) && flight.is_empty();
                    assert!(finished && producer_j == n_tiles, "deadlock: run {run}, {warps:?}");
                    break;
                }
                let pick = ready[rng.below(ready.len())];
                if pick == 0 {
                    if !producer_q_issued {
                        q_full.arrive_expect_tx(copy_bytes);
                        flight.push((None, copy_bytes));
                        producer_q_issued = true;
                        continue;
                    }
                    let (j, s) = (producer_j, producer_j % WG_STAGES);
                    assert_eq!(readers[s], 0, "run {run}: refilling stage {s} while it is read");
                    if j >= WG_STAGES {
                        assert!(
                            done_by_warp.iter().all(|&n| n > j - WG_STAGES),
                            "tile {} unread",
                            j - WG_STAGES
                        );
                    }
                    stages[s] = Stage::Filling(j);
                    landed_bytes[s] = 0;
                    full[s].arrive_expect_tx(kv_bytes);
                    for _ in 0..2 * spans {
                        flight.push((Some(s), copy_bytes / 2));
                    }
                    producer_j += 1;
                } else if pick <= WG_CONSUMER_WARPS {
                    let w = pick - 1;
                    let (j, reading) = warps[w];
                    let s = j % WG_STAGES;
                    if !reading {
                        assert!(q_landed, "Q read before it landed");
                        assert_eq!(stages[s], Stage::Landed(j), "run {run}: warp {w} reads tile {j}");
                        readers[s] += 1;
                        warps[w].1 = true;
                    } else {
                        readers[s] -= 1;
                        done_by_warp[w] = j + 1;
                        warps[w] = (j + 1, false);
                        empty[s].arrive();
                    }
                } else {
                    let (target, bytes) = flight.swap_remove(pick - 1 - WG_CONSUMER_WARPS);
                    match target {
                        None => {
                            q_landed = true;
                            q_full.complete_tx(bytes);
                        }
                        Some(s) => {
                            landed_bytes[s] += bytes;
                            if landed_bytes[s] == kv_bytes {
                                let Stage::Filling(j) = stages[s] else {
                                    panic!("landing on {s}")
                                };
                                stages[s] = Stage::Landed(j);
                            }
                            full[s].complete_tx(bytes);
                        }
                    }
                }
            }
        }
    }

    fn max_error(what: &str, got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        got.iter().zip(want).enumerate().fold(0.0, |worst, (i, (&g, &w))| {
            assert!(g.is_finite(), "{what}: element {i} is {g} (want {w})");
            worst.max((g - w).abs() / w.abs().max(1.0))
        })
    }

    fn rounded(x: &[f32]) -> Vec<f32> {
        x.iter().map(|&f| bf16_value(bf16_bits(f))).collect()
    }

    fn run(q: &[f32], k: &[f32], v: &[f32], sh: AttentionShape, scale: f32, out: WgmmaOut, base: usize) -> Vec<f32> {
        let d = WG_HEAD_DIMS
            .into_iter()
            .find(|&d| sh.head_dim <= d)
            .expect("a kernel size");
        let (qp, kp, vp) = (
            pack_heads(q, sh.head_dim, d),
            pack_heads(k, sh.head_dim, d),
            pack_heads(v, sh.head_dim, d),
        );
        emulate_wgmma_kernel(&qp, &kp, &vp, sh, d, sh.head_dim, scale, out, base)
    }

    /// Tails in both lengths (a partial 128-query block, a last K/V tile of 1..63 keys, fewer keys
    /// than a tile, one key and one query), both head sizes, padded heads (12, 72), cross-attention
    /// (many queries, 512 keys: Wan's text length), f32 and bf16 output, unaligned smem bases.
    const SHAPES: &[(usize, usize, usize, usize)] = &[
        (150, 70, 3, 128),
        (65, 513, 2, 64),
        (1, 1, 1, 64),
        (128, 64, 1, 128),
        (300, 512, 1, 128),
        (130, 129, 1, 64),
        (40, 30, 2, 12),
        (33, 65, 2, 72),
    ];

    #[test]
    fn the_block_matches_the_reference_attention() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for (n, &(qt, kt, h, hd)) in SHAPES.iter().enumerate() {
            let sh = shape(qt, kt, h, hd);
            let w = sh.width();
            let (q, k, v) = (rng.vec(qt * w, 1.5), rng.vec(kt * w, 1.5), rng.vec(kt * w, 1.5));
            let scale = 1.0 / (hd as f32).sqrt();
            let base = [0, 16, 400, 1008][n % 4];
            let mut want = vec![0.0; q.len()];
            attention(&rounded(&q), &rounded(&k), &rounded(&v), sh, scale, &mut want);
            let got = run(&q, &k, &v, sh, scale, WgmmaOut::F32, base);
            let err_rounded = max_error("f32 out vs rounded inputs", &got, &want);
            let got_bf16 = run(&q, &k, &v, sh, scale, WgmmaOut::Bf16, base);
            let err_bf16 = max_error("bf16 out vs rounded inputs", &got_bf16, &want);
            attention(&q, &k, &v, sh, scale, &mut want);
            let err = max_error("f32 out vs f32 inputs", &got, &want);
            eprintln!(
                "{sh:?}: max error {err_rounded:.2e} (bf16 inputs), {err:.2e} (f32 inputs), {err_bf16:.2e} (bf16 out)"
            );
            assert!(
                err_rounded < 4e-3 && err < 1e-2 && err_bf16 < 8e-3,
                "{sh:?}: {err_rounded}, {err}, {err_bf16}"
            );
        }
    }

    #[test]
    fn a_fully_masked_tile_gives_no_nan_and_changes_nothing() {
        // A tile whose every score is −inf (as a tile past the keys would be), then a finite one:
        // the result equals the finite tile alone.
        let mut rng = Rng(5);
        let finite: WgAcc = (0..WARPGROUP).map(|_| rng.vec(32, 4.0)).collect();
        let (mut o1, mut m1, mut l1) = (
            vec![vec![0.0; 32]; WARPGROUP],
            vec![[f32::NEG_INFINITY; 2]; WARPGROUP],
            vec![[0.0; 2]; WARPGROUP],
        );
        let mut masked = vec![vec![f32::NEG_INFINITY; 32]; WARPGROUP];
        online_softmax(&mut masked, &mut o1, &mut m1, &mut l1);
        assert!(masked.iter().flatten().all(|&p| p == 0.0), "2^(−inf − 0) = 0");
        assert!(m1.iter().flatten().all(|&m| m == f32::NEG_INFINITY) && l1.iter().flatten().all(|&s| s == 0.0));
        let mut s1 = finite.clone();
        online_softmax(&mut s1, &mut o1, &mut m1, &mut l1);
        let (mut o2, mut m2, mut l2) = (
            vec![vec![0.0; 32]; WARPGROUP],
            vec![[f32::NEG_INFINITY; 2]; WARPGROUP],
            vec![[0.0; 2]; WARPGROUP],
        );
        let mut s2 = finite;
        online_softmax(&mut s2, &mut o2, &mut m2, &mut l2);
        assert_eq!((s1, m1, l1), (s2, m2, l2));
        assert!(o1.iter().flatten().all(|x| x.is_finite()));
    }

    #[test]
    fn large_scores_do_not_overflow() {
        let sh = shape(2, 3, 1, 64);
        let q = vec![30.0; 2 * 64];
        let k = vec![1.0; 3 * 64];
        let v: Vec<f32> = (0..3 * 64).map(|i| (i / 64) as f32).collect();
        for out in [WgmmaOut::F32, WgmmaOut::Bf16] {
            let got = run(&q, &k, &v, sh, 1.0, out, 0);
            assert!(got.iter().all(|&x| (x - 1.0).abs() < 1e-6), "{got:?}");
        }
    }
}
