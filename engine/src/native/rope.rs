//! RoPE: the per-pair rotation angles in llama.cpp's float steps ([`RopePlan`]) and the
//! rotation of query and key heads ([`rope`]).

/// RoPE for the forward pass, in llama.cpp's float steps: the angle of pair `i` at position
/// `p` starts from `θ = p` multiplied by `base^(−2/n_rot)` once per pair (not `p · θ_i`, which
/// rounds differently), then is divided by the pair's factor, scaled, and mixed by YaRN.
#[derive(Clone, Debug)]
pub(super) struct RopePlan {
    /// `base^(−2/n_rot)`.
    pub(super) theta_scale: f32,
    /// Linear scaling (`1/factor`).
    pub(super) freq_scale: f32,
    /// Whether YaRN's mix applies.
    pub(super) yarn: bool,
    /// Per pair: the frequency divisor and YaRN's unscaled share.
    pub(super) pairs: Vec<(f32, f32)>,
    /// The rotations' magnitude.
    pub(super) magnitude: f32,
}

impl RopePlan {
    /// The angle for an unscaled angle `extrap` and YaRN's unscaled share `mix`.
    #[inline]
    pub(super) fn angle(&self, extrap: f32, mix: f32) -> f32 {
        let interp = self.freq_scale * extrap;
        if self.yarn {
            extrap.mul_add(mix, interp * (1.0 - mix))
        } else {
            interp
        }
    }

    /// Appends each pair's `(sin, cos)` times the magnitude at position `pos`.
    pub(super) fn rotations(&self, pos: u32, out: &mut Vec<(f32, f32)>) {
        let mut theta = pos as f32;
        for &(divisor, mix) in &self.pairs {
            let (s, c) = self.angle(theta / divisor, mix).sin_cos();
            out.push((s * self.magnitude, c * self.magnitude));
            theta *= self.theta_scale;
        }
    }
}

/// Rotates pair `i` of each head by the angle whose `(sin, cos)` is `rot[i]` (`pos · freq_i`,
/// the same in every layer, so computed once per row and pass): dimensions `(2i, 2i + 1)`, or
/// with `neox` dimensions `(i, i + head_dim/2)`.
pub(super) fn rope(x: &mut [f32], head_dim: usize, rot: &[(f32, f32)], neox: bool) {
    let half = head_dim / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(s, c)) in rot.iter().enumerate() {
            let (ia, ib) = if neox {
                (i, i + half)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (a, b) = (head[ia], head[ib]);
            // Fused as llama.cpp's build contracts `a·c − b·s` and `a·s + b·c`.
            head[ia] = a.mul_add(c, -(b * s));
            head[ib] = a.mul_add(s, b * c);
        }
    }
}
