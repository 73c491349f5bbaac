//! The loss, the trainer's safeguards and the model bundle round trip.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, ModuleT, VarBuilder, VarMap};
use xray_data::{AugmentConfig, GrayImage, Normalization, Preprocessing};
use xray_eval::Metrics;
use xray_models::{seeded_init, Architecture, Classifier, MobileNetV2Config};
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

    let images: Vec<GrayImage> = (0..4u32)
        .map(|k| {
            GrayImage::from_fn(32, 32, |x, y| {
                image::Luma([((x + 2 * y + k) % 9) as f32 / 8.0])
            })
        })
        .collect();
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

/// Stops training after `epoch`, as a user's Ctrl-C handler or a failing log writer would.
struct StopAfter(usize);

impl Observer for StopAfter {
    fn on_epoch(&mut self, record: &EpochRecord) -> Result<(), TrainError> {
        if record.epoch == self.0 {
            return Err(TrainError::Interrupted {
                epoch: record.epoch,
                reason: "test".into(),
            });
        }
        Ok(())
    }
}

/// Trains a fresh head for `config`, checkpointing to `path`, stopping after `stop` if given.
fn checkpointed_run(
    config: TrainConfig,
    path: &std::path::Path,
    resume: bool,
    stop: Option<usize>,
) -> (Result<TrainReport, TrainError>, Vec<f32>) {
    let device = Device::Cpu;
    let (x, y) = separable_features(70, &device);
    let train = FeatureBatches::new(x.clone(), y.clone()).unwrap();
    let val = FeatureBatches::new((x * 0.9).unwrap(), y).unwrap();
    let varmap = VarMap::new();
    let model = head(&varmap, &device);
    let target = TrainTarget {
        model: &model,
        varmap: &varmap,
        trainable: varmap.all_vars(),
    };
    let mut stopper = StopAfter(stop.unwrap_or(usize::MAX));
    let result = Trainer::new(target, config)
        .checkpoint(path, resume)
        .observer(&mut stopper)
        .fit(&train, &val, &device);
    let weights = model
        .0
        .weight()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (result, weights)
}

fn without_timing(records: &[EpochRecord]) -> Vec<EpochRecord> {
    records
        .iter()
        .map(|r| EpochRecord {
            seconds: 0.0,
            images_per_second: 0.0,
            ..r.clone()
        })
        .collect()
}

#[test]
fn an_interrupted_run_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        epochs: 7,
        batch_size: 8,
        learning_rate: 0.05,
        patience: 7,
        ..TrainConfig::default()
    };
    let (whole, whole_weights) = checkpointed_run(config, &dir.path().join("a"), false, None);
    let whole = whole.unwrap();
    let path = dir.path().join("b");
    let (stopped, _) = checkpointed_run(config, &path, false, Some(3));
    assert!(matches!(
        stopped,
        Err(TrainError::Interrupted { epoch: 3, .. })
    ));
    let (resumed, resumed_weights) = checkpointed_run(config, &path, true, None);
    let resumed = resumed.unwrap();
    assert_eq!(
        whole_weights, resumed_weights,
        "the same final weights, bit for bit"
    );
    assert_eq!(
        resumed.epochs.len(),
        7,
        "the three epochs before the stop are kept"
    );
    assert_eq!(
        without_timing(&whole.epochs),
        without_timing(&resumed.epochs)
    );
    assert_eq!(whole.best_epoch, resumed.best_epoch);

    // A checkpoint from another configuration is refused by name, not silently mixed in.
    let other = TrainConfig {
        learning_rate: 0.01,
        ..config
    };
    match checkpointed_run(other, &path, true, None).0 {
        Err(TrainError::Checkpoint {
            path: p, reason, ..
        }) => {
            assert_eq!(p, path);
            assert!(reason.contains("another run"), "{reason}");
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    // A truncated checkpoint is an error naming the file, never a panic.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpointed_run(config, &path, true, None).0.unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn the_stopping_metric_and_its_direction_are_pluggable() {
    let device = Device::Cpu;
    let (x, y) = separable_features(60, &device);
    let train = FeatureBatches::new(x.clone(), y.clone()).unwrap();
    let val = FeatureBatches::new(x, y).unwrap();
    let varmap = VarMap::new();
    let model = head(&varmap, &device);
    let config = TrainConfig {
        epochs: 12,
        batch_size: 16,
        learning_rate: 0.05,
        patience: 12,
        ..TrainConfig::default()
    };
    let target = TrainTarget {
        model: &model,
        varmap: &varmap,
        trainable: varmap.all_vars(),
    };
    let report = Trainer::new(target, config)
        .stopping(ValidationLoss)
        .fit(&train, &val, &device)
        .unwrap();
    let lowest = report
        .epochs
        .iter()
        .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
        .unwrap();
    let best = &report.epochs[report.best_epoch - 1];
    // An improvement must beat the best by the tracker's margin of 1e-4.
    assert!(
        best.val_loss <= lowest.val_loss + 1e-4,
        "kept epoch {} (loss {}), lowest {} (loss {})",
        best.epoch,
        best.val_loss,
        lowest.epoch,
        lowest.val_loss
    );
    assert!(report.epochs.iter().all(|r| r.stopping_score == r.val_loss));
}
