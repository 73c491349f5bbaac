//! Refusing to judge: class-conditional split conformal prediction, and what refusing costs
//! (coverage, accuracy on what is kept, the risk-coverage curve).

use serde::{Deserialize, Serialize};

use crate::bootstrap::{bootstrap_by_group, BootstrapConfig, Interval};
use crate::error::{check_inputs, EvalError};

/// Class-conditional (Mondrian) split conformal bounds on a pneumonia probability, fitted on
/// calibration films (a bundle's validation patients).
///
/// For a new film exchangeable with the calibration films of its class, the prediction set
/// `{c : the film conforms to class c}` holds the true class with probability at least
/// `1 - alpha`, separately for normal and for pneumonia films (Vovk et al. 2005; Angelopoulos &
/// Bates 2021). Normal stays in the set while `p <= normal_upper`, pneumonia while
/// `p >= pneumonia_lower`. A set of one class is a call; a set of both or of neither is a refer.
///
/// ```
/// use xray_eval::{ConformalBounds, PredictionSet};
/// let p = [0.02, 0.05, 0.1, 0.3, 0.7, 0.9, 0.95, 0.99];
/// let y = [false, false, false, false, true, true, true, true];
/// let bounds = ConformalBounds::fit(&p, &y, 0.2)?;
/// assert_eq!(bounds.prediction_set(0.01), PredictionSet::Normal);
/// assert_eq!(bounds.prediction_set(0.999), PredictionSet::Pneumonia);
/// # Ok::<(), xray_eval::EvalError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConformalBounds {
    /// The error rate per class the sets are built for.
    pub alpha: f64,
    /// Normal is in the set while the probability is at most this.
    pub normal_upper: f64,
    /// Pneumonia is in the set while the probability is at least this.
    pub pneumonia_lower: f64,
    /// Normal calibration films.
    pub normals: usize,
    /// Pneumonia calibration films.
    pub pneumonias: usize,
}

/// A conformal prediction set over the two classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PredictionSet {
    /// Only normal conforms.
    Normal,
    /// Only pneumonia conforms.
    Pneumonia,
    /// Both conform: the model cannot tell them apart here.
    Both,
    /// Neither conforms: the probability is unlike either class's calibration films.
    Neither,
}

impl PredictionSet {
    /// Whether the set names exactly one class (a call rather than a refer).
    pub fn is_call(self) -> bool {
        matches!(self, PredictionSet::Normal | PredictionSet::Pneumonia)
    }
}

/// The conformal quantile: the `ceil((n + 1)(1 - alpha))`-th smallest score, or infinity when
/// that rank exceeds `n` (too few films to promise `1 - alpha`).
fn conformal_quantile(mut scores: Vec<f64>, alpha: f64) -> f64 {
    scores.sort_by(f64::total_cmp);
    let n = scores.len();
    let rank = ((n as f64 + 1.0) * (1.0 - alpha)).ceil() as usize;
    if rank == 0 {
        f64::NEG_INFINITY
    } else if rank > n {
        f64::INFINITY
    } else {
        scores[rank - 1]
    }
}

impl ConformalBounds {
    /// Fits the bounds at error rate `alpha` in `(0, 1)` on calibration probabilities and
    /// labels (`true` = pneumonia). Nonconformity is `p` for normal films and `1 - p` for
    /// pneumonia films. With fewer than `1 / alpha - 1` films of a class, that class always
    /// stays in the set (its bound is 1 or 0): the guarantee cannot be met otherwise.
    pub fn fit(probabilities: &[f64], labels: &[bool], alpha: f64) -> Result<Self, EvalError> {
        check_inputs(probabilities, labels)?;
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(EvalError::InvalidParameter {
                name: "conformal error rate alpha",
                value: alpha,
                reason: "must be in (0, 1)",
            });
        }
        let normal: Vec<f64> = class_scores(probabilities, labels, false, |p| p);
        let pneumonia: Vec<f64> = class_scores(probabilities, labels, true, |p| 1.0 - p);
        if normal.is_empty() || pneumonia.is_empty() {
            return Err(EvalError::OneClass {
                metric: "conformal bounds",
                positives: pneumonia.len(),
                negatives: normal.len(),
            });
        }
        let (normals, pneumonias) = (normal.len(), pneumonia.len());
        let normal_upper = conformal_quantile(normal, alpha).clamp(0.0, 1.0);
        let pneumonia_lower = (1.0 - conformal_quantile(pneumonia, alpha)).clamp(0.0, 1.0);
        Ok(ConformalBounds {
            alpha,
            normal_upper,
            pneumonia_lower,
            normals,
            pneumonias,
        })
    }

    /// The prediction set of a film with pneumonia probability `probability`.
    pub fn prediction_set(&self, probability: f64) -> PredictionSet {
        prediction_set(self.normal_upper, self.pneumonia_lower, probability)
    }
}

