//! AVX-512 dot products of vectors with 16 picked rows at a time, or of three vectors with
//! eight rows (attention's queries times cached keys), for rows whose length is a multiple
//! of 16; and AVX2's products and weighted sums in the eight lanes of an AVX2 build
//! ([`crate::arch::GATHER_LANES`]), at the end of this file.
//!
//! Each dot product is the generic one ([`crate::arch::generic::gather_dots`]): 16 lanes of
//! fused multiply-adds over the row's 16-value chunks, then the fixed tree (lane `l` plus
//! `l + 8`, then `+ 4`, `+ 2`, `+ 1`). What changes is how the 16 trees of 16 rows are summed:
//! instead of one horizontal reduction per dot product (four dependent shuffles and adds), one
//! transposing network does the four levels for all 16 at once, each addition the same pair
//! of values the tree adds, so the results are bitwise the generic ones.

use std::arch::x86_64::*;

use super::{Avx2, Avx512};
use crate::arch::generic::{FFormat, Gathered};
use crate::arch::scalar;

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

// AVX2, eight lanes. The reference ([`scalar::gather_dots_in`] and
// [`scalar::gather_axpy_in`] with `L = 8`) keeps one chain of fused multiply-adds per lane and
// sums the lanes by the fixed tree (`l + 4`, then `+ 2`, `+ 1`); here a lane is a lane of a
// 256-bit register, and the tree's additions are the same pairs in the same operand order.

/// `out[g·n + i] = xs_g · row_i` in eight lanes, bitwise [`scalar::gather_dots_in`]`::<_, 8>`;
/// the caller checked the shapes. Rows go eight at a time, each with its own chain, the last
/// (fewer than eight) as one more group with the last row repeated; rows whose length is not
/// a multiple of 16 take the reference.
pub(crate) fn gather_dots8<E: FFormat>(t: Avx2, xs: &[f32], m: Gathered<'_, E>, out: &mut [f32]) {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn run<E: FFormat>(t: Avx2, xs: &[f32], m: Gathered<'_, E>, out: &mut [f32]) {
        if m.len == 0 || !m.len.is_multiple_of(16) {
            return scalar::gather_dots_in::<E, 8>(xs, m, out);
        }
        let n = m.rows.len();
        // Vectors three at a time over four rows (a row's chunk widened once for the three),
        // then those left one at a time over eight rows.
        let nq = xs.len() / m.len;
        let triples = nq / 3;
        for j in 0..triples {
            let x: [&[f32]; 3] = std::array::from_fn(|g| &xs[(3 * j + g) * m.len..][..m.len]);
            let (groups, _) = m.rows.as_chunks::<4>();
            for (k, rows) in groups.iter().enumerate() {
                let rows: [&[E]; 4] = std::array::from_fn(|l| m.row(rows[l]));
                // SAFETY: each `x[g]` and each `m.row` holds `m.len` values, a multiple of 16.
                let o = unsafe { dots4x3_avx2(t, x, &rows) };
                for (g, o) in o.iter().enumerate() {
                    out[(3 * j + g) * n + 4 * k..][..4].copy_from_slice(o);
                }
            }
            let done = 4 * groups.len();
            let rest = &m.rows[done..];
            if let Some(&last) = rest.last() {
                let rows: [&[E]; 4] = std::array::from_fn(|l| m.row(*rest.get(l).unwrap_or(&last)));
                // SAFETY: as above.
                let o = unsafe { dots4x3_avx2(t, x, &rows) };
                for (g, o) in o.iter().enumerate() {
                    out[(3 * j + g) * n + done..][..rest.len()].copy_from_slice(&o[..rest.len()]);
                }
            }
        }
        let xs = &xs[3 * triples * m.len..];
        let out = &mut out[3 * triples * n..];
        let (groups, _) = m.rows.as_chunks::<8>();
        for (k, rows) in groups.iter().enumerate() {
            let rows: [&[E]; 8] = std::array::from_fn(|l| m.row(rows[l]));
            for (g, x) in xs.chunks_exact(m.len).enumerate() {
                if let Some(o) = out[g * n + 8 * k..].first_chunk_mut::<8>() {
                    dots8_avx2(t, x, &rows, o);
                }
            }
        }
        // The last rows (fewer than eight) as one more group, its empty places taken by the
        // last row again and their products dropped: each row's product is its own.
        let done = 8 * groups.len();
        let rest = &m.rows[done..];
        if let Some(&last) = rest.last() {
            let rows: [&[E]; 8] = std::array::from_fn(|l| m.row(*rest.get(l).unwrap_or(&last)));
            for (g, x) in xs.chunks_exact(m.len).enumerate() {
                let mut o = [0f32; 8];
                dots8_avx2(t, x, &rows, &mut o);
                out[g * n + done..(g + 1) * n].copy_from_slice(&o[..rest.len()]);
            }
        }
    }
    // SAFETY: the token proves the CPU has the features `run` is compiled for.
    unsafe { run(t, xs, m, out) }
}

