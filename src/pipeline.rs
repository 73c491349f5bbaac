//! Steps shared by the training and evaluation programs: device choice, data preparation,
//! the threshold and metrics that close a run, and the bundle's records. Process tuning (the
//! allocator, the CUDA memory pool) is [`xray_ops::process`], for binaries to call.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use sha2::{Digest, Sha256};
use xray_data::{
    load_images, scan_split, split_by_patient, split_from_lists, DecodedSet, GrayImage,
    LoadOptions, PatientLists, PatientSplit, Sample, Side, SplitConfig,
};
use xray_eval::DISCLAIMER;
use xray_eval::{
    choose_threshold, ConformalBounds, ConfusionMatrix, Metrics, TemperatureScaling, ThresholdRule,
};
use xray_infer::{
    split_origin, Bundle, BundleConfig, DataRecord, NamedThreshold, OodStatistics, ReferBand,
    SplitRecord, ThresholdChoice, TrainingRecord,
};
use xray_train::{TrainConfig, TrainError};

use crate::recipes::TrainedModel;

/// The fastest device compiled in and present: CUDA, then Metal, else CPU (or CPU if `force_cpu`).
/// A program may then tune it with [`xray_ops::process::keep_freed_device_memory`].
pub fn pick_device(force_cpu: bool) -> candle_core::Result<Device> {
    if force_cpu {
        return Ok(Device::Cpu);
    }
    if candle_core::utils::cuda_is_available() {
        return Device::new_cuda(0);
    }
    if candle_core::utils::metal_is_available() {
        return Device::new_metal(0);
    }
    Ok(Device::Cpu)
}

/// Keeps the samples whose patients are on `side` of a bundle's split.
pub fn keep_side(samples: &mut Vec<Sample>, record: &SplitRecord, side: Side) {
    let wanted: std::collections::HashSet<&String> = record.patients(side).iter().collect();
    samples.retain(|s| wanted.contains(&s.patient_id));
}

/// The samples of `<data>/<split>` whose patients are on `side` of a bundle's split (every
/// sample for `None`); an error if none is left.
pub fn samples_on_side(
    data: &Path,
    split: &str,
    record: &SplitRecord,
    side: Option<Side>,
) -> Result<Vec<Sample>, crate::Error> {
    let mut samples = scan_split(data, split)?;
    if let Some(side) = side {
        keep_side(&mut samples, record, side);
    }
    if samples.is_empty() {
        let side = side.map_or("any".to_string(), |s| format!("the {s}"));
        return Err(crate::ErrorKind::Invalid(format!(
            "no image of {}/{split} belongs to {side} patients of the bundle's split",
            data.display()
        ))
        .into());
    }
    Ok(samples)
}

/// The films of the bundle's own split folder under `data` whose patients are on `side`,
/// decoded at the bundle's input size.
pub fn bundle_side_films(
    data: &Path,
    bundle: &BundleConfig,
    side: Side,
) -> Result<DecodedSet, crate::Error> {
    let samples = samples_on_side(data, &bundle.data.split_folder, &bundle.split, Some(side))?;
    decode_for_bundle(samples, bundle, false)
}

/// `samples` decoded at the bundle's input size; with `skip_unreadable`, unreadable files are
/// listed in the set instead of stopping.
pub fn decode_for_bundle(
    samples: Vec<Sample>,
    bundle: &BundleConfig,
    skip_unreadable: bool,
) -> Result<DecodedSet, crate::Error> {
    let options = LoadOptions {
        size: bundle.preprocessing.size,
        skip_unreadable,
    };
    Ok(load_images(samples, &options)?)
}

/// Decoded images of one split folder and their patient-level split.
pub struct PreparedData {
    /// The images, decoded once and kept in memory.
    pub set: DecodedSet,
    /// Which images train, validate and test.
    pub split: PatientSplit,
    /// The dataset root.
    pub root: String,
    /// The split folder that was divided.
    pub split_folder: String,
    /// The split file the sides came from, if [`PreparedData::use_split_file`] set them.
    pub split_source: Option<String>,
}

