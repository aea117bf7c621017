//! AVX-512 dot products of vectors with 16 picked rows at a time, or of three vectors with
//! eight rows (attention's queries times cached keys), for rows whose length is a multiple
//! of 16.
//!
//! Each dot product is the generic one ([`crate::arch::generic::gather_dots`]): 16 lanes of
//! fused multiply-adds over the row's 16-value chunks, then the fixed tree (lane `l` plus
//! `l + 8`, then `+ 4`, `+ 2`, `+ 1`). What changes is how the 16 trees of 16 rows are summed:
//! instead of one horizontal reduction per dot product (four dependent shuffles and adds), one
//! transposing network does the four levels for all 16 at once, each addition the same pair
//! of values the tree adds, so the results are bitwise the generic ones.

use std::arch::x86_64::*;

use super::Avx512;
use crate::arch::generic::{FFormat, Gathered};

/// `out[g·n + i] = xs_g · row_i`, as [`crate::arch::generic::gather_dots`] computes it; the
/// caller checked the shapes (and `m.len` is a multiple of 16). Several vectors (the query
/// heads of a key/value head) go three at a time over eight rows, so that each row's chunk is
/// loaded once for the three; a single vector goes over sixteen rows at a time.
pub(crate) fn gather_dots<E: FFormat>(t: Avx512, xs: &[f32], m: Gathered<'_, E>, out: &mut [f32]) {
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    fn run<E: FFormat>(t: Avx512, xs: &[f32], m: Gathered<'_, E>, out: &mut [f32]) {
        let n = m.rows.len();
        let nq = xs.len() / m.len;
        let query = |g: usize| &xs[g * m.len..(g + 1) * m.len];
        let done = if nq >= 2 {
            let (groups, _) = m.rows.as_chunks::<8>();
            for (k, rows) in groups.iter().enumerate() {
                let rows: [&[E]; 8] = std::array::from_fn(|l| m.row(rows[l]));
                let mut g = 0;
                while g < nq {
                    let at = g * n + 8 * k;
                    match nq - g {
                        1 => dots8::<E, 1>(t, &[query(g)], &rows, out, at, n),
                        2 => dots8::<E, 2>(t, &[query(g), query(g + 1)], &rows, out, at, n),
                        _ => {
                            let q = [query(g), query(g + 1), query(g + 2)];
                            dots8::<E, 3>(t, &q, &rows, out, at, n)
                        }
                    }
                    g += 3;
                }
            }
            8 * groups.len()
        } else {
            let (groups, _) = m.rows.as_chunks::<16>();
            for (k, rows) in groups.iter().enumerate() {
                let rows: [&[E]; 16] = std::array::from_fn(|l| m.row(rows[l]));
                for (g, x) in xs.chunks_exact(m.len).enumerate() {
                    let o = out[g * n + 16 * k..].first_chunk_mut::<16>();
                    if let Some(o) = o {
                        dots16(t, x, &rows, o);
                    }
                }
            }
            16 * groups.len()
        };
        // The last rows one at a time, as the generic kernel does them.
        let rest = Gathered {
            rows: &m.rows[done..],
            ..m
        };
        for (g, x) in xs.chunks_exact(m.len).enumerate() {
            crate::arch::generic::gather_dots(t, x, rest, &mut out[g * n + done..(g + 1) * n]);
        }
    }
    // SAFETY: the token proves the CPU has the features `run` is compiled for.
    unsafe { run(t, xs, m, out) }
}

/// `out[at + g·n + l] = xs[g] · rows[l]` for `G` vectors and eight rows of `x.len()` values
/// (a multiple of 16): each dot product in 16 lanes of fused multiply-adds, then the same
/// tree as [`dots16`], its first three levels on pairs of rows and its last within one vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
fn dots8<E: FFormat, const G: usize>(
    t: Avx512,
    xs: &[&[f32]; G],
    rows: &[&[E]; 8],
    out: &mut [f32],
    at: usize,
    n: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); 8]; G];
    let len = xs[0].len();
    for c in 0..len / 16 {
        let x: [__m512; G] = std::array::from_fn(|g| {
            let xc = &xs[g].as_chunks::<16>().0[c];
            // SAFETY: `xc` is 16 readable floats.
            unsafe { _mm512_loadu_ps(xc.as_ptr()) }
        });
        for l in 0..8 {
            if let Some(r) = rows[l][16 * c..].first_chunk::<16>() {
                let rv = E::load16(t, r);
                for g in 0..G {
                    acc[g][l] = _mm512_fmadd_ps(x[g], rv, acc[g][l]);
                }
            }
        }
    }
    for (g, acc) in acc.iter().enumerate() {
        // Level 1 (+ 8): row 2m in 128-bit blocks 0-1, row 2m + 1 in blocks 2-3.
        let s: [__m512; 4] = std::array::from_fn(|i| level8(acc[2 * i], acc[2 * i + 1]));
        // Level 2 (+ 4): block j of vector p holds row 4p + j.
        let r: [__m512; 2] = std::array::from_fn(|i| level4(s[2 * i], s[2 * i + 1]));
        // Level 3 (+ 2): block j holds row j in lanes 0-1, row 4 + j in lanes 2-3.
        let y = level2(r[0], r[1]);
        // Level 4 (+ 1): lane 4j holds row j, lane 4j + 1 row 4 + j.
        let z = level1(y, y);
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
        let v = _mm512_castps512_ps256(_mm512_permutexvar_ps(order, z));
        if let Some(o) = out[at + g * n..].first_chunk_mut::<8>() {
            // SAFETY: `o` is 8 writable floats.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) }
        }
    }
}

