//! A seeded mutation fuzzer of the film reader (`xray_data::decode_film`: JPEG, PNG, DICOM with
//! or without file meta): real files with bits flipped, bytes and lengths overwritten with
//! boundary values, ranges cut, deleted or repeated. Every input must give a film or an error,
//! never a panic. Prints a JSON summary; exits 1 if anything panicked, saving the inputs that did
//! under `--crashes`.
//!
//! `cargo run --release --example fuzz_decode -- --count 1000000` (CI runs a short version).
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use xray_pneumonia::data::decode_film;

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

/// Values that sit on the edges parsers get wrong.
const BOUNDARY_BYTES: [u8; 6] = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF];
const BOUNDARY_WORDS: [u32; 6] = [0, 1, 0x7FFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF];

/// One to four mutations of `bytes`.
fn mutate(bytes: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if out.is_empty() {
            break;
        }
        let at = rng.random_range(0..out.len());
        match rng.random_range(0..6) {
            0 => out[at] ^= 1 << rng.random_range(0..8),
            1 => out[at] = BOUNDARY_BYTES[rng.random_range(0..BOUNDARY_BYTES.len())],
            2 => {
                let word = BOUNDARY_WORDS[rng.random_range(0..BOUNDARY_WORDS.len())].to_le_bytes();
                let width = if rng.random_bool(0.5) { 2 } else { 4 };
                for (k, b) in word.iter().take(width).enumerate() {
                    if let Some(slot) = out.get_mut(at + k) {
                        *slot = *b;
                    }
                }
            }
            3 => out.truncate(at),
            4 => {
                let end = (at + rng.random_range(1..=64)).min(out.len());
                out.drain(at..end);
            }
            _ => {
                let end = (at + rng.random_range(1..=64)).min(out.len());
                let copy = out[at..end].to_vec();
                let to = rng.random_range(0..=out.len());
                out.splice(to..to, copy);
            }
        }
    }
    out
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
    let input_of = |i: usize| {
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
        rng.set_stream(i as u64);
        let (path, bytes) = &originals[rng.random_range(0..originals.len())];
        (path, mutate(bytes, &mut rng))
    };
    if let Some(i) = args.dump {
        let (path, input) = input_of(i);
        std::fs::create_dir_all(&args.crashes)?;
        let name = format!(
            "{i}-{}",
            path.file_name()
                .map_or("input".into(), |n| n.to_string_lossy())
        );
        std::fs::write(args.crashes.join(&name), input)?;
        eprintln!("wrote {}", args.crashes.join(name).display());
        return Ok(());
    }
    // A multi-frame seed would log a warning per input.
    log::set_max_level(log::LevelFilter::Error);
    // Panics are counted, not printed: the default hook would flood the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    let (films, errors) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let panicked = Mutex::new(Vec::new());
    let slowest = Mutex::new((0.0f64, PathBuf::new(), Vec::new()));
    let started = Instant::now();
    (0..args.count).into_par_iter().for_each(|i| {
        let (path, input) = input_of(i);
        let began = Instant::now();
        let result = std::panic::catch_unwind(|| decode_film(path, &input).map(|_| ()));
        let took = began.elapsed().as_secs_f64();
        if let Ok(mut slowest) = slowest.lock() {
            if took > slowest.0 {
                *slowest = (took, path.clone(), input.clone());
            }
        }
        match result {
            Ok(Ok(())) => films.fetch_add(1, Ordering::Relaxed),
            Ok(Err(_)) => errors.fetch_add(1, Ordering::Relaxed),
            Err(_) => {
                if let Ok(mut list) = panicked.lock() {
                    list.push((i, path.clone(), input));
                }
                0
            }
        };
    });
    let _ = std::panic::take_hook();
    let panicked = panicked.into_inner().unwrap_or_default();
    std::fs::create_dir_all(&args.crashes)
        .with_context(|| format!("creating {}", args.crashes.display()))?;
    for (i, path, input) in panicked.iter().take(20) {
        let name = format!(
            "{i}-{}",
            path.file_name()
                .map_or("input".into(), |n| n.to_string_lossy())
        );
        std::fs::write(args.crashes.join(name), input)?;
    }
    let (slowest_seconds, slowest_seed, slowest_input) = slowest.into_inner().unwrap_or_default();
    std::fs::write(args.crashes.join("slowest_input"), &slowest_input)?;
    let summary = serde_json::json!({
        "slowest_seconds": slowest_seconds,
        "slowest_seed_file": slowest_seed.display().to_string(),
        "inputs": args.count,
        "seed": args.seed,
        "seed_files": seeds.len(),
        "films": films.into_inner(),
        "errors": errors.into_inner(),
        "panics": panicked.len(),
        "seconds": started.elapsed().as_secs_f64(),
        "threads": rayon::current_num_threads(),
    });
    println!("{summary}");
    if !panicked.is_empty() {
        bail!(
            "{} inputs panicked; the first are in {}",
            panicked.len(),
            args.crashes.display()
        );
    }
    Ok(())
}