/// Scans `<root>/<split_folder>`, optionally keeps the first `limit_per_class` images of each
/// class (for smoke tests), decodes at `size`, and splits by patient.
pub fn prepare_data(
    root: &Path,
    split_folder: &str,
    size: u32,
    skip_unreadable: bool,
    limit_per_class: Option<usize>,
    split_config: &SplitConfig,
) -> Result<PreparedData, TrainError> {
    let mut samples = scan_split(root, split_folder)?;
    if let Some(limit) = limit_per_class {
        let mut kept = [0usize; 2];
        samples.retain(|s| {
            let k = &mut kept[s.label as usize];
            *k += 1;
            *k <= limit
        });
    }
    let set = load_images(
        samples,
        &LoadOptions {
            size,
            skip_unreadable,
        },
    )?;
    let split = split_by_patient(&set.samples, Some(&set.content_hashes), split_config)?;
    Ok(PreparedData {
        set,
        split,
        root: root.display().to_string(),
        split_folder: split_folder.to_string(),
        split_source: None,
    })
}

impl PreparedData {
    /// Replaces the seeded split by the patient lists of `path`: a JSON object with
    /// `train_patients`, `validation_patients` and `test_patients`, or a bundle's `config.json`
    /// (its `split` is taken). Every patient of the data must be listed
    /// ([`xray_data::split_from_lists`]); the bundle records the file.
    pub fn use_split_file(&mut self, path: &Path) -> Result<(), TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |reason: String| TrainError::InvalidConfig {
            name: "split file",
            reason: format!("{}: {reason}", path.display()),
        };
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if let Some(split) = value.get_mut("split") {
            value = split.take();
        }
        let lists: PatientLists =
            serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        self.split =
            split_from_lists(&self.set.samples, &lists).map_err(|e| invalid(e.to_string()))?;
        self.split_source = Some(path.display().to_string());
        Ok(())
    }

    /// The images of one side.
    pub fn images(&self, side: Side) -> Vec<&GrayImage> {
        self.split
            .side(side)
            .iter()
            .map(|&i| &self.set.images[i])
            .collect()
    }

    /// The targets (1 pneumonia, 0 normal) of one side.
    pub fn targets(&self, side: Side) -> Vec<f32> {
        self.split
            .side(side)
            .iter()
            .map(|&i| self.set.samples[i].label.target())
            .collect()
    }

    /// The labels (true: pneumonia) of one side.
    pub fn labels(&self, side: Side) -> Vec<bool> {
        self.targets(side).into_iter().map(|t| t > 0.5).collect()
    }

    /// The record of the split for the bundle.
    pub fn split_record(&self, config: &SplitConfig) -> SplitRecord {
        let lists = PatientLists::of(&self.split, &self.set.samples);
        let mut hasher = Sha256::new();
        for side in Side::ALL {
            let list = lists.side(side).join("\n");
            hasher.update(format!("[{}]\n{list}\n", side.name()));
        }
        SplitRecord {
            config: *config,
            images: [
                self.split.train.len(),
                self.split.validation.len(),
                self.split.test.len(),
            ],
            lists,
            patients_sha256: hex(&hasher.finalize()),
            source: self.split_source.clone(),
        }
    }

    /// The record of the data for the bundle.
    pub fn data_record(&self) -> DataRecord {
        let root = Path::new(&self.root);
        let mut lines: Vec<String> = self
            .set
            .samples
            .iter()
            .zip(&self.set.content_hashes)
            .map(|(s, h)| {
                format!(
                    "{},{}",
                    s.path.strip_prefix(root).unwrap_or(&s.path).display(),
                    hex(h)
                )
            })
            .collect();
        lines.sort();
        DataRecord {
            root: self.root.clone(),
            split_folder: self.split_folder.clone(),
            images: self.set.samples.len(),
            manifest_sha256: hex(&Sha256::digest(lines.join("\n"))),
            skipped: self
                .set
                .skipped
                .iter()
                .map(|s| format!("{}: {}", s.path.display(), s.reason))
                .collect(),
        }
    }
}

pub use xray_infer::hex;

/// The threshold chosen on validation by `rule`, and the metrics it gives on validation and on
/// the held-out test side.
pub fn close_run(
    rule: ThresholdRule,
    validation: (&[f64], &[bool]),
    test: (&[f64], &[bool]),
) -> Result<(ThresholdChoice, Metrics, Metrics), TrainError> {
    let value = choose_threshold(validation.0, validation.1, rule)?;
    let val_metrics = Metrics::compute(validation.0, validation.1, value)?;
    let test_metrics = Metrics::compute(test.0, test.1, value)?;
    Ok((ThresholdChoice { value, rule }, val_metrics, test_metrics))
}

