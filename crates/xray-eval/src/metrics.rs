use serde::{Deserialize, Serialize};

use crate::error::{check_inputs, EvalError};
use crate::roc_auc;

/// Counts of decisions at one threshold (pneumonia is the positive class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// Pneumonia called pneumonia.
    pub tp: usize,
    /// Normal called pneumonia.
    pub fp: usize,
    /// Normal called normal.
    pub tn: usize,
    /// Pneumonia missed: the costly error.
    #[serde(rename = "fn")]
    pub fn_: usize,
}

impl ConfusionMatrix {
    /// Decisions `score >= threshold` against the labels.
    pub fn at_threshold(
        scores: &[f64],
        labels: &[bool],
        threshold: f64,
    ) -> Result<Self, EvalError> {
        check_inputs(scores, labels)?;
        let mut m = ConfusionMatrix {
            tp: 0,
            fp: 0,
            tn: 0,
            fn_: 0,
        };
        for (&s, &l) in scores.iter().zip(labels) {
            match (s >= threshold, l) {
                (true, true) => m.tp += 1,
                (true, false) => m.fp += 1,
                (false, false) => m.tn += 1,
                (false, true) => m.fn_ += 1,
            }
        }
        Ok(m)
    }

    /// Sensitivity: the share of pneumonia cases found (0 when there are none).
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// The share of normal films called normal.
    pub fn specificity(&self) -> f64 {
        ratio(self.tn, self.tn + self.fp)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The metrics every report shows, at one decision threshold. `precision` is 0 when nothing is
/// called positive, `f1` is 0 when precision and recall are both 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Number of images.
    pub n: usize,
    /// True positives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// True negatives.
    pub tn: usize,
    /// False negatives.
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// Share of correct decisions.
    pub accuracy: f64,
    /// Positive predictive value at this data's prevalence.
    pub precision: f64,
    /// Sensitivity.
    pub recall: f64,
    /// True negative rate.
    pub specificity: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// ROC AUC (threshold-free).
    pub auc: f64,
    /// The decision threshold on the pneumonia probability.
    pub threshold: f64,
}

impl Metrics {
    /// Computes every metric for probabilities (or any scores) and labels at `threshold`.
    pub fn compute(scores: &[f64], labels: &[bool], threshold: f64) -> Result<Self, EvalError> {
        let m = ConfusionMatrix::at_threshold(scores, labels, threshold)?;
        let precision = ratio(m.tp, m.tp + m.fp);
        let recall = m.recall();
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Ok(Metrics {
            n: scores.len(),
            tp: m.tp,
            fp: m.fp,
            tn: m.tn,
            fn_: m.fn_,
            accuracy: ratio(m.tp + m.tn, scores.len()),
            precision,
            recall,
            specificity: m.specificity(),
            f1,
            auc: roc_auc(scores, labels)?,
            threshold,
        })
    }
}
