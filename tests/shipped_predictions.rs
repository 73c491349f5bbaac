//! The shipped bundles' predictions on their 783 held-out films stay what they were when the
//! bundles were trained (fixture written from `evaluate`'s `predictions.csv` on 2026-12-01,
//! after the retraining of issue 17): within 1e-5 for the probability and 1e-4 for the
//! out-of-distribution score (relative above 1), room for the CSV's rounding (6 and 4 decimals)
//! and another CPU's vector paths. A change meant only for speed or structure must keep this
//! test green.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::Device;
use xray_pneumonia::data::Side;
use xray_pneumonia::infer::Bundle;
use xray_pneumonia::pipeline::{decode_for_bundle, samples_on_side};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `(probability, ood score)` by film name, for one bundle.
fn fixture(bundle: &str) -> HashMap<String, (f64, f64)> {
    let text = std::fs::read_to_string(root().join("tests/fixtures/heldout_predictions.csv"))
        .expect("fixture");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            (f[0] == bundle).then(|| {
                let number = |s: &str| s.parse::<f64>().expect("number");
                (f[1].to_string(), (number(f[2]), number(f[3])))
            })
        })
        .collect()
}

fn check(name: &str) {
    let expected = fixture(name);
    let bundle = Bundle::load(&root().join("models").join(name), &Device::Cpu).expect("bundle");

    let data = root().join("../shared/data/kermany224");
    let samples = samples_on_side(&data, "train", &bundle.config.split, Some(Side::Test))
        .expect("held-out films");
    let set = decode_for_bundle(samples, &bundle.config, false).expect("decode");
    assert_eq!(set.images.len(), expected.len(), "{name}: held-out films");
    let films: Vec<_> = set.images.iter().collect();
    assert!(
        bundle
            .config
            .ood
            .as_ref()
            .is_some_and(|ood| ood.population.is_some()),
        "{name}: no population detector"
    );
    let predictions = bundle.predict_batch(&films).expect("predict");
    for (sample, p) in set.samples.iter().zip(&predictions) {
        let file = sample.path.file_name().expect("name").to_string_lossy();
        let (probability, ood) = expected[file.as_ref()];
        assert!(
            (p.probability - probability).abs() <= 1e-5,
            "{name} {file}: probability {} was {probability}",
            p.probability
        );
        let score = p.ood_score.expect("score");
        assert!(
            (score - ood).abs() <= 1e-4 * ood.abs().max(1.0),
            "{name} {file}: OOD score {score} was {ood}"
        );
    }
}

#[test]
fn shipped_mobilenet_predicts_as_before() {
    check("mobilenet_v2");
}

#[test]
fn shipped_scratch_cnn_predicts_as_before() {
    check("scratch_cnn");
}
