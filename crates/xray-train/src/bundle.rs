use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use xray_data::{edge_energy, images_to_tensor, thumbnail, GrayImage, Preprocessing, SplitConfig};
use xray_eval::{FeatureDistance, Metrics, TemperatureScaling, ThresholdRule, DISCLAIMER};
use xray_models::{load_weights_strict, Architecture, Classifier};

use crate::{TrainConfig, TrainError};

/// Version of the `config.json` layout; bumped when fields change meaning.
/// Version 2 added `calibration` and `operating_points`, version 3 `ood`; older files still
/// load, without them.
pub const BUNDLE_FORMAT_VERSION: u32 = 3;

/// The decision threshold and how it was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdChoice {
    /// Call pneumonia when the probability is at least this.
    pub value: f64,
    /// The rule that chose it on the validation split.
    pub rule: ThresholdRule,
}

/// An alternative decision threshold chosen on validation by a named rule, stored so that it is
/// applied unchanged to any later data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedThreshold {
    /// Short name, e.g. `sensitivity_0.975`.
    pub name: String,
    /// Call pneumonia when the probability is at least this.
    pub value: f64,
    /// The rule that chose it.
    pub rule: ThresholdRule,
    /// Sensitivity it gave on validation.
    pub validation_sensitivity: f64,
    /// Specificity it gave on validation.
    pub validation_specificity: f64,
}

/// Which images trained, validated and tested the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRecord {
    /// Fractions and seed of the patient-level split.
    pub config: SplitConfig,
    /// Images per side: train, validation, test.
    pub images: [usize; 3],
    /// Patients of the training side.
    pub train_patients: Vec<String>,
    /// Patients of the validation side.
    pub validation_patients: Vec<String>,
    /// Patients of the held-out test side.
    pub test_patients: Vec<String>,
    /// SHA-256 over the three sorted patient lists, to compare splits at a glance.
    pub patients_sha256: String,
}

/// Which data the model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    /// The dataset root as given.
    pub root: String,
    /// The split folder that was divided by patient.
    pub split_folder: String,
    /// Images used.
    pub images: usize,
    /// SHA-256 over the sorted `relative path,file sha256` lines of the images used.
    pub manifest_sha256: String,
    /// Files skipped as unreadable, with the reason.
    pub skipped: Vec<String>,
}

/// How the model was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// Optimiser, schedule and stopping settings.
    pub config: TrainConfig,
    /// Free-form recipe details (augmentation, frozen features, command line).
    pub recipe: serde_json::Value,
    /// Epochs run.
    pub epochs_run: usize,
    /// The epoch whose weights were kept.
    pub best_epoch: usize,
    /// Wall-clock seconds of the whole training command.
    pub seconds: f64,
}

/// Everything needed to use and to reproduce a trained model: `config.json` in a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleConfig {
    /// Layout version of this file.
    pub format_version: u32,
    /// The not-for-diagnosis notice.
    pub disclaimer: String,
    /// The network.
    pub architecture: Architecture,
    /// How films become inputs.
    pub preprocessing: Preprocessing,
    /// The decision threshold.
    pub threshold: ThresholdChoice,
    /// The run's seed.
    pub seed: u64,
    /// The patient-level split.
    pub split: SplitRecord,
    /// The data.
    pub data: DataRecord,
    /// The training run.
    pub training: TrainingRecord,
    /// Metrics on the validation side at the chosen threshold.
    pub validation_metrics: Metrics,
    /// Metrics on the held-out test side at the chosen threshold (never used for a choice).
    pub heldout_test_metrics: Metrics,
    /// Temperature scaling fitted on validation; `None` in bundles from before format 2.
    #[serde(default)]
    pub calibration: Option<TemperatureScaling>,
    /// Further thresholds chosen on validation (target sensitivity / specificity); empty in
    /// bundles from before format 2.
    #[serde(default)]
    pub operating_points: Vec<NamedThreshold>,
    /// Out-of-distribution statistics (training films) and thresholds (validation films);
    /// `None` in bundles from before they existed.
    #[serde(default)]
    pub ood: Option<OodStatistics>,
}

