use serde::{Deserialize, Serialize};

use crate::error::{check_inputs, EvalError};
use crate::{ConformalBounds, ConfusionMatrix};

/// How the decision threshold is chosen on validation data. Stored in every bundle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum ThresholdRule {
    /// Maximise Youden's J = sensitivity + specificity - 1 (ties: the lower threshold, which
    /// misses fewer pneumonias).
    Youden,
    /// The highest threshold whose sensitivity reaches `target`: as specific as possible while
    /// finding at least that share of pneumonia.
    TargetSensitivity {
        /// Required sensitivity in `(0, 1]`.
        target: f64,
    },
    /// The lowest threshold whose specificity reaches `target`: as sensitive as possible while
    /// clearing at least that share of normal films.
    TargetSpecificity {
        /// Required specificity in `(0, 1]`.
        target: f64,
    },
    /// The lowest probability at which pneumonia stays in the class-conditional split
    /// conformal prediction set at error rate `alpha` ([`ConformalBounds`]): sensitivity
    /// `1 - alpha` with the finite-sample correction, the pneumonia edge of the refer band.
    Conformal {
        /// Error rate in `(0, 1)`.
        alpha: f64,
    },
    /// A fixed value, e.g. 0.5.
    Fixed {
        /// The threshold.
        value: f64,
    },
}

/// Chooses a threshold on `scores` (decisions are `score >= threshold`) by `rule`.
///
/// Candidates are the distinct scores themselves, so the result reproduces on the same data.
pub fn choose_threshold(
    scores: &[f64],
    labels: &[bool],
    rule: ThresholdRule,
) -> Result<f64, EvalError> {
    check_inputs(scores, labels)?;
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(EvalError::OneClass {
            metric: "threshold selection",
            positives,
            negatives,
        });
    }
    let mut candidates: Vec<f64> = scores.to_vec();
    candidates.sort_by(f64::total_cmp);
    candidates.dedup();
    match rule {
        ThresholdRule::Fixed { value } => Ok(value),
        ThresholdRule::Conformal { alpha } => {
            Ok(ConformalBounds::fit(scores, labels, alpha)?.pneumonia_lower)
        }
        ThresholdRule::Youden => {
            let mut best = (f64::NEG_INFINITY, candidates[0]);
            for &t in &candidates {
                let m = ConfusionMatrix::at_threshold(scores, labels, t)?;
                let j = m.recall() + m.specificity() - 1.0;
                if j > best.0 + 1e-12 {
                    best = (j, t);
                }
            }
            Ok(best.1)
        }
        ThresholdRule::TargetSensitivity { target } => {
            if !(target > 0.0 && target <= 1.0) {
                return Err(EvalError::InvalidParameter {
                    name: "target sensitivity",
                    value: target,
                    reason: "must be in (0, 1]",
                });
            }
            let mut chosen = candidates[0];
            for &t in &candidates {
                if ConfusionMatrix::at_threshold(scores, labels, t)?.recall() >= target {
                    chosen = t;
                } else {
                    break;
                }
            }
            Ok(chosen)
        }
        ThresholdRule::TargetSpecificity { target } => {
            if !(target > 0.0 && target <= 1.0) {
                return Err(EvalError::InvalidParameter {
                    name: "target specificity",
                    value: target,
                    reason: "must be in (0, 1]",
                });
            }
            // Specificity grows with the threshold; above the highest score it is 1.
            for &t in &candidates {
                if ConfusionMatrix::at_threshold(scores, labels, t)?.specificity() >= target {
                    return Ok(t);
                }
            }
            // Nothing reaches it below the top score: call nothing pneumonia (finite, for JSON).
            Ok(f64::MAX)
        }
    }
}
