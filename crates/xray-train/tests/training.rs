//! The loss, the trainer's safeguards and the model bundle round trip.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, ModuleT, VarBuilder, VarMap};
use xray_data::{AugmentConfig, GrayImage, Normalization, Preprocessing, SplitConfig};
use xray_eval::{Metrics, ThresholdRule};
use xray_models::{seeded_init, Architecture, Classifier, MobileNetV2Config, ScratchCnnConfig};
use xray_train::*;

#[test]
fn weighted_bce_matches_the_naive_formula() {
    let device = Device::Cpu;
    let logits = [-30.0f32, -1.5, 0.0, 0.7, 25.0];
    let targets = [0.0f32, 1.0, 1.0, 0.0, 1.0];
    let weights = class_weights(&targets);
    assert!((weights.0 - 5.0 / 6.0).abs() < 1e-12 && (weights.1 - 5.0 / 4.0).abs() < 1e-12);
    let naive: f64 = logits
        .iter()
        .zip(&targets)
        .map(|(&z, &y)| {
            let p = 1.0 / (1.0 + (-(z as f64)).exp());
            if y > 0.5 {
                -weights.0 * p.ln()
            } else {
                -weights.1 * (1.0 - p).max(1e-300).ln()
            }
        })
        .sum::<f64>()
        / 5.0;
    let loss = weighted_bce_with_logits(
        &Tensor::new(&logits, &device).unwrap(),
        &Tensor::new(&targets, &device).unwrap(),
        weights,
    )
    .unwrap()
    .to_scalar::<f32>()
    .unwrap();
    assert!(
        (loss as f64 - naive).abs() < 1e-5 * naive,
        "{loss} vs {naive}"
    );
}

/// A linear classifier on features, as the frozen-backbone head trains.
struct Head(Linear);

impl ModuleT for Head {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        self.0.forward(x)
    }
}

fn separable_features(n: usize, device: &Device) -> (Tensor, Vec<f32>) {
    let targets: Vec<f32> = (0..n).map(|i| (i % 3 != 0) as u8 as f32).collect();
    let values: Vec<f32> = targets
        .iter()
        .enumerate()
        .flat_map(|(i, &t)| {
            [
                t * 2.0 - 1.0 + (i as f32 * 0.7).sin() * 0.5,
                (i as f32).cos(),
            ]
        })
        .collect();
    (Tensor::from_vec(values, (n, 2), device).unwrap(), targets)
}

fn head(varmap: &VarMap, device: &Device) -> Head {
    let head = Head(
        candle_nn::linear(
            2,
            1,
            VarBuilder::from_varmap(varmap, DType::F32, device).pp("head"),
        )
        .unwrap(),
    );
    seeded_init(varmap, "", 0).unwrap();
    head
}

#[test]
fn fit_learns_a_separable_problem_and_keeps_the_best_epoch() {
    let device = Device::Cpu;
    let (x, y) = separable_features(90, &device);
    let train = FeatureBatches::new(x.clone(), y.clone()).unwrap();
    let val = FeatureBatches::new(x, y).unwrap();
    let varmap = VarMap::new();
    let model = head(&varmap, &device);
    let config = TrainConfig {
        epochs: 30,
        batch_size: 16,
        learning_rate: 0.05,
        patience: 30,
        ..TrainConfig::default()
    };
    let mut seen = 0;
    let report = fit(
        TrainTarget {
            model: &model,
            varmap: &varmap,
            trainable: varmap.all_vars(),
        },
        &train,
        &val,
        &config,
        &device,
        &mut |_| seen += 1,
    )
    .unwrap();
    assert_eq!(seen, report.epochs.len());
    assert!(report.best_val_auc > 0.99, "AUC {}", report.best_val_auc);
    let probabilities = predict_probabilities(&model, &val, 32, &device).unwrap();
    let labels: Vec<bool> = val.targets().iter().map(|&t| t > 0.5).collect();
    let auc = Metrics::compute(&probabilities, &labels, 0.5).unwrap().auc;
    assert!(
        (auc - report.best_val_auc).abs() < 1e-9,
        "restored weights give the best epoch's AUC"
    );
}

