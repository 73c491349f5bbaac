//! Metrics and thresholds against independent naive computations.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xray_eval::{choose_threshold, roc_auc, ConfusionMatrix, EvalError, Metrics, ThresholdRule};

/// AUC as the share of (positive, negative) pairs ordered correctly, ties counting one half.
fn pairwise_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let (mut wins, mut pairs) = (0.0, 0.0);
    for (i, &si) in scores.iter().enumerate() {
        for (j, &sj) in scores.iter().enumerate() {
            if labels[i] && !labels[j] {
                pairs += 1.0;
                wins += if si > sj {
                    1.0
                } else if si == sj {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    wins / pairs
}

fn random_case(rng: &mut ChaCha8Rng) -> (Vec<f64>, Vec<bool>) {
    let n = rng.random_range(2..120);
    let mut labels: Vec<bool> = (0..n).map(|_| rng.random_bool(0.6)).collect();
    labels[0] = true;
    labels[1] = false;
    // Coarse scores so that ties happen.
    let scores = labels
        .iter()
        .map(|&l| ((rng.random::<f64>() + if l { 0.3 } else { 0.0 }) * 10.0).round() / 10.0)
        .collect();
    (scores, labels)
}

#[test]
fn auc_matches_pairwise_counting_with_ties() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..200 {
        let (scores, labels) = random_case(&mut rng);
        let fast = roc_auc(&scores, &labels).unwrap();
        assert!((fast - pairwise_auc(&scores, &labels)).abs() < 1e-12);
    }
}

#[test]
fn metrics_on_a_worked_example() {
    // 4 pneumonia (scores .9 .8 .4 .3), 3 normal (.7 .2 .1), threshold .5:
    // tp 2, fn 2, fp 1, tn 2.
    let scores = [0.9, 0.8, 0.4, 0.3, 0.7, 0.2, 0.1];
    let labels = [true, true, true, true, false, false, false];
    let m = Metrics::compute(&scores, &labels, 0.5).unwrap();
    assert_eq!((m.tp, m.fn_, m.fp, m.tn, m.n), (2, 2, 1, 2, 7));
    assert!((m.accuracy - 4.0 / 7.0).abs() < 1e-12);
    assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
    assert!((m.recall - 0.5).abs() < 1e-12);
    assert!((m.specificity - 2.0 / 3.0).abs() < 1e-12);
    assert!((m.f1 - 2.0 * (2.0 / 3.0) * 0.5 / (2.0 / 3.0 + 0.5)).abs() < 1e-12);
    // Positives beat negatives in 3 + 3 + 2 + 2 = 10 of 12 pairs.
    assert!((m.auc - 10.0 / 12.0).abs() < 1e-12);
    let json = serde_json::to_value(m).unwrap();
    for key in [
        "n",
        "tp",
        "fp",
        "tn",
        "fn",
        "accuracy",
        "precision",
        "recall",
        "specificity",
        "f1",
        "auc",
        "threshold",
    ] {
        assert!(json.get(key).is_some(), "metrics.json key {key}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    assert!(matches!(
        roc_auc(&[0.1, 0.2], &[true]),
        Err(EvalError::LengthMismatch { .. })
    ));
    assert!(matches!(
        roc_auc(&[0.1, f64::NAN], &[true, false]),
        Err(EvalError::NonFiniteScore { index: 1, .. })
    ));
    assert!(matches!(
        roc_auc(&[0.1, 0.2], &[true, true]),
        Err(EvalError::OneClass { .. })
    ));
    assert!(choose_threshold(
        &[0.1, 0.9],
        &[false, true],
        ThresholdRule::TargetSensitivity { target: 1.5 }
    )
    .is_err());
}

#[test]
fn youden_threshold_maximises_j_over_every_cut() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _ in 0..100 {
        let (scores, labels) = random_case(&mut rng);
        let t = choose_threshold(&scores, &labels, ThresholdRule::Youden).unwrap();
        let j = |t: f64| {
            let m = ConfusionMatrix::at_threshold(&scores, &labels, t).unwrap();
            m.recall() + m.specificity() - 1.0
        };
        let best = scores
            .iter()
            .map(|&s| j(s))
            .fold(f64::NEG_INFINITY, f64::max);
        assert!((j(t) - best).abs() < 1e-12);
    }
}

#[test]
fn target_sensitivity_is_met_by_the_highest_such_threshold() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..100 {
        let (scores, labels) = random_case(&mut rng);
        let target = 0.9;
        let t = choose_threshold(
            &scores,
            &labels,
            ThresholdRule::TargetSensitivity { target },
        )
        .unwrap();
        let recall = |t: f64| {
            ConfusionMatrix::at_threshold(&scores, &labels, t)
                .unwrap()
                .recall()
        };
        assert!(recall(t) >= target);
        assert!(scores
            .iter()
            .filter(|&&s| s > t)
            .all(|&s| recall(s) < target));
    }
}
