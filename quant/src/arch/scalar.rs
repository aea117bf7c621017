//! The reference path: each block's integer sums element by element from the format's
//! definition ([`QFormat::ref_parts`]), accumulated lane by lane with `f32::mul_add` in the
//! order [`super::generic`] describes; float rows in 16 lanes of `f32::mul_add`; activations
//! through the formats' reference quantizers. Every other path must agree with it bit for bit.

use half::f16;

use super::generic::{Accum, FFormat, Gathered, QFormat, Running};

/// [`super::generic::qtile`] on the reference path.
pub(crate) fn qtile<F: QFormat>(w: &[F], acts: &[&[F::Act]], out: &mut [f32]) {
    let fma8 = |acc: &mut [f32; 8], x: [i32; 8], scale: f32| {
        for (l, x) in acc.iter_mut().zip(x) {
            *l = (x as f32).mul_add(scale, *l);
        }
    };
    for (o, a) in out.iter_mut().zip(acts) {
        let mut r = Running {
            acc: [0f32; 8],
            terms: [0f32; 4],
        };
        for (wb, ab) in w.iter().zip(a.iter()) {
            let (x, scalar) = F::ref_parts(wb, ab);
            let ws = F::wscales(wb, |h| h.map(f16::to_f32));
            let (scale, [f0, f1]) = F::combine(ws, ab, scalar, |h| h.map(f16::to_f32));
            let e = F::ref_extra(wb, ab);
            match F::ACCUM {
                Accum::Term => {
                    fma8(&mut r.acc, x, scale);
                    r.terms[0] = f0.mul_add(f1, r.terms[0]);
                }
                Accum::Quad => {
                    fma8(&mut r.acc, x, scale);
                    for (t, e) in r.terms.iter_mut().zip(e) {
                        *t = f0.mul_add(e as f32, *t);
                    }
                }
                Accum::LaneMin => {
                    fma8(&mut r.acc, e, f0);
                    fma8(&mut r.acc, x, scale);
                }
                Accum::LaneOffset => {
                    fma8(&mut r.acc, std::array::from_fn(|l| x[l] - e[l]), scale);
                }
            }
        }
        *o = F::ACCUM.finish(&r, reduce8);
    }
}

/// [`super::generic::qchunk`] on the reference path.
pub(crate) fn qchunk<F: QFormat>(w: &[F], bpr: usize, acts: &[&[F::Act]], out: &mut [f32]) {
    let batch = acts.len();
    for (wrow, orow) in w.chunks_exact(bpr).zip(out.chunks_exact_mut(batch)) {
        qtile(wrow, acts, orow);
    }
}

/// [`super::generic::fchunk`] on the reference path.
pub(crate) fn fchunk<W: FFormat>(w: &[W], cols: usize, acts: &[&[f32]], out: &mut [f32]) {
    let batch = acts.len();
    for (wrow, orow) in w.chunks_exact(cols).zip(out.chunks_exact_mut(batch)) {
        ftile(wrow, acts, orow);
    }
}

/// Each block's integer sums on the reference path.
pub(crate) fn qparts<F: QFormat>(w: &[F], a: &[F::Act]) -> Vec<([i32; 8], i32)> {
    w.iter()
        .zip(a)
        .map(|(wb, ab)| F::ref_parts(wb, ab))
        .collect()
}

/// One weight row against each activation row as [`super::generic::fchunk`] computes each dot
/// product, on the reference path.
pub(crate) fn ftile<W: FFormat>(w: &[W], acts: &[&[f32]], out: &mut [f32]) {
    let (wc, wt) = w.as_chunks::<16>();
    for (o, a) in out.iter_mut().zip(acts) {
        let (ac, at) = a.as_chunks::<16>();
        let mut lanes = [0f32; 16];
        for (x, y) in wc.iter().zip(ac) {
            for l in 0..16 {
                lanes[l] = x[l].widen().mul_add(y[l], lanes[l]);
            }
        }
        let mut r = reduce16(lanes);
        for (x, y) in wt.iter().zip(at) {
            r = x.widen().mul_add(*y, r);
        }
        *o = r;
    }
}

