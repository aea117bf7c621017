//! Panel matrices: the 32-value block formats Q4_0, Q4_1 and Q8_0 repacked sixteen rows at a
//! time, for products that sum each block in integers and scale it once (`q8-fast`).
//!
//! [`crate::gemm`] follows ggml's x86 kernels to the bit: each block's products are summed in
//! eight lanes of four, and every lane is converted and scaled on its own. That costs a
//! conversion and a fused multiply-add per 32 multiply-adds, which is what bounds those
//! kernels. Here a block's 32 products are summed into one exact integer, then scaled once:
//!
//! ```text
//! acc = 0
//! for each block k, in order:
//!     acc = fma(d_w·d_a, Σ q_w·q_a, acc)     // the exact integer sum, as f32
//!     acc = fma(m_w, s_a, acc)              // Q4_1's minimum against the activation's sum
//! ```
//!
//! The result is not bitwise llama.cpp's, but it is one fixed sequence of float operations
//! per output, so it keeps what matters for sampling: an output is bitwise the same alone or
//! in any batch, on any number of threads and on every instruction set (the portable kernel
//! here and the AVX-512 VNNI, AVX2 and NEON ones give the same bits). Activations are rounded to 8 bits
//! exactly as in [`crate::gemm`].
//!
//! The layout is built once, at load: rows go in panels of [`PANEL_ROWS`]; for each block,
//! the panel's quants are interleaved four bytes per row (bytes `4c..4c + 4` of rows 0..16 make
//! line `c`), so that one 512-bit `vpdpbusd` against four broadcast activation bytes gives
//! sixteen rows' partial sums at once and no horizontal sum is ever needed. Q8_0's quants are
//! stored plus 128 (unsigned), and each activation block carries `−offset·Σq_a` to start its
//! sums from (AVX2's nibble kernel for several rows packs the activations plus 128 instead,
//! see `ActForm`). The scales (`d`, and `m` for Q4_1, as f16) of the panel's blocks follow its
//! quants. The panels take as many bytes as the original rows (Q8_0's scales are padded to
//! whole cache lines per panel).
//!
//! ```
//! use quant::formats::quantize_to_vec;
//! use quant::gemm::{QMatrix, Scratch};
//! use quant::panels::{matmul_panels, PanelMatrix};
//! use quant::GgmlType;
//!
//! let (rows, cols) = (40, 64);
//! let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
//! let bytes = quantize_to_vec(GgmlType::Q4_1, &w)?;
//! let p = PanelMatrix::new(&QMatrix::new(GgmlType::Q4_1, rows, cols, &bytes)?)?;
//! let x: Vec<f32> = (0..3 * cols).map(|i| (i as f32 * 0.1).sin()).collect();
//! let mut y = vec![0.0; 3 * rows];
//! matmul_panels(&[&p], &x, &mut [&mut y], &mut Scratch::default())?;
//! // Row 1 of the batch alone gives the same bits.
//! let mut y1 = vec![0.0; rows];
//! matmul_panels(&[&p], &x[cols..2 * cols], &mut [&mut y1], &mut Scratch::default())?;
//! assert_eq!(y1, y[rows..2 * rows]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use rayon::prelude::*;

use crate::dispatch::Isa;
use crate::dot::{Activation, KernelError};
use crate::formats::{f16, Block, BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use crate::gemm::{OutPtr, QMatrix, Scratch};
use crate::types::GgmlType;

/// Weight rows per panel.
pub const PANEL_ROWS: usize = 16;

/// The weight types that have panel kernels.
pub const PANEL_TYPES: [GgmlType; 3] = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0];

/// Values per block of every panel format.
const BLOCK: usize = 32;

/// Bytes of panel per parallel work item.
const CHUNK_BYTES: usize = 16 << 10;

/// A panel format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl Kind {
    fn of(ty: GgmlType) -> Option<Kind> {
        match ty {
            GgmlType::Q4_0 => Some(Kind::Q4_0),
            GgmlType::Q4_1 => Some(Kind::Q4_1),
            GgmlType::Q8_0 => Some(Kind::Q8_0),
            _ => None,
        }
    }

    /// Whether a byte holds two quants (elements `j` and `j + 16`).
    pub(crate) fn nibbles(self) -> bool {
        self != Kind::Q8_0
    }

    /// Whether blocks have a minimum.
    pub(crate) fn min(self) -> bool {
        self == Kind::Q4_1
    }

    /// Bytes of quants of one block of a panel.
    pub(crate) fn qbytes(self) -> usize {
        match self.nibbles() {
            true => PANEL_ROWS * BLOCK / 2,
            false => PANEL_ROWS * BLOCK,
        }
    }

    /// Bytes of scales of one block of a panel: `d` of each row, then `m` where there is one.
    pub(crate) fn sbytes(self) -> usize {
        match self.min() {
            true => 4 * PANEL_ROWS,
            false => 2 * PANEL_ROWS,
        }
    }

    /// What the stored quants exceed the signed ones by.
    const fn offset(self) -> i32 {
        match self {
            Kind::Q4_0 => 8,
            Kind::Q4_1 => 0,
            Kind::Q8_0 => 128,
        }
    }
}

