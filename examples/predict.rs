//! Predicts on films as a hospital keeps them: JPEG, PNG and DICOM (recognised by content),
//! files and folders (walked recursively), or a list of paths on stdin with `-`. Streams a batch
//! at a time; writes one JSON line per film to `<out>/predictions.jsonl` and, at the end,
//! `<out>/predictions.csv`. Rerun after an interruption, it skips the films already written.
//! A film the model must not judge is referred, never called; one it cannot read gets a line
//! with the reason, and the exit status says some failed.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use xray_pneumonia::infer::Method;
use xray_pneumonia::prediction::{
    collect_inputs, predict_files, PredictOptions, PREDICTIONS_JSONL,
};

#[derive(Parser, Debug)]
#[command(about = "Predict on films and folders, DICOM included (decision support only)")]
struct Args {
    /// Model bundle directory.
    #[arg(long)]
    model: PathBuf,
    /// Films or folders; `-` reads one path per line from stdin.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output directory for predictions.jsonl and predictions.csv.
    #[arg(long)]
    out: PathBuf,
    /// Operating point of the decisions: `default` or one the bundle stores.
    #[arg(long, default_value = "default")]
    operating_point: String,
    /// Also write a saliency overlay PNG per film called (not referred) under `<out>/overlays/`:
    /// vanilla, smoothgrad, integrated_gradients (ig), gradcam or occlusion.
    #[arg(long)]
    saliency: Option<Method>,
    /// Also write a DICOM Secondary Capture per film under `<out>/secondary_capture/`: the
    /// overlay (or the plain film, when referred), the decision and "not for diagnostic use",
    /// filed in the source study when the film was DICOM.
    #[arg(long)]
    dicom_sc: bool,
    #[command(flatten)]
    device: common::DeviceArgs,
}

fn main() -> ExitCode {
    let mut failed = false;
    let status = common::run_main(|| {
        failed = run()?;
        Ok(())
    });
    if failed && status == ExitCode::SUCCESS {
        return ExitCode::from(2);
    }
    status
}

/// Whether some films could not be read.
fn run() -> Result<bool> {
    let args = Args::parse();
    let bundle = args.device.load(&args.model)?;
    let bundle = bundle.with_operating_point(&args.operating_point)?;
    let mut inputs = Vec::new();
    for input in &args.inputs {
        if input.as_os_str() == "-" {
            for line in std::io::stdin().lock().lines() {
                let line = line?;
                if !line.trim().is_empty() {
                    inputs.push(PathBuf::from(line.trim()));
                }
            }
        } else {
            inputs.push(input.clone());
        }
    }
    let files = collect_inputs(&inputs)?;
    let bar = common::progress_bar(files.len(), "films");
    let options = PredictOptions {
        saliency: args.saliency,
        dicom_sc: args.dicom_sc,
    };
    let summary = predict_files(&bundle, &files, &args.out, &options, &mut |n| {
        bar.inc(n as u64)
    })?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&summary)?);
    eprintln!(
        "{} films; wrote {}/{PREDICTIONS_JSONL} and predictions.csv",
        files.len(),
        args.out.display()
    );
    Ok(summary.errors > 0)
}
