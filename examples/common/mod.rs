//! What every example program shares.

use std::process::ExitCode;

/// Runs `body` and turns an error into one line on stderr (the whole cause chain, outermost
/// first) and a failing exit code, instead of a multi-line report or a panic.
pub fn run_main(body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Which patients of a folder a program scores: all, or one held-out side of a bundle's split.
// Not every example filters by patient; those that do share this.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Holdout {
    /// Every image of the folder.
    All,
    /// Only the bundle's validation patients.
    Validation,
    /// Only the bundle's held-out test patients.
    Test,
}

#[allow(dead_code)]
impl Holdout {
    /// Keeps the samples whose patient is on this side of `split` (all of them for `All`).
    pub fn retain(
        self,
        samples: &mut Vec<xray_pneumonia::data::Sample>,
        split: &xray_pneumonia::train::SplitRecord,
    ) {
        let side = match self {
            Holdout::All => return,
            Holdout::Validation => &split.validation_patients,
            Holdout::Test => &split.test_patients,
        };
        let wanted: std::collections::HashSet<&String> = side.iter().collect();
        samples.retain(|s| wanted.contains(&s.patient_id));
    }

    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Holdout::All => "all",
            Holdout::Validation => "validation",
            Holdout::Test => "test",
        }
    }
}

/// Which training augmentation a training program uses.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AugmentationKind {
    /// Geometry, brightness and contrast (`AugmentConfig::default`).
    Standard,
    /// Wider ranges plus gamma, blur and noise (`AugmentConfig::strong`).
    Strong,
}

#[allow(dead_code)]
impl AugmentationKind {
    /// The augmentation this kind names.
    pub fn config(self) -> xray_pneumonia::data::AugmentConfig {
        match self {
            AugmentationKind::Standard => xray_pneumonia::data::AugmentConfig::default(),
            AugmentationKind::Strong => xray_pneumonia::data::AugmentConfig::strong(),
        }
    }
}

/// The films of `patients` in the bundle's split folder under `data`, decoded at the bundle's
/// input size; an error if none of them is there.
#[allow(dead_code)]
pub fn bundle_films(
    data: &std::path::Path,
    bundle: &xray_pneumonia::train::Bundle,
    patients: &[String],
) -> anyhow::Result<xray_pneumonia::data::DecodedSet> {
    let split = &bundle.config.data.split_folder;
    let wanted: std::collections::HashSet<&String> = patients.iter().collect();
    let mut samples = xray_pneumonia::data::scan_split(data, split)?;
    samples.retain(|s| wanted.contains(&s.patient_id));
    anyhow::ensure!(
        !samples.is_empty(),
        "no image of {}/{split} belongs to the bundle's patients",
        data.display()
    );
    let options = xray_pneumonia::data::LoadOptions {
        size: bundle.config.preprocessing.size,
        skip_unreadable: false,
    };
    Ok(xray_pneumonia::data::load_images(samples, &options)?)
}

/// Loads the bundle in `dir` onto `device`, naming the directory if that fails.
#[allow(dead_code)]
pub fn load_bundle(
    dir: &std::path::Path,
    device: &candle_core::Device,
) -> anyhow::Result<xray_pneumonia::train::Bundle> {
    use anyhow::Context;
    xray_pneumonia::train::Bundle::load(dir, device)
        .with_context(|| format!("loading bundle {}", dir.display()))
}
