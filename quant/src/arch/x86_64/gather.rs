//! AVX-512 dot products of vectors with 16 picked rows at a time (attention's queries times
//! cached keys), for rows whose length is a multiple of 16.
//!
//! Each dot product is the generic one ([`crate::arch::generic::gather_dots`]): 16 lanes of
//! fused multiply-adds over the row's 16-value chunks, then the fixed tree (lane `l` plus
//! `l + 8`, then `+ 4`, `+ 2`, `+ 1`). What changes is how the 16 trees of 16 rows are summed:
//! instead of one horizontal reduction per dot product (four dependent shuffles and adds), one
//! transposing network does the four levels for all 16 at once, each addition the same pair
//! of values the tree adds, so the results are bitwise the generic ones.

use std::arch::x86_64::*;

use super::Avx512;
use crate::arch::generic::Gathered;

/// `out[g·n + i] = xs_g · row_i`, as [`crate::arch::generic::gather_dots`] computes it; the
/// caller checked the shapes (and `m.len` is a multiple of 16).
pub(crate) fn gather_dots(t: Avx512, xs: &[f32], m: Gathered<'_>, out: &mut [f32]) {
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    fn run(t: Avx512, xs: &[f32], m: Gathered<'_>, out: &mut [f32]) {
        let n = m.rows.len();
        let (groups, rest) = m.rows.as_chunks::<16>();
        for (k, rows) in groups.iter().enumerate() {
            let rows: [&[f32]; 16] = std::array::from_fn(|l| m.row(rows[l]));
            for (g, x) in xs.chunks_exact(m.len).enumerate() {
                let o = out[g * n + 16 * k..].first_chunk_mut::<16>();
                if let Some(o) = o {
                    dots16(x, &rows, o);
                }
            }
        }
        // The last rows one at a time, as the generic kernel does them.
        let done = 16 * groups.len();
        let rest = Gathered { rows: rest, ..m };
        for (g, x) in xs.chunks_exact(m.len).enumerate() {
            crate::arch::generic::gather_dots(t, x, rest, &mut out[g * n + done..(g + 1) * n]);
        }
    }
    // SAFETY: the token proves the CPU has the features `run` is compiled for.
    unsafe { run(t, xs, m, out) }
}

/// `o[l] = x · rows[l]` for 16 rows of `x.len()` values (a multiple of 16).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
fn dots16(x: &[f32], rows: &[&[f32]; 16], o: &mut [f32; 16]) {
    let mut acc = [_mm512_setzero_ps(); 16];
    for (c, xc) in x.as_chunks::<16>().0.iter().enumerate() {
        // SAFETY: `xc` is 16 readable floats.
        let xv = unsafe { _mm512_loadu_ps(xc.as_ptr()) };
        for l in 0..16 {
            if let Some(r) = rows[l][16 * c..].first_chunk::<16>() {
                // SAFETY: `r` is 16 readable floats.
                let rv = unsafe { _mm512_loadu_ps(r.as_ptr()) };
                acc[l] = _mm512_fmadd_ps(xv, rv, acc[l]);
            }
        }
    }
    // Level 1 (lane l + lane l + 8), two rows per vector: row 2m in 128-bit blocks 0-1, row
    // 2m + 1 in blocks 2-3.
    let s: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (acc[2 * i], acc[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xEE>(a, b),
        )
    });
    // Level 2 (+ 4): block j of vector p holds row 4p + j.
    let r: [__m512; 4] = std::array::from_fn(|i| {
        let (a, b) = (s[2 * i], s[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xDD>(a, b),
        )
    });
    // Level 3 (+ 2): block j of vector q holds row 8q + j in lanes 0-1, row 8q + 4 + j in 2-3.
    let y: [__m512; 2] = std::array::from_fn(|i| {
        let (a, b) = (r[2 * i], r[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(a, b),
            _mm512_shuffle_ps::<0xEE>(a, b),
        )
    });
    // Level 4 (+ 1): lane 4j + i holds row j + 4i.
    let z = _mm512_add_ps(
        _mm512_shuffle_ps::<0x88>(y[0], y[1]),
        _mm512_shuffle_ps::<0xDD>(y[0], y[1]),
    );
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    // SAFETY: `o` is 16 writable floats.
    unsafe { _mm512_storeu_ps(o.as_mut_ptr(), _mm512_permutexvar_ps(order, z)) }
}
