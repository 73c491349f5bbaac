use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, ModuleT, Optimizer, ParamsAdamW, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use xray_data::epoch_order;
use xray_eval::Metrics;

use crate::{
    class_weights, weighted_bce_with_logits, BatchSource, EarlyStopping, LrSchedule, Progress,
    TrainError,
};

/// Hyper-parameters of one training run; recorded in the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Most epochs to run.
    pub epochs: usize,
    /// Images per optimiser step.
    pub batch_size: usize,
    /// Peak AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Epochs of linear warm-up before the cosine decay.
    pub warmup_epochs: usize,
    /// Stop after this many epochs without a better validation AUC.
    pub patience: usize,
    /// Seed of the shuffling, augmentation and dropout.
    pub seed: u64,
    /// Weight the loss so both classes count equally.
    pub class_weighted: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 32,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            warmup_epochs: 1,
            patience: 4,
            seed: 42,
            class_weighted: true,
        }
    }
}

/// One line of the training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss (weighted BCE).
    pub train_loss: f64,
    /// Validation loss with the same weights.
    pub val_loss: f64,
    /// Validation ROC AUC, the early-stopping score.
    pub val_auc: f64,
    /// Validation accuracy at threshold 0.5.
    pub val_accuracy: f64,
    /// Validation recall at threshold 0.5.
    pub val_recall: f64,
    /// Learning rate at the epoch's last step.
    pub learning_rate: f64,
    /// Wall-clock seconds of the epoch (training and validation).
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
    /// Whether this epoch is the best so far (its weights are kept).
    pub best: bool,
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Every epoch's record.
    pub epochs: Vec<EpochRecord>,
    /// The epoch whose weights the model now holds.
    pub best_epoch: usize,
    /// Its validation AUC.
    pub best_val_auc: f64,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
}

fn snapshot(varmap: &VarMap) -> candle_core::Result<HashMap<String, Tensor>> {
    let vars = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    vars.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect()
}

fn restore(varmap: &VarMap, saved: &HashMap<String, Tensor>) -> candle_core::Result<()> {
    let vars = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    for (name, var) in vars.iter() {
        if let Some(t) = saved.get(name) {
            var.set(t)?;
        }
    }
    Ok(())
}

fn validate_config(
    config: &TrainConfig,
    train_len: usize,
    val_len: usize,
) -> Result<(), TrainError> {
    let bad = |name, reason: &str| {
        Err(TrainError::InvalidConfig {
            name,
            reason: reason.to_string(),
        })
    };
    if config.epochs == 0 {
        return bad("epochs", "must be at least 1");
    }
    if config.batch_size == 0 {
        return bad("batch_size", "must be at least 1");
    }
    if !(config.learning_rate > 0.0 && config.learning_rate.is_finite()) {
        return bad("learning_rate", "must be positive and finite");
    }
    if train_len == 0 || val_len == 0 {
        return bad("data", "training and validation sets must not be empty");
    }
    Ok(())
}

/// Evaluation-mode pneumonia probabilities for every example of `source`.
pub fn predict_probabilities<M: ModuleT>(
    model: &M,
    source: &dyn BatchSource,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<f64>, TrainError> {
    let indices: Vec<usize> = (0..source.len()).collect();
    let mut probabilities = Vec::with_capacity(source.len());
    for chunk in indices.chunks(batch_size.max(1)) {
        let logits = model.forward_t(&source.inputs(chunk, 0, false, device)?, false)?;
        let p = candle_nn::ops::sigmoid(&logits.flatten_all()?)?;
        probabilities.extend(p.to_vec1::<f32>()?.into_iter().map(f64::from));
    }
    Ok(probabilities)
}

/// Mean loss of probabilities against targets, weighted as in training.
fn mean_bce(probabilities: &[f64], targets: &[f32], weights: (f64, f64)) -> f64 {
    let total: f64 = probabilities
        .iter()
        .zip(targets)
        .map(|(&p, &t)| {
            let p = p.clamp(1e-7, 1.0 - 1e-7);
            if t > 0.5 {
                -weights.0 * p.ln()
            } else {
                -weights.1 * (1.0 - p).ln()
            }
        })
        .sum();
    total / probabilities.len().max(1) as f64
}

/// What [`fit`] trains: a model, all its variables, and the ones the optimiser may change.
pub struct TrainTarget<'a, M> {
    /// The network (train mode in steps, evaluation mode for validation).
    pub model: &'a M,
    /// Every variable of the model: snapshotted for the best epoch and restored at the end.
    pub varmap: &'a VarMap,
    /// The variables AdamW updates.
    pub trainable: Vec<Var>,
}