/// [`super::generic::gather_dots`] on the reference path, in [`super::GATHER_LANES`] lanes.
pub(crate) fn gather_dots<E: FFormat>(xs: &[f32], m: Gathered<'_, E>, out: &mut [f32]) {
    gather_dots_in::<E, { super::GATHER_LANES }>(xs, m, out)
}

/// [`gather_dots`] in `L` lanes.
pub(crate) fn gather_dots_in<E: FFormat, const L: usize>(
    xs: &[f32],
    m: Gathered<'_, E>,
    out: &mut [f32],
) {
    let n = m.rows.len();
    for (i, &r) in m.rows.iter().enumerate() {
        let row = m.row(r);
        for (g, x) in xs.chunks_exact(m.len).enumerate() {
            let (xc, xt) = x.as_chunks::<L>();
            let (rc, rt) = row.as_chunks::<L>();
            let mut lanes = [0f32; L];
            for (a, b) in xc.iter().zip(rc) {
                for l in 0..L {
                    lanes[l] = a[l].mul_add(b[l].widen(), lanes[l]);
                }
            }
            let mut d = reduce_tree(lanes);
            for (a, b) in xt.iter().zip(rt) {
                d = a.mul_add(b.widen(), d);
            }
            out[g * n + i] = d;
        }
    }
}

/// [`super::generic::gather_axpy`] on the reference path, in [`super::GATHER_LANES`] lanes.
pub(crate) fn gather_axpy<E: FFormat>(w: &[f32], m: Gathered<'_, E>, out: &mut [f32]) {
    gather_axpy_in::<E, { super::GATHER_LANES }>(w, m, out)
}

/// [`gather_axpy`] in `L` lanes.
pub(crate) fn gather_axpy_in<E: FFormat, const L: usize>(
    w: &[f32],
    m: Gathered<'_, E>,
    out: &mut [f32],
) {
    let n = m.rows.len();
    for (g, o) in out.chunks_exact_mut(m.len).enumerate() {
        for (j, o) in o.iter_mut().enumerate() {
            let mut lanes = [0f32; L];
            for (i, &r) in m.rows.iter().enumerate() {
                let wi = w[g * n + i];
                if wi != 0.0 {
                    lanes[i % L] = wi.mul_add(m.row(r)[j].widen(), lanes[i % L]);
                }
            }
            *o += reduce_tree(lanes);
        }
    }
}

/// `out_g += Σ_i w[g·n + i] · row_i`, each element one chain of fused multiply-adds in row
/// order from its value in `out`: the reference of [`super::generic::seq_axpy`].
pub(crate) fn seq_axpy<E: FFormat>(w: &[f32], m: Gathered<'_, E>, out: &mut [f32]) {
    let n = m.rows.len();
    if m.len == 0 {
        return;
    }
    for (g, o) in out.chunks_exact_mut(m.len).enumerate() {
        for (i, &r) in m.rows.iter().enumerate() {
            let wi = w[g * n + i];
            for (o, x) in o.iter_mut().zip(m.row(r)) {
                *o = wi.mul_add(x.widen(), *o);
            }
        }
    }
}

/// The fixed reduction tree of `L` lanes (a power of two): `l + L/2`, then `l + L/4`, ...
fn reduce_tree<const L: usize>(mut lanes: [f32; L]) -> f32 {
    let mut step = L / 2;
    while step > 0 {
        for l in 0..step {
            lanes[l] += lanes[l + step];
        }
        step /= 2;
    }
    lanes[0]
}

/// The fixed reduction tree of 8 lanes: `l + 4`, then `l + 2`, `l + 1`.
pub(crate) fn reduce8(lanes: [f32; 8]) -> f32 {
    reduce_tree(lanes)
}

/// The fixed reduction tree of 16 lanes: `l + 8`, then `l + 4`, `l + 2`, `l + 1`.
pub(crate) fn reduce16(lanes: [f32; 16]) -> f32 {
    reduce_tree(lanes)
}