/// A cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
struct Line([u8; 64]);

// SAFETY: `Line` is `repr(C)` over a byte array: no padding, and every bit pattern (all zeros
// included) is a valid value.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; it is `Copy` and `'static`.
unsafe impl bytemuck::Pod for Line {}

/// A Q4_0, Q4_1 or Q8_0 matrix repacked in panels of [`PANEL_ROWS`] rows (see the module
/// docs). The last panel is padded with zero rows.
#[derive(Clone, Debug)]
pub struct PanelMatrix {
    ty: GgmlType,
    kind: Kind,
    rows: usize,
    cols: usize,
    /// Bytes per panel: its blocks' quants, then their scales, padded to whole lines.
    stride: usize,
    data: Vec<Line>,
}

impl PanelMatrix {
    /// Repacks `w`; an error if its type has no panel kernels ([`PANEL_TYPES`]).
    pub fn new(w: &QMatrix<'_>) -> Result<PanelMatrix, KernelError> {
        let (ty, rows, cols) = (w.ty(), w.rows(), w.cols());
        let kind = Kind::of(ty).ok_or_else(|| KernelError::Shape {
            ty,
            rows,
            cols,
            detail: format!("{ty} has no panel kernels (they take Q4_0, Q4_1 and Q8_0)"),
        })?;
        let nb = cols / BLOCK;
        let stride = panel_stride(kind.qbytes(), kind.sbytes(), nb);
        let panels = rows.div_ceil(PANEL_ROWS);
        let mut data = vec![Line([0; 64]); panels * stride / 64];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut data);
        let row_bytes = w.data().len() / rows.max(1);
        bytes
            .par_chunks_mut(stride.max(1))
            .enumerate()
            .for_each(|(p, panel)| {
                let (qs, scales) = panel.split_at_mut(nb * kind.qbytes());
                for n in 0..PANEL_ROWS.min(rows - p * PANEL_ROWS) {
                    let r = p * PANEL_ROWS + n;
                    let row = &w.data()[r * row_bytes..(r + 1) * row_bytes];
                    for k in 0..nb {
                        let q = &mut qs[k * kind.qbytes()..(k + 1) * kind.qbytes()];
                        let s = &mut scales[k * kind.sbytes()..(k + 1) * kind.sbytes()];
                        let (d, m) = place(kind, row, k, n, q);
                        s[2 * n..2 * n + 2].copy_from_slice(&d.to_le_bytes());
                        if let Some(m) = m {
                            let at = 2 * PANEL_ROWS + 2 * n;
                            s[at..at + 2].copy_from_slice(&m.to_le_bytes());
                        }
                    }
                }
            });
        Ok(PanelMatrix {
            ty,
            kind,
            rows,
            cols,
            stride,
            data,
        })
    }

    /// The weight type the panels were made from.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Number of rows (outputs per activation row).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 64
    }

    fn panels(&self) -> usize {
        self.rows.div_ceil(PANEL_ROWS)
    }

    /// Panel `p`'s quants and scales.
    fn panel(&self, p: usize) -> (&[u8], &[u8]) {
        let bytes: &[u8] = bytemuck::cast_slice(&self.data);
        let panel = &bytes[p * self.stride..(p + 1) * self.stride];
        let nb = self.cols / BLOCK;
        let (qs, rest) = panel.split_at(nb * self.kind.qbytes());
        (qs, &rest[..nb * self.kind.sbytes()])
    }
}

/// Bytes from one panel to the next: `nb` blocks of `qbytes` quants and `sbytes` scales,
/// padded to a cache line.
pub(crate) const fn panel_stride(qbytes: usize, sbytes: usize, nb: usize) -> usize {
    (nb * (qbytes + sbytes)).next_multiple_of(64)
}