/// The error rates per class at which every bundle stores a conformal operating point, with
/// their names. A bundle's refer band and default threshold use one of them (its `refer_alpha`).
pub const CONFORMAL_POINTS: [(&str, f64); 3] = [
    ("conformal_0.025", 0.025),
    ("conformal_0.05", 0.05),
    ("conformal_0.10", 0.10),
];

/// The refer band's error rate per class where none is asked for: the rate of the bundles
/// before it became a setting, and MobileNetV2's choice on the severe-shift design.
pub const DEFAULT_REFER_ALPHA: f64 = 0.025;

/// The rules behind a bundle's alternative operating points, all chosen on validation.
pub fn standard_operating_rules() -> Vec<(&'static str, ThresholdRule)> {
    let conformal = CONFORMAL_POINTS
        .iter()
        .map(|&(name, alpha)| (name, ThresholdRule::Conformal { alpha }));
    conformal
        .chain([
            ("youden", ThresholdRule::Youden),
            (
                "sensitivity_0.95",
                ThresholdRule::TargetSensitivity { target: 0.95 },
            ),
            (
                "sensitivity_0.975",
                ThresholdRule::TargetSensitivity { target: 0.975 },
            ),
            (
                "specificity_0.90",
                ThresholdRule::TargetSpecificity { target: 0.90 },
            ),
            (
                "specificity_0.95",
                ThresholdRule::TargetSpecificity { target: 0.95 },
            ),
        ])
        .collect()
}

/// What a bundle fits on its validation side's probabilities besides its main threshold.
pub struct ValidationFit {
    /// Temperature scaling.
    pub calibration: TemperatureScaling,
    /// The standard operating points ([`standard_operating_rules`]).
    pub operating_points: Vec<NamedThreshold>,
    /// The conformal refer band at the error rate asked for.
    pub refer_band: ReferBand,
}

/// Temperature scaling, the standard operating points and the refer band at error rate
/// `refer_alpha` per class, all fitted on the validation side's probabilities.
pub fn fit_on_validation(
    probabilities: &[f64],
    labels: &[bool],
    refer_alpha: f64,
) -> Result<ValidationFit, TrainError> {
    let calibration = TemperatureScaling::fit(
        probabilities,
        labels,
        "the bundle's validation patients (never its held-out test patients)",
    )?;
    let mut points = Vec::new();
    for (name, rule) in standard_operating_rules() {
        let value = choose_threshold(probabilities, labels, rule)?;
        let m = ConfusionMatrix::at_threshold(probabilities, labels, value)?;
        points.push(NamedThreshold {
            name: name.to_string(),
            value,
            rule,
            validation_sensitivity: m.recall(),
            validation_specificity: m.specificity(),
        });
    }
    let bounds = ConformalBounds::fit(probabilities, labels, refer_alpha)?;
    Ok(ValidationFit {
        calibration,
        operating_points: points,
        refer_band: ReferBand::from_conformal(&bounds, "the bundle's validation patients"),
    })
}

/// A one-screen table of metrics, labelled with where they come from.
pub fn metrics_table(rows: &[(&str, &Metrics)]) -> String {
    let mut out = format!(
        "{:<28} {:>5} {:>8} {:>9} {:>7} {:>11} {:>6} {:>6} {:>9}\n",
        "data", "n", "accuracy", "precision", "recall", "specificity", "f1", "auc", "threshold"
    );
    for (name, m) in rows {
        out += &format!(
            "{:<28} {:>5} {:>8.4} {:>9.4} {:>7.4} {:>11.4} {:>6.4} {:>6.4} {:>9.4}\n",
            name, m.n, m.accuracy, m.precision, m.recall, m.specificity, m.f1, m.auc, m.threshold
        );
    }
    out
}

