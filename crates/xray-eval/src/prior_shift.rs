//! Adapting the operating point to a new site's share of pneumonia, estimated from its
//! unlabeled films (Saerens, Latinne and Decaestecker 2002, "Adjusting the outputs of a
//! classifier to new a priori probabilities").

use serde::{Deserialize, Serialize};

use crate::calibration::{logit, sigmoid};
use crate::error::EvalError;

/// Largest number of EM steps [`PriorShift::estimate`] takes.
pub const MAX_EM_STEPS: usize = 10_000;

/// A new site's pneumonia prevalence, estimated by EM from calibrated probabilities, and the
/// log-odds shift it implies.
///
/// The posteriors are re-weighted by the ratio of the new to the old prior of each class, the
/// prior is re-estimated as the mean adjusted posterior, and so on until it settles. Only label
/// shift is modelled: films that look different (not only more or fewer pneumonias) break the
/// assumption, so the adapted result is reported apart from the unadapted one.
///
/// ```
/// use xray_eval::PriorShift;
/// let calibrated = [0.9, 0.8, 0.2, 0.1, 0.15, 0.05];
/// let shift = PriorShift::estimate(&calibrated, 0.5)?;
/// assert!(shift.estimated_prior < 0.5);
/// assert!(shift.adapted_threshold(0.5, 1.0) > 0.5);
/// # Ok::<(), xray_eval::EvalError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriorShift {
    /// The prevalence the probabilities were calibrated under (the validation films').
    pub training_prior: f64,
    /// The prevalence EM estimates for the new films.
    pub estimated_prior: f64,
    /// EM steps taken.
    pub steps: usize,
    /// Films the estimate is based on.
    pub films: usize,
}

impl PriorShift {
    /// Estimates the prevalence of the films whose calibrated pneumonia probabilities are
    /// `calibrated`, given the prevalence `training_prior` in `(0, 1)` they were calibrated
    /// under. Stops when the estimate moves by less than 1e-9, or after [`MAX_EM_STEPS`].
    pub fn estimate(calibrated: &[f64], training_prior: f64) -> Result<PriorShift, EvalError> {
        if !(training_prior > 0.0 && training_prior < 1.0) {
            return Err(EvalError::InvalidParameter {
                name: "training prior",
                value: training_prior,
                reason: "must be in (0, 1)",
            });
        }
        if calibrated.is_empty() {
            return Err(EvalError::LengthMismatch {
                scores: 0,
                labels: 0,
            });
        }
        if let Some((index, &value)) = calibrated
            .iter()
            .enumerate()
            .find(|(_, p)| !(p.is_finite() && (0.0..=1.0).contains(*p)))
        {
            return Err(EvalError::NonFiniteScore { index, value });
        }
        let mut prior = training_prior;
        let mut steps = 0;
        while steps < MAX_EM_STEPS {
            steps += 1;
            let shift = log_odds_shift(prior, training_prior);
            let next =
                calibrated.iter().map(|&p| adjust(p, shift)).sum::<f64>() / calibrated.len() as f64;
            // Keep it inside (0, 1), where the log odds stay finite.
            let next = next.clamp(1e-6, 1.0 - 1e-6);
            let moved = (next - prior).abs();
            prior = next;
            if moved < 1e-9 {
                break;
            }
        }
        Ok(PriorShift {
            training_prior,
            estimated_prior: prior,
            steps,
            films: calibrated.len(),
        })
    }

    /// How much the log odds of pneumonia change from the training to the new prior.
    pub fn log_odds_shift(&self) -> f64 {
        log_odds_shift(self.estimated_prior, self.training_prior)
    }

    /// The uncalibrated threshold that makes the same decision at the new prior as `threshold`
    /// made at the training prior, for a bundle whose calibration divides logits by
    /// `temperature` (1 without calibration): the calibrated log odds move by
    /// [`Self::log_odds_shift`], so the raw threshold's logit moves by `-temperature` times it.
    pub fn adapted_threshold(&self, threshold: f64, temperature: f64) -> f64 {
        sigmoid(logit(threshold) - temperature * self.log_odds_shift())
    }
}

fn log_odds_shift(new_prior: f64, old_prior: f64) -> f64 {
    (new_prior / (1.0 - new_prior)).ln() - (old_prior / (1.0 - old_prior)).ln()
}

/// A posterior moved by `shift` in log odds.
fn adjust(p: f64, shift: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    sigmoid(logit(p) + shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Films whose score is Gaussian (mean +1 for pneumonia, -1 for normal, sd 1), with the
    /// exact posterior under `calibrated_under`: the ideal calibrated classifier.
    fn site(n: usize, prevalence: f64, calibrated_under: f64, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let pneumonia = rng.random_bool(prevalence);
                // Box-Muller.
                let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
                let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
                let x = z + if pneumonia { 1.0 } else { -1.0 };
                // Likelihood ratio of N(1, 1) to N(-1, 1) at x is e^(2x).
                let prior_odds = calibrated_under / (1.0 - calibrated_under);
                sigmoid(2.0 * x + prior_odds.ln())
            })
            .collect()
    }

    #[test]
    fn recovers_a_new_sites_prevalence() {
        for (truth, seed) in [(0.625, 1), (0.3, 2), (0.9, 3)] {
            let films = site(20_000, truth, 0.743, seed);
            let shift = PriorShift::estimate(&films, 0.743).unwrap();
            assert!(
                (shift.estimated_prior - truth).abs() < 0.02,
                "{truth}: {}",
                shift.estimated_prior
            );
            assert!(shift.steps < MAX_EM_STEPS);
        }
    }

    #[test]
    fn no_shift_leaves_the_threshold_alone() {
        let films = site(20_000, 0.5, 0.5, 4);
        let shift = PriorShift::estimate(&films, 0.5).unwrap();
        assert!((shift.estimated_prior - 0.5).abs() < 0.02);
        assert!((shift.adapted_threshold(0.7, 1.2) - 0.7).abs() < 0.03);
    }

    #[test]
    fn the_adapted_threshold_makes_the_bayes_decision_at_the_new_prior() {
        let shift = PriorShift {
            training_prior: 0.75,
            estimated_prior: 0.5,
            steps: 1,
            films: 1,
        };
        // Odds fall by a factor of 3: a raw probability p (temperature 2) is called at the new
        // prior where sigmoid(logit(p) / 2 - ln 3) >= sigmoid(logit(t) / 2 - ln 3), i.e. at
        // logit(p) >= logit(t) + 2 ln 3.
        let t = shift.adapted_threshold(0.5, 2.0);
        assert!((logit(t) - 2.0 * 3f64.ln()).abs() < 1e-9, "{t}");
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(PriorShift::estimate(&[0.5], 1.0).is_err());
        assert!(PriorShift::estimate(&[], 0.5).is_err());
        assert!(PriorShift::estimate(&[0.5, f64::NAN], 0.5).is_err());
        assert!(PriorShift::estimate(&[0.5, 1.5], 0.5).is_err());
    }
}