/// Block `k` of a row (its bytes as stored in the file) into panel row `n`'s place in `q`
/// (that block's quants of the panel); returns its scale and minimum as raw f16 bits.
fn place(kind: Kind, row: &[u8], k: usize, n: usize, q: &mut [u8]) -> (u16, Option<u16>) {
    fn block<B: Block>(row: &[u8], k: usize) -> B {
        let size = std::mem::size_of::<B>();
        bytemuck::pod_read_unaligned(&row[k * size..(k + 1) * size])
    }
    let mut put = |src: &[u8], flip: u8| {
        for (c, dword) in src.chunks_exact(4).enumerate() {
            for (j, &b) in dword.iter().enumerate() {
                q[c * 4 * PANEL_ROWS + 4 * n + j] = b ^ flip;
            }
        }
    };
    match kind {
        Kind::Q4_0 => {
            let b: BlockQ4_0 = block(row, k);
            put(&b.qs, 0);
            (b.d.to_bits(), None)
        }
        Kind::Q4_1 => {
            let b: BlockQ4_1 = block(row, k);
            put(&b.qs, 0);
            (b.d.to_bits(), Some(b.m.to_bits()))
        }
        Kind::Q8_0 => {
            let b: BlockQ8_0 = block(row, k);
            put(bytemuck::cast_slice(&b.qs), 0x80);
            (b.d.to_bits(), None)
        }
    }
}

/// One activation block as the panel kernels read it: the quants, the scale, the sum
/// `s = d·Σq` (Q8_1's, for Q4_1's minimum) and where its integer sums start.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PanelAct {
    /// The quants, or in [`ActForm::Unsigned`] the quants plus 128 (as unsigned bytes).
    pub(crate) qs: [i8; 32],
    pub(crate) d: f32,
    pub(crate) s: f32,
    /// `−offset·Σq`: removes what the stored quants' offset adds ([`ActForm::Signed`]; the
    /// unsigned form's is on [`ActForm::Unsigned`]).
    pub(crate) start: i32,
    /// Nonzero when a quant is −128 (the AVX2 Q8_0 kernel's sign trick cannot take it).
    pub(crate) extreme: u32,
}

impl PanelAct {
    /// Packs one block in place. Inlined into the packing loop, and written so that LLVM
    /// vectorizes the sums: a call per block that returned the struct through the stack, or
    /// a sum over an array moved by value, went byte by byte (3-7% of a prefill profile).
    #[inline(always)]
    fn pack(&mut self, qs: &[i8; 32], d: f16, s: f16, offset: i32, form: ActForm) {
        self.d = d.to_f32();
        self.s = s.to_f32();
        self.extreme = u32::from(qs.iter().fold(false, |e, &q| e | (q == i8::MIN)));
        match form {
            ActForm::Signed => {
                self.qs = *qs;
                self.start = -offset * qs.iter().map(|&q| i32::from(q)).sum::<i32>();
            }
            ActForm::Unsigned => {
                let mut sum = 0u32;
                for (o, &q) in self.qs.iter_mut().zip(qs) {
                    let b = q.cast_unsigned() ^ 0x80;
                    *o = b.cast_signed();
                    sum += u32::from(b);
                }
                // Σ(q + 128) − 32·128 = Σq.
                self.start = (8 - offset) * (sum as i32 - 32 * 128);
            }
        }
    }

    /// A block packed by [`PanelAct::pack`].
    #[cfg(test)]
    fn new(qs: [i8; 32], d: f16, s: f16, offset: i32, form: ActForm) -> PanelAct {
        let mut a = PanelAct::default();
        a.pack(&qs, d, s, offset, form);
        a
    }
}

/// `out = x · wᵀ` with the panel kernels of [`Isa::current`] (see [`matmul_panels`]).
pub fn matmul_panel(
    w: &PanelMatrix,
    x: &[f32],
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    matmul_panels(&[w], x, &mut [out], scratch)
}

/// `outs[i] = x · ws[i]ᵀ` for panel matrices of one type and width, in one parallel step:
/// activations rounded to 8 bits as [`crate::gemm::matmul`] rounds them, each block's
/// products summed in integers and scaled once (the module docs give the order).
pub fn matmul_panels(
    ws: &[&PanelMatrix],
    x: &[f32],
    outs: &mut [&mut [f32]],
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    matmul_panels_with(Isa::current(), ws, x, outs, scratch)
}

