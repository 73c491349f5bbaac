//! Fits the out-of-distribution statistics of a bundle's pooled features on its own training
//! patients' films (unaugmented) and their threshold on its validation patients' films, and
//! stores both in its `config.json`. Training runs do this themselves; this is for bundles trained
//! before. The held-out test patients are never read.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use anyhow::Result;
use clap::Parser;
use xray_pneumonia::data::Side;
use xray_pneumonia::infer::{Bundle, OodStatistics, BUNDLE_FORMAT_VERSION, OOD_QUANTILE};
use xray_pneumonia::pipeline::bundle_side_films;

#[derive(Parser, Debug)]
#[command(
    about = "Fit a bundle's out-of-distribution statistics on its training and validation patients"
)]
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
    let train = bundle_side_films(&args.upgrade.data, &bundle.config, Side::Train)?;
    let validation = bundle_side_films(&args.upgrade.data, &bundle.config, Side::Validation)?;
    let ood = OodStatistics::fit(
        &bundle,
        &train.images.iter().collect::<Vec<_>>(),
        &validation.images.iter().collect::<Vec<_>>(),
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
    Bundle::save_config(&args.upgrade.model, &bundle.config)?;
    eprintln!(
        "updated {}",
        args.upgrade.model.join(Bundle::CONFIG).display()
    );
    Ok(())
}
