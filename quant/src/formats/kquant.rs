//! Helpers shared by the K-quant reference quantizers: ggml's scale searches
//! (`make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`) and the packed 6-bit scale
//! layouts, written once here instead of once per format.

use super::nearest_int;

/// ggml's `GROUP_MAX_EPS`: below this magnitude a group counts as all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights (weights `x²`),
/// as `quantize_row_q6_K_ref` calls it: symmetric quants in `[0, 2·nmax)` written to `l`,
/// returns the scale.
pub(crate) fn make_qx_quants_rmse1(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (amax, max) = super::signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for &v in x {
            let q = quant(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        (sumlx, suml2)
    };
    let mut iscale = -(nmax as f32) / max;
    for (li, &v) in l.iter_mut().zip(x) {
        *li = (quant(iscale, v) + nmax) as i8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (quant(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants` with `do_rmse = true`: symmetric quants in `[0, 2·nmax)` written
/// to `l`, refined by coordinate descent on the weighted error; returns the scale.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (amax, max) = super::signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &v) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *li = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for (li, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let cur = *li as f32;
            let mut slx = sumlx - w * v * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *li as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    for li in l.iter_mut() {
        *li += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Parameters of ggml's `make_qkx2_quants` search.
pub(crate) struct Qkx2 {
    /// Largest quant.
    pub nmax: i32,
    /// First offset tried on `nmax`.
    pub rmin: f32,
    /// Step between offsets.
    pub rdelta: f32,
    /// Number of steps.
    pub nstep: i32,
    /// Minimise absolute instead of squared error.
    pub use_mad: bool,
}

/// ggml's `make_qkx2_quants`: asymmetric quants `x ≈ scale·l − min` with `l` in `[0, nmax]`,
/// chosen by a weighted least-squares search. Writes `l`, returns `(scale, min)` where `min`
/// is the positive amount subtracted.
pub(crate) fn make_qkx2_quants(p: &Qkx2, x: &[f32], weights: &[f32], l: &mut [u8]) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = if x[i] < min { x[i] } else { min };
        max = if x[i] > max { x[i] } else { max };
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let nmax = p.nmax;
    let err = |d: f32| if p.use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        best_error += weights[i] * err(scale * q as f32 + min - x[i]);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    let laux = &mut laux[..n];
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let qf = q as f32;
            sum_l += w * qf;
            sum_l2 += w * qf * qf;
            sum_xl += w * qf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                cur_error += weights[i] * err(this_scale * laux[i] as f32 + this_min - x[i]);
            }
            if cur_error < best_error {
                l.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The 6-bit scale and min of sub-block `j` (0..8) packed in the 12 bytes of a Q4_K/Q5_K
/// block (ggml's `get_scale_min_k4`).
#[inline]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit scales and mins into the Q4_K/Q5_K layout read by [`get_scale_min_k4`].
pub(crate) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            q[j] = ls[j];
            q[j + 4] = lm[j];
        } else {
            q[j + 4] = (ls[j] & 0xf) | ((lm[j] & 0xf) << 4);
            q[j - 4] |= (ls[j] >> 4) << 6;
            q[j] |= (lm[j] >> 4) << 6;
        }
    }
    q
}

/// Quantizes per-sub-block scales and mins of Q4_K/Q5_K to 6 bits against their maxima,
/// as both reference quantizers do; returns the packed bytes and the two super-scales.
pub(crate) fn quantize_scales_mins_k4(scales: &[f32; 8], mins: &[f32; 8]) -> ([u8; 12], f32, f32) {
    let max_scale = scales
        .iter()
        .fold(0.0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // ggml stores nearest_int into a uint8_t first (wrapping), then clamps to 63.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    (
        pack_scale_min_k4(&ls, &lm),
        max_scale / 63.0,
        max_min / 63.0,
    )
}

/// ggml's importance weights for the Q4_K/Q5_K reference quantizers: `rms(x) + |x_i|`.
pub(crate) fn rms_plus_abs_weights(x: &[f32], w: &mut [f32]) {
    let sum_x2: f32 = x.iter().fold(0.0, |s, &v| s + v * v);
    let av_x = (sum_x2 / x.len() as f32).sqrt();
    for (wi, &v) in w.iter_mut().zip(x) {
        *wi = av_x + v.abs();
    }
}

/// The signed 6-bit scale of sub-block `j` (0..16) packed in the 12 bytes of a Q3_K block.
#[inline]
pub(crate) fn q3k_scale(j: usize, scales: &[u8; 12]) -> i8 {
    let lo = if j < 8 {
        scales[j] & 0xf
    } else {
        scales[j - 8] >> 4
    };
    let hi = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    (lo | (hi << 4)) as i8 - 32
}

/// Packs sixteen 6-bit Q3_K scales (each already offset to `0..64`) into 12 bytes.
pub(crate) fn pack_q3k_scales(l: &[u8; 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (j, &v) in l.iter().enumerate() {
        if j < 8 {
            s[j] = v & 0xf;
        } else {
            s[j - 8] |= (v & 0xf) << 4;
        }
        s[j % 4 + 8] |= (v >> 4) << (2 * (j / 4));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k4_scales_round_trip() {
        let ls = [0, 1, 17, 63, 32, 5, 60, 33];
        let lm = [63, 2, 0, 40, 31, 62, 7, 16];
        let q = pack_scale_min_k4(&ls, &lm);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &q), (ls[j], lm[j]));
        }
    }

    #[test]
    fn q3k_scales_round_trip() {
        let l: [u8; 16] = std::array::from_fn(|j| ((j * 37 + 5) % 64) as u8);
        let s = pack_q3k_scales(&l);
        for (j, &v) in l.iter().enumerate() {
            assert_eq!(q3k_scale(j, &s), v as i8 - 32);
        }
    }
}