impl BundleConfig {
    /// A config with the standard disclaimer and format version.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        architecture: Architecture,
        preprocessing: Preprocessing,
        threshold: ThresholdChoice,
        seed: u64,
        split: SplitRecord,
        data: DataRecord,
        training: TrainingRecord,
        validation_metrics: Metrics,
        heldout_test_metrics: Metrics,
    ) -> Self {
        BundleConfig {
            format_version: BUNDLE_FORMAT_VERSION,
            disclaimer: DISCLAIMER.to_string(),
            architecture,
            preprocessing,
            threshold,
            seed,
            split,
            data,
            training,
            validation_metrics,
            heldout_test_metrics,
            calibration: None,
            operating_points: Vec::new(),
            ood: None,
        }
    }

    /// What this config lacks that an evaluation report would show, in words (empty when
    /// nothing is missing).
    pub fn missing_parts(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if self.calibration.is_none() {
            missing.push(format!(
                "no temperature calibration (bundle format {}): probabilities are shown \
                 uncalibrated; run `cargo run --example calibrate -- --model <bundle> --data <root>` \
                 to fit one on the bundle's validation patients",
                self.format_version
            ));
        }
        if self.operating_points.is_empty() {
            missing.push(format!(
                "no alternative operating points (bundle format {}): only the main threshold \
                 ({:.4}) is stored",
                self.format_version, self.threshold.value
            ));
        }
        if self.ood.is_none() {
            missing.push(
                "no out-of-distribution statistics: predictions carry no warning for films unlike \
                 the training films; run `cargo run --example fit_ood -- --model <bundle> --data \
                 <root>` to add them"
                    .to_string(),
            );
        }
        missing
    }
}

/// How far films lie from the training films, in two views, each with a threshold at a high
/// quantile of the validation films' distances:
///
/// - `features`: the model's pooled features ([`Classifier::pooled_features`]): what the
///   decision is made from. It catches most non-chest images, but a network can map an
///   inverted film to features much like a real one's (measured: both shipped models do).
/// - `appearance`: [`appearance`]'s descriptor of the film: an [`APPEARANCE_SIDE`] x
///   [`APPEARANCE_SIDE`] thumbnail (the coarse layout of dark background, bright mediastinum and
///   grey lungs) and, on the same grid, how much fine structure each region holds and how fine
///   it is; inverted, blank, magnified and non-chest images break it. Measured: a network
///   fine-tuned with strong augmentation maps blank and heavily magnified films to features
///   close to real ones, so the features alone do not suffice.
///
/// The reported score is the larger of the two distances, each divided by its threshold: above
/// 1, the film is unlike the training films in at least one view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodStatistics {
    /// Distance on the model's pooled features.
    pub features: FeatureDistance,
    /// Distance on the film's [`appearance`] descriptor.
    pub appearance: FeatureDistance,
}

/// Side of the grids [`OodStatistics::appearance`] measures.
pub const APPEARANCE_SIDE: u32 = 8;

/// Length of [`appearance`]'s descriptor.
pub const APPEARANCE_DIM: usize = 3 * (APPEARANCE_SIDE * APPEARANCE_SIDE) as usize;

/// The film's appearance descriptor on an `APPEARANCE_SIDE`-square grid: its area-averaged
/// thumbnail ([`thumbnail`]), its fine edge energy (neighbouring pixels, [`edge_energy`]), and
/// the log-ratio of fine to coarse (4 pixels apart) edge energy, which drops when a film is
/// magnified or blurred.
pub fn appearance(film: &GrayImage) -> Vec<f32> {
    let mut descriptor = thumbnail(film, APPEARANCE_SIDE);
    let fine = edge_energy(film, APPEARANCE_SIDE, 1);
    let coarse = edge_energy(film, APPEARANCE_SIDE, 4);
    // The offset keeps blank regions (both zero) finite and at a ratio of 1.
    let ratio = fine
        .iter()
        .zip(&coarse)
        .map(|(f, c)| ((f + 1e-3) / (c + 1e-3)).ln());
    descriptor.extend(fine.iter().copied());
    descriptor.extend(ratio);
    descriptor
}

impl OodStatistics {
    /// The combined score of one film from its pooled features and its [`appearance`]
    /// descriptor.
    pub fn score(&self, features: &[f32], descriptor: &[f32]) -> Result<f64, TrainError> {
        let f = self.features.score(features)? / self.features.threshold;
        let a = self.appearance.score(descriptor)? / self.appearance.threshold;
        Ok(f.max(a))
    }

    /// Whether a combined score flags the film (NaN, from a broken input, does).
    pub fn is_outlier(score: f64) -> bool {
        score.is_nan() || score > 1.0
    }
}

/// One film's prediction with its out-of-distribution warning.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Pneumonia probability (uncalibrated).
    pub probability: f64,
    /// Distance to the training films ([`OodStatistics::score`]: above 1 is unlike them);
    /// `None` when the bundle has no statistics.
    pub ood_score: Option<f64>,
    /// Whether the score lies above the bundle's threshold: the film is unlike the training
    /// films and the probability is extrapolation. `None` when the bundle has no statistics.
    pub out_of_distribution: Option<bool>,
}

