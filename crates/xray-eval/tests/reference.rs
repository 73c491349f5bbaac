//! Every metric, curve point, interval point estimate, calibration error and paired test against
//! scikit-learn / SciPy / statsmodels / a direct DeLong, computed by `tools/make_eval_fixture.py`
//! (source and versions recorded in the fixture), to 1e-6.

use serde_json::Value;
use xray_eval::*;

const TOLERANCE: f64 = 1e-6;

struct Fixture {
    json: Value,
    labels: Vec<bool>,
    groups: Vec<usize>,
    scores_a: Vec<f64>,
    scores_b: Vec<f64>,
    logits: Vec<f64>,
}

fn fixture() -> Fixture {
    let text = include_str!("fixtures/eval_reference.json");
    let json: Value = serde_json::from_str(text).expect("fixture parses");
    let floats = |key: &str| -> Vec<f64> {
        json[key]
            .as_array()
            .unwrap_or_else(|| panic!("fixture lacks {key}"))
            .iter()
            .map(|v| v.as_f64().expect("number"))
            .collect()
    };
    Fixture {
        labels: json["labels"]
            .as_array()
            .expect("labels")
            .iter()
            .map(|v| v.as_bool().expect("bool"))
            .collect(),
        groups: json["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .map(|v| v.as_u64().expect("group") as usize)
            .collect(),
        scores_a: floats("scores_a"),
        scores_b: floats("scores_b"),
        logits: floats("logits"),
        json,
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(what: &str, ours: f64, reference: f64) {
    assert!(
        (ours - reference).abs() <= TOLERANCE * reference.abs().max(1.0),
        "{what}: ours {ours}, reference {reference}"
    );
}

#[test]
fn confusion_metrics_match_sklearn() {
    let f = fixture();
    for case in f.json["at_threshold"].as_array().expect("cases") {
        let t = num(&case["threshold"]);
        let m = Metrics::compute(&f.scores_a, &f.labels, t).expect("metrics");
        for (name, ours) in [
            ("accuracy", m.accuracy),
            ("precision", m.precision),
            ("recall", m.recall),
            ("specificity", m.specificity),
            ("f1", m.f1),
        ] {
            close(&format!("{name} at {t}"), ours, num(&case[name]));
        }
    }
    close(
        "roc_auc",
        roc_auc(&f.scores_a, &f.labels).expect("auc"),
        num(&f.json["roc_auc"]),
    );
    close(
        "average precision",
        average_precision(&f.scores_a, &f.labels).expect("ap"),
        num(&f.json["average_precision"]),
    );
    close(
        "brier",
        brier_score(&f.scores_a, &f.labels).expect("brier"),
        num(&f.json["brier"]),
    );
}

#[test]
fn curves_match_sklearn_point_by_point() {
    let f = fixture();
    let roc = RocCurve::compute(&f.scores_a, &f.labels).expect("roc");
    let reference = &f.json["roc_curve"];
    let fpr = reference["fpr"].as_array().expect("fpr");
    assert_eq!(roc.fpr.len(), fpr.len(), "ROC points");
    assert!(roc.thresholds[0].is_infinite());
    for k in 0..fpr.len() {
        close("roc fpr", roc.fpr[k], num(&fpr[k]));
        close("roc tpr", roc.tpr[k], num(&reference["tpr"][k]));
        if k > 0 {
            close(
                "roc threshold",
                roc.thresholds[k],
                num(&reference["thresholds"][k - 1]),
            );
        }
    }
    // scikit-learn lists PR points by ascending threshold and stops at full recall; match each
    // of its points to ours by threshold.
    let pr = PrCurve::compute(&f.scores_a, &f.labels).expect("pr");
    let reference = &f.json["pr_curve"];
    let thresholds = reference["thresholds"].as_array().expect("thresholds");
    assert!(thresholds.len() > 100);
    for (k, t) in thresholds.iter().enumerate() {
        let t = num(t);
        let ours = pr
            .thresholds
            .iter()
            .position(|&x| x == t)
            .unwrap_or_else(|| panic!("no PR point at threshold {t}"));
        close(
            "pr precision",
            pr.precision[ours],
            num(&reference["precision"][k]),
        );
        close("pr recall", pr.recall[ours], num(&reference["recall"][k]));
    }
}

#[test]
fn operating_points_and_threshold_rules_match_reference() {
    let f = fixture();
    for case in f.json["sensitivity_at_specificity"]
        .as_array()
        .expect("cases")
    {
        let p = sensitivity_at_specificity(&f.scores_a, &f.labels, num(&case["target"]))
            .expect("point");
        close("sens@spec threshold", p.threshold, num(&case["threshold"]));
        close(
            "sens@spec sensitivity",
            p.sensitivity,
            num(&case["sensitivity"]),
        );
        close(
            "sens@spec specificity",
            p.specificity,
            num(&case["specificity"]),
        );
    }
    for case in f.json["specificity_at_sensitivity"]
        .as_array()
        .expect("cases")
    {
        let p = specificity_at_sensitivity(&f.scores_a, &f.labels, num(&case["target"]))
            .expect("point");
        close("spec@sens threshold", p.threshold, num(&case["threshold"]));
        close(
            "spec@sens sensitivity",
            p.sensitivity,
            num(&case["sensitivity"]),
        );
        close(
            "spec@sens specificity",
            p.specificity,
            num(&case["specificity"]),
        );
    }
    let youden = choose_threshold(&f.scores_a, &f.labels, ThresholdRule::Youden).expect("youden");
    close("youden threshold", youden, num(&f.json["youden_threshold"]));
    let case = &f.json["target_specificity_threshold"];
    let rule = ThresholdRule::TargetSpecificity {
        target: num(&case["target"]),
    };
    let t = choose_threshold(&f.scores_a, &f.labels, rule).expect("target specificity");
    close("target specificity threshold", t, num(&case["threshold"]));
}

#[test]
fn calibration_matches_reference() {
    let f = fixture();
    let bins = f.json["bins"].as_u64().expect("bins") as usize;
    let reliability =
        reliability_bins(&f.scores_a, &f.labels, bins, Binning::EqualWidth).expect("bins");
    let reference = &f.json["reliability_equal_width"];
    assert_eq!(
        reliability.len(),
        reference["counts"].as_array().expect("c").len()
    );
    for (k, b) in reliability.iter().enumerate() {
        assert_eq!(
            b.count as u64,
            reference["counts"][k].as_u64().expect("count")
        );
        close(
            "bin observed rate",
            b.observed_rate,
            num(&reference["observed"][k]),
        );
        close(
            "bin mean probability",
            b.mean_probability,
            num(&reference["mean"][k]),
        );
    }
    for (binning, key) in [
        (Binning::EqualWidth, "ece_equal_width"),
        (Binning::EqualMass, "ece_equal_mass"),
    ] {
        let ece = expected_calibration_error(&f.scores_a, &f.labels, bins, binning).expect("ece");
        close(key, ece, num(&f.json[key]));
    }
    let t = fit_temperature(&f.logits, &f.labels).expect("temperature");
    close("temperature", t, num(&f.json["temperature"]));
}

#[test]
fn paired_tests_match_reference() {
    let f = fixture();
    let d = delong_test(&f.scores_a, &f.scores_b, &f.labels).expect("delong");
    let r = &f.json["delong"];
    close("delong auc a", d.auc_a, num(&r["auc_a"]));
    close("delong auc b", d.auc_b, num(&r["auc_b"]));
    close("delong variance a", d.variance_a, num(&r["variance_a"]));
    close("delong variance b", d.variance_b, num(&r["variance_b"]));
    close("delong covariance", d.covariance, num(&r["covariance"]));
    close("delong z", d.z, num(&r["z"]));
    close("delong p", d.p_value, num(&r["p_value"]));

    let correct = |s: &[f64]| -> Vec<bool> {
        s.iter()
            .zip(&f.labels)
            .map(|(&p, &l)| (p >= 0.5) == l)
            .collect()
    };
    let m = mcnemar_test(&correct(&f.scores_a), &correct(&f.scores_b)).expect("mcnemar");
    let r = &f.json["mcnemar"];
    assert_eq!(
        m.only_a_correct as u64,
        r["only_a_correct"].as_u64().expect("b")
    );
    assert_eq!(
        m.only_b_correct as u64,
        r["only_b_correct"].as_u64().expect("c")
    );
    close("mcnemar statistic", m.statistic, num(&r["statistic"]));
    close("mcnemar p", m.p_value, num(&r["p_value"]));
    close("mcnemar exact p", m.exact_p_value, num(&r["exact_p_value"]));

    let half = Metrics::compute(&f.scores_a, &f.labels, 0.5).expect("metrics");
    let r = &f.json["predictive_values"];
    let pv = predictive_values(half.recall, half.specificity, num(&r["prevalence"])).expect("pv");
    close("ppv", pv.ppv, num(&r["ppv"]));
    close("npv", pv.npv, num(&r["npv"]));
}

#[test]
fn bootstrap_point_estimates_match_reference_and_bracket_them() {
    let f = fixture();
    let config = BootstrapConfig {
        resamples: 400,
        ..Default::default()
    };
    let i = MetricIntervals::compute(&f.scores_a, &f.labels, &f.groups, 0.5, &config)
        .expect("intervals");
    let half = &f.json["at_threshold"][0];
    for (name, interval, reference) in [
        ("accuracy", i.accuracy, num(&half["accuracy"])),
        ("precision", i.precision, num(&half["precision"])),
        ("recall", i.recall, num(&half["recall"])),
        ("specificity", i.specificity, num(&half["specificity"])),
        ("f1", i.f1, num(&half["f1"])),
        ("roc_auc", i.roc_auc, num(&f.json["roc_auc"])),
        ("pr_auc", i.pr_auc, num(&f.json["average_precision"])),
        ("brier", i.brier, num(&f.json["brier"])),
    ] {
        close(&format!("{name} estimate"), interval.estimate, reference);
        assert!(
            interval.lower < interval.estimate && interval.estimate < interval.upper,
            "{name}: {interval:?} should bracket the estimate"
        );
        // 300 films: a 95% interval of a proportion is several points wide, not degenerate.
        assert!(
            interval.upper - interval.lower > 0.02,
            "{name}: {interval:?}"
        );
    }
    let again = MetricIntervals::compute(&f.scores_a, &f.labels, &f.groups, 0.5, &config)
        .expect("intervals");
    assert_eq!(i, again, "same seed, same intervals");
}

/// Films of one patient move together: duplicating every film under the same patient leaves the
/// patient bootstrap's interval unchanged, while treating the copies as separate patients
/// narrows it (by about 1/sqrt(3)) -- the overconfidence that resampling films would cause.
#[test]
fn bootstrap_resamples_patients_not_films() {
    let f = fixture();
    let distinct: Vec<usize> = (0..f.labels.len()).collect();
    let triple = |v: &[f64]| v.iter().flat_map(|&x| [x, x, x]).collect::<Vec<f64>>();
    let scores3 = triple(&f.scores_a);
    let labels3: Vec<bool> = f.labels.iter().flat_map(|&l| [l, l, l]).collect();
    let same_patient: Vec<usize> = distinct.iter().flat_map(|&g| [g, g, g]).collect();
    let own_patient: Vec<usize> = (0..labels3.len()).collect();
    let config = BootstrapConfig {
        resamples: 1000,
        ..Default::default()
    };
    let width = |scores: &[f64], labels: &[bool], groups: &[usize]| {
        let i = MetricIntervals::compute(scores, labels, groups, 0.5, &config).expect("ci");
        i.accuracy.upper - i.accuracy.lower
    };
    let base = width(&f.scores_a, &f.labels, &distinct);
    let grouped = width(&scores3, &labels3, &same_patient);
    let per_film = width(&scores3, &labels3, &own_patient);
    assert!((grouped / base - 1.0).abs() < 0.1, "{grouped} vs {base}");
    assert!(per_film < 0.7 * base, "{per_film} vs {base}");
}

#[test]
fn spearman_matches_scipy_with_ties() {
    let f = fixture();
    let a: Vec<f32> = f.scores_a.iter().map(|&v| v as f32).collect();
    let b: Vec<f32> = f.scores_b.iter().map(|&v| v as f32).collect();
    close(
        "spearman",
        spearman(&a, &b).expect("spearman"),
        num(&f.json["spearman_a_b"]),
    );
}
