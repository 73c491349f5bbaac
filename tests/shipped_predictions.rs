//! The shipped bundles' predictions on their 783 held-out films stay what they were when the
//! fixture was made (2026-11-30, before the inference façade replaced the old prediction path,
//! which gave the same values bit for bit): within 1e-5 for the probability and 1e-4 relative
//! for the out-of-distribution score, leaving room only for another CPU's vector paths. A
//! change meant only for speed or structure must keep this test green.

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
    let mut bundle = Bundle::load(&root().join("models").join(name), &Device::Cpu).expect("bundle");

    let data = root().join("../shared/data/kermany224");
    let samples = samples_on_side(&data, "train", &bundle.config.split, Some(Side::Test))
        .expect("held-out films");
    let set = decode_for_bundle(samples, &bundle.config, false).expect("decode");
    assert_eq!(set.images.len(), expected.len(), "{name}: held-out films");
    let films: Vec<_> = set.images.iter().collect();
    // The fixture predates the out-of-population detector (issue 17): compare the distances
    // alone, and check that the detector only ever raises the score.
    let full = bundle.predict_batch(&films).expect("predict");
    let ood = bundle
        .config
        .ood
        .as_mut()
        .expect("out-of-distribution statistics");
    assert!(ood.population.is_some(), "{name}: no population detector");
    ood.population = None;
    let predictions = bundle.predict_batch(&films).expect("predict");
    for ((sample, p), q) in set.samples.iter().zip(&predictions).zip(&full) {
        let file = sample.path.file_name().expect("name").to_string_lossy();
        let (probability, ood) = expected[file.as_ref()];
        assert!(
            (p.probability - probability).abs() <= 1e-5,
            "{name} {file}: probability {} was {probability}",
            p.probability
        );
        let score = p.ood_score.expect("score");
        assert_eq!(p.probability, q.probability);
        assert!(q.ood_score.expect("score") >= score, "{name} {file}");
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
