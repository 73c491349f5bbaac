use crate::error::{check_inputs, EvalError};

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
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut positive_rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && scores[order[end + 1]] == scores[order[start]] {
            end += 1;
        }
        // Tied scores share the mean of ranks start+1 ..= end+1.
        let mid_rank = (start + end) as f64 / 2.0 + 1.0;
        positive_rank_sum +=
            mid_rank * order[start..=end].iter().filter(|&&i| labels[i]).count() as f64;
        start = end + 1;
    }
    let u = positive_rank_sum - (positives * (positives + 1)) as f64 / 2.0;
    Ok(u / (positives * negatives) as f64)
}
