use std::path::PathBuf;

/// Errors from computing metrics, thresholds or saliency maps.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Scores and labels of different lengths, or none at all.
    #[error("{scores} scores for {labels} labels: need the same, non-zero number")]
    LengthMismatch { scores: usize, labels: usize },
    /// A score that is NaN or infinite.
    #[error("score {index} is not finite ({value})")]
    NonFiniteScore { index: usize, value: f64 },
    /// A metric needs both classes present.
    #[error(
        "{metric} needs both classes, got {positives} positive(s) and {negatives} negative(s)"
    )]
    OneClass {
        metric: &'static str,
        positives: usize,
        negatives: usize,
    },
    /// A rule parameter out of range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },
    /// Writing an image failed.
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    /// A tensor operation failed (e.g. the model's forward or backward pass).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub(crate) fn check_inputs(scores: &[f64], labels: &[bool]) -> Result<(), EvalError> {
    if scores.len() != labels.len() || scores.is_empty() {
        return Err(EvalError::LengthMismatch {
            scores: scores.len(),
            labels: labels.len(),
        });
    }
    if let Some((index, &value)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(EvalError::NonFiniteScore { index, value });
    }
    Ok(())
}