/// A trained model ready to predict: weights, network and config.
pub struct Bundle {
    /// What the bundle's `config.json` says.
    pub config: BundleConfig,
    /// The network.
    pub model: Classifier,
    /// Its variables.
    pub varmap: VarMap,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::BundleIo {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl Bundle {
    /// Weights file name inside a bundle directory.
    pub const WEIGHTS: &'static str = "model.safetensors";
    /// Config file name inside a bundle directory.
    pub const CONFIG: &'static str = "config.json";

    /// Writes `model.safetensors` and `config.json` into `dir` (created if needed).
    pub fn save(dir: &Path, config: &BundleConfig, varmap: &VarMap) -> Result<(), TrainError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let weights = dir.join(Self::WEIGHTS);
        varmap.save(&weights).map_err(|e| io_error(&weights, e))?;
        let config_path = dir.join(Self::CONFIG);
        let json = serde_json::to_string_pretty(config).map_err(|e| io_error(&config_path, e))?;
        std::fs::write(&config_path, json + "\n").map_err(|e| io_error(&config_path, e))
    }

    /// Reads a bundle directory; every weight must be present with its shape.
    pub fn load(dir: &Path, device: &Device) -> Result<Bundle, TrainError> {
        let config_path: PathBuf = dir.join(Self::CONFIG);
        let text = std::fs::read_to_string(&config_path).map_err(|e| io_error(&config_path, e))?;
        let config: BundleConfig =
            serde_json::from_str(&text).map_err(|e| io_error(&config_path, e))?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = Classifier::new(&config.architecture, vb)?;
        load_weights_strict(&varmap, &dir.join(Self::WEIGHTS), &[])?;
        Ok(Bundle {
            config,
            model,
            varmap,
        })
    }

    /// Pooled features (row-major, [`Classifier::pooled_features`]) of films already resized
    /// to the bundle's input size, and their width.
    pub fn pooled_features(
        &self,
        images: &[&GrayImage],
        batch_size: usize,
        device: &Device,
    ) -> Result<(Vec<f32>, usize), TrainError> {
        let mut rows = Vec::new();
        let mut dim = 0;
        for chunk in images.chunks(batch_size.max(1)) {
            let x = images_to_tensor(chunk, &self.config.preprocessing, device)?;
            let f = self.model.pooled_features(&x)?.detach();
            dim = f.dim(1)?;
            rows.extend(f.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok((rows, dim))
    }

    /// Predictions with their out-of-distribution warnings for films already resized to the
    /// bundle's input size (one forward pass: the probability comes from the same features).
    pub fn predict_with_ood(
        &self,
        images: &[&GrayImage],
        batch_size: usize,
        device: &Device,
    ) -> Result<Vec<Prediction>, TrainError> {
        let mut predictions = Vec::with_capacity(images.len());
        for chunk in images.chunks(batch_size.max(1)) {
            let x = images_to_tensor(chunk, &self.config.preprocessing, device)?;
            let features = self.model.pooled_features(&x)?.detach();
            let p = candle_nn::ops::sigmoid(&self.model.logits_from_pooled(&features)?)?;
            let rows = features.flatten_all()?.to_vec1::<f32>()?;
            let dim = features.dim(1)?;
            for ((probability, row), film) in p
                .to_vec1::<f32>()?
                .into_iter()
                .zip(rows.chunks_exact(dim))
                .zip(chunk)
            {
                let score = match &self.config.ood {
                    Some(ood) => Some(ood.score(row, &appearance(film))?),
                    None => None,
                };
                predictions.push(Prediction {
                    probability: f64::from(probability),
                    ood_score: score,
                    out_of_distribution: score.map(OodStatistics::is_outlier),
                });
            }
        }
        Ok(predictions)
    }

    /// Pneumonia probabilities for films already resized to the bundle's input size.
    pub fn predict(
        &self,
        images: &[&GrayImage],
        batch_size: usize,
        device: &Device,
    ) -> Result<Vec<f64>, TrainError> {
        let mut probabilities = Vec::with_capacity(images.len());
        for chunk in images.chunks(batch_size.max(1)) {
            let x = images_to_tensor(chunk, &self.config.preprocessing, device)?;
            let p = candle_nn::ops::sigmoid(&self.model.logits(&x)?)?;
            probabilities.extend(p.to_vec1::<f32>()?.into_iter().map(f64::from));
        }
        Ok(probabilities)
    }
}