/// Trains the target's `trainable` variables with AdamW on `train`, scoring ROC AUC on
/// `validation` after every epoch. The best epoch's weights are restored into the varmap at the
/// end. `on_epoch` receives each epoch's record as it finishes.
pub fn fit<M: ModuleT>(
    target: TrainTarget<'_, M>,
    train: &dyn BatchSource,
    validation: &dyn BatchSource,
    config: &TrainConfig,
    device: &Device,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<TrainReport, TrainError> {
    let TrainTarget {
        model,
        varmap,
        trainable,
    } = target;
    validate_config(config, train.len(), validation.len())?;
    if trainable.is_empty() {
        return Err(TrainError::InvalidConfig {
            name: "trainable",
            reason: "no trainable parameters".into(),
        });
    }
    if !device.is_cpu() {
        // Seeds GPU dropout; candle's CPU RNG cannot be seeded (the examples use no dropout).
        device.set_seed(config.seed)?;
    }
    let weights = if config.class_weighted {
        class_weights(train.targets())
    } else {
        (1.0, 1.0)
    };
    let steps_per_epoch = train.len().div_ceil(config.batch_size);
    let schedule = LrSchedule {
        base: config.learning_rate,
        warmup_steps: config.warmup_epochs * steps_per_epoch,
        total_steps: config.epochs * steps_per_epoch,
        final_fraction: 0.01,
    };
    let params = ParamsAdamW {
        lr: schedule.at(0),
        weight_decay: config.weight_decay,
        ..Default::default()
    };
    let mut optimizer = AdamW::new(trainable, params)?;
    let mut stopper = EarlyStopping::new(config.patience.max(1), 1e-4);
    let mut best = (0, f64::NAN, snapshot(varmap)?);
    let mut records = Vec::new();
    let run_start = Instant::now();
    let val_targets: Vec<bool> = validation.targets().iter().map(|&t| t > 0.5).collect();

    for epoch in 0..config.epochs {
        let start = Instant::now();
        let bar = ProgressBar::new(steps_per_epoch as u64).with_style(
            ProgressStyle::with_template(
                "epoch {msg} [{bar:30}] {pos}/{len} steps, {per_sec}, eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("{}/{}", epoch + 1, config.epochs));
        let order = epoch_order(train.len(), config.seed, epoch);
        let mut loss_sum = 0.0;
        let mut lr = schedule.at(epoch * steps_per_epoch);
        for (step, chunk) in order.chunks(config.batch_size).enumerate() {
            lr = schedule.at(epoch * steps_per_epoch + step);
            optimizer.set_learning_rate(lr);
            let inputs = train.inputs(chunk, epoch, true, device)?;
            let targets: Vec<f32> = chunk.iter().map(|&i| train.targets()[i]).collect();
            let targets = Tensor::from_vec(targets, chunk.len(), device)?;
            let logits = model.forward_t(&inputs, true)?.flatten_all()?;
            let loss = weighted_bce_with_logits(&logits, &targets, weights)?;
            let value = loss.to_scalar::<f32>()?;
            if !value.is_finite() {
                bar.abandon();
                return Err(TrainError::NonFiniteLoss {
                    epoch: epoch + 1,
                    step,
                    value,
                });
            }
            optimizer.backward_step(&loss)?;
            loss_sum += value as f64 * chunk.len() as f64;
            bar.inc(1);
        }
        bar.finish_and_clear();
        let train_seconds = start.elapsed().as_secs_f64();

        let probabilities = predict_probabilities(model, validation, config.batch_size, device)?;
        let metrics = Metrics::compute(&probabilities, &val_targets, 0.5)?;
        let progress = stopper.update(metrics.auc);
        if progress == Progress::Improved {
            best = (epoch + 1, metrics.auc, snapshot(varmap)?);
        }
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / train.len() as f64,
            val_loss: mean_bce(&probabilities, validation.targets(), weights),
            val_auc: metrics.auc,
            val_accuracy: metrics.accuracy,
            val_recall: metrics.recall,
            learning_rate: lr,
            seconds: start.elapsed().as_secs_f64(),
            images_per_second: train.len() as f64 / train_seconds.max(1e-9),
            best: progress == Progress::Improved,
        };
        on_epoch(&record);
        records.push(record);
        if progress == Progress::Stop {
            break;
        }
    }
    restore(varmap, &best.2)?;
    Ok(TrainReport {
        epochs: records,
        best_epoch: best.0,
        best_val_auc: best.1,
        seconds: run_start.elapsed().as_secs_f64(),
    })
}
