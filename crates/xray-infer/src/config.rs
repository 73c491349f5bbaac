//! What a bundle's `config.json` records: the network, the preprocessing, the operating
//! points, the split, the data, the training run and its metrics.

use serde::{Deserialize, Serialize};
use xray_data::{PatientLists, Preprocessing, Side, SplitConfig};
use xray_eval::{
    prediction_set, ConformalBounds, Metrics, PredictionSet, TemperatureScaling, ThresholdRule,
    DISCLAIMER,
};
use xray_models::Architecture;

use crate::OodStatistics;

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
    /// The patients of each side (`train_patients`, `validation_patients` and `test_patients`
    /// in the JSON).
    #[serde(flatten)]
    pub lists: PatientLists,
    /// SHA-256 over the three sorted patient lists, to compare splits at a glance.
    pub patients_sha256: String,
    /// The split file the lists were read from; `None` when `config`'s seed drew them (then
    /// `config`'s fractions apply, else only its seed, which still seeds training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl SplitRecord {
    /// The patients of one side.
    pub fn patients(&self, side: Side) -> &[String] {
        self.lists.side(side)
    }

    /// Where the sides came from, in words: `patient lists of FILE` or `seed N`.
    pub fn origin(&self) -> String {
        split_origin(self.source.as_deref(), self.config.seed)
    }
}

/// A split's origin in words, as [`SplitRecord::origin`] gives it: the split file when there
/// is one, else the seed that drew the sides.
pub fn split_origin(source: Option<&str>, seed: u64) -> String {
    source.map_or(format!("seed {seed}"), |file| {
        format!("patient lists of {file}")
    })
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
    /// Optimiser, schedule and stopping settings, as the trainer recorded them (its
    /// `TrainConfig`, kept as JSON so that inference needs no trainer).
    pub config: serde_json::Value,
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
    /// Probabilities too uncertain to call either way: a film whose probability falls in the
    /// band is referred. `None` (no band) in bundles that do not store one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refer_band: Option<ReferBand>,
}

/// Where the model may call a film, from class-conditional split conformal prediction on
/// validation films ([`ConformalBounds`]): a film may be called normal while its (uncalibrated)
/// probability is at most `normal_upper`, and pneumonia from `pneumonia_lower` up. A film that
/// may be called both or neither is referred.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferBand {
    /// Normal stays in the prediction set up to this probability.
    pub normal_upper: f64,
    /// Pneumonia stays in the prediction set from this probability up.
    pub pneumonia_lower: f64,
    /// The error rate per class the sets were built for.
    pub alpha: f64,
    /// How the band was chosen, in words (the rule and the films it was fitted on).
    pub rule: String,
}

impl ReferBand {
    /// The band of `bounds`, fitted on the films `fitted_on` describes.
    pub fn from_conformal(bounds: &ConformalBounds, fitted_on: &str) -> ReferBand {
        ReferBand {
            normal_upper: bounds.normal_upper,
            pneumonia_lower: bounds.pneumonia_lower,
            alpha: bounds.alpha,
            rule: format!(
                "class-conditional split conformal prediction at error rate {} per class, on \
                 {} normal and {} pneumonia films of {fitted_on}",
                bounds.alpha, bounds.normals, bounds.pneumonias
            ),
        }
    }

    /// The conformal prediction set of a film with this probability.
    pub fn prediction_set(&self, probability: f64) -> PredictionSet {
        prediction_set(self.normal_upper, self.pneumonia_lower, probability)
    }

    /// Whether a film with this probability is referred (its set is not one class).
    pub fn contains(&self, probability: f64) -> bool {
        !self.prediction_set(probability).is_call()
    }
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
            refer_band: None,
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
