//! Steps shared by the training and evaluation programs: device choice, data preparation,
//! the threshold and metrics that close a run, and the bundle's records.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use candle_nn::VarMap;
use sha2::{Digest, Sha256};
use xray_data::Preprocessing;
use xray_data::{
    load_images, scan_split, split_by_patient, DecodedSet, GrayImage, LoadOptions, PatientSplit,
    Side, SplitConfig,
};
use xray_eval::DISCLAIMER;
use xray_eval::{
    choose_threshold, ConfusionMatrix, FeatureDistance, Metrics, TemperatureScaling, ThresholdRule,
};
use xray_models::Architecture;
use xray_train::{
    appearance, Bundle, BundleConfig, DataRecord, NamedThreshold, OodStatistics, SplitRecord,
    ThresholdChoice, TrainConfig, TrainError, TrainReport, TrainingRecord, APPEARANCE_DIM,
};

/// Makes glibc keep freed memory for reuse instead of returning every large block to the kernel.
///
/// Tensors are large, short-lived allocations; by default glibc serves each from a fresh `mmap`
/// whose pages fault in again, which here made inference 4x slower (system time above user
/// time). Call it first thing in `main`. Does nothing off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is called before any threads
    // start and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // -1: never trim (mallopt(3)).
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        // Worker threads would otherwise get arenas of their own, whose heaps glibc unmaps
        // whenever they fall empty, whatever the trim threshold: their pages then fault in
        // again at the next step.
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Makes the CUDA driver keep memory freed on `device` in its pool for reuse; does nothing on
/// other devices (or without the `cuda` feature).
///
/// candle allocates through the driver's stream-ordered pool, which by default hands freed
/// memory back at every synchronisation, so each step maps its tensors' memory again. On an
/// H200 this made a 58 MB element-wise kernel 4-5x slower than the memory allows (measured in
/// `docs/performance-notes.md`). [`pick_device`] calls it for the CUDA device it opens.
pub fn keep_freed_device_memory(device: &Device) -> candle_core::Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let stream = cuda.cuda_stream();
        let context = stream.context();
        if !context.has_async_alloc() {
            return Ok(());
        }
        let failed = |what: &str, e: candle_core::cuda_backend::cudarc::driver::DriverError| {
            candle_core::Error::Msg(format!("keep_freed_device_memory: {what}: {e}"))
        };
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        let mut keep_all = u64::MAX;
        // SAFETY: plain driver calls on a device the context holds; `pool` and `keep_all` are
        // valid for the duration of each call, and the attribute takes a u64.
        unsafe {
            sys::cuDeviceGetDefaultMemPool(&mut pool, context.cu_device())
                .result()
                .map_err(|e| failed("default memory pool", e))?;
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut keep_all as *mut u64).cast(),
            )
            .result()
            .map_err(|e| failed("release threshold", e))?;
        }
    }
    let _ = device;
    Ok(())
}

/// The fastest device compiled in and present: CUDA, then Metal, else CPU (or CPU if `force_cpu`).
pub fn pick_device(force_cpu: bool) -> candle_core::Result<Device> {
    if force_cpu {
        return Ok(Device::Cpu);
    }
    if candle_core::utils::cuda_is_available() {
        let device = Device::new_cuda(0)?;
        keep_freed_device_memory(&device)?;
        return Ok(device);
    }
    if candle_core::utils::metal_is_available() {
        return Device::new_metal(0);
    }
    Ok(Device::Cpu)
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
    })
}