/// [`matmul_panels`] on a chosen instruction set (bitwise the same result on each).
pub fn matmul_panels_with(
    isa: Isa,
    ws: &[&PanelMatrix],
    x: &[f32],
    outs: &mut [&mut [f32]],
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    isa.ensure_available()?;
    let Some(first) = ws.first() else {
        return Ok(());
    };
    let shapes: Vec<_> = ws.iter().map(|w| (w.ty, w.rows, w.cols)).collect();
    let batch = crate::gemm::check_product(&shapes, x, outs)?;
    let (kind, cols) = (first.kind, first.cols);
    let nb = cols / BLOCK;
    if batch == 0 || nb == 0 {
        return Ok(());
    }
    let token = kernel_token(isa);
    let form = token.act_form(kind, batch);
    let acts = pack_acts(isa, kind, form, x, batch, nb, scratch)?;
    let ptrs: Vec<OutPtr> = ws
        .iter()
        .zip(outs.iter_mut())
        .map(|(w, o)| OutPtr::new(o, w.rows, batch))
        .collect();
    // Work items: runs of panels of about CHUNK_BYTES, at least four per thread.
    let total: usize = ws.iter().map(|w| w.panels()).sum();
    let per_thread = total.div_ceil(4 * crate::par::current_threads());
    let run = (CHUNK_BYTES / first.stride).clamp(1, per_thread.max(1));
    let tasks: Vec<(usize, usize)> = ws
        .iter()
        .enumerate()
        .flat_map(|(m, w)| (0..w.panels()).step_by(run).map(move |p| (m, p)))
        .collect();
    crate::par::for_each(tasks.len(), |t| {
        let (m, p0) = tasks[t];
        let w = ws[m];
        // A call's outputs; a decoding step's few rows do not clear 4 KiB per task.
        let (mut few, mut many);
        let tile: &mut [[f32; PANEL_ROWS]] = if batch <= 8 {
            few = [[0.0f32; PANEL_ROWS]; 8];
            &mut few
        } else {
            many = [[0.0f32; PANEL_ROWS]; CALL_ROWS];
            &mut many
        };
        if batch == 1 {
            // The first panel's scales and its quants up to where the x86 kernels' own
            // prefetching takes over (PREFETCH_AHEAD bytes ahead, and a panel ahead for
            // scales); elsewhere the hint starts the stream.
            let (qs, scales) = w.panel(p0);
            crate::arch::prefetch_start(qs, crate::arch::PREFETCH_AHEAD);
            crate::arch::prefetch_start(scales, scales.len());
        }
        for p in p0..(p0 + run).min(w.panels()) {
            let (qs, scales) = w.panel(p);
            let first = p * PANEL_ROWS;
            let width = PANEL_ROWS.min(w.rows - first);
            for (t, rows) in acts.chunks(CALL_ROWS * nb).enumerate() {
                let tr = rows.len() / nb;
                let fresh = t == 0;
                let call = Call { kind, form, fresh };
                panel_tile(token, call, qs, scales, rows, nb, &mut tile[..tr]);
                for (i, vals) in tile[..tr].iter().enumerate() {
                    // SAFETY: this task owns panels p0..p0 + run of matrix m, so its rows
                    // `first..first + width` are written by no other task of this step;
                    // `ptrs` point to `outs`, of `batch × rows` values each (`OutPtr::new`
                    // checked), borrowed mutably here until every task has ended, and the
                    // slice is dropped at once.
                    let dst = unsafe { ptrs[m].row_part(t * CALL_ROWS + i, first, width) };
                    match dst.first_chunk_mut::<PANEL_ROWS>() {
                        // A whole panel: one fixed-size copy (no call to memmove).
                        Some(d) => *d = *vals,
                        None => dst.copy_from_slice(&vals[..width]),
                    }
                }
            }
        }
    });
    Ok(())
}

/// Activation rows per call of a panel kernel (it goes over them a few at a time, as many as
/// its registers hold): one call per eight rows cost 3% of a prefill profile in calls and
/// their prologues.
const CALL_ROWS: usize = 64;

/// The kernel for an instruction set: AVX-512 VNNI's, AVX2's or NEON's (with `sdot` where
/// the CPU has it) when `isa` is one of them and the CPU has it, the portable one otherwise.
#[derive(Clone, Copy, Debug)]
enum Token {
    #[cfg(target_arch = "x86_64")]
    Avx512(crate::arch::x86_64::Avx512),
    #[cfg(target_arch = "x86_64")]
    Avx2(crate::arch::x86_64::Avx2),
    #[cfg(target_arch = "aarch64")]
    NeonDot(crate::arch::aarch64::NeonDot),
    #[cfg(target_arch = "aarch64")]
    Neon(crate::arch::aarch64::Neon),
    Portable,
}

