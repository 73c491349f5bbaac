use serde::{Deserialize, Serialize};

use crate::error::{check_inputs, EvalError};

/// Bounds of the inverse temperature: beyond them the data are (nearly) separable and the fit
/// says nothing useful.
const MIN_INVERSE_TEMPERATURE: f64 = 1e-3;
const MAX_INVERSE_TEMPERATURE: f64 = 1e3;
/// Probabilities are clamped this far from 0 and 1 before taking logits (f32 sigmoids saturate).
const PROBABILITY_EPSILON: f64 = 1e-7;

/// Temperature scaling (Guo et al., 2017): calibrated probability `sigmoid(logit / T)`.
///
/// One parameter, fitted on validation by minimising the negative log-likelihood; it never
/// changes the ranking of films, so AUC and the decisions at a correspondingly mapped threshold
/// are unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemperatureScaling {
    /// The temperature `T` (> 1 softens over-confident probabilities).
    pub temperature: f64,
    /// Which data it was fitted on, in words.
    pub fitted_on: String,
    /// How many images.
    pub images: usize,
    /// Mean negative log-likelihood on those images before scaling.
    pub nll_before: f64,
    /// ... and after.
    pub nll_after: f64,
}

impl TemperatureScaling {
    /// Fits `T` to probabilities (converted back to logits) and labels.
    pub fn fit(
        probabilities: &[f64],
        labels: &[bool],
        fitted_on: impl Into<String>,
    ) -> Result<Self, EvalError> {
        check_inputs(probabilities, labels)?;
        let logits: Vec<f64> = probabilities.iter().map(|&p| logit(p)).collect();
        let temperature = fit_temperature(&logits, labels)?;
        Ok(TemperatureScaling {
            temperature,
            fitted_on: fitted_on.into(),
            images: labels.len(),
            nll_before: mean_nll(&logits, labels, 1.0),
            nll_after: mean_nll(&logits, labels, 1.0 / temperature),
        })
    }

    /// The calibrated probability of an uncalibrated one.
    pub fn apply(&self, probability: f64) -> f64 {
        sigmoid(logit(probability) / self.temperature)
    }

    /// [`apply`](Self::apply) to each probability.
    pub fn apply_all(&self, probabilities: &[f64]) -> Vec<f64> {
        probabilities.iter().map(|&p| self.apply(p)).collect()
    }
}

/// `ln(p / (1 - p))`, with `p` clamped away from 0 and 1.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON);
    (p / (1.0 - p)).ln()
}

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

fn mean_nll(logits: &[f64], labels: &[bool], inverse_temperature: f64) -> f64 {
    let total: f64 = logits
        .iter()
        .zip(labels)
        .map(|(&z, &y)| {
            let s = inverse_temperature * z;
            softplus(s) - if y { s } else { 0.0 }
        })
        .sum();
    total / logits.len() as f64
}

/// The temperature minimising the mean negative log-likelihood of `sigmoid(logit / T)`.
///
/// The loss is convex in `s = 1 / T`, so Newton's method on `s` (with step halving) converges
/// to machine precision in a few steps.
pub fn fit_temperature(logits: &[f64], labels: &[bool]) -> Result<f64, EvalError> {
    check_inputs(logits, labels)?;
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 || positives == labels.len() {
        return Err(EvalError::OneClass {
            metric: "temperature scaling",
            positives,
            negatives: labels.len() - positives,
        });
    }
    if logits.iter().all(|&z| z == 0.0) {
        return Err(EvalError::Undefined {
            what: "temperature of all-zero logits",
        });
    }
    let mut s: f64 = 1.0;
    let mut loss = mean_nll(logits, labels, s);
    for _ in 0..200 {
        let (mut gradient, mut curvature) = (0.0, 0.0);
        for (&z, &y) in logits.iter().zip(labels) {
            let p = sigmoid(s * z);
            gradient += (p - if y { 1.0 } else { 0.0 }) * z;
            curvature += p * (1.0 - p) * z * z;
        }
        if curvature <= 0.0 {
            break;
        }
        let mut step = gradient / curvature;
        let mut next = (s - step).clamp(MIN_INVERSE_TEMPERATURE, MAX_INVERSE_TEMPERATURE);
        let mut next_loss = mean_nll(logits, labels, next);
        while next_loss > loss && step.abs() > 1e-15 {
            step /= 2.0;
            next = (s - step).clamp(MIN_INVERSE_TEMPERATURE, MAX_INVERSE_TEMPERATURE);
            next_loss = mean_nll(logits, labels, next);
        }
        let converged = (next - s).abs() <= 1e-13 * s.max(1.0);
        s = next;
        loss = next_loss.min(loss);
        if converged {
            break;
        }
    }
    Ok(1.0 / s)
}

