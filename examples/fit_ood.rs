//! Fits the out-of-distribution statistics of a bundle's pooled features on its own training
//! patients' films (unaugmented) and their threshold on its validation patients' films, and
//! stores both in its `config.json`. Training runs do this themselves; this is for bundles trained
//! before. The held-out test patients are never read.
//!
//! With `--outside DIR`, it also fits a detector of the population those films come from (for
//! the shipped bundles: adults, `../shared/data/external/rsna_adult_normal`) on every other film
//! of the folder in name order, and reports the decisions on the other half, never fitted on.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use xray_pneumonia::data::{resize_to_input, Side};
use xray_pneumonia::infer::OOD_QUANTILE;
use xray_pneumonia::infer::{read_film, Bundle, GrayImage, OodStatistics, BUNDLE_FORMAT_VERSION};
use xray_pneumonia::pipeline::bundle_side_films;
use xray_pneumonia::prediction::collect_inputs;

#[derive(Parser, Debug)]
#[command(
    about = "Fit a bundle's out-of-distribution statistics on its training and validation patients"
)]
struct Args {
    #[command(flatten)]
    upgrade: common::UpgradeArgs,
    /// Films of a population the training films do not cover (e.g. adults): the even-numbered
    /// half in name order fits a detector of it, the odd-numbered half measures it.
    #[arg(long)]
    outside: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    common::run_main(run)
}

/// The films under `dir` at `size`, each with its file name, in name order.
fn outside_films(dir: &PathBuf, size: u32) -> Result<Vec<(String, GrayImage)>> {
    let mut films = Vec::new();
    for path in collect_inputs(std::slice::from_ref(dir))? {
        let film = read_film(&path).with_context(|| format!("reading {}", path.display()))?;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into());
        films.push((name, resize_to_input(&film, size).into_owned()));
    }
    if films.len() < 4 {
        bail!(
            "{} holds {} films: too few to fit on half and measure on the other",
            dir.display(),
            films.len()
        );
    }
    Ok(films)
}

fn run() -> Result<()> {
    let args = Args::parse();
    let mut bundle = args.upgrade.device.load(&args.upgrade.model)?;
    let train = bundle_side_films(&args.upgrade.data, &bundle.config, Side::Train)?;
    let validation = bundle_side_films(&args.upgrade.data, &bundle.config, Side::Validation)?;
    let train_images: Vec<_> = train.images.iter().collect();
    let validation_images: Vec<_> = validation.images.iter().collect();
    let mut ood = OodStatistics::fit(&bundle, &train_images, &validation_images)?;
    eprintln!(
        "fitted on {} training films; thresholds: features {:.3}, appearance {:.3} ({}th \
         percentile of {} validation films)",
        train.images.len(),
        ood.features.threshold,
        ood.appearance.threshold,
        OOD_QUANTILE * 100.0,
        validation.images.len()
    );
    let mut held_out = Vec::new();
    if let Some(dir) = &args.outside {
        let films = outside_films(dir, bundle.input_size())?;
        let (fit, measure): (Vec<_>, Vec<_>) =
            films.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let names = fit.iter().map(|(_, (name, _))| name.clone()).collect();
        let images: Vec<&GrayImage> = fit.iter().map(|(_, (_, film))| film).collect();
        let reference = format!("{} (even-numbered films in name order)", dir.display());
        ood.fit_population(
            &bundle,
            &train_images,
            &images,
            &validation_images,
            reference,
            names,
        )?;
        held_out = measure.into_iter().map(|(_, film)| film).collect();
    }
    bundle.config.ood = Some(ood);
    if !held_out.is_empty() {
        let images: Vec<&GrayImage> = held_out.iter().map(|(_, film)| film).collect();
        let mut counts = BTreeMap::new();
        for prediction in bundle.predict_batch(&images)? {
            *counts
                .entry(prediction.decision.to_string())
                .or_insert(0usize) += 1;
        }
        eprintln!(
            "outside films never fitted on (odd-numbered, {}): {counts:?}",
            held_out.len()
        );
    }
    bundle.config.format_version = BUNDLE_FORMAT_VERSION;
    Bundle::save_config(&args.upgrade.model, &bundle.config)?;
    eprintln!(
        "updated {}",
        args.upgrade.model.join(Bundle::CONFIG).display()
    );
    Ok(())
}
