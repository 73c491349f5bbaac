use serde::{Deserialize, Serialize};

use crate::curves::ranked_counts;
use crate::error::EvalError;
use crate::ranks::mid_ranks;

/// DeLong's test of two correlated ROC AUCs (both models scored on the same films).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DeLongTest {
    /// AUC of model A.
    pub auc_a: f64,
    /// AUC of model B.
    pub auc_b: f64,
    /// Variance of AUC A.
    pub variance_a: f64,
    /// Variance of AUC B.
    pub variance_b: f64,
    /// Covariance of the two AUCs.
    pub covariance: f64,
    /// `(auc_a - auc_b) / sqrt(var(auc_a - auc_b))`.
    pub z: f64,
    /// Two-sided p-value from the normal distribution.
    pub p_value: f64,
}

/// DeLong et al. (1988) structural components, computed from mid-ranks (Sun & Xu, 2014):
/// `v10[i]` is the share of negatives that positive `i` outscores (ties one half), `v01[j]` the
/// share of positives that outscore negative `j`.
fn structural_components(scores: &[f64], labels: &[bool]) -> (Vec<f64>, Vec<f64>) {
    let positives: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|p| *p.1)
        .map(|p| *p.0)
        .collect();
    let negatives: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|p| !*p.1)
        .map(|p| *p.0)
        .collect();
    let (m, n) = (positives.len() as f64, negatives.len() as f64);
    let all: Vec<f64> = positives.iter().chain(&negatives).copied().collect();
    let ranks_all = mid_ranks(&all);
    let ranks_pos = mid_ranks(&positives);
    let ranks_neg = mid_ranks(&negatives);
    let v10 = (0..positives.len())
        .map(|i| (ranks_all[i] - ranks_pos[i]) / n)
        .collect();
    let v01 = (0..negatives.len())
        .map(|j| 1.0 - (ranks_all[positives.len() + j] - ranks_neg[j]) / m)
        .collect();
    (v10, v01)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample covariance (denominator `n - 1`).
fn covariance(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / (a.len() as f64 - 1.0)
}

/// Two-sided normal p-value of `z`.
fn normal_two_sided_p(z: f64) -> f64 {
    libm::erfc(z.abs() / std::f64::consts::SQRT_2)
}

/// DeLong's test that two models scoring the same films have equal ROC AUC.
pub fn delong_test(
    scores_a: &[f64],
    scores_b: &[f64],
    labels: &[bool],
) -> Result<DeLongTest, EvalError> {
    if scores_a.len() != scores_b.len() {
        return Err(EvalError::LengthMismatch {
            scores: scores_b.len(),
            labels: scores_a.len(),
        });
    }
    let counts = ranked_counts(scores_a, labels, "DeLong test")?;
    ranked_counts(scores_b, labels, "DeLong test")?;
    if counts.positives < 2 || counts.negatives < 2 {
        return Err(EvalError::OneClass {
            metric: "DeLong test (two of each class)",
            positives: counts.positives,
            negatives: counts.negatives,
        });
    }
    let (m, n) = (counts.positives as f64, counts.negatives as f64);
    let (a10, a01) = structural_components(scores_a, labels);
    let (b10, b01) = structural_components(scores_b, labels);
    let (auc_a, auc_b) = (mean(&a10), mean(&b10));
    let variance_a = covariance(&a10, &a10) / m + covariance(&a01, &a01) / n;
    let variance_b = covariance(&b10, &b10) / m + covariance(&b01, &b01) / n;
    let cov = covariance(&a10, &b10) / m + covariance(&a01, &b01) / n;
    let variance = variance_a + variance_b - 2.0 * cov;
    let z = if variance > 0.0 {
        (auc_a - auc_b) / variance.sqrt()
    } else {
        0.0
    };
    Ok(DeLongTest {
        auc_a,
        auc_b,
        variance_a,
        variance_b,
        covariance: cov,
        z,
        p_value: if variance > 0.0 {
            normal_two_sided_p(z)
        } else {
            1.0
        },
    })
}

/// McNemar's test on paired decisions: do two models make different numbers of errors?
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct McNemarTest {
    /// Films only model A got right.
    pub only_a_correct: usize,
    /// Films only model B got right.
    pub only_b_correct: usize,
    /// Chi-square statistic with continuity correction, `(|b - c| - 1)^2 / (b + c)`.
    pub statistic: f64,
    /// Its p-value (chi-square, one degree of freedom).
    pub p_value: f64,
    /// Exact two-sided binomial p-value, preferable when `b + c` is small (< 25).
    pub exact_p_value: f64,
}

/// McNemar's test from each model's per-film correctness.
pub fn mcnemar_test(correct_a: &[bool], correct_b: &[bool]) -> Result<McNemarTest, EvalError> {
    if correct_a.len() != correct_b.len() || correct_a.is_empty() {
        return Err(EvalError::LengthMismatch {
            scores: correct_b.len(),
            labels: correct_a.len(),
        });
    }
    let b = correct_a
        .iter()
        .zip(correct_b)
        .filter(|(a, b)| **a && !**b)
        .count();
    let c = correct_a
        .iter()
        .zip(correct_b)
        .filter(|(a, b)| !**a && **b)
        .count();
    let discordant = (b + c) as f64;
    let (statistic, p_value) = if b + c == 0 {
        (0.0, 1.0)
    } else {
        let s = ((b as f64 - c as f64).abs() - 1.0).max(0.0).powi(2) / discordant;
        // Chi-square with one degree of freedom: P(X > s) = erfc(sqrt(s / 2)).
        (s, libm::erfc((s / 2.0).sqrt()))
    };
    Ok(McNemarTest {
        only_a_correct: b,
        only_b_correct: c,
        statistic,
        p_value,
        exact_p_value: binomial_two_sided_half(b.min(c), b + c),
    })
}

/// `min(1, 2 P(X <= k))` for `X ~ Binomial(n, 1/2)`.
fn binomial_two_sided_half(k: usize, n: usize) -> f64 {
    if n == 0 {
        return 1.0;
    }
    // Sum the terms in log space: C(n, i) / 2^n underflows for large n.
    let ln_half_n = n as f64 * std::f64::consts::LN_2;
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut total = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        total += (ln_choose - ln_half_n).exp();
    }
    (2.0 * total).min(1.0)
}

/// Positive and negative predictive values at a given prevalence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PredictiveValues {
    /// Share of pneumonia among the films the values are for.
    pub prevalence: f64,
    /// Probability of pneumonia when the model says pneumonia.
    pub ppv: f64,
    /// Probability of no pneumonia when the model says normal.
    pub npv: f64,
}

/// PPV and NPV by Bayes' rule from sensitivity, specificity and prevalence: precision measured
/// on one population does not carry over to another with a different share of pneumonia.
pub fn predictive_values(
    sensitivity: f64,
    specificity: f64,
    prevalence: f64,
) -> Result<PredictiveValues, EvalError> {
    if !(0.0..=1.0).contains(&prevalence) {
        return Err(EvalError::InvalidParameter {
            name: "prevalence",
            value: prevalence,
            reason: "must be in [0, 1]",
        });
    }
    let true_pos = sensitivity * prevalence;
    let false_pos = (1.0 - specificity) * (1.0 - prevalence);
    let true_neg = specificity * (1.0 - prevalence);
    let false_neg = (1.0 - sensitivity) * prevalence;
    let ratio = |a: f64, b: f64| if a + b > 0.0 { a / (a + b) } else { 0.0 };
    Ok(PredictiveValues {
        prevalence,
        ppv: ratio(true_pos, false_pos),
        npv: ratio(true_neg, false_neg),
    })
}
