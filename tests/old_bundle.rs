//! A bundle written before calibration existed (format 1: no `calibration`, no
//! `operating_points`) still loads, predicts and evaluates, and the evaluation says what is
//! missing.

use std::path::Path;

use candle_core::Device;
use xray_pneumonia::data::GrayImage;
use xray_pneumonia::eval::BootstrapConfig;
use xray_pneumonia::evaluation::{Evaluation, EvaluationInput};
use xray_pneumonia::infer::Bundle;

#[test]
fn format_one_bundle_evaluates_with_a_note() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/scratch_cnn");
    let text = std::fs::read_to_string(committed.join("config.json")).expect("config");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let object = json.as_object_mut().expect("object");
    object.remove("calibration");
    object.remove("operating_points");
    object.insert("format_version".into(), serde_json::json!(1));

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("config.json"), json.to_string()).expect("write config");
    std::fs::copy(
        committed.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .expect("copy weights");
    let device = Device::Cpu;
    let bundle = Bundle::load(dir.path(), &device)
        .expect("format-1 bundle loads")
        .with_batch_size(4);
    assert!(bundle.config.calibration.is_none());
    assert!(bundle.config.operating_points.is_empty());

    let size = bundle.config.preprocessing.size;
    let films: Vec<GrayImage> = (0..6)
        .map(|k| GrayImage::from_pixel(size, size, image::Luma([k as f32 / 6.0])))
        .collect();
    let refs: Vec<&GrayImage> = films.iter().collect();
    let probabilities = bundle.probabilities(&refs).expect("predict");
    let labels = [false, true, false, true, true, false];
    let patients: Vec<String> = (0..6).map(|k| format!("p{k}")).collect();
    let evaluation = Evaluation::compute(&EvaluationInput {
        probabilities: &probabilities,
        labels: &labels,
        patients: &patients,
        bundle: &bundle.config,
        prevalence: None,
        referred: None,
        adapt_prior: false,
        bootstrap: BootstrapConfig {
            resamples: 50,
            ..Default::default()
        },
    })
    .expect("evaluates");
    assert!(evaluation.temperature.is_none());
    assert_eq!(
        evaluation.calibration.len(),
        1,
        "only uncalibrated measures"
    );
    assert!(
        evaluation
            .notes
            .iter()
            .any(|n| n.contains("no temperature calibration (bundle format 1)")),
        "{:?}",
        evaluation.notes
    );
}
