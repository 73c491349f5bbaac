//! A bundle saved and loaded again predicts bit-identically; a broken bundle is refused with
//! the file and the tensor named.

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use xray_data::{
    AugmentConfig, GrayImage, Normalization, PatientLists, Preprocessing, SplitConfig,
};
use xray_eval::{Metrics, ThresholdRule};
use xray_infer::*;
use xray_models::{seeded_init, Architecture, Classifier, MobileNetV2Config, ScratchCnnConfig};

fn films(n: usize, size: u32) -> Vec<GrayImage> {
    (0..n)
        .map(|k| {
            GrayImage::from_fn(size, size, |x, y| {
                image::Luma([((x * 7 + y * 3 + k as u32 * 11) % 17) as f32 / 16.0])
            })
        })
        .collect()
}

fn sample_config(architecture: Architecture, preprocessing: Preprocessing) -> BundleConfig {
    let metrics = Metrics::compute(&[0.2, 0.8], &[false, true], 0.5).unwrap();
    BundleConfig::new(
        architecture,
        preprocessing,
        ThresholdChoice {
            value: 0.5,
            rule: ThresholdRule::Youden,
        },
        3,
        SplitRecord {
            config: SplitConfig::default(),
            images: [1, 1, 1],
            lists: PatientLists {
                train_patients: vec!["a".into()],
                validation_patients: vec!["b".into()],
                test_patients: vec!["c".into()],
            },
            patients_sha256: String::new(),
            source: None,
        },
        DataRecord {
            root: "r".into(),
            split_folder: "train".into(),
            images: 3,
            manifest_sha256: String::new(),
            skipped: vec![],
        },
        TrainingRecord {
            config: serde_json::json!({ "epochs": 1 }),
            recipe: serde_json::json!({ "augmentation": AugmentConfig::default() }),
            epochs_run: 0,
            best_epoch: 0,
            seconds: 0.0,
        },
        metrics,
        metrics,
    )
}

fn round_trip(architecture: Architecture, preprocessing: Preprocessing) {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = Classifier::new(
        &architecture,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )
    .unwrap();
    seeded_init(&varmap, "", 3).unwrap();
    let config = sample_config(architecture, preprocessing);
    let dir = tempfile::tempdir().unwrap();
    Bundle::save(dir.path(), &config, &varmap).unwrap();
    let loaded = Bundle::load(dir.path(), &device)
        .unwrap()
        .with_batch_size(2);
    assert_eq!(loaded.config, config);

    let images = films(3, preprocessing.size);
    let refs: Vec<&GrayImage> = images.iter().collect();
    let before = {
        let x = xray_data::images_to_tensor(&refs, &preprocessing, &device).unwrap();
        model.logits(&x).unwrap().to_vec1::<f32>().unwrap()
    };
    let after: Vec<f32> = loaded
        .probabilities(&refs)
        .unwrap()
        .into_iter()
        .map(|p| (p / (1.0 - p)).ln() as f32)
        .collect();
    let reloaded_logits = {
        let x = xray_data::images_to_tensor(&refs, &preprocessing, &device).unwrap();
        loaded.model.logits(&x).unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(
        before, reloaded_logits,
        "bit-identical logits after reloading"
    );
    for (a, b) in before.iter().zip(&after) {
        assert!((a - b).abs() < 1e-3 * a.abs().max(1.0));
    }
}

#[test]
fn scratch_bundle_predicts_identically_after_reloading() {
    let architecture = Architecture::ScratchCnn(ScratchCnnConfig {
        in_channels: 1,
        channels: vec![4, 8],
        dropout: 0.0,
    });
    round_trip(
        architecture,
        Preprocessing {
            size: 32,
            channels: 1,
            normalization: Normalization::MeanStd {
                mean: 0.5,
                std: 0.25,
            },
        },
    );
}

#[test]
fn mobilenet_bundle_predicts_identically_after_reloading() {
    let architecture = Architecture::MobileNetV2(MobileNetV2Config::pneumonia());
    round_trip(
        architecture,
        Preprocessing {
            size: 64,
            channels: 3,
            normalization: Normalization::MinusOneToOne,
        },
    );
}

#[test]
fn a_bundle_missing_a_tensor_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::Cpu;
    let architecture = Architecture::ScratchCnn(ScratchCnnConfig {
        in_channels: 1,
        channels: vec![4],
        dropout: 0.0,
    });
    let preprocessing = Preprocessing {
        size: 16,
        channels: 1,
        normalization: Normalization::ZeroToOne,
    };
    let varmap = VarMap::new();
    Classifier::new(
        &architecture,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )
    .unwrap();
    Bundle::save(
        dir.path(),
        &sample_config(architecture, preprocessing),
        &varmap,
    )
    .unwrap();

    let mut tensors =
        candle_core::safetensors::load(dir.path().join(Bundle::WEIGHTS), &device).unwrap();
    tensors.remove("features.0.bn.running_var");
    candle_core::safetensors::save(&tensors, dir.path().join(Bundle::WEIGHTS)).unwrap();
    let err = Bundle::load(dir.path(), &device)
        .err()
        .expect("missing tensor must fail");
    assert!(
        err.to_string().contains("features.0.bn.running_var"),
        "{err}"
    );

    std::fs::write(dir.path().join(Bundle::CONFIG), "{}").unwrap();
    let err = Bundle::load(dir.path(), &device)
        .err()
        .expect("bad config must fail");
    assert!(err.to_string().contains("config.json"), "{err}");
}