#[test]
fn a_nan_loss_stops_training_with_a_clear_error() {
    let device = Device::Cpu;
    let (x, y) = separable_features(32, &device);
    let poisoned = x
        .broadcast_mul(&Tensor::new(&[f32::NAN, 1.0], &device).unwrap())
        .unwrap();
    let train = FeatureBatches::new(poisoned, y.clone()).unwrap();
    let val = FeatureBatches::new(x, y).unwrap();
    let varmap = VarMap::new();
    let model = head(&varmap, &device);
    let err = fit(
        TrainTarget {
            model: &model,
            varmap: &varmap,
            trainable: varmap.all_vars(),
        },
        &train,
        &val,
        &TrainConfig::default(),
        &device,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::NonFiniteLoss {
                epoch: 1,
                step: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("NaN"), "{err}");
}

#[test]
fn invalid_options_are_named() {
    let device = Device::Cpu;
    let (x, y) = separable_features(8, &device);
    let data = FeatureBatches::new(x, y).unwrap();
    let varmap = VarMap::new();
    let model = head(&varmap, &device);
    let config = TrainConfig {
        batch_size: 0,
        ..TrainConfig::default()
    };
    let err = fit(
        TrainTarget {
            model: &model,
            varmap: &varmap,
            trainable: varmap.all_vars(),
        },
        &data,
        &data,
        &config,
        &device,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
}

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
            train_patients: vec!["a".into()],
            validation_patients: vec!["b".into()],
            test_patients: vec!["c".into()],
            patients_sha256: String::new(),
        },
        DataRecord {
            root: "r".into(),
            split_folder: "train".into(),
            images: 3,
            manifest_sha256: String::new(),
            skipped: vec![],
        },
        TrainingRecord {
            config: TrainConfig::default(),
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
    let loaded = Bundle::load(dir.path(), &device).unwrap();
    assert_eq!(loaded.config, config);

    let images = films(3, preprocessing.size);
    let refs: Vec<&GrayImage> = images.iter().collect();
    let before = {
        let x = xray_data::images_to_tensor(&refs, &preprocessing, &device).unwrap();
        model.logits(&x).unwrap().to_vec1::<f32>().unwrap()
    };
    let after: Vec<f32> = loaded
        .predict(&refs, 2, &device)
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

#[test]
fn fine_tuning_changes_only_the_trainable_stages() {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let config = MobileNetV2Config {
        num_outputs: 1,
        dropout: 0.0,
        trainable_stages: 2,
    };
    let architecture = Architecture::MobileNetV2(config);
    let model = Classifier::new(
        &architecture,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )
    .unwrap();
    seeded_init(&varmap, "", 4).unwrap();
    let snapshot = |name: &str| {
        varmap.data().lock().unwrap()[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let frozen_before = snapshot("features.16.conv.1.0.weight");
    let trained_before = snapshot("features.17.conv.1.0.weight");

    let images = films(4, 32);
    let preprocessing = Preprocessing {
        size: 32,
        channels: 3,
        normalization: Normalization::MinusOneToOne,
    };
    let data = ImageBatches::new(
        images.iter().collect(),
        vec![0.0, 1.0, 0.0, 1.0],
        preprocessing,
        Some(AugmentConfig::default()),
        1,
    )
    .unwrap();
    let train_config = TrainConfig {
        epochs: 1,
        batch_size: 2,
        learning_rate: 1e-2,
        ..TrainConfig::default()
    };
    let target = TrainTarget {
        model: &model,
        varmap: &varmap,
        trainable: model.trainable_vars(&varmap),
    };
    let report = fit(target, &data, &data, &train_config, &device, &mut |_| {}).unwrap();
    assert_eq!(report.epochs.len(), 1);
    assert_eq!(
        snapshot("features.16.conv.1.0.weight"),
        frozen_before,
        "a frozen stage must not move"
    );
    assert_ne!(
        snapshot("features.17.conv.1.0.weight"),
        trained_before,
        "a trainable stage must move"
    );
}
