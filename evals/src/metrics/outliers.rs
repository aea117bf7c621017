//! Outlier features (Dettmers et al., LLM.int8(); EVALS-SPEC §8): hidden dimensions with a
//! magnitude of at least 6 that appear in at least 25% of layers and at least 6% of sequence
//! positions. Both readings of the 6% rule are reported: the union of positions over the
//! layers where the dimension is an outlier (`positions`), and pooled (layer, position) pairs
//! over all layers (`pooled`).

/// The result for one batch of hidden states.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierReport {
    /// Outlier dimensions under the union reading.
    pub dims: Vec<usize>,
    /// Outlier dimensions under the pooled reading.
    pub dims_pooled: Vec<usize>,
    /// Share of layers where any outlier dimension (union reading) reaches the threshold.
    pub layers_affected: f64,
    /// Share of positions where any outlier dimension (union reading) reaches the threshold.
    pub positions_affected: f64,
    /// Largest magnitude among the outlier dimensions.
    pub max_magnitude: f64,
}

/// Finds outlier dimensions in `states[l][s*h + i]` (L layers of s×h hidden states).
pub fn outlier_features(states: &[Vec<f32>], s: usize, h: usize, threshold: f32) -> OutlierReport {
    let l = states.len();
    let hit =
        |layer: usize, pos: usize, dim: usize| states[layer][pos * h + dim].abs() >= threshold;
    let mut dims = Vec::new();
    let mut dims_pooled = Vec::new();
    let mut layers_any = vec![false; l];
    let mut pos_any = vec![false; s];
    let mut max_mag = 0.0f64;
    for dim in 0..h {
        let layers: Vec<usize> = (0..l)
            .filter(|&ly| (0..s).any(|p| hit(ly, p, dim)))
            .collect();
        let positions: Vec<usize> = (0..s)
            .filter(|&p| layers.iter().any(|&ly| hit(ly, p, dim)))
            .collect();
        let pooled = (0..l)
            .map(|ly| (0..s).filter(|&p| hit(ly, p, dim)).count())
            .sum::<usize>();
        let enough_layers = 4 * layers.len() >= l && !layers.is_empty();
        if enough_layers && 100 * positions.len() >= 6 * s {
            dims.push(dim);
            for &ly in &layers {
                layers_any[ly] = true;
            }
            for &p in &positions {
                pos_any[p] = true;
            }
            for st in states {
                for p in 0..s {
                    max_mag = max_mag.max(st[p * h + dim].abs() as f64);
                }
            }
        }
        if enough_layers && 100 * pooled >= 6 * l * s {
            dims_pooled.push(dim);
        }
    }
    let share = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / v.len().max(1) as f64;
    OutlierReport {
        dims,
        dims_pooled,
        layers_affected: share(&layers_any),
        positions_affected: share(&pos_any),
        max_magnitude: max_mag,
    }
}