/// The set for bounds `normal_upper` and `pneumonia_lower` (a non-finite probability conforms
/// to neither class).
pub fn prediction_set(normal_upper: f64, pneumonia_lower: f64, probability: f64) -> PredictionSet {
    match (probability <= normal_upper, probability >= pneumonia_lower) {
        (true, false) => PredictionSet::Normal,
        (false, true) => PredictionSet::Pneumonia,
        (true, true) => PredictionSet::Both,
        (false, false) => PredictionSet::Neither,
    }
}

fn class_scores(
    probabilities: &[f64],
    labels: &[bool],
    class: bool,
    score: impl Fn(f64) -> f64,
) -> Vec<f64> {
    probabilities
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l == class)
        .map(|(&p, _)| score(p))
        .collect()
}

/// What referring costs and buys on a labelled set: the share of films called (coverage) and,
/// among them, accuracy, recall and specificity at a threshold, each with a patient-bootstrap
/// interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectiveMetrics {
    /// Films in the set.
    pub films: usize,
    /// Films called (not referred).
    pub called: usize,
    /// Share of films called.
    pub coverage: Interval,
    /// Accuracy on the films called.
    pub accuracy: Interval,
    /// Recall on the pneumonia films called.
    pub recall: Interval,
    /// Specificity on the normal films called.
    pub specificity: Interval,
}

impl SelectiveMetrics {
    /// Computes the metrics of calling `probability >= threshold` on the films not
    /// `referred`, bootstrapping over `groups` (patients).
    pub fn compute(
        probabilities: &[f64],
        labels: &[bool],
        referred: &[bool],
        threshold: f64,
        groups: &[usize],
        config: &BootstrapConfig,
    ) -> Result<Self, EvalError> {
        check_inputs(probabilities, labels)?;
        for other in [referred.len(), groups.len()] {
            if other != labels.len() {
                return Err(EvalError::LengthMismatch {
                    scores: other,
                    labels: labels.len(),
                });
            }
        }
        let statistic = |indices: &[usize]| -> Option<Vec<f64>> {
            let (mut kept, mut right, mut tp, mut pos, mut tn, mut neg) = (0, 0, 0, 0, 0, 0);
            for &i in indices.iter().filter(|&&i| !referred[i]) {
                let called = probabilities[i] >= threshold;
                kept += 1;
                right += usize::from(called == labels[i]);
                if labels[i] {
                    pos += 1;
                    tp += usize::from(called);
                } else {
                    neg += 1;
                    tn += usize::from(!called);
                }
            }
            if kept == 0 || pos == 0 || neg == 0 {
                return None;
            }
            let share = |a: usize, b: usize| a as f64 / b as f64;
            Some(vec![
                share(kept, indices.len()),
                share(right, kept),
                share(tp, pos),
                share(tn, neg),
            ])
        };
        let result = bootstrap_by_group(groups, config, statistic)?;
        let i = &result.intervals;
        Ok(SelectiveMetrics {
            films: labels.len(),
            called: referred.iter().filter(|&&r| !r).count(),
            coverage: i[0],
            accuracy: i[1],
            recall: i[2],
            specificity: i[3],
        })
    }
}

/// The risk-coverage curve: films ordered from most to least confident (distance of the
/// probability from the threshold on the logit scale), and for each share of them kept, the
/// error rate among those kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskCoverage {
    /// Share of films kept, increasing to 1.
    pub coverage: Vec<f64>,
    /// Error rate among the films kept at each coverage.
    pub risk: Vec<f64>,
}

impl RiskCoverage {
    /// The curve for calls `probability >= threshold`.
    pub fn compute(
        probabilities: &[f64],
        labels: &[bool],
        threshold: f64,
    ) -> Result<Self, EvalError> {
        check_inputs(probabilities, labels)?;
        let logit = |p: f64| {
            let p = p.clamp(1e-12, 1.0 - 1e-12);
            (p / (1.0 - p)).ln()
        };
        let cut = logit(threshold.clamp(0.0, 1.0));
        let mut order: Vec<usize> = (0..labels.len()).collect();
        let confidence = |i: usize| (logit(probabilities[i]) - cut).abs();
        order.sort_by(|&a, &b| confidence(b).total_cmp(&confidence(a)));
        let n = labels.len() as f64;
        let (mut coverage, mut risk) = (Vec::new(), Vec::new());
        let mut errors = 0usize;
        for (k, &i) in order.iter().enumerate() {
            errors += usize::from((probabilities[i] >= threshold) != labels[i]);
            coverage.push((k + 1) as f64 / n);
            risk.push(errors as f64 / (k + 1) as f64);
        }
        Ok(RiskCoverage { coverage, risk })
    }

