//! How far a film lies from the training distribution, measured on the model's own pooled
//! features: a warning that a prediction is extrapolation (a non-chest image, an inverted or
//! heavily cropped film, an adult's film), never a statement about pneumonia.

use serde::{Deserialize, Serialize};

use crate::{percentile, EvalError};

/// Feature-space distance to the training films, with a threshold chosen on validation films.
///
/// The score of a feature vector `f` is the mean over dimensions of `((f_i - mean_i) / std_i)^2`:
/// the squared Mahalanobis distance under a diagonal covariance, divided by the dimension, so a
/// typical training film scores about 1 whatever the width. The diagonal keeps the statistics
/// small (two numbers per feature) and needs no matrix inversion of a rank-deficient covariance.
/// Standard deviations are floored at 5% of their median, so a channel that never fires on
/// training films gives a large but finite score when it fires.
///
/// ```
/// use xray_eval::FeatureDistance;
/// // Four training rows of width 2.
/// let train = [0.0f32, 1.0, 2.0, 1.0, 0.0, 3.0, 2.0, 3.0];
/// let ood = FeatureDistance::fit(&train, 2)?.with_threshold(&[0.5, 1.0, 1.5], 1.0)?;
/// assert_eq!(ood.threshold, 1.5);
/// assert!(ood.score(&[1.0, 2.0])? < 1e-9); // the mean itself
/// assert!(ood.is_outlier(ood.score(&[10.0, -10.0])?));
/// # Ok::<(), xray_eval::EvalError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDistance {
    /// Mean of each feature over the fitting films.
    pub mean: Vec<f32>,
    /// Standard deviation of each feature (floored as described above).
    pub std: Vec<f32>,
    /// Scores above this are flagged as out of distribution.
    pub threshold: f64,
    /// The quantile of the validation films' scores the threshold sits at.
    pub quantile: f64,
}

impl FeatureDistance {
    /// Fits means and standard deviations to `features`, row-major rows of width `dim`; the
    /// threshold starts at infinity (nothing flagged) until [`with_threshold`](Self::with_threshold).
    pub fn fit(features: &[f32], dim: usize) -> Result<Self, EvalError> {
        if dim == 0 || !features.len().is_multiple_of(dim) || features.len() < 2 * dim {
            return Err(EvalError::FeatureWidth {
                expected: dim,
                got: features.len(),
            });
        }
        if let Some((index, value)) = features.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(EvalError::NonFiniteScore {
                index,
                value: f64::from(*value),
            });
        }
        let n = (features.len() / dim) as f64;
        let mut sum = vec![0f64; dim];
        let mut sum_sq = vec![0f64; dim];
        for row in features.chunks_exact(dim) {
            for ((s, q), &v) in sum.iter_mut().zip(&mut sum_sq).zip(row) {
                *s += f64::from(v);
                *q += f64::from(v) * f64::from(v);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let mut std: Vec<f64> = sum_sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| (q / n - m * m).max(0.0).sqrt())
            .collect();
        let mut sorted = std.clone();
        sorted.sort_by(f64::total_cmp);
        let floor = (0.05 * percentile(&sorted, 0.5)).max(1e-12);
        for s in &mut std {
            *s = s.max(floor);
        }
        Ok(FeatureDistance {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std: std.iter().map(|&s| s as f32).collect(),
            threshold: f64::INFINITY,
            quantile: 1.0,
        })
    }

    /// Sets the threshold at the `quantile` of `validation_scores` (e.g. 0.99 flags about 1% of
    /// films like the validation ones).
    pub fn with_threshold(
        mut self,
        validation_scores: &[f64],
        quantile: f64,
    ) -> Result<Self, EvalError> {
        if !(0.0..=1.0).contains(&quantile) {
            return Err(EvalError::InvalidParameter {
                name: "quantile",
                value: quantile,
                reason: "must lie in [0, 1]",
            });
        }
        if validation_scores.is_empty() {
            return Err(EvalError::Undefined {
                what: "an out-of-distribution threshold without validation scores",
            });
        }
        let mut sorted = validation_scores.to_vec();
        sorted.sort_by(f64::total_cmp);
        self.threshold = percentile(&sorted, quantile);
        self.quantile = quantile;
        Ok(self)
    }

    /// The feature dimension.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The score of one feature vector.
    pub fn score(&self, features: &[f32]) -> Result<f64, EvalError> {
        if features.len() != self.dim() {
            return Err(EvalError::FeatureWidth {
                expected: self.dim(),
                got: features.len(),
            });
        }
        let total: f64 = features
            .iter()
            .zip(&self.mean)
            .zip(&self.std)
            .map(|((&f, &m), &s)| {
                let z = (f64::from(f) - f64::from(m)) / f64::from(s);
                z * z
            })
            .sum();
        Ok(total / self.dim() as f64)
    }

    /// Scores of row-major feature rows.
    pub fn scores(&self, features: &[f32]) -> Result<Vec<f64>, EvalError> {
        if self.dim() == 0 || !features.len().is_multiple_of(self.dim()) {
            return Err(EvalError::FeatureWidth {
                expected: self.dim(),
                got: features.len(),
            });
        }
        features
            .chunks_exact(self.dim())
            .map(|row| self.score(row))
            .collect()
    }

    /// Whether `score` lies above the threshold. NaN (a broken input) counts as an outlier.
    pub fn is_outlier(&self, score: f64) -> bool {
        score.is_nan() || score > self.threshold
    }
}
