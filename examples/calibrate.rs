//! Fits temperature scaling and the standard operating points (Youden J, sensitivity 0.95 and
//! 0.975, specificity 0.90 and 0.95) on a bundle's own validation patients and stores them in its
//! `config.json`, upgrading a format-1 bundle to format 2. Training runs do this themselves; this
//! is for bundles trained before. The held-out test patients are never read.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use anyhow::Result;
use clap::Parser;
use xray_pneumonia::data::Label;
use xray_pneumonia::data::Side;
use xray_pneumonia::infer::{Bundle, BUNDLE_FORMAT_VERSION};
use xray_pneumonia::pipeline::{bundle_side_films, fit_on_validation};

#[derive(Parser, Debug)]
#[command(about = "Fit calibration and operating points on a bundle's validation patients")]
struct Args {
    #[command(flatten)]
    upgrade: common::UpgradeArgs,
}

fn main() -> std::process::ExitCode {
    common::run_main(run)
}

fn run() -> Result<()> {
    let args = Args::parse();
    let mut bundle = args.upgrade.device.load(&args.upgrade.model)?;
    let set = bundle_side_films(&args.upgrade.data, &bundle.config, Side::Validation)?;
    let images: Vec<_> = set.images.iter().collect();
    let probabilities = bundle.probabilities(&images)?;
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
    Bundle::save_config(&args.upgrade.model, &bundle.config)?;
    eprintln!(
        "updated {}",
        args.upgrade.model.join(Bundle::CONFIG).display()
    );
    Ok(())
}
