//! Scores a model bundle on `<data>/<split>/{NORMAL,PNEUMONIA}`: prints a metrics table with
//! patient-bootstrap intervals and writes `metrics.json` and `predictions.csv`; with `--report`,
//! also `plots/*.{png,svg}` and a self-contained `report.html`.
//!
//! `--holdout test` keeps only the patients the bundle's own split held out for testing (use it
//! with the folder the bundle was trained on); without it every image of the folder is scored.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use xray_pneumonia::data::Shift;
use xray_pneumonia::eval::{BootstrapConfig, DISCLAIMER};
use xray_pneumonia::evaluation::ReportContext;
use xray_pneumonia::pipeline::{decode_for_bundle, samples_on_side};
use xray_pneumonia::scoring::{score_set, ScoringOptions};

#[derive(Parser, Debug)]
#[command(
    about = "Evaluate a model bundle on a labelled folder (decision support only, not a diagnosis)"
)]
struct Args {
    /// Model bundle directory (model.safetensors + config.json).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    films: common::FilmArgs,
    #[command(flatten)]
    device: common::DeviceArgs,
    /// Output directory for metrics.json and predictions.csv.
    #[arg(long)]
    out: PathBuf,
    /// Write plots and a self-contained report.html.
    #[arg(long)]
    report: bool,
    /// Prevalence of pneumonia for PPV and NPV (default: the evaluated data's own).
    #[arg(long)]
    prevalence: Option<f64>,
    /// Bootstrap resamples of patients for the 95% intervals.
    #[arg(long, default_value_t = 2000)]
    bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Test-time augmentation: average the probabilities of 5 fixed views of each film.
    #[arg(long)]
    tta: bool,
    /// Also estimate these films' pneumonia share from their probabilities alone (EM) and
    /// report the metrics at the threshold adapted to it, apart from the rest.
    #[arg(long)]
    adapt_prior: bool,
    /// A controlled shift applied to every film before scoring, `kind:level` with kind
    /// contrast, gamma, blur, noise or resolution (e.g. `gamma:1.5`, `resolution:0.5`).
    #[arg(long)]
    shift: Option<Shift>,
    /// Most confident errors of each kind shown with saliency in the report.
    #[arg(long, default_value_t = 4)]
    errors: usize,
    /// Skip unreadable images instead of stopping.
    #[arg(long)]
    skip_unreadable: bool,
}

fn main() -> std::process::ExitCode {
    common::run_main(run)
}

fn run() -> Result<()> {
    let started = Instant::now();
    let args = Args::parse();
    let bundle = args.device.load(&args.model)?;
    let f = &args.films;
    let samples = samples_on_side(&f.data, &f.split, &bundle.config.split, f.holdout)?;
    let set = decode_for_bundle(samples, &bundle.config, args.skip_unreadable)?;
    for s in &set.skipped {
        eprintln!("skipped {}: {}", s.path.display(), s.reason);
    }
    let options = ScoringOptions {
        shift: args.shift,
        tta: args.tta,
        adapt_prior: args.adapt_prior,
        prevalence: args.prevalence,
        bootstrap: BootstrapConfig {
            resamples: args.bootstrap,
            confidence: 0.95,
            seed: args.seed,
        },
    };
    let scored = score_set(&bundle, &set, &options)?;
    let holdout = f.holdout_name();
    let shifted = args
        .shift
        .map_or(String::new(), |s| format!(", every film shifted by {s}"));
    let name = format!("{}/{} ({holdout})", f.data.display(), f.split);
    print!("{}", scored.summary(&bundle));
    let tta = if args.tta {
        ", test-time augmentation"
    } else {
        ""
    };
    println!(
        "data: {name}, {} images, {} skipped{tta}{shifted}\n{DISCLAIMER}",
        set.samples.len(),
        set.skipped.len(),
    );

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let context = serde_json::json!({
        "tta": args.tta,
        "shift": args.shift,
        "data": { "root": f.data, "split": f.split, "holdout": holdout, "skipped": set.skipped.len() },
        "model": args.model,
    });
    let json = scored.metrics_json(&bundle, context)?;
    let path = args.out.join("metrics.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    scored.write_predictions_csv(&args.out.join("predictions.csv"), &set, &bundle)?;
    if args.report {
        let context = ReportContext {
            data: format!("{name}, {} skipped{shifted}", set.skipped.len()),
            model: args.model.display().to_string(),
            tta: args.tta,
        };
        let log = std::fs::read_to_string(args.model.join("train_log.jsonl")).ok();
        scored.write_report(
            &args.out,
            &set,
            &bundle,
            &context,
            args.errors,
            log.as_deref(),
        )?;
        eprintln!("wrote {}/report.html and plots/", args.out.display());
    }
    eprintln!(
        "wrote {}/metrics.json and predictions.csv ({:.1} s)",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