/// How probabilities are grouped for calibration error and reliability diagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binning {
    /// `bins` equal-width intervals of `[0, 1]`; bin `k` holds `k/B <= p < (k+1)/B`, the last one
    /// also `p = 1`.
    EqualWidth,
    /// `bins` groups of (nearly) equal size after sorting by probability, the first
    /// `n mod bins` one larger (numpy's `array_split`): the adaptive calibration error of
    /// Nixon et al. (2019), robust to probabilities piling up near 0 and 1.
    EqualMass,
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lowest probability the bin may hold (equal-width) or holds (equal-mass).
    pub lower: f64,
    /// Highest.
    pub upper: f64,
    /// Images in the bin.
    pub count: usize,
    /// Their mean predicted probability.
    pub mean_probability: f64,
    /// The share of them that have pneumonia.
    pub observed_rate: f64,
}

/// The non-empty bins of a reliability diagram.
pub fn reliability_bins(
    probabilities: &[f64],
    labels: &[bool],
    bins: usize,
    binning: Binning,
) -> Result<Vec<ReliabilityBin>, EvalError> {
    check_inputs(probabilities, labels)?;
    if bins == 0 {
        return Err(EvalError::InvalidParameter {
            name: "calibration bins",
            value: 0.0,
            reason: "need at least one bin",
        });
    }
    let groups: Vec<(f64, f64, Vec<usize>)> = match binning {
        Binning::EqualWidth => {
            let mut members = vec![Vec::new(); bins];
            for (i, &p) in probabilities.iter().enumerate() {
                let k = ((p * bins as f64).floor().max(0.0) as usize).min(bins - 1);
                members[k].push(i);
            }
            members
                .into_iter()
                .enumerate()
                .map(|(k, m)| (k as f64 / bins as f64, (k + 1) as f64 / bins as f64, m))
                .collect()
        }
        Binning::EqualMass => {
            let mut order: Vec<usize> = (0..probabilities.len()).collect();
            order.sort_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]));
            let n = order.len();
            let (base, extra) = (n / bins, n % bins);
            let mut start = 0;
            let mut groups = Vec::with_capacity(bins);
            for k in 0..bins {
                let size = base + usize::from(k < extra);
                let members = order[start..start + size].to_vec();
                start += size;
                let lower = members.first().map_or(0.0, |&i| probabilities[i]);
                let upper = members.last().map_or(0.0, |&i| probabilities[i]);
                groups.push((lower, upper, members));
            }
            groups
        }
    };
    Ok(groups
        .into_iter()
        .filter(|(_, _, m)| !m.is_empty())
        .map(|(lower, upper, m)| {
            let count = m.len();
            let mean_probability = m.iter().map(|&i| probabilities[i]).sum::<f64>() / count as f64;
            let positives = m.iter().filter(|&&i| labels[i]).count();
            ReliabilityBin {
                lower,
                upper,
                count,
                mean_probability,
                observed_rate: positives as f64 / count as f64,
            }
        })
        .collect())
}

/// Expected calibration error: `sum_b (n_b / N) |observed_rate_b - mean_probability_b|`.
pub fn expected_calibration_error(
    probabilities: &[f64],
    labels: &[bool],
    bins: usize,
    binning: Binning,
) -> Result<f64, EvalError> {
    let n = probabilities.len() as f64;
    Ok(reliability_bins(probabilities, labels, bins, binning)?
        .iter()
        .map(|b| b.count as f64 / n * (b.observed_rate - b.mean_probability).abs())
        .sum())
}

/// Brier score: mean squared difference between probability and outcome (0 is perfect).
pub fn brier_score(probabilities: &[f64], labels: &[bool]) -> Result<f64, EvalError> {
    check_inputs(probabilities, labels)?;
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &y)| (p - if y { 1.0 } else { 0.0 }).powi(2))
        .sum();
    Ok(total / probabilities.len() as f64)
}
