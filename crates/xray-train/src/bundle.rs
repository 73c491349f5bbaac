use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use xray_data::{images_to_tensor, GrayImage, Preprocessing, SplitConfig};
use xray_eval::{Metrics, TemperatureScaling, ThresholdRule, DISCLAIMER};
use xray_models::{load_weights_strict, Architecture, Classifier};

use crate::{TrainConfig, TrainError};

/// Version of the `config.json` layout; bumped when fields change meaning.
/// Version 2 added `calibration` and `operating_points`; version-1 files still load, without them.
pub const BUNDLE_FORMAT_VERSION: u32 = 2;

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
        missing
    }
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
