//! Fits temperature scaling and the standard operating points (Youden J, sensitivity 0.95 and
//! 0.975, specificity 0.90 and 0.95) on a bundle's own validation patients and stores them in its
//! `config.json`, upgrading a format-1 bundle to format 2. Training runs do this themselves; this
//! is for bundles trained before. The held-out test patients are never read.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use common::bundle_films;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use xray_pneumonia::data::Label;
use xray_pneumonia::eval::DISCLAIMER;
use xray_pneumonia::pipeline::{fit_on_validation, keep_freed_memory, pick_device};
use xray_pneumonia::train::{Bundle, BUNDLE_FORMAT_VERSION};

#[derive(Parser, Debug)]
#[command(about = "Fit calibration and operating points on a bundle's validation patients")]
struct Args {
    /// Model bundle directory; its config.json is rewritten.
    #[arg(long)]
    model: PathBuf,
    /// Dataset root the bundle was trained on (its split folder is read from the bundle).
    #[arg(long, default_value = "../shared/data/kermany224")]
    data: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Run on CPU even if a GPU is available.
    #[arg(long)]
    cpu: bool,
}

fn main() -> std::process::ExitCode {
    common::run_main(run)
}

fn run() -> Result<()> {
    keep_freed_memory();
    let args = Args::parse();
    eprintln!("{DISCLAIMER}");
    let device = pick_device(args.cpu)?;
    let mut bundle = common::load_bundle(&args.model, &device)?;
    let set = bundle_films(
        &args.data,
        &bundle,
        &bundle.config.split.validation_patients,
    )?;
    let images: Vec<_> = set.images.iter().collect();
    let probabilities = bundle.predict(&images, args.batch_size, &device)?;
    let labels: Vec<bool> = set
        .samples
        .iter()
        .map(|s| s.label == Label::Pneumonia)
        .collect();
    let (calibration, points) = fit_on_validation(&probabilities, &labels)?;
    eprintln!(
        "temperature {:.4} on {} validation films (NLL {:.4} -> {:.4})",
        calibration.temperature, calibration.images, calibration.nll_before, calibration.nll_after
    );
    for p in &points {
        eprintln!(
            "  {:<18} threshold {:.4}: validation sensitivity {:.3}, specificity {:.3}",
            p.name, p.value, p.validation_sensitivity, p.validation_specificity
        );
    }
    bundle.config.calibration = Some(calibration);
    bundle.config.operating_points = points;
    bundle.config.format_version = BUNDLE_FORMAT_VERSION;
    let path = args.model.join(Bundle::CONFIG);
    std::fs::write(&path, serde_json::to_string_pretty(&bundle.config)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("updated {}", path.display());
    Ok(())
}
