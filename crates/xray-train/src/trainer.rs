use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::{ModuleT, Optimizer, ParamsAdamW, VarMap};
use serde::{Deserialize, Serialize};
use xray_data::epoch_order;
use xray_eval::Metrics;

use crate::checkpoint::{self, Progress as CheckpointProgress, Tensors};
use crate::{
    class_weights, weighted_bce_with_logits, AdamW, BatchSource, Direction, EarlyStopping,
    LrSchedule, Progress, TrainError,
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
    /// Stop after this many epochs without a better validation score.
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

impl TrainConfig {
    /// The config as a bundle's `TrainingRecord` stores it.
    pub fn to_record(&self) -> serde_json::Value {
        // Plain numbers and booleans: serialising cannot fail (a NaN becomes null).
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// One line of the training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss with the same loss function.
    pub val_loss: f64,
    /// Validation ROC AUC.
    pub val_auc: f64,
    /// Validation accuracy at threshold 0.5.
    pub val_accuracy: f64,
    /// Validation recall at threshold 0.5.
    pub val_recall: f64,
    /// The early-stopping score (the stopping metric on validation).
    #[serde(default)]
    pub stopping_score: f64,
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
    /// Every epoch's record (those before a resume included).
    pub epochs: Vec<EpochRecord>,
    /// The epoch whose weights the model now holds.
    pub best_epoch: usize,
    /// Its early-stopping score.
    pub best_val_auc: f64,
    /// Wall-clock seconds of this call (a resumed run counts from the resume).
    pub seconds: f64,
}

/// A training loss on a batch's logits `(N,)` and 0/1 targets `(N,)`.
pub trait Loss {
    /// The mean loss of the batch, a scalar tensor.
    fn loss(&self, logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor>;
}

/// Binary cross-entropy on the logit with per-class weights `(positive, negative)`
/// ([`weighted_bce_with_logits`]); `(1, 1)` is plain cross-entropy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightedBce(pub (f64, f64));

impl Loss for WeightedBce {
    fn loss(&self, logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
        weighted_bce_with_logits(logits, targets, self.0)
    }
}

/// The validation score early stopping follows and the best epoch is chosen by.
pub trait StoppingMetric {
    /// Which way the score improves.
    fn direction(&self) -> Direction;
    /// The score of one epoch from the validation probabilities, labels and mean loss.
    fn score(&self, probabilities: &[f64], labels: &[bool], loss: f64) -> Result<f64, TrainError>;
}

/// Validation ROC AUC, higher is better: the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RocAuc;

impl StoppingMetric for RocAuc {
    fn direction(&self) -> Direction {
        Direction::Maximize
    }
    fn score(&self, probabilities: &[f64], labels: &[bool], _loss: f64) -> Result<f64, TrainError> {
        Ok(Metrics::compute(probabilities, labels, 0.5)?.auc)
    }
}

/// Validation loss, lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ValidationLoss;

impl StoppingMetric for ValidationLoss {
    fn direction(&self) -> Direction {
        Direction::Minimize
    }
    fn score(&self, _p: &[f64], _labels: &[bool], loss: f64) -> Result<f64, TrainError> {
        Ok(loss)
    }
}

/// Watches a run: progress within an epoch and each finished epoch. An error from
/// [`Observer::on_epoch`] stops training (after the epoch's checkpoint is written).
pub trait Observer {
    /// A step of `steps` in the 0-based `epoch` finished.
    fn on_step(&mut self, _epoch: usize, _step: usize, _steps: usize) {}
    /// An epoch finished.
    fn on_epoch(&mut self, _record: &EpochRecord) -> Result<(), TrainError> {
        Ok(())
    }
}

impl<F: FnMut(&EpochRecord)> Observer for F {
    fn on_epoch(&mut self, record: &EpochRecord) -> Result<(), TrainError> {
        self(record);
        Ok(())
    }
}

fn snapshot(varmap: &VarMap) -> candle_core::Result<HashMap<String, Tensor>> {
    let vars = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    vars.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect()
}

fn restore(varmap: &VarMap, saved: &HashMap<String, Tensor>) -> Result<(), TrainError> {
    let vars = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    for (name, var) in vars.iter() {
        let t = saved.get(name).ok_or_else(|| TrainError::InvalidConfig {
            name: "checkpoint",
            reason: format!("holds no tensor for parameter `{name}`"),
        })?;
        var.set(&t.to_device(var.device())?)?;
    }
    Ok(())
}

/// Each variable's name in `varmap`, by tensor identity: names the optimiser's moments in a
/// checkpoint, independently of the order the variables were handed over in.
fn parameter_names(varmap: &VarMap) -> HashMap<candle_core::TensorId, String> {
    let vars = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    vars.iter()
        .map(|(name, var)| (var.as_tensor().id(), name.clone()))
        .collect()
}

/// Every variable of `varmap` must live on `device`: candle would otherwise fail deep inside a
/// step, or silently copy every batch.
pub fn check_devices(varmap: &VarMap, device: &Device) -> Result<(), TrainError> {
    let vars = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let found = vars[name].device();
        if !found.same_device(device) {
            return Err(TrainError::DeviceMismatch {
                parameter: name.clone(),
                found: format!("{:?}", found.location()),
                expected: format!("{:?}", device.location()),
            });
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

/// What a [`Trainer`] trains: a model, all its variables, and the ones the optimiser may change.
pub struct TrainTarget<'a, M> {
    /// The network (train mode in steps, evaluation mode for validation).
    pub model: &'a M,
    /// Every variable of the model: snapshotted for the best epoch and restored at the end.
    pub varmap: &'a VarMap,
    /// The variables AdamW updates.
    pub trainable: Vec<Var>,
}

/// Trains a model with AdamW (warm-up and cosine decay), keeping the best epoch's weights by a
/// validation score. The loss, the stopping metric and the observers are pluggable; with a
/// checkpoint path, the state after every epoch is written atomically and a run can resume
/// from it exactly (on the CPU; candle's GPU dropout generator is not part of the state).
///
/// ```no_run
/// # use xray_train::*;
/// # fn demo(target: TrainTarget<'_, xray_models::Classifier>, train: &dyn BatchSource,
/// #         validation: &dyn BatchSource) -> Result<(), TrainError> {
/// let report = Trainer::new(target, TrainConfig::default())
///     .stopping(ValidationLoss)
///     .checkpoint("runs/checkpoint.safetensors", true)
///     .fit(train, validation, &candle_core::Device::Cpu)?;
/// println!("best epoch {}", report.best_epoch);
/// # Ok(()) }
/// ```
pub struct Trainer<'a, M> {
    target: TrainTarget<'a, M>,
    config: TrainConfig,
    loss: Option<Box<dyn Loss + 'a>>,
    metric: Box<dyn StoppingMetric + 'a>,
    observers: Vec<&'a mut dyn Observer>,
    checkpoint: Option<(PathBuf, bool)>,
}

impl<'a, M: ModuleT> Trainer<'a, M> {
    /// A trainer of `target` with `config`: class-weighted (per `config.class_weighted`)
    /// cross-entropy, early stopping on validation ROC AUC, no observer, no checkpoint.
    pub fn new(target: TrainTarget<'a, M>, config: TrainConfig) -> Self {
        Trainer {
            target,
            config,
            loss: None,
            metric: Box::new(RocAuc),
            observers: Vec::new(),
            checkpoint: None,
        }
    }

    /// Trains with `loss` instead of the weighted cross-entropy.
    pub fn loss(mut self, loss: impl Loss + 'a) -> Self {
        self.loss = Some(Box::new(loss));
        self
    }

    /// Stops early and keeps the best epoch by `metric`.
    pub fn stopping(mut self, metric: impl StoppingMetric + 'a) -> Self {
        self.metric = Box::new(metric);
        self
    }

    /// Adds an observer.
    pub fn observer(mut self, observer: &'a mut dyn Observer) -> Self {
        self.observers.push(observer);
        self
    }

    /// Writes the state after every epoch to `path`; with `resume`, first continues from the
    /// state already there, if any (it must come from the same config and data).
    pub fn checkpoint(mut self, path: impl Into<PathBuf>, resume: bool) -> Self {
        self.checkpoint = Some((path.into(), resume));
        self
    }

    /// Runs the training; the best epoch's weights are in the varmap at the end.
    pub fn fit(
        mut self,
        train: &dyn BatchSource,
        validation: &dyn BatchSource,
        device: &Device,
    ) -> Result<TrainReport, TrainError> {
        let config = self.config;
        let TrainTarget {
            model,
            varmap,
            trainable,
        } = self.target;
        validate_config(&config, train.len(), validation.len())?;
        check_devices(varmap, device)?;
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
        let loss_fn = self
            .loss
            .take()
            .unwrap_or_else(|| Box::new(WeightedBce(weights)));
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
        let names = parameter_names(varmap);
        let name_of = |v: &Var| names.get(&v.as_tensor().id()).cloned();
        let mut state = CheckpointProgress {
            config,
            data: [train.len(), validation.len()],
            epochs_done: 0,
            steps: 0,
            stopper: EarlyStopping::with_direction(
                config.patience.max(1),
                1e-4,
                self.metric.direction(),
            ),
            best: (0, f64::NAN),
            records: Vec::new(),
            finished: false,
        };
        let mut best_weights = snapshot(varmap)?;
        if let Some((path, true)) = &self.checkpoint {
            if let Some((saved, tensors)) = checkpoint::load(path, device)? {
                if saved.config != config || saved.data != state.data {
                    return Err(TrainError::Checkpoint {
                        path: path.clone(),
                        source: None,
                        reason: format!(
                            "it comes from another run (config {:?}, data {:?}); this run has \
                             config {config:?}, data {:?}: delete it or drop --resume",
                            saved.config, saved.data, state.data
                        ),
                    });
                }
                restore(varmap, &tensors.model)?;
                optimizer.restore(&tensors.optimizer, saved.steps, name_of)?;
                best_weights = tensors.best;
                state = saved;
            }
        }
        let run_start = Instant::now();
        let val_labels: Vec<bool> = validation.targets().iter().map(|&t| t > 0.5).collect();

        while !state.finished && state.epochs_done < config.epochs {
            let epoch = state.epochs_done;
            let start = Instant::now();
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
                let loss = loss_fn.loss(&logits, &targets)?;
                let value = loss.to_scalar::<f32>()?;
                if !value.is_finite() {
                    return Err(TrainError::NonFiniteLoss {
                        epoch: epoch + 1,
                        step,
                        value,
                    });
                }
                optimizer.backward_step(&loss)?;
                loss_sum += value as f64 * chunk.len() as f64;
                for o in self.observers.iter_mut() {
                    o.on_step(epoch, step, steps_per_epoch);
                }
            }
            let train_seconds = start.elapsed().as_secs_f64();

            let probabilities =
                predict_probabilities(model, validation, config.batch_size, device)?;
            let metrics = Metrics::compute(&probabilities, &val_labels, 0.5)?;
            let val_loss = mean_bce(&probabilities, validation.targets(), weights);
            let score = self.metric.score(&probabilities, &val_labels, val_loss)?;
            let progress = state.stopper.update(score);
            if progress == Progress::Improved {
                state.best = (epoch + 1, score);
                best_weights = snapshot(varmap)?;
            }
            let record = EpochRecord {
                epoch: epoch + 1,
                train_loss: loss_sum / train.len() as f64,
                val_loss,
                val_auc: metrics.auc,
                val_accuracy: metrics.accuracy,
                val_recall: metrics.recall,
                stopping_score: score,
                learning_rate: lr,
                seconds: start.elapsed().as_secs_f64(),
                images_per_second: train.len() as f64 / train_seconds.max(1e-9),
                best: progress == Progress::Improved,
            };
            state.records.push(record.clone());
            state.epochs_done = epoch + 1;
            state.steps = optimizer.steps();
            state.finished = progress == Progress::Stop || state.epochs_done == config.epochs;
            if let Some((path, _)) = &self.checkpoint {
                let tensors = Tensors {
                    model: snapshot(varmap)?,
                    best: best_weights.clone(),
                    optimizer: optimizer.state(name_of)?,
                };
                checkpoint::save(path, &state, &tensors)?;
            }
            for o in self.observers.iter_mut() {
                o.on_epoch(&record)?;
            }
        }
        restore(varmap, &best_weights)?;
        Ok(TrainReport {
            epochs: state.records,
            best_epoch: state.best.0,
            best_val_auc: state.best.1,
            seconds: run_start.elapsed().as_secs_f64(),
        })
    }
}

/// Trains the target's `trainable` variables with the default [`Trainer`]: AdamW, weighted
/// cross-entropy, early stopping on validation ROC AUC, `on_epoch` told each epoch's record.
pub fn fit<M: ModuleT>(
    target: TrainTarget<'_, M>,
    train: &dyn BatchSource,
    validation: &dyn BatchSource,
    config: &TrainConfig,
    device: &Device,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<TrainReport, TrainError> {
    let mut observer = on_epoch;
    Trainer::new(target, *config)
        .observer(&mut observer)
        .fit(train, validation, device)
}
