//! The refer band's error rate is a per-bundle setting (issue 17): the band and the default
//! threshold fitted at a rate must agree with each other and with a naive split-conformal
//! computation, so that the default threshold is the band's upper edge at every rate.

use rand::{Rng, SeedableRng};
use xray_pneumonia::eval::ThresholdRule;
use xray_pneumonia::pipeline::{fit_on_validation, threshold_rule, CONFORMAL_POINTS};

/// Overlapping validation probabilities: normals mostly low, pneumonias mostly high.
fn validation(seed: u64) -> (Vec<f64>, Vec<bool>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..400)
        .map(|i| {
            let pneumonia = i % 3 != 0;
            let centre = if pneumonia { 0.75 } else { 0.25 };
            let p: f64 = (centre + rng.random_range(-0.3..0.3f64)).clamp(0.0, 1.0);
            (p, pneumonia)
        })
        .unzip()
}

/// The ceil((n + 1)(1 - alpha))-th smallest score, by sorting.
fn naive_quantile(mut scores: Vec<f64>, alpha: f64) -> f64 {
    scores.sort_by(f64::total_cmp);
    let rank = ((scores.len() + 1) as f64 * (1.0 - alpha)).ceil() as usize;
    scores[rank - 1]
}

#[test]
fn band_and_default_threshold_share_the_error_rate() {
    for seed in 0..5 {
        let (p, y) = validation(seed);
        for (name, alpha) in CONFORMAL_POINTS {
            let fit = fit_on_validation(&p, &y, alpha).expect("fit");
            let band = &fit.refer_band;
            assert_eq!(band.alpha, alpha);
            let normals = p.iter().zip(&y).filter(|(_, &t)| !t).map(|(&v, _)| v);
            let pneumonias = p.iter().zip(&y).filter(|(_, &t)| t).map(|(&v, _)| 1.0 - v);
            assert_eq!(band.normal_upper, naive_quantile(normals.collect(), alpha));
            let lower = 1.0 - naive_quantile(pneumonias.collect(), alpha);
            assert!(
                (band.pneumonia_lower - lower).abs() < 1e-12,
                "{name}: {band:?}"
            );
            // The stored point of this rate is the band's upper edge.
            let point = fit
                .operating_points
                .iter()
                .find(|q| q.name == name)
                .expect("conformal point stored");
            assert_eq!(point.rule, ThresholdRule::Conformal { alpha });
            assert_eq!(point.value, band.pneumonia_lower, "{name}");
        }
    }
}

#[test]
fn a_wider_error_rate_narrows_what_each_class_may_claim() {
    let (p, y) = validation(7);
    let bands: Vec<_> = CONFORMAL_POINTS
        .iter()
        .map(|&(_, alpha)| fit_on_validation(&p, &y, alpha).expect("fit").refer_band)
        .collect();
    for pair in bands.windows(2) {
        assert!(pair[1].normal_upper <= pair[0].normal_upper, "{pair:?}");
        assert!(
            pair[1].pneumonia_lower >= pair[0].pneumonia_lower,
            "{pair:?}"
        );
    }
}

#[test]
fn the_default_rule_is_the_conformal_bound_unless_a_sensitivity_is_asked() {
    assert_eq!(
        threshold_rule(None, 0.05),
        ThresholdRule::Conformal { alpha: 0.05 }
    );
    assert_eq!(
        threshold_rule(Some(0.9), 0.05),
        ThresholdRule::TargetSensitivity { target: 0.9 }
    );
}