    /// The area under the curve (mean risk over coverage): lower is better.
    pub fn area(&self) -> f64 {
        self.risk.iter().sum::<f64>() / self.risk.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Scores of a noisy classifier: pneumonia films drawn higher than normal ones.
    fn draw(rng: &mut ChaCha8Rng, n: usize) -> (Vec<f64>, Vec<bool>) {
        let labels: Vec<bool> = (0..n).map(|_| rng.random_bool(0.6)).collect();
        let p = labels
            .iter()
            .map(|&l| {
                let z: f64 = rng.random_range(-2.0..2.0) + if l { 1.5 } else { -1.5 };
                1.0 / (1.0 + (-z).exp())
            })
            .collect();
        (p, labels)
    }

    #[test]
    fn each_class_is_covered_at_the_promised_rate_on_new_films() {
        // The guarantee is marginal over calibration draws: average over many of them.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let alpha = 0.1;
        let (mut covered, mut total) = ([0usize; 2], [0usize; 2]);
        for _ in 0..200 {
            let (p, y) = draw(&mut rng, 200);
            let bounds = ConformalBounds::fit(&p, &y, alpha).unwrap();
            let (q, z) = draw(&mut rng, 200);
            for (&pi, &yi) in q.iter().zip(&z) {
                let set = bounds.prediction_set(pi);
                let holds = match set {
                    PredictionSet::Both => true,
                    PredictionSet::Neither => false,
                    PredictionSet::Pneumonia => yi,
                    PredictionSet::Normal => !yi,
                };
                covered[usize::from(yi)] += usize::from(holds);
                total[usize::from(yi)] += 1;
            }
        }
        for class in 0..2 {
            let rate = covered[class] as f64 / total[class] as f64;
            // At least 1 - alpha, and not far above it (the bound is tight for continuous scores).
            assert!(rate >= 1.0 - alpha - 0.005, "class {class}: {rate}");
            assert!(rate <= 1.0 - alpha + 0.03, "class {class}: {rate}");
        }
    }

    #[test]
    fn bounds_are_the_order_statistics_the_formula_names() {
        // 9 normals: rank ceil(10 * 0.8) = 8 of p; 4 pneumonias: rank ceil(5 * 0.8) = 4 of 1 - p.
        let normals = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09];
        let pneumonias = [0.9, 0.8, 0.7, 0.6];
        let p: Vec<f64> = normals.iter().chain(&pneumonias).copied().collect();
        let y: Vec<bool> = (0..p.len()).map(|i| i >= normals.len()).collect();
        let b = ConformalBounds::fit(&p, &y, 0.2).unwrap();
        assert_eq!(b.normal_upper, 0.08);
        assert!((b.pneumonia_lower - 0.6).abs() < 1e-12);
        assert_eq!(b.prediction_set(0.5), PredictionSet::Neither);
        assert_eq!(b.prediction_set(0.08), PredictionSet::Normal);
        assert_eq!(b.prediction_set(0.6), PredictionSet::Pneumonia);
        // Too few films for alpha 0.1 among 4 pneumonias: pneumonia always stays in the set.
        let b = ConformalBounds::fit(&p, &y, 0.1).unwrap();
        assert_eq!(b.pneumonia_lower, 0.0);
        assert_eq!(b.prediction_set(0.01), PredictionSet::Both);
        assert!(ConformalBounds::fit(&p, &y, 0.0).is_err());
        assert!(ConformalBounds::fit(&p, &vec![true; p.len()], 0.1).is_err());
    }

    #[test]
    fn selective_metrics_match_a_direct_count() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (p, y) = draw(&mut rng, 300);
        let referred: Vec<bool> = p.iter().map(|&q| (0.3..0.7).contains(&q)).collect();
        let groups: Vec<usize> = (0..p.len()).collect();
        let config = BootstrapConfig {
            resamples: 50,
            ..BootstrapConfig::default()
        };
        let m = SelectiveMetrics::compute(&p, &y, &referred, 0.5, &groups, &config).unwrap();
        let kept: Vec<usize> = (0..p.len()).filter(|&i| !referred[i]).collect();
        let right = kept.iter().filter(|&&i| (p[i] >= 0.5) == y[i]).count();
        assert_eq!(m.called, kept.len());
        assert_eq!(m.coverage.estimate, kept.len() as f64 / 300.0);
        assert_eq!(m.accuracy.estimate, right as f64 / kept.len() as f64);
        assert!(m.accuracy.lower <= m.accuracy.estimate && m.accuracy.estimate <= m.accuracy.upper);
    }

    #[test]
    fn risk_falls_as_the_least_confident_films_are_dropped() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (p, y) = draw(&mut rng, 1000);
        let curve = RiskCoverage::compute(&p, &y, 0.5).unwrap();
        let full = *curve.risk.last().unwrap();
        let errors = p.iter().zip(&y).filter(|(&q, &l)| (q >= 0.5) != l).count();
        assert_eq!(full, errors as f64 / 1000.0);
        assert_eq!(*curve.coverage.last().unwrap(), 1.0);
        // Keeping the most confident half halves the risk at least, for this classifier.
        assert!(
            curve.risk[499] < full / 2.0,
            "{} vs {full}",
            curve.risk[499]
        );
        assert!(curve.area() < full);
    }
}
