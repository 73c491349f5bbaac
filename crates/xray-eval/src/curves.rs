use serde::{Deserialize, Serialize};

use crate::error::{check_inputs, EvalError};

/// Cumulative decisions `score >= threshold` at every distinct score, highest threshold first.
pub(crate) struct RankedCounts {
    /// Distinct scores, descending.
    pub thresholds: Vec<f64>,
    /// Positives scoring at least the threshold.
    pub tp: Vec<usize>,
    /// Negatives scoring at least the threshold.
    pub fp: Vec<usize>,
    pub positives: usize,
    pub negatives: usize,
}

pub(crate) fn ranked_counts(
    scores: &[f64],
    labels: &[bool],
    metric: &'static str,
) -> Result<RankedCounts, EvalError> {
    check_inputs(scores, labels)?;
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(EvalError::OneClass {
            metric,
            positives,
            negatives,
        });
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut counts = RankedCounts {
        thresholds: Vec::new(),
        tp: Vec::new(),
        fp: Vec::new(),
        positives,
        negatives,
    };
    let (mut tp, mut fp) = (0, 0);
    for (k, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        // Close a point only after the last of a run of tied scores.
        let last_of_tie = order.get(k + 1).is_none_or(|&j| scores[j] != scores[i]);
        if last_of_tie {
            counts.thresholds.push(scores[i]);
            counts.tp.push(tp);
            counts.fp.push(fp);
        }
    }
    Ok(counts)
}

/// The ROC curve at every distinct score (nothing dropped), starting at `(0, 0)` with an
/// infinite threshold, as scikit-learn's `roc_curve(..., drop_intermediate=False)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RocCurve {
    /// Decision thresholds, descending (`score >= threshold` is called pneumonia).
    pub thresholds: Vec<f64>,
    /// False positive rate (1 - specificity) at each threshold.
    pub fpr: Vec<f64>,
    /// True positive rate (sensitivity) at each threshold.
    pub tpr: Vec<f64>,
}

impl RocCurve {
    /// Computes the curve; both classes must be present.
    pub fn compute(scores: &[f64], labels: &[bool]) -> Result<Self, EvalError> {
        let c = ranked_counts(scores, labels, "ROC curve")?;
        let mut curve = RocCurve {
            thresholds: vec![f64::INFINITY],
            fpr: vec![0.0],
            tpr: vec![0.0],
        };
        for k in 0..c.thresholds.len() {
            curve.thresholds.push(c.thresholds[k]);
            curve.fpr.push(c.fp[k] as f64 / c.negatives as f64);
            curve.tpr.push(c.tp[k] as f64 / c.positives as f64);
        }
        Ok(curve)
    }
}

/// The precision-recall curve at every distinct score, highest threshold first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrCurve {
    /// Decision thresholds, descending.
    pub thresholds: Vec<f64>,
    /// Precision (positive predictive value at the data's prevalence) at each threshold.
    pub precision: Vec<f64>,
    /// Recall (sensitivity) at each threshold.
    pub recall: Vec<f64>,
}

impl PrCurve {
    /// Computes the curve; both classes must be present.
    pub fn compute(scores: &[f64], labels: &[bool]) -> Result<Self, EvalError> {
        let c = ranked_counts(scores, labels, "precision-recall curve")?;
        let precision =
            c.tp.iter()
                .zip(&c.fp)
                .map(|(&tp, &fp)| tp as f64 / (tp + fp) as f64)
                .collect();
        let recall =
            c.tp.iter()
                .map(|&tp| tp as f64 / c.positives as f64)
                .collect();
        Ok(PrCurve {
            thresholds: c.thresholds,
            precision,
            recall,
        })
    }

    /// Average precision, the step-wise area under this curve: `sum (R_k - R_{k-1}) P_k`
    /// (scikit-learn's `average_precision_score`; no interpolation, which would flatter it).
    pub fn average_precision(&self) -> f64 {
        let mut previous_recall = 0.0;
        let mut area = 0.0;
        for (&p, &r) in self.precision.iter().zip(&self.recall) {
            area += (r - previous_recall) * p;
            previous_recall = r;
        }
        area
    }
}

/// Average precision (PR AUC) of scores against labels; see [`PrCurve::average_precision`].
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Result<f64, EvalError> {
    Ok(PrCurve::compute(scores, labels)?.average_precision())
}