impl Token {
    /// How the activations are packed for this kernel, weight format and batch.
    fn act_form(self, kind: Kind, batch: usize) -> ActForm {
        match self {
            // Several rows: the AVX2 nibble kernel that reads unpacked weights from memory
            // (see `panel_tile_unsigned`); one to three rows stream the weights once instead.
            #[cfg(target_arch = "x86_64")]
            Token::Avx2(_) if kind.nibbles() && batch >= 4 => ActForm::Unsigned,
            _ => {
                let _ = (kind, batch);
                ActForm::Signed
            }
        }
    }
}

/// How [`PanelAct`]s hold their quants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ActForm {
    /// As the quantizer gives them, with `start = −offset·Σq`.
    Signed,
    /// Plus 128 (as unsigned bytes), with `start = (8 − offset)·Σq` (the AVX2 nibble kernel
    /// for several rows: `Σ q_a·q_w = Σ (q_a + 128)(q_w − 8) − 128·Σ(q_w − 8) + 8·Σ q_a`, the
    /// middle term the weights' own, and `q_w − 8` a signed byte `vpmaddubsw` can take from
    /// memory).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Unsigned,
}

fn kernel_token(isa: Isa) -> Token {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::arch::x86_64::{Avx2, Avx512};
        match isa {
            Isa::Avx512 => {
                if let Some(t) = Avx512::new() {
                    return Token::Avx512(t);
                }
            }
            Isa::Avx2 => {
                if let Some(t) = Avx2::new() {
                    return Token::Avx2(t);
                }
            }
            _ => {}
        }
    }
    #[cfg(target_arch = "aarch64")]
    if isa == Isa::Neon {
        use crate::arch::aarch64::{Neon, NeonDot};
        if let Some(t) = NeonDot::new() {
            return Token::NeonDot(t);
        }
        if let Some(t) = Neon::new() {
            return Token::Neon(t);
        }
    }
    let _ = isa;
    Token::Portable
}

/// What a kernel call is asked: the weight format, the activations' form, and whether the
/// panel is new to this thread (`false` only when the same thread's previous call took the
/// same panel: the AVX2 kernel for [`ActForm::Unsigned`] then keeps its unpacked quants).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Call {
    kind: Kind,
    form: ActForm,
    fresh: bool,
}

/// One panel (`qs`, `scales`) times activation rows (`acts`, `nb` blocks each), a tile at a
/// time: `out[r]` gets row `r`'s sixteen outputs.
fn panel_tile(
    token: Token,
    call: Call,
    qs: &[u8],
    scales: &[u8],
    acts: &[PanelAct],
    nb: usize,
    out: &mut [[f32; PANEL_ROWS]],
) {
    let kind = call.kind;
    match token {
        #[cfg(target_arch = "x86_64")]
        Token::Avx512(t) => t.panel_tile(kind, qs, scales, acts, nb, out),
        #[cfg(target_arch = "x86_64")]
        Token::Avx2(t) if call.form == ActForm::Unsigned => {
            t.panel_tile_unsigned(kind, call.fresh, qs, scales, acts, nb, out)
        }
        #[cfg(target_arch = "x86_64")]
        Token::Avx2(t) => t.panel_tile(kind, qs, scales, acts, nb, out),
        #[cfg(target_arch = "aarch64")]
        Token::NeonDot(t) => t.panel_tile(kind, qs, scales, acts, nb, out),
        #[cfg(target_arch = "aarch64")]
        Token::Neon(t) => t.panel_tile(kind, qs, scales, acts, nb, out),
        Token::Portable => portable_tile(kind, qs, scales, acts, nb, out),
    }
}

/// Panel row `n`'s exact integer sum of one block (`q`, its quants) against `a`, from `a`'s
/// `start`: the portable kernel's, and the vector kernels' fallback.
pub(crate) fn block_sum(nibbles: bool, q: &[u8], n: usize, a: &PanelAct) -> i32 {
    let mut sum = a.start;
    for c in 0..BLOCK / 4 {
        for j in 0..4 {
            let byte = match nibbles {
                true if c < 4 => q[c * 64 + 4 * n + j] & 0xf,
                true => q[(c - 4) * 64 + 4 * n + j] >> 4,
                false => q[c * 64 + 4 * n + j],
            };
            sum += i32::from(byte) * i32::from(a.qs[4 * c + j]);
        }
    }
    sum
}