/// `o[g][l] = x[g] · rows[l]` for three vectors and four rows: each row's chunk widened once
/// for the three vectors, each product the chain of [`dots8_avx2`] (the same fused steps in
/// the same order) and its tree ([`tree8`] with rows 4-7 a copy of rows 0-3), so the same
/// bits.
///
/// # Safety
/// Every `x[g]` and every row holds `x[0].len()` values, a multiple of 16 (the caller's
/// shapes, checked once per call of [`gather_dots8`] rather than here per four rows).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dots4x3_avx2<E: FFormat>(t: Avx2, x: [&[f32]; 3], rows: &[&[E]; 4]) -> [[f32; 4]; 3] {
    let len = x[0].len();
    debug_assert!(len.is_multiple_of(16) && x.iter().all(|x| x.len() == len));
    debug_assert!(rows.iter().all(|r| r.len() == len));
    let mut acc = [[_mm256_setzero_ps(); 4]; 3];
    for c in 0..len / 16 {
        for l in 0..4 {
            // SAFETY: `rows[l]` holds `len` values (the contract) and `16c + 16 <= len`.
            let r = unsafe { &*rows[l].as_ptr().add(16 * c).cast::<[E; 16]>() };
            let (r0, r1) = E::load16(t, r);
            for (acc, x) in acc.iter_mut().zip(&x) {
                // SAFETY: `x` holds `len` floats (the contract) and `16c + 16 <= len`.
                let (x0, x1) = unsafe {
                    (
                        _mm256_loadu_ps(x.as_ptr().add(16 * c)),
                        _mm256_loadu_ps(x.as_ptr().add(16 * c + 8)),
                    )
                };
                acc[l] = _mm256_fmadd_ps(x0, r0, acc[l]);
                acc[l] = _mm256_fmadd_ps(x1, r1, acc[l]);
            }
        }
    }
    acc.map(|[a0, a1, a2, a3]| {
        let v = tree8(t, [a0, a1, a2, a3, a0, a1, a2, a3]);
        let mut o = [0f32; 8];
        // SAFETY: `o` is 8 writable floats.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
        [o[0], o[1], o[2], o[3]]
    })
}

/// `o[l] = x · rows[l]` for eight rows of `x.len()` values (a multiple of 16), eight lanes
/// each.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dots8_avx2<E: FFormat>(t: Avx2, x: &[f32], rows: &[&[E]; 8], o: &mut [f32; 8]) {
    let mut acc = [_mm256_setzero_ps(); 8];
    for (c, xc) in x.as_chunks::<16>().0.iter().enumerate() {
        // SAFETY: `xc` is 16 readable floats.
        let (x0, x1) = unsafe {
            (
                _mm256_loadu_ps(xc.as_ptr()),
                _mm256_loadu_ps(xc.as_ptr().add(8)),
            )
        };
        for l in 0..8 {
            if let Some(r) = rows[l][16 * c..].first_chunk::<16>() {
                let (r0, r1) = E::load16(t, r);
                acc[l] = _mm256_fmadd_ps(x0, r0, acc[l]);
                acc[l] = _mm256_fmadd_ps(x1, r1, acc[l]);
            }
        }
    }
    let v = tree8(t, acc);
    // SAFETY: `o` is 8 writable floats.
    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) }
}

