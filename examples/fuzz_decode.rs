//! Runs the seeded mutation fuzzer of the film reader (`xray_data::fuzz`) on real files: JPEG,
//! PNG, DICOM with or without file meta. Every input must give a film or an error,
//! never a panic. Prints a JSON summary; exits 1 if anything panicked, saving the inputs that did
//! under `--crashes`.
//!
//! `cargo run --release --example fuzz_decode -- --count 1000000` (CI runs a short version).
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use xray_pneumonia::data::fuzz::{fuzz_decode, FuzzInput};

#[derive(Parser, Debug)]
#[command(about = "Fuzz the film reader with seeded mutations of real files")]
struct Args {
    /// Mutated inputs to try.
    #[arg(long, default_value_t = 1_000_000)]
    count: usize,
    /// Seed of the mutations: the same seed and count try the same inputs.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Files to mutate; by default a training JPEG, an external PNG, the shared DICOM film and
    /// every DICOM fixture of `tests/fixtures/dicom`.
    #[arg(long)]
    seeds: Vec<PathBuf>,
    /// Write the input of this index (with this seed and these seed files) to `--crashes` and
    /// stop, to reproduce one.
    #[arg(long)]
    dump: Option<usize>,
    /// Where inputs that panicked are saved, and the slowest input (`slowest_input`).
    #[arg(long, default_value = "runs/fuzz_crashes")]
    crashes: PathBuf,
}

fn main() -> std::process::ExitCode {
    common::run_main(run)
}

fn default_seeds() -> Result<Vec<PathBuf>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/data");
    let mut seeds = vec![
        shared.join("kermany224/train/NORMAL/IM-0115-0001.jpeg"),
        shared.join("external/rsna_adult_normal/Normal-10025.png"),
        shared.join("dicom/cxr_pa_monochrome2.dcm"),
    ];
    let fixtures = root.join("tests/fixtures/dicom");
    let mut dicoms: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .with_context(|| format!("reading {}", fixtures.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    dicoms.sort();
    seeds.extend(dicoms);
    Ok(seeds)
}

fn run() -> Result<()> {
    let args = Args::parse();
    let seeds = if args.seeds.is_empty() {
        default_seeds()?
    } else {
        args.seeds.clone()
    };
    let originals: Vec<(PathBuf, Vec<u8>)> = seeds
        .iter()
        .map(|p| {
            Ok((
                p.clone(),
                std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            ))
        })
        .collect::<Result<_>>()?;
    if let Some(i) = args.dump {
        let input = FuzzInput::nth(&originals, args.seed, i);
        std::fs::create_dir_all(&args.crashes)?;
        let path = args.crashes.join(input.file_name());
        std::fs::write(&path, &input.bytes)?;
        eprintln!("wrote {}", path.display());
        return Ok(());
    }
    // A multi-frame seed would log a warning per input.
    log::set_max_level(log::LevelFilter::Error);
    // Panics are counted, not printed: the default hook would flood the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    let report = fuzz_decode(&originals, args.count, args.seed);
    let _ = std::panic::take_hook();
    std::fs::create_dir_all(&args.crashes)
        .with_context(|| format!("creating {}", args.crashes.display()))?;
    for input in report.panicked.iter().take(20) {
        std::fs::write(args.crashes.join(input.file_name()), &input.bytes)?;
    }
    let (slowest_seconds, slowest) = &report.slowest;
    std::fs::write(args.crashes.join("slowest_input"), &slowest.bytes)?;
    let summary = serde_json::json!({
        "slowest_seconds": slowest_seconds,
        "slowest_seed_file": slowest.origin.display().to_string(),
        "inputs": args.count,
        "seed": args.seed,
        "seed_files": seeds.len(),
        "films": report.films,
        "errors": report.errors,
        "panics": report.panicked.len(),
        "seconds": report.seconds,
        "threads": rayon::current_num_threads(),
    });
    println!("{summary}");
    if !report.panicked.is_empty() {
        bail!(
            "{} inputs panicked; the first are in {}",
            report.panicked.len(),
            args.crashes.display()
        );
    }
    Ok(())
}
