use crate::error::{check_inputs, EvalError};
use crate::ranks::mid_ranks;

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative, ties counting one half (the Mann-Whitney U statistic, computed from mid-ranks).
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<f64, EvalError> {
    check_inputs(scores, labels)?;
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(EvalError::OneClass {
            metric: "ROC AUC",
            positives,
            negatives,
        });
    }
    let ranks = mid_ranks(scores);
    let positive_rank_sum: f64 = ranks
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l)
        .map(|(r, _)| r)
        .sum();
    let u = positive_rank_sum - (positives * (positives + 1)) as f64 / 2.0;
    Ok(u / (positives * negatives) as f64)
}
