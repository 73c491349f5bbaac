use serde::{Deserialize, Serialize};

use crate::{EvalError, RocCurve};

/// One point of the ROC curve: a threshold and what it gives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    /// Call pneumonia when the score is at least this (`f64::MAX`: call nothing pneumonia; kept
    /// finite so that it survives JSON).
    pub threshold: f64,
    /// True positive rate at that threshold.
    pub sensitivity: f64,
    /// True negative rate at that threshold.
    pub specificity: f64,
}

fn check_target(name: &'static str, target: f64) -> Result<(), EvalError> {
    if target > 0.0 && target <= 1.0 {
        Ok(())
    } else {
        Err(EvalError::InvalidParameter {
            name,
            value: target,
            reason: "must be in (0, 1]",
        })
    }
}

fn points(curve: &RocCurve) -> impl Iterator<Item = OperatingPoint> + '_ {
    (0..curve.thresholds.len()).map(|k| OperatingPoint {
        threshold: curve.thresholds[k].min(f64::MAX),
        sensitivity: curve.tpr[k],
        specificity: 1.0 - curve.fpr[k],
    })
}

/// The most sensitive point whose specificity is at least `min_specificity` (ties: the more
/// specific one). Descriptive: it reads the answer off the data it is given.
pub fn sensitivity_at_specificity(
    scores: &[f64],
    labels: &[bool],
    min_specificity: f64,
) -> Result<OperatingPoint, EvalError> {
    check_target("minimum specificity", min_specificity)?;
    let curve = RocCurve::compute(scores, labels)?;
    let best = points(&curve)
        // Rates are ratios of counts: allow for rounding when comparing with the target.
        .filter(|p| p.specificity >= min_specificity - 1e-12)
        .max_by(|a, b| {
            (a.sensitivity, a.specificity)
                .partial_cmp(&(b.sensitivity, b.specificity))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    // The infinite threshold always qualifies (specificity 1).
    Ok(best.unwrap_or(OperatingPoint {
        threshold: f64::MAX,
        sensitivity: 0.0,
        specificity: 1.0,
    }))
}

/// The most specific point whose sensitivity is at least `min_sensitivity` (ties: the more
/// sensitive one).
pub fn specificity_at_sensitivity(
    scores: &[f64],
    labels: &[bool],
    min_sensitivity: f64,
) -> Result<OperatingPoint, EvalError> {
    check_target("minimum sensitivity", min_sensitivity)?;
    let curve = RocCurve::compute(scores, labels)?;
    let last = curve.thresholds.len() - 1;
    let fallback = OperatingPoint {
        threshold: curve.thresholds[last],
        sensitivity: curve.tpr[last],
        specificity: 1.0 - curve.fpr[last],
    };
    Ok(points(&curve)
        .filter(|p| p.sensitivity >= min_sensitivity - 1e-12)
        .max_by(|a, b| {
            (a.specificity, a.sensitivity)
                .partial_cmp(&(b.specificity, b.sensitivity))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .unwrap_or(fallback))
}