/// The reference's tree over eight rows' lane sums, `acc[l]` holding row `l`'s eight lanes:
/// `+ 4`, then `+ 2`, then `+ 1`, the same pairs in the same operand order; lane `l` of the
/// result is row `l`'s product.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tree8(_: Avx2, acc: [__m256; 8]) -> __m256 {
    // `+ 4`: the low 128 bits of p[i] hold row 2i's four sums, the high row 2i + 1's.
    let p: [__m256; 4] = std::array::from_fn(|i| {
        let (a, b) = (acc[2 * i], acc[2 * i + 1]);
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    });
    // `+ 2`: q[j]'s low half holds rows 4j and 4j + 2 (two lanes each), its high half
    // rows 4j + 1 and 4j + 3.
    let q: [__m256; 2] = std::array::from_fn(|j| {
        let (a, b) = (p[2 * j], p[2 * j + 1]);
        _mm256_add_ps(
            _mm256_shuffle_ps::<0x44>(a, b),
            _mm256_shuffle_ps::<0xEE>(a, b),
        )
    });
    // `+ 1`: lanes 0-3 hold rows 0, 2, 4, 6, lanes 4-7 rows 1, 3, 5, 7.
    let r = _mm256_add_ps(
        _mm256_shuffle_ps::<0x88>(q[0], q[1]),
        _mm256_shuffle_ps::<0xDD>(q[0], q[1]),
    );
    _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// `out_g += Σ_i w[g·n + i] · row_i` in eight lanes (row `i` to lane `i mod 8`, zero weights
/// skipped), bitwise [`scalar::gather_axpy_in`]`::<_, 8>`; the caller checked the shapes.
/// Rows whose length is not a multiple of 16 take the reference.
///
/// The work goes 32 values of an output vector at a time and two lanes at a time (eight
/// independent chains); the eight lanes' sums wait in registers for the tree.
pub(crate) fn gather_axpy8<E: FFormat>(t: Avx2, w: &[f32], m: Gathered<'_, E>, out: &mut [f32]) {
    #[target_feature(enable = "avx2,fma,f16c")]
    fn run<E: FFormat>(t: Avx2, w: &[f32], m: Gathered<'_, E>, out: &mut [f32]) {
        if m.len == 0 || !m.len.is_multiple_of(16) {
            return scalar::gather_axpy_in::<E, 8>(w, m, out);
        }
        let n = m.rows.len();
        for (g, o) in out.chunks_exact_mut(m.len).enumerate() {
            let wg = &w[g * n..(g + 1) * n];
            let chunks = m.len / 16;
            let mut c = 0;
            while c < chunks {
                if chunks - c >= 2 {
                    axpy8_tile::<E, 2>(t, wg, m, o, c);
                    c += 2;
                } else {
                    axpy8_tile::<E, 1>(t, wg, m, o, c);
                    c += 1;
                }
            }
        }
    }
    // SAFETY: the token proves the CPU has the features `run` is compiled for.
    unsafe { run(t, w, m, out) }
}