/// Logs (at info level) what [`prepare_data`] read: skipped files and the size of each side.
pub fn describe_data(data: &PreparedData, seed: u64) {
    if !data.set.skipped.is_empty() {
        log::warn!("skipped {} unreadable image(s):", data.set.skipped.len());
        for s in &data.set.skipped {
            log::warn!("  {}: {}", s.path.display(), s.reason);
        }
    }
    log::info!(
        "{} images: train {}, validation {}, test {} (patient-level split, {})",
        data.set.samples.len(),
        data.split.train.len(),
        data.split.validation.len(),
        data.split.test.len(),
        split_origin(data.split_source.as_deref(), seed),
    );
}

/// The highest threshold reaching `target_sensitivity` when one is given, else the conformal
/// pneumonia bound at `refer_alpha` (the refer band's upper edge).
pub fn threshold_rule(target_sensitivity: Option<f64>, refer_alpha: f64) -> ThresholdRule {
    target_sensitivity.map_or(ThresholdRule::Conformal { alpha: refer_alpha }, |target| {
        ThresholdRule::TargetSensitivity { target }
    })
}

/// How a finished training run was set up: what [`save_run`] records beside the model.
pub struct RunContext {
    /// The trainer's settings.
    pub config: TrainConfig,
    /// The split's settings.
    pub split_config: SplitConfig,
    /// When the program started, for the total time.
    pub started: Instant,
    /// How to choose the threshold on validation.
    pub rule: ThresholdRule,
    /// The refer band's error rate per class.
    pub refer_alpha: f64,
}

/// Chooses the threshold on validation, scores both held-out sides, writes the bundle and
/// `train_log.jsonl` into `out`, and logs the metrics table.
pub fn save_run(
    out: &Path,
    data: &PreparedData,
    trained: TrainedModel,
    run: RunContext,
) -> Result<BundleConfig, TrainError> {
    let varmap = &trained.varmap;
    let (threshold, val_metrics, test_metrics) = close_run(
        run.rule,
        (&trained.scores.validation, &data.labels(Side::Validation)),
        (&trained.scores.test, &data.labels(Side::Test)),
    )?;
    let mut recipe = trained.recipe;
    recipe["arguments"] = serde_json::json!(std::env::args().skip(1).collect::<Vec<_>>());
    let training = TrainingRecord {
        config: run.config.to_record(),
        recipe,
        epochs_run: trained.scores.report.epochs.len(),
        best_epoch: trained.scores.report.best_epoch,
        seconds: run.started.elapsed().as_secs_f64(),
    };
    let fit = fit_on_validation(
        &trained.scores.validation,
        &data.labels(Side::Validation),
        run.refer_alpha,
    )?;
    let mut bundle = BundleConfig::new(
        trained.architecture,
        trained.preprocessing,
        threshold,
        run.config.seed,
        data.split_record(&run.split_config),
        data.data_record(),
        training,
        val_metrics,
        test_metrics,
    );
    bundle.calibration = Some(fit.calibration);
    bundle.operating_points = fit.operating_points;
    bundle.refer_band = Some(fit.refer_band);
    Bundle::save(out, &bundle, varmap)?;
    // The statistics are read through the saved bundle, so they describe exactly what loads.
    let device = varmap
        .all_vars()
        .first()
        .map(|v| v.device().clone())
        .unwrap_or(Device::Cpu);
    let saved = Bundle::load(out, &device)?;
    let ood = OodStatistics::fit(
        &saved,
        &data.images(Side::Train),
        &data.images(Side::Validation),
    )?;
    log::info!(
        "out-of-distribution thresholds: features {:.3}, appearance {:.3} ({}th percentile of \
         validation films)",
        ood.features.threshold,
        ood.appearance.threshold,
        xray_infer::OOD_QUANTILE * 100.0
    );
    bundle.ood = Some(ood);
    Bundle::save(out, &bundle, varmap)?;
    let log_path = out.join("train_log.jsonl");
    let log: Vec<String> = trained
        .scores
        .report
        .epochs
        .iter()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect();
    std::fs::write(&log_path, log.join("\n") + "\n").map_err(|source| TrainError::Io {
        path: log_path,
        source,
    })?;
    log::info!(
        "\n{}",
        metrics_table(&[
            ("own validation split", &val_metrics),
            ("own held-out test split", &test_metrics)
        ])
    );
    log::info!(
        "saved {} (best epoch {}, {:.0} s in all). {DISCLAIMER}",
        out.display(),
        trained.scores.report.best_epoch,
        run.started.elapsed().as_secs_f64()
    );
    Ok(bundle)
}