/// The portable kernel: the module docs' loop, output by output.
pub(crate) fn portable_tile(
    kind: Kind,
    qs: &[u8],
    scales: &[u8],
    acts: &[PanelAct],
    nb: usize,
    out: &mut [[f32; PANEL_ROWS]],
) {
    let (qb, sb) = (kind.qbytes(), kind.sbytes());
    let f16_at = |s: &[u8], i: usize| f16::from_bits(u16::from_le_bytes([s[2 * i], s[2 * i + 1]]));
    for (row, o) in acts.chunks_exact(nb).zip(out.iter_mut()) {
        for (n, o) in o.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for (k, a) in row.iter().enumerate() {
                let sum = block_sum(kind.nibbles(), &qs[k * qb..(k + 1) * qb], n, a);
                let s = &scales[k * sb..(k + 1) * sb];
                let d = f16_at(s, n).to_f32();
                acc = (d * a.d).mul_add(sum as f32, acc);
                if kind.min() {
                    acc = f16_at(s, PANEL_ROWS + n).to_f32().mul_add(a.s, acc);
                }
            }
            *o = acc;
        }
    }
}

thread_local! {
    /// A row's activation blocks as the quantizer writes them.
    static Q8_0_ROW: std::cell::RefCell<Vec<BlockQ8_0>> = const { std::cell::RefCell::new(Vec::new()) };
    static Q8_1_ROW: std::cell::RefCell<Vec<BlockQ8_1>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The activations rounded to the partner format (Q8_1 for Q4_1, Q8_0 otherwise) by the same
/// quantizer as [`crate::gemm`], as [`PanelAct`]s: `batch × nb`.
fn pack_acts<'s>(
    isa: Isa,
    kind: Kind,
    form: ActForm,
    x: &[f32],
    batch: usize,
    nb: usize,
    scratch: &'s mut Scratch,
) -> Result<&'s [PanelAct], KernelError> {
    let cols = nb * BLOCK;
    let panel = &mut scratch.panel_acts;
    panel.resize(batch * nb, PanelAct::default());
    let packed: Result<(), KernelError> = crate::par::try_for_each_chunk(panel, nb, |i, out| {
        let x = &x[i * cols..(i + 1) * cols];
        match kind {
            Kind::Q4_1 => Q8_1_ROW.with_borrow_mut(|q| {
                q.resize(nb, bytemuck::Zeroable::zeroed());
                BlockQ8_1::quantize_with(isa, x, q)?;
                let offset = const { Kind::Q4_1.offset() };
                match form {
                    ActForm::Signed => {
                        for (o, b) in out.iter_mut().zip(q.iter()) {
                            o.pack(&b.qs, b.d, b.s, offset, ActForm::Signed);
                        }
                    }
                    ActForm::Unsigned => {
                        for (o, b) in out.iter_mut().zip(q.iter()) {
                            o.pack(&b.qs, b.d, b.s, offset, ActForm::Unsigned);
                        }
                    }
                }
                Ok(())
            }),
            Kind::Q4_0 | Kind::Q8_0 => Q8_0_ROW.with_borrow_mut(|q| {
                let offset = kind.offset();
                q.resize(nb, bytemuck::Zeroable::zeroed());
                BlockQ8_0::quantize_with(isa, x, q)?;
                for (o, b) in out.iter_mut().zip(q.iter()) {
                    o.pack(&b.qs, b.d, f16::ZERO, offset, form);
                }
                Ok(())
            }),
        }
    });
    packed?;
    Ok(&scratch.panel_acts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{quantize_to_vec, BlockQ8_0, BlockQ8_1};
    use rand::{Rng, SeedableRng};

    /// The module docs' definition on the file's own blocks (no panels): the oracle.
    fn reference(ty: GgmlType, rows: usize, cols: usize, w: &[u8], x: &[f32]) -> Vec<f32> {
        let nb = cols / BLOCK;
        let batch = x.len() / cols;
        let mut out = vec![0.0; batch * rows];
        for b in 0..batch {
            let xr = &x[b * cols..(b + 1) * cols];
            let mut a1 = vec![bytemuck::Zeroable::zeroed(); nb];
            let mut a0 = vec![bytemuck::Zeroable::zeroed(); nb];
            BlockQ8_1::quantize_with(Isa::Scalar, xr, &mut a1).unwrap();
            BlockQ8_0::quantize_with(Isa::Scalar, xr, &mut a0).unwrap();
            for r in 0..rows {
                let mut acc = 0.0f32;
                for k in 0..nb {
                    let (d, m, q): (f16, Option<f16>, [i32; 32]) = match ty {
                        GgmlType::Q4_0 | GgmlType::Q4_1 => {
                            let size = if ty == GgmlType::Q4_0 { 18 } else { 20 };
                            let raw = &w[(r * nb + k) * size..(r * nb + k + 1) * size];
                            let qs = &raw[size - 16..];
                            let off = if ty == GgmlType::Q4_0 { 8 } else { 0 };
                            let q = std::array::from_fn(|e| {
                                let byte = qs[e % 16];
                                i32::from(if e < 16 { byte & 0xf } else { byte >> 4 }) - off
                            });
                            let d = f16::from_le_bytes([raw[0], raw[1]]);
                            let m = (ty == GgmlType::Q4_1)
                                .then(|| f16::from_le_bytes([raw[2], raw[3]]));
                            (d, m, q)
                        }
                        _ => {
                            let raw = &w[(r * nb + k) * 34..(r * nb + k + 1) * 34];
                            let q = std::array::from_fn(|e| i32::from(raw[2 + e] as i8));
                            (f16::from_le_bytes([raw[0], raw[1]]), None, q)
                        }
                    };
                    let (aq, ad, as_) = match ty {
                        GgmlType::Q4_1 => (a1[k].qs, a1[k].d, a1[k].s),
                        _ => (a0[k].qs, a0[k].d, f16::ZERO),
                    };
                    let sum: i32 = (0..32).map(|e| q[e] * i32::from(aq[e])).sum();
                    acc = (d.to_f32() * ad.to_f32()).mul_add(sum as f32, acc);
                    if let Some(m) = m {
                        acc = m.to_f32().mul_add(as_.to_f32(), acc);
                    }
                }
                out[b * rows + r] = acc;
            }
        }
        out
    }

    fn random(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| rng.random_range(-1.0f32..1.0) * if i % 97 == 0 { 8.0 } else { 1.0 })
            .collect()
    }

    #[test]
    fn every_isa_gives_the_reference_bits_alone_and_in_batches() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for ty in PANEL_TYPES {
            // A partial last panel, several tiles and a remainder of activation rows, more
            // rows than one kernel call takes.
            let shapes = [
                (40, 64, 1),
                (16, 32, 3),
                (51, 96, 19),
                (130, 256, 9),
                (24, 64, 70),
            ];
            for (rows, cols, batch) in shapes {
                let w = random(&mut rng, rows * cols);
                let bytes = quantize_to_vec(ty, &w).unwrap();
                let m = QMatrix::new(ty, rows, cols, &bytes).unwrap();
                let p = PanelMatrix::new(&m).unwrap();
                let x = random(&mut rng, batch * cols);
                let want = reference(ty, rows, cols, &bytes, &x);
                for isa in Isa::available() {
                    let mut y = vec![f32::NAN; batch * rows];
                    matmul_panels_with(isa, &[&p], &x, &mut [&mut y], &mut Scratch::default())
                        .unwrap();
                    let same = y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{ty} {rows}×{cols} batch {batch} on {}", isa.name());
                    // Each row alone.
                    for b in [0, batch - 1] {
                        let mut y1 = vec![f32::NAN; rows];
                        let xb = &x[b * cols..(b + 1) * cols];
                        matmul_panel(&p, xb, &mut y1, &mut Scratch::default()).unwrap();
                        assert_eq!(y1, want[b * rows..(b + 1) * rows], "{ty} row {b} alone");
                    }
                }
            }
        }
    }

    /// The panels' products are ggml's (`gemm::matmul`) up to the rounding of the sums.
    #[test]
    fn next_to_the_ggml_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (rows, cols, batch) = (64, 1536, 4);
        for ty in PANEL_TYPES {
            let w = random(&mut rng, rows * cols);
            let bytes = quantize_to_vec(ty, &w).unwrap();
            let m = QMatrix::new(ty, rows, cols, &bytes).unwrap();
            let p = PanelMatrix::new(&m).unwrap();
            let x = random(&mut rng, batch * cols);
            let (mut a, mut b) = (vec![0.0; batch * rows], vec![0.0; batch * rows]);
            matmul_panel(&p, &x, &mut a, &mut Scratch::default()).unwrap();
            crate::gemm::matmul(&m, &x, &mut b, &mut Scratch::default()).unwrap();
            let scale = b.iter().map(|v| v.abs()).fold(0.0, f32::max);
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(worst <= 1e-5 * scale, "{ty}: {worst} of {scale}");
            assert_ne!(a, b, "{ty}: the same bits as ggml's order");
        }
    }

    #[test]
    fn several_matrices_in_one_step_equal_each_alone() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let cols = 128;
        let shapes = [48, 16, 33];
        let ws: Vec<Vec<u8>> = shapes
            .iter()
            .map(|&r| quantize_to_vec(GgmlType::Q8_0, &random(&mut rng, r * cols)).unwrap())
            .collect();
        let ps: Vec<PanelMatrix> = ws
            .iter()
            .zip(shapes)
            .map(|(b, r)| {
                PanelMatrix::new(&QMatrix::new(GgmlType::Q8_0, r, cols, b).unwrap()).unwrap()
            })
            .collect();
        let x = random(&mut rng, 5 * cols);
        let mut outs: Vec<Vec<f32>> = shapes.iter().map(|r| vec![0.0; 5 * r]).collect();
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        let pr: Vec<&PanelMatrix> = ps.iter().collect();
        matmul_panels(&pr, &x, &mut refs, &mut Scratch::default()).unwrap();
        for (p, o) in ps.iter().zip(&outs) {
            let mut alone = vec![0.0; o.len()];
            matmul_panel(p, &x, &mut alone, &mut Scratch::default()).unwrap();
            assert_eq!(&alone, o);
        }
    }

    /// Every kernel against the portable one on arbitrary bytes: every quant value of the
    /// weights (Q8_0's −128 among them) against activations at their extremes, −128 too.
    #[test]
    fn every_kernel_takes_extreme_quants() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for kind in [Kind::Q4_0, Kind::Q4_1, Kind::Q8_0] {
            for (nb, batch) in [(1, 1), (3, 8), (5, 7), (2, 3)] {
                let qs: Vec<u8> = (0..nb * kind.qbytes()).map(|_| rng.random()).collect();
                // Scales: finite f16 of either sign.
                let scales: Vec<u8> = (0..nb * kind.sbytes() / 2)
                    .flat_map(|_| f16::from_f32(rng.random_range(-2.0f32..2.0)).to_le_bytes())
                    .collect();
                let raw: Vec<_> = (0..batch * nb)
                    .map(|i| {
                        let q: [i8; 32] = std::array::from_fn(|j| match (i + j) % 5 {
                            0 => i8::MIN,
                            1 => i8::MAX,
                            2 => -127,
                            _ => rng.random(),
                        });
                        // Some blocks without −128, for the vector path.
                        let q = if i % 2 == 1 {
                            q.map(|v| v.max(-127))
                        } else {
                            q
                        };
                        let d = f16::from_f32(rng.random_range(0.0f32..0.1));
                        (q, d, f16::from_f32(rng.random_range(-3.0f32..3.0)))
                    })
                    .collect();
                let acts = |form| -> Vec<PanelAct> {
                    let new = |&(q, d, s)| PanelAct::new(q, d, s, kind.offset(), form);
                    raw.iter().map(new).collect()
                };
                let mut want = vec![[0.0f32; PANEL_ROWS]; batch];
                portable_tile(kind, &qs, &scales, &acts(ActForm::Signed), nb, &mut want);
                // Each kernel in the form the product picks for this batch, and in the
                // signed form too (the AVX2 nibble kernel's tile of four rows, which products
                // leave to the unsigned kernel).
                let tries = Isa::available().into_iter().flat_map(|isa| {
                    let token = kernel_token(isa);
                    [
                        (isa, token, token.act_form(kind, batch)),
                        (isa, token, ActForm::Signed),
                    ]
                });
                for (isa, token, form) in tries {
                    let mut got = vec![[f32::NAN; PANEL_ROWS]; batch];
                    let a = acts(form);
                    let call = Call {
                        kind,
                        form,
                        fresh: true,
                    };
                    panel_tile(token, call, &qs, &scales, &a, nb, &mut got);
                    let same = got.iter().flatten().zip(want.iter().flatten());
                    assert!(
                        same.clone().all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{kind:?} nb {nb} batch {batch} on {} ({form:?})",
                        isa.name()
                    );
                }
            }
        }
    }

    #[test]
    fn other_types_and_bad_shapes_are_errors() {
        let bytes = quantize_to_vec(GgmlType::Q5_0, &[0.5; 64]).unwrap();
        let m = QMatrix::new(GgmlType::Q5_0, 2, 32, &bytes).unwrap();
        let e = PanelMatrix::new(&m).unwrap_err().to_string();
        assert!(e.contains("no panel kernels"), "{e}");
        let bytes = quantize_to_vec(GgmlType::Q8_0, &[0.5; 64]).unwrap();
        let p = PanelMatrix::new(&QMatrix::new(GgmlType::Q8_0, 2, 32, &bytes).unwrap()).unwrap();
        let mut y = vec![0.0; 3];
        let e = matmul_panel(&p, &[0.0; 32], &mut y, &mut Scratch::default()).unwrap_err();
        assert!(e.to_string().contains("output holds 3 values"), "{e}");
        let e = matmul_panel(&p, &[0.0; 33], &mut y, &mut Scratch::default()).unwrap_err();
        assert!(e.to_string().contains("not a whole number of rows"), "{e}");
    }
}
