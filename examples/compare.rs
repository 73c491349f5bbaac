//! Scores several bundles on the same films and compares them: the seed-style table (accuracy,
//! precision, recall, F1, plus ROC AUC and specificity, each with a 95% patient-bootstrap
//! interval) and paired tests between every pair of models (McNemar on the decisions at each
//! bundle's stored threshold, DeLong on the ROC AUCs). Writes `compare.json` and `compare.md`.
//!
//! Bundles may differ in input size; each film is decoded once per size. With `--holdout`, only
//! patients held out by *every* bundle are scored, so no model sees its own training films.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use xray_pneumonia::comparison::compare_bundles;
use xray_pneumonia::data::scan_split;
use xray_pneumonia::eval::{BootstrapConfig, DISCLAIMER};
use xray_pneumonia::pipeline::keep_side;

#[derive(Parser, Debug)]
#[command(about = "Compare model bundles on the same films (decision support only)")]
struct Args {
    /// Bundle directories, two or more.
    #[arg(long, num_args = 2.., required = true)]
    models: Vec<PathBuf>,
    #[command(flatten)]
    films: common::FilmArgs,
    #[command(flatten)]
    device: common::DeviceArgs,
    /// Output directory for compare.json and compare.md.
    #[arg(long)]
    out: PathBuf,
    /// Bootstrap resamples of patients.
    #[arg(long, default_value_t = 2000)]
    bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> std::process::ExitCode {
    common::run_main(run)
}

fn run() -> Result<()> {
    let args = Args::parse();
    let device = common::tuned_device(args.device.cpu)?;
    let mut bundles = Vec::new();
    for path in &args.models {
        let bundle = args.device.load_on(path, &device)?;
        bundles.push((path.display().to_string(), bundle));
    }
    let f = &args.films;
    let mut samples = scan_split(&f.data, &f.split)?;
    if let Some(side) = f.holdout {
        for (_, bundle) in &bundles {
            keep_side(&mut samples, &bundle.config.split, side);
        }
    }
    let holdout = f.holdout_name();
    anyhow::ensure!(
        !samples.is_empty(),
        "no film of {} is on the {holdout} side of every bundle's split",
        f.split
    );
    let bootstrap = BootstrapConfig {
        resamples: args.bootstrap,
        confidence: 0.95,
        seed: args.seed,
    };
    let comparison = compare_bundles(&bundles, &samples, bootstrap)?;
    let data = format!("{}/{} ({holdout} patients)", f.data.display(), f.split);
    let md = comparison.markdown(&data);
    print!("{md}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join("compare.md"), &md)?;
    let json = serde_json::json!({
        "data": { "root": f.data, "split": f.split, "holdout": holdout,
                  "films": comparison.films, "patients": comparison.patients },
        "bootstrap": comparison.bootstrap,
        "models": comparison.models,
        "pairs": comparison.pairs,
        "disclaimer": DISCLAIMER,
    });
    std::fs::write(
        args.out.join("compare.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    eprintln!("wrote {}/compare.json and compare.md", args.out.display());
    Ok(())
}
