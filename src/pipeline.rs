//! Steps shared by the training and evaluation programs: device choice, data preparation,
//! the threshold and metrics that close a run, and the bundle's records.

use std::path::Path;

use candle_core::Device;
use sha2::{Digest, Sha256};
use xray_data::{
    load_images, scan_split, split_by_patient, DecodedSet, GrayImage, LoadOptions, PatientSplit,
    Side, SplitConfig,
};
use xray_eval::{choose_threshold, Metrics, ThresholdRule};
use xray_train::{DataRecord, SplitRecord, ThresholdChoice, TrainError};

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
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1); // -1: never trim (mallopt(3))
    }
}

/// The fastest device compiled in and present: CUDA, then Metal, else CPU (or CPU if `force_cpu`).
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