/// 16-value chunks `c0..c0 + CB` of one output vector of [`gather_axpy8`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn axpy8_tile<E: FFormat, const CB: usize>(
    t: Avx2,
    w: &[f32],
    m: Gathered<'_, E>,
    o: &mut [f32],
    c0: usize,
) {
    let n = m.rows.len();
    let load = |i: usize| -> [(__m256, __m256); CB] {
        let row = m.row(m.rows[i]).as_chunks::<16>().0;
        std::array::from_fn(|c| E::load16(t, &row[c0 + c]))
    };
    let fma = |acc: &mut [(__m256, __m256); CB], wi: f32, x: [(__m256, __m256); CB]| {
        let wv = _mm256_set1_ps(wi);
        for (a, x) in acc.iter_mut().zip(x) {
            a.0 = _mm256_fmadd_ps(wv, x.0, a.0);
            a.1 = _mm256_fmadd_ps(wv, x.1, a.1);
        }
    };
    let zero = [(_mm256_setzero_ps(), _mm256_setzero_ps()); CB];
    let mut lanes = [zero; 8];
    for l in (0..8).step_by(2) {
        let (mut a, mut b) = (zero, zero);
        let mut i = l;
        while i < n {
            if w[i] != 0.0 {
                fma(&mut a, w[i], load(i));
            }
            if i + 1 < n && w[i + 1] != 0.0 {
                fma(&mut b, w[i + 1], load(i + 1));
            }
            i += 8;
        }
        lanes[l] = a;
        lanes[l + 1] = b;
    }
    for c in 0..CB {
        let half = |h: usize| -> __m256 {
            let v = |l: usize| if h == 0 { lanes[l][c].0 } else { lanes[l][c].1 };
            let s: [__m256; 4] = std::array::from_fn(|l| _mm256_add_ps(v(l), v(l + 4)));
            let u0 = _mm256_add_ps(s[0], s[2]);
            let u1 = _mm256_add_ps(s[1], s[3]);
            _mm256_add_ps(u0, u1)
        };
        let dst = &mut o[16 * (c0 + c)..][..16];
        for h in 0..2 {
            let p = dst[8 * h..].as_mut_ptr();
            // SAFETY: `dst` holds 16 floats, so `p` has 8 readable and writable ones.
            unsafe { _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), half(h))) }
        }
    }
}

#[cfg(test)]
mod tests {
    use half::f16;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The eight-lane kernels give the eight-lane reference's bits on any AVX2 machine,
    /// whatever lane count this build's attention uses.
    #[test]
    fn eight_lane_kernels_match_their_reference() {
        let Some(t) = Avx2::new() else {
            return eprintln!("no AVX2 on this CPU: nothing to compare");
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for (len, n, nq) in [
            (64, 160, 3),
            (64, 13, 1),
            (48, 8, 2),
            (16, 1, 1),
            (40, 9, 2),
            (128, 31, 3),
        ] {
            let stride = len + 16;
            let cells = 2 * n + 3;
            let data: Vec<f32> = (0..cells * stride)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            let halves: Vec<f16> = data.iter().map(|&v| f16::from_f32(v)).collect();
            let rows: Vec<u32> = (0..n).map(|_| rng.random_range(0..cells as u32)).collect();
            let xs: Vec<f32> = (0..nq * len)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            // Weights with zeros among them (masked cells).
            let w: Vec<f32> = (0..nq * n)
                .map(|i| {
                    if i % 5 == 2 {
                        0.0
                    } else {
                        rng.random_range(0.0f32..1.0)
                    }
                })
                .collect();
            let base: Vec<f32> = (0..nq * len)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            macro_rules! check {
                ($data:expr) => {{
                    let m = Gathered {
                        data: &$data[..],
                        stride,
                        offset: 8,
                        len,
                        rows: &rows,
                    };
                    let (mut want, mut got) = (vec![0.0; nq * n], vec![f32::NAN; nq * n]);
                    scalar::gather_dots_in::<_, 8>(&xs, m, &mut want);
                    gather_dots8(t, &xs, m, &mut got);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "dots: len {len}, {n} rows, {nq} vectors"
                    );
                    let (mut want, mut got) = (base.clone(), base.clone());
                    scalar::gather_axpy_in::<_, 8>(&w, m, &mut want);
                    gather_axpy8(t, &w, m, &mut got);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "axpy: len {len}, {n} rows, {nq} vectors"
                    );
                }};
            }
            check!(data);
            check!(halves);
        }
    }
}
