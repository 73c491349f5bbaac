use std::path::PathBuf;

/// Errors from computing metrics, thresholds or saliency maps.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Scores and labels of different lengths, or none at all.
    #[error("{scores} scores for {labels} labels: need the same, non-zero number")]
    LengthMismatch {
        /// Number of scores.
        scores: usize,
        /// Number of labels.
        labels: usize,
    },
    /// A score that is NaN or infinite.
    #[error("score {index} is not finite ({value})")]
    NonFiniteScore {
        /// Position of the offending score.
        index: usize,
        /// The value given.
        value: f64,
    },
    /// A metric needs both classes present.
    #[error(
        "{metric} needs both classes, got {positives} positive(s) and {negatives} negative(s)"
    )]
    OneClass {
        /// The metric that was asked for.
        metric: &'static str,
        /// Number of positive (pneumonia) labels.
        positives: usize,
        /// Number of negative (normal) labels.
        negatives: usize,
    },
    /// A rule parameter out of range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Feature rows whose length does not match the fitted dimension.
    #[error("feature rows of width {expected} expected, got {got} values")]
    FeatureWidth {
        /// The fitted (or declared) feature dimension.
        expected: usize,
        /// The number of values given.
        got: usize,
    },
    /// A statistic that the data do not define.
    #[error("undefined: {what}")]
    Undefined {
        /// What could not be computed.
        what: &'static str,
    },
    /// Drawing a plot failed (e.g. no TrueType font for its text).
    #[error("cannot draw the {plot} plot: {reason}")]
    Plot {
        /// Which plot.
        plot: String,
        /// What went wrong.
        reason: String,
    },
    /// Writing an image failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file or folder at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
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
