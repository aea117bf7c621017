//! Matrix entropy of hidden states (Wei et al., "Large Language Model Evaluation via Matrix
//! Entropy"; EVALS-SPEC §5): centre the N×d representation over tokens, L2-normalise rows,
//! take the spectrum of `Σ = ZᵀZ/N` normalised to trace 1, and report the von Neumann entropy
//! `H = −Σ λ ln λ`, its normalised form `H / ln d` and the effective rank `exp(H)`.
//! The spectrum is computed from the smaller of the two Gram matrices in f64.

use super::linalg::symmetric_eigen;
use super::MetricError;

/// Matrix entropy of one representation.
#[derive(Clone, Debug, PartialEq)]
pub struct MatrixEntropy {
    /// Normalised eigenvalues, descending.
    pub eigenvalues: Vec<f64>,
    /// H in nats.
    pub entropy: f64,
    /// H / ln d.
    pub normalized: f64,
    /// exp(H).
    pub effective_rank: f64,
}

/// Computes the matrix entropy of `rows` (N rows of d values, row-major).
pub fn matrix_entropy(rows: &[f64], n: usize, d: usize) -> Result<MatrixEntropy, MetricError> {
    if n < 2 || d < 2 || rows.len() != n * d {
        return Err(MetricError::Domain(
            "need an N×d matrix with N, d ≥ 2".into(),
        ));
    }
    let mean: Vec<f64> = (0..d)
        .map(|c| (0..n).map(|r| rows[r * d + c]).sum::<f64>() / n as f64)
        .collect();
    let mut z: Vec<Vec<f64>> = Vec::with_capacity(n);
    for r in 0..n {
        let centred: Vec<f64> = (0..d).map(|c| rows[r * d + c] - mean[c]).collect();
        let norm = centred.iter().map(|x| x * x).sum::<f64>().sqrt();
        // A row equal to the mean carries no direction: it is left out (the reference divides
        // by zero here).
        if norm > 1e-12 {
            z.push(centred.iter().map(|x| x / norm).collect());
        }
    }
    if z.is_empty() {
        return Err(MetricError::Domain("every row equals the mean".into()));
    }
    let k = z.len();
    let (size, gram): (usize, Vec<f64>) = if k <= d {
        (
            k,
            (0..k)
                .flat_map(|i| {
                    (0..k).map({
                        let z = &z;
                        move |j| z[i].iter().zip(&z[j]).map(|(a, b)| a * b).sum::<f64>()
                    })
                })
                .collect(),
        )
    } else {
        (
            d,
            (0..d)
                .flat_map(|a| {
                    (0..d).map({
                        let z = &z;
                        move |b| z.iter().map(|r| r[a] * r[b]).sum::<f64>()
                    })
                })
                .collect(),
        )
    };
    let (vals, _) = symmetric_eigen(&gram, size);
    let clipped: Vec<f64> = vals.iter().map(|v| v.max(0.0)).collect();
    let total: f64 = clipped.iter().sum();
    let mut lambda: Vec<f64> = clipped.iter().map(|v| v / total).collect();
    lambda.sort_by(|a, b| b.total_cmp(a));
    let h: f64 = lambda
        .iter()
        .filter(|&&l| l > 0.0)
        .map(|l| -l * l.ln())
        .sum();
    let h = h.max(0.0);
    Ok(MatrixEntropy {
        entropy: h,
        normalized: h / (d as f64).ln(),
        effective_rank: h.exp(),
        eigenvalues: lambda,
    })
}
