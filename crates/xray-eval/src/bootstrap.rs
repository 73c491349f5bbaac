use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::check_inputs;
use crate::{average_precision, brier_score, roc_auc, EvalError, Metrics};

/// How to bootstrap: resamples, confidence level and seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Number of resamples (2,000 gives percentile bounds stable to about 0.005).
    pub resamples: usize,
    /// Two-sided confidence level, e.g. 0.95.
    pub confidence: f64,
    /// Seed of the resampling; each resample draws from its own stream, so results do not
    /// depend on the number of threads.
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            resamples: 2000,
            confidence: 0.95,
            seed: 42,
        }
    }
}

/// A point estimate with its percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The statistic on the data as given.
    pub estimate: f64,
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
}

/// Percentile intervals of several statistics, and how many resamples could be used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapResult {
    /// One interval per statistic, in the order the statistic returns them.
    pub intervals: Vec<Interval>,
    /// Resamples where every statistic was defined.
    pub resamples_used: usize,
    /// Resamples dropped because a statistic was undefined (e.g. one class only).
    pub resamples_skipped: usize,
}

/// Bootstraps `statistic` by resampling whole groups (patients) with replacement: films of one
/// patient are correlated, so resampling films would understate the uncertainty.
///
/// `groups[i]` is the group of item `i`; `statistic` gets the item indices of a resample and
/// returns its values, or `None` where they are undefined. Intervals are percentiles with
/// linear interpolation (numpy's default).
pub fn bootstrap_by_group<F>(
    groups: &[usize],
    config: &BootstrapConfig,
    statistic: F,
) -> Result<BootstrapResult, EvalError>
where
    F: Fn(&[usize]) -> Option<Vec<f64>> + Sync,
{
    if !(config.confidence > 0.0 && config.confidence < 1.0) {
        return Err(EvalError::InvalidParameter {
            name: "bootstrap confidence",
            value: config.confidence,
            reason: "must be in (0, 1)",
        });
    }
    if config.resamples < 2 {
        return Err(EvalError::InvalidParameter {
            name: "bootstrap resamples",
            value: config.resamples as f64,
            reason: "need at least 2",
        });
    }
    let all: Vec<usize> = (0..groups.len()).collect();
    let estimates = statistic(&all).ok_or(EvalError::Undefined {
        what: "bootstrap statistic on the full data",
    })?;
    let members = group_members(groups);
    let draws: Vec<Option<Vec<f64>>> = (0..config.resamples)
        .into_par_iter()
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
            rng.set_stream(r as u64);
            let mut indices = Vec::with_capacity(groups.len());
            for _ in 0..members.len() {
                indices.extend_from_slice(&members[rng.random_range(0..members.len())]);
            }
            statistic(&indices)
        })
        .collect();
    let used: Vec<Vec<f64>> = draws.into_iter().flatten().collect();
    let skipped = config.resamples - used.len();
    if used.len() < 2 {
        return Err(EvalError::Undefined {
            what: "bootstrap: fewer than 2 usable resamples",
        });
    }
    let alpha = (1.0 - config.confidence) / 2.0;
    let intervals = estimates
        .iter()
        .enumerate()
        .map(|(k, &estimate)| {
            let mut values: Vec<f64> = used.iter().map(|v| v[k]).collect();
            values.sort_by(f64::total_cmp);
            Interval {
                estimate,
                lower: percentile(&values, alpha),
                upper: percentile(&values, 1.0 - alpha),
            }
        })
        .collect();
    Ok(BootstrapResult {
        intervals,
        resamples_used: used.len(),
        resamples_skipped: skipped,
    })
}

fn group_members(groups: &[usize]) -> Vec<Vec<usize>> {
    let mut ids: Vec<usize> = groups.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut members = vec![Vec::new(); ids.len()];
    for (i, g) in groups.iter().enumerate() {
        if let Ok(slot) = ids.binary_search(g) {
            members[slot].push(i);
        }
    }
    members
}

/// The `q` quantile of sorted values, interpolating linearly between order statistics.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let low = position.floor() as usize;
    let high = (low + 1).min(sorted.len() - 1);
    let fraction = position - low as f64;
    sorted[low] + (sorted[high] - sorted[low]) * fraction
}

/// Patient-bootstrap intervals of every reported metric at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricIntervals {
    /// Accuracy.
    pub accuracy: Interval,
    /// Precision (PPV at the data's prevalence).
    pub precision: Interval,
    /// Recall (sensitivity).
    pub recall: Interval,
    /// Specificity.
    pub specificity: Interval,
    /// F1.
    pub f1: Interval,
    /// ROC AUC.
    pub roc_auc: Interval,
    /// Average precision (PR AUC).
    pub pr_auc: Interval,
    /// Brier score of the probabilities.
    pub brier: Interval,
    /// How the intervals were made.
    pub config: BootstrapConfig,
    /// Resamples used / skipped for lacking a class.
    pub resamples_used: usize,
    /// Resamples skipped.
    pub resamples_skipped: usize,
}

impl MetricIntervals {
    /// Bootstraps every metric over `groups` (one id per image, e.g. the patient's index).
    pub fn compute(
        probabilities: &[f64],
        labels: &[bool],
        groups: &[usize],
        threshold: f64,
        config: &BootstrapConfig,
    ) -> Result<Self, EvalError> {
        check_inputs(probabilities, labels)?;
        if groups.len() != labels.len() {
            return Err(EvalError::LengthMismatch {
                scores: groups.len(),
                labels: labels.len(),
            });
        }
        let result = bootstrap_by_group(groups, config, |indices| {
            let s: Vec<f64> = indices.iter().map(|&i| probabilities[i]).collect();
            let l: Vec<bool> = indices.iter().map(|&i| labels[i]).collect();
            let m = Metrics::compute(&s, &l, threshold).ok()?;
            Some(vec![
                m.accuracy,
                m.precision,
                m.recall,
                m.specificity,
                m.f1,
                roc_auc(&s, &l).ok()?,
                average_precision(&s, &l).ok()?,
                brier_score(&s, &l).ok()?,
            ])
        })?;
        let i = &result.intervals;
        Ok(MetricIntervals {
            accuracy: i[0],
            precision: i[1],
            recall: i[2],
            specificity: i[3],
            f1: i[4],
            roc_auc: i[5],
            pr_auc: i[6],
            brier: i[7],
            config: *config,
            resamples_used: result.resamples_used,
            resamples_skipped: result.resamples_skipped,
        })
    }
}
