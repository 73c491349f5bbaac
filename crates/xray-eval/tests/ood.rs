//! `FeatureDistance` against a direct computation: per-feature mean and population standard
//! deviation (floored at 5% of their median), the mean squared z-score, and the threshold at
//! the requested quantile of validation scores.

use rand::{Rng, SeedableRng};
use xray_eval::FeatureDistance;

fn naive_score(rows: &[Vec<f64>], x: &[f64]) -> f64 {
    let n = rows.len() as f64;
    let dim = x.len();
    let mean: Vec<f64> = (0..dim)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let std: Vec<f64> = (0..dim)
        .map(|j| (rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n).sqrt())
        .collect();
    let mut sorted = std.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if dim % 2 == 1 {
        sorted[dim / 2]
    } else {
        (sorted[dim / 2 - 1] + sorted[dim / 2]) / 2.0
    };
    let floor = 0.05 * median;
    (0..dim)
        .map(|j| ((x[j] - mean[j]) / std[j].max(floor)).powi(2))
        .sum::<f64>()
        / dim as f64
}

#[test]
fn scores_match_a_direct_computation_on_random_features() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for _ in 0..20 {
        let dim = rng.random_range(1..12);
        let n = rng.random_range(2..40);
        let mut rows: Vec<Vec<f64>> = (0..n)
            .map(|_| (0..dim).map(|_| rng.random_range(-3.0..3.0)).collect())
            .collect();
        // A constant feature, as a channel that never fires: the floor keeps scores finite.
        if dim > 2 {
            for r in &mut rows {
                r[0] = 0.5;
            }
        }
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        let rows: Vec<Vec<f64>> = flat
            .chunks(dim)
            .map(|r| r.iter().map(|&v| f64::from(v)).collect())
            .collect();
        let distance = FeatureDistance::fit(&flat, dim).expect("fit");
        for _ in 0..5 {
            let x: Vec<f32> = (0..dim).map(|_| rng.random_range(-5.0..5.0)).collect();
            let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            let got = distance.score(&x).expect("score");
            let want = naive_score(&rows, &x64);
            assert!(
                (got - want).abs() <= 1e-4 * want.max(1.0),
                "dim {dim}, n {n}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn threshold_is_the_validation_quantile_and_flags_above_it() {
    let distance = FeatureDistance::fit(&[0.0, 1.0, 2.0, 3.0], 1).expect("fit");
    let validation: Vec<f64> = (0..=100).map(f64::from).collect();
    let d = distance
        .with_threshold(&validation, 0.99)
        .expect("threshold");
    assert!((d.threshold - 99.0).abs() < 1e-12);
    assert!(!d.is_outlier(99.0));
    assert!(d.is_outlier(99.5));
    assert!(d.is_outlier(f64::NAN));
}

#[test]
fn bad_shapes_and_values_are_errors() {
    assert!(FeatureDistance::fit(&[1.0, 2.0, 3.0], 2).is_err());
    assert!(
        FeatureDistance::fit(&[1.0, 2.0], 2).is_err(),
        "one row has no spread"
    );
    assert!(FeatureDistance::fit(&[1.0, f32::NAN, 3.0, 4.0], 2).is_err());
    let d = FeatureDistance::fit(&[1.0, 2.0, 3.0, 4.0], 2).expect("fit");
    assert!(d.score(&[1.0]).is_err());
    assert!(d.clone().with_threshold(&[], 0.9).is_err());
    assert!(d.with_threshold(&[1.0], 1.5).is_err());
}