impl PreparedData {
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
        let samples = &self.set.samples;
        let patients = |side| self.split.patients(samples, side);
        let (train, validation, test) = (
            patients(Side::Train),
            patients(Side::Validation),
            patients(Side::Test),
        );
        let mut hasher = Sha256::new();
        for (name, list) in [
            ("train", &train),
            ("validation", &validation),
            ("test", &test),
        ] {
            hasher.update(format!("[{name}]\n{}\n", list.join("\n")));
        }
        SplitRecord {
            config: *config,
            images: [
                self.split.train.len(),
                self.split.validation.len(),
                self.split.test.len(),
            ],
            train_patients: train,
            validation_patients: validation,
            test_patients: test,
            patients_sha256: hex(&hasher.finalize()),
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

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

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

/// The rules behind a bundle's alternative operating points, all chosen on validation.
pub fn standard_operating_rules() -> Vec<(&'static str, ThresholdRule)> {
    vec![
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
    ]
}

/// Temperature scaling and the standard operating points, both fitted on the validation side's
/// probabilities: what a format-2 bundle stores besides its main threshold.
pub fn fit_on_validation(
    probabilities: &[f64],
    labels: &[bool],
) -> Result<(TemperatureScaling, Vec<NamedThreshold>), TrainError> {
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
    Ok((calibration, points))
}

/// The quantile of validation films' distances that becomes each out-of-distribution threshold
/// (features and appearance): together they flag about 1 film in 100 like the validation ones.
pub const OOD_QUANTILE: f64 = 0.995;

/// Fits `bundle`'s out-of-distribution statistics on the (unaugmented) training films and sets
/// each threshold at [`OOD_QUANTILE`] of the validation films' distances.
pub fn fit_ood(
    bundle: &Bundle,
    train_images: &[&GrayImage],
    validation_images: &[&GrayImage],
    device: &Device,
) -> Result<OodStatistics, TrainError> {
    let descriptors = |images: &[&GrayImage]| -> Vec<f32> {
        images.iter().flat_map(|im| appearance(im)).collect()
    };
    let (train, dim) = bundle.pooled_features(train_images, 32, device)?;
    let features = FeatureDistance::fit(&train, dim)?;
    let (validation, _) = bundle.pooled_features(validation_images, 32, device)?;
    let scores = features.scores(&validation)?;
    let features = features.with_threshold(&scores, OOD_QUANTILE)?;
    let appearance = FeatureDistance::fit(&descriptors(train_images), APPEARANCE_DIM)?;
    let scores = appearance.scores(&descriptors(validation_images))?;
    let appearance = appearance.with_threshold(&scores, OOD_QUANTILE)?;
    Ok(OodStatistics {
        features,
        appearance,
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

/// Prints to stderr what [`prepare_data`] read: skipped files and the size of each side.
pub fn describe_data(data: &PreparedData, seed: u64) {
    if !data.set.skipped.is_empty() {
        eprintln!("skipped {} unreadable image(s):", data.set.skipped.len());
        for s in &data.set.skipped {
            eprintln!("  {}: {}", s.path.display(), s.reason);
        }
    }
    eprintln!(
        "{} images: train {}, validation {}, test {} (patient-level split, seed {seed})",
        data.set.samples.len(),
        data.split.train.len(),
        data.split.validation.len(),
        data.split.test.len(),
    );
}

/// Youden's J, or the highest threshold reaching `target_sensitivity` when one is given.
pub fn threshold_rule(target_sensitivity: Option<f64>) -> ThresholdRule {
    target_sensitivity.map_or(ThresholdRule::Youden, |target| {
        ThresholdRule::TargetSensitivity { target }
    })
}

/// What a finished training run hands to [`save_run`].
pub struct FinishedRun {
    /// The network.
    pub architecture: Architecture,
    /// How films became inputs.
    pub preprocessing: Preprocessing,
    /// The trainer's settings.
    pub config: TrainConfig,
    /// The split's settings.
    pub split_config: SplitConfig,
    /// Free-form recipe details; the command-line arguments are added.
    pub recipe: serde_json::Value,
    /// What the trainer reported.
    pub report: TrainReport,
    /// One JSON line per epoch.
    pub log: Vec<String>,
    /// When the program started, for the total time.
    pub started: Instant,
    /// How to choose the threshold on validation.
    pub rule: ThresholdRule,
    /// Pneumonia probabilities of the validation side.
    pub validation_probabilities: Vec<f64>,
    /// Pneumonia probabilities of the held-out test side.
    pub test_probabilities: Vec<f64>,
}

/// Chooses the threshold on validation, scores both held-out sides, writes the bundle and
/// `train_log.jsonl` into `out`, and prints the metrics table.
pub fn save_run(
    out: &Path,
    data: &PreparedData,
    varmap: &VarMap,
    run: FinishedRun,
) -> Result<BundleConfig, TrainError> {
    let (threshold, val_metrics, test_metrics) = close_run(
        run.rule,
        (
            &run.validation_probabilities,
            &data.labels(Side::Validation),
        ),
        (&run.test_probabilities, &data.labels(Side::Test)),
    )?;
    let mut recipe = run.recipe;
    recipe["arguments"] = serde_json::json!(std::env::args().skip(1).collect::<Vec<_>>());
    let training = TrainingRecord {
        config: run.config,
        recipe,
        epochs_run: run.report.epochs.len(),
        best_epoch: run.report.best_epoch,
        seconds: run.started.elapsed().as_secs_f64(),
    };
    let (calibration, operating_points) = fit_on_validation(
        &run.validation_probabilities,
        &data.labels(Side::Validation),
    )?;
    let mut bundle = BundleConfig::new(
        run.architecture,
        run.preprocessing,
        threshold,
        run.config.seed,
        data.split_record(&run.split_config),
        data.data_record(),
        training,
        val_metrics,
        test_metrics,
    );
    bundle.calibration = Some(calibration);
    bundle.operating_points = operating_points;
    Bundle::save(out, &bundle, varmap)?;
    // The statistics are read through the saved bundle, so they describe exactly what loads.
    let device = varmap
        .all_vars()
        .first()
        .map(|v| v.device().clone())
        .unwrap_or(Device::Cpu);
    let saved = Bundle::load(out, &device)?;
    let ood = fit_ood(
        &saved,
        &data.images(Side::Train),
        &data.images(Side::Validation),
        &device,
    )?;
    eprintln!(
        "out-of-distribution thresholds: features {:.3}, appearance {:.3} ({}th percentile of \
         validation films)",
        ood.features.threshold,
        ood.appearance.threshold,
        OOD_QUANTILE * 100.0
    );
    bundle.ood = Some(ood);
    Bundle::save(out, &bundle, varmap)?;
    let log_path = out.join("train_log.jsonl");
    std::fs::write(&log_path, run.log.join("\n") + "\n").map_err(|e| TrainError::BundleIo {
        path: log_path,
        reason: e.to_string(),
    })?;
    eprint!(
        "{}",
        metrics_table(&[
            ("own validation split", &val_metrics),
            ("own held-out test split", &test_metrics)
        ])
    );
    eprintln!(
        "saved {} (best epoch {}, {:.0} s in all). {DISCLAIMER}",
        out.display(),
        run.report.best_epoch,
        run.started.elapsed().as_secs_f64()
    );
    Ok(bundle)
}
