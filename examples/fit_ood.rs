//! Fits the out-of-distribution statistics of a bundle's pooled features on its own training
//! patients' films (unaugmented) and their threshold on its validation patients' films, and
//! stores both in its `config.json`. Training runs do this themselves; this is for bundles trained
//! before. The held-out test patients are never read.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use common::bundle_films;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use xray_pneumonia::eval::DISCLAIMER;
use xray_pneumonia::pipeline::{fit_ood, keep_freed_memory, pick_device, OOD_QUANTILE};
use xray_pneumonia::train::{Bundle, BUNDLE_FORMAT_VERSION};

#[derive(Parser, Debug)]
#[command(
    about = "Fit a bundle's out-of-distribution statistics on its training and validation patients"
)]
struct Args {
    /// Model bundle directory; its config.json is rewritten.
    #[arg(long)]
    model: PathBuf,
    /// Dataset root the bundle was trained on (its split folder is read from the bundle).
    #[arg(long, default_value = "../shared/data/kermany224")]
    data: PathBuf,
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
    let train = bundle_films(&args.data, &bundle, &bundle.config.split.train_patients)?;
    let validation = bundle_films(
        &args.data,
        &bundle,
        &bundle.config.split.validation_patients,
    )?;
    let ood = fit_ood(
        &bundle,
        &train.images.iter().collect::<Vec<_>>(),
        &validation.images.iter().collect::<Vec<_>>(),
        &device,
    )?;
    eprintln!(
        "fitted on {} training films; thresholds: features {:.3}, appearance {:.3} ({}th \
         percentile of {} validation films)",
        train.images.len(),
        ood.features.threshold,
        ood.appearance.threshold,
        OOD_QUANTILE * 100.0,
        validation.images.len()
    );
    bundle.config.ood = Some(ood);
    bundle.config.format_version = BUNDLE_FORMAT_VERSION;
    let path = args.model.join(Bundle::CONFIG);
    std::fs::write(&path, serde_json::to_string_pretty(&bundle.config)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("updated {}", path.display());
    Ok(())
}