/// `o[l] = x · rows[l]` for 16 rows of `x.len()` values (a multiple of 16).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
fn dots16<E: FFormat>(t: Avx512, x: &[f32], rows: &[&[E]; 16], o: &mut [f32; 16]) {
    let mut acc = [_mm512_setzero_ps(); 16];
    for (c, xc) in x.as_chunks::<16>().0.iter().enumerate() {
        // SAFETY: `xc` is 16 readable floats.
        let xv = unsafe { _mm512_loadu_ps(xc.as_ptr()) };
        for l in 0..16 {
            if let Some(r) = rows[l][16 * c..].first_chunk::<16>() {
                let rv = E::load16(t, r);
                acc[l] = _mm512_fmadd_ps(xv, rv, acc[l]);
            }
        }
    }
    // Level 1 (lane l + lane l + 8), two rows per vector: row 2m in 128-bit blocks 0-1, row
    // 2m + 1 in blocks 2-3.
    let s: [__m512; 8] = std::array::from_fn(|i| level8(acc[2 * i], acc[2 * i + 1]));
    // Level 2 (+ 4): block j of vector p holds row 4p + j.
    let r: [__m512; 4] = std::array::from_fn(|i| level4(s[2 * i], s[2 * i + 1]));
    // Level 3 (+ 2): block j of vector q holds row 8q + j in lanes 0-1, row 8q + 4 + j in 2-3.
    let y: [__m512; 2] = std::array::from_fn(|i| level2(r[2 * i], r[2 * i + 1]));
    // Level 4 (+ 1): lane 4j + i holds row j + 4i.
    let z = level1(y[0], y[1]);
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    // SAFETY: `o` is 16 writable floats.
    unsafe { _mm512_storeu_ps(o.as_mut_ptr(), _mm512_permutexvar_ps(order, z)) }
}

/// The tree's `+ 8` level for two rows: `a`'s lanes `l + (l + 8)` in 128-bit blocks 0-1,
/// `b`'s in blocks 2-3.
#[inline]
#[target_feature(enable = "avx512f")]
fn level8(a: __m512, b: __m512) -> __m512 {
    _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x44>(a, b),
        _mm512_shuffle_f32x4::<0xEE>(a, b),
    )
}

/// The `+ 4` level: block `j` of the result is blocks `2k` plus `2k + 1` (`k = j mod 2`) of
/// `a` for `j < 2`, of `b` for `j ≥ 2`.
#[inline]
#[target_feature(enable = "avx512f")]
fn level4(a: __m512, b: __m512) -> __m512 {
    _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(a, b),
        _mm512_shuffle_f32x4::<0xDD>(a, b),
    )
}

/// The `+ 2` level within each 128-bit block: lanes 0-1 from `a`'s block, 2-3 from `b`'s.
#[inline]
#[target_feature(enable = "avx512f")]
fn level2(a: __m512, b: __m512) -> __m512 {
    _mm512_add_ps(
        _mm512_shuffle_ps::<0x44>(a, b),
        _mm512_shuffle_ps::<0xEE>(a, b),
    )
}

/// The `+ 1` level within each 128-bit block: lane 0 from `a`'s lanes 0-1, lane 1 from its
/// 2-3, lanes 2-3 likewise from `b`'s.
#[inline]
#[target_feature(enable = "avx512f")]
fn level1(a: __m512, b: __m512) -> __m512 {
    _mm512_add_ps(
        _mm512_shuffle_ps::<0x88>(a, b),
        _mm512_shuffle_ps::<0xDD>(a, b),
    )
}
