//! Times this project's CPU work under the names and JSON format of
//! `../shared/bench/pytorch_ref.py`, so that the two can be set side by side:
//!
//! ```text
//! cargo run --release --example bench -- [--threads 2] [--batch 32] [--only NAME,...]
//!     [--reference VENV/bin/python] [--repeat 3] [--table FILE]
//! ```
//!
//! With `--reference`, each workload is followed by the PyTorch script's run of the same
//! workload (interleaved, so that both sides of a ratio see the same state of a noisy machine),
//! `--repeat` times, and a Markdown table of the ratios is printed (and written to `--table`).
//!
//! `--cuda` (built with `--features cuda`) times the model workloads on the first CUDA device
//! instead, waiting for the device at the end of every step; `tools/cuda_reference.py` times
//! PyTorch's side there. `--only dwconv_fwd_bwd_candle` times candle's own grouped convolution,
//! which the depthwise op replaces (not run by default: on CPU it takes minutes).
//!
//! One JSON object per line: `{"name", "unit", "median", "min", "max", "runs", "threads",
//! "batch", "config", "gflops_per_s", "cpu", "kernels_isa", "matmul_isa"}` (`gflops_per_s`:
//! achieved GFLOP/s at the median, where the workload's operation count is known; the last
//! three: the CPU model and the vector instructions our kernels and gemm chose on it, e.g.
//! `avx512` or `avx2+fma`). Workloads, f32, random inputs at 224x224:
//! `mnv2_infer`, `mnv2_infer_b1`, `mnv2_train`, `mnv2_head_train`, `plaincnn_train`,
//! `dwconv_fwd_bwd` (as in the PyTorch script), plus `data_pipeline` (read, decode, resize,
//! augment and batch real films, images/s) and `peak_gflops` (one large matrix product: this
//! machine's practical ceiling).
//!
//! Differences from the PyTorch workloads, by design: our MobileNetV2 keeps BatchNorm on stored
//! statistics in training (the shared weights have it folded in; see their README), where the
//! PyTorch script trains with batch statistics; and our training steps use AdamW, our trainer's
//! optimiser, where the script uses SGD with momentum (AdamW does slightly more work).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{loss::binary_cross_entropy_with_logit, ModuleT, Optimizer, VarBuilder, VarMap};
use clap::Parser;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use xray_pneumonia::data::{
    augment, images_to_tensor, load_images, scan_split, AugmentConfig, LoadOptions, Normalization,
    Preprocessing,
};
use xray_pneumonia::models::{
    seeded_init, Architecture, Classifier, MobileNetV2, MobileNetV2Config, ScratchCnnConfig,
};
use xray_pneumonia::ops::depthwise_conv2d;
use xray_pneumonia::ops::process::{keep_freed_device_memory, keep_freed_memory};

/// The workloads `pytorch_ref.py` also runs.
const PYTORCH_HAS: [&str; 6] = [
    "mnv2_infer",
    "mnv2_infer_b1",
    "mnv2_train",
    "mnv2_head_train",
    "plaincnn_train",
    "dwconv_fwd_bwd",
];

/// Run only when named in `--only`.
const ON_REQUEST: [&str; 1] = ["dwconv_fwd_bwd_candle"];

const ALL: [&str; 8] = [
    "mnv2_infer",
    "mnv2_infer_b1",
    "mnv2_train",
    "mnv2_head_train",
    "plaincnn_train",
    "dwconv_fwd_bwd",
    "data_pipeline",
    "peak_gflops",
];

#[derive(Parser, Debug)]
#[command(about = "Time the project's CPU workloads in pytorch_ref.py's format")]
struct Args {
    /// Threads for rayon and the matrix products.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Batch size of the batched workloads.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Comma-separated workload names (default: all).
    #[arg(long, default_value = "")]
    only: String,
    /// One warm-up and two timed runs: a smoke test, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Dataset root with `train/{NORMAL,PNEUMONIA}` for `data_pipeline`.
    #[arg(long, default_value = "../shared/data/kermany224")]
    data: PathBuf,
    /// A Python with torch and torchvision: run `--reference-script` with the same threads,
    /// batch and workloads after ours, and print each ratio.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// The PyTorch reference script.
    #[arg(long, default_value = "../shared/bench/pytorch_ref.py")]
    reference_script: PathBuf,
    /// Also write the comparison as a Markdown table here.
    #[arg(long)]
    table: Option<PathBuf>,
    /// Rounds of every workload (each followed by PyTorch's, with `--reference`).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Run on the first CUDA device (needs `--features cuda`).
    #[arg(long)]
    cuda: bool,
}

/// One result line, in the PyTorch script's format plus the achieved GFLOP/s.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    name: String,
    unit: String,
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
    threads: usize,
    batch: usize,
    config: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gflops_per_s: Option<f64>,
    /// The CPU, and the vector instructions our kernels and matrix products chose on it
    /// (`xray_ops::isa`); absent from PyTorch's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kernels_isa: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    matmul_isa: Option<String>,
}

fn main() -> std::process::ExitCode {
    common::run_main(run)
}

fn run() -> Result<()> {
    keep_freed_memory();
    let args = Args::parse();
    // candle's matrix products read this once, at their first use.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()
        .context("starting the thread pool")?;
    let wanted: Vec<&str> = args.only.split(',').filter(|s| !s.is_empty()).collect();
    if let Some(unknown) = wanted
        .iter()
        .find(|w| !ALL.contains(w) && !ON_REQUEST.contains(w))
    {
        bail!(
            "unknown workload {unknown:?}; known: {}, {}",
            ALL.join(", "),
            ON_REQUEST.join(", ")
        );
    }
    let device = if args.cuda {
        let device =
            Device::new_cuda(0).context("--cuda needs a CUDA device and `--features cuda`")?;
        keep_freed_device_memory(&device)?;
        device
    } else {
        Device::Cpu
    };
    let bench = Bench {
        batch: args.batch,
        threads: args.threads,
        warmup: if args.quick { 1 } else { 2 },
        runs: if args.quick { 2 } else { 5 },
        device,
    };
    let selected: Vec<&str> = ALL
        .into_iter()
        .chain(ON_REQUEST)
        .filter(|name| (wanted.is_empty() && ALL.contains(name)) || wanted.contains(name))
        .collect();
    // Rounds of (ours, then PyTorch's) per workload: interleaved, so that both sides of a
    // ratio see the same state of this noisy machine.
    let mut rounds: Vec<(Record, Option<Record>)> = Vec::new();
    for _ in 0..args.repeat.max(1) {
        for &name in &selected {
            let record = bench.workload(name, &args.data)?;
            println!("{}", serde_json::to_string(&record)?);
            let reference = match &args.reference {
                Some(python) if PYTORCH_HAS.contains(&name) => run_reference(python, &args, name)?,
                _ => None,
            };
            rounds.push((record, reference));
        }
    }
    if args.reference.is_some() {
        let table = comparison_table(&rounds, &selected);
        println!("{table}");
        if let Some(path) = &args.table {
            std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

struct Bench {
    batch: usize,
    threads: usize,
    warmup: usize,
    runs: usize,
    device: Device,
}

impl Bench {
    fn workload(&self, name: &str, data: &std::path::Path) -> Result<Record> {
        let b = self.batch;
        let device = &self.device;
        // Each step ends when the device has finished it (a no-op on CPU).
        let timed_on_device = |mut step: Box<dyn FnMut() -> candle_core::Result<()> + '_>,
                               warmup: usize,
                               runs: usize| {
            timed(|| step().and_then(|()| device.synchronize()), warmup, runs)
        };
        match name {
            "mnv2_infer" => {
                let model = mobilenet_for_inference(device)?;
                let x = Tensor::randn(0f32, 1.0, (b, 3, 224, 224), device)?;
                let secs = timed_on_device(
                    Box::new(|| model.logits(&x).map(drop)),
                    self.warmup,
                    self.runs,
                )?;
                Ok(self.record(name, secs, b, Some(MobileNetV2::forward_flops(224))))
            }
            "mnv2_infer_b1" => {
                let model = mobilenet_for_inference(device)?;
                let x = Tensor::randn(0f32, 1.0, (1, 3, 224, 224), device)?;
                let secs =
                    timed_on_device(Box::new(|| model.logits(&x).map(drop)), 3, self.runs * 4)?;
                let mut r = self.record(name, secs, 1, Some(MobileNetV2::forward_flops(224)));
                (r.unit, r.median, r.min, r.max) = (
                    "ms".into(),
                    round3(1e3 / r.median),
                    round3(1e3 / r.max), // the fastest run has the highest images/s
                    round3(1e3 / r.min),
                );
                r.batch = self.batch;
                Ok(r)
            }
            "mnv2_train" => {
                let (model, varmap) = mobilenet(19, device)?;
                let step = train_step(&model, &varmap, b, device)?;
                let secs = timed_on_device(Box::new(step), self.warmup, self.runs)?;
                Ok(self.record(name, secs, b, Some(3.0 * MobileNetV2::forward_flops(224))))
            }
            "mnv2_head_train" => {
                let (model, varmap) = mobilenet(0, device)?;
                let step = train_step(&model, &varmap, b, device)?;
                let secs = timed_on_device(Box::new(step), self.warmup, self.runs)?;
                Ok(self.record(name, secs, b, Some(MobileNetV2::forward_flops(224))))
            }
            "plaincnn_train" => {
                let varmap = VarMap::new();
                let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
                let model = Classifier::new(&Architecture::ScratchCnn(plain_cnn()), vb)?;
                seeded_init(&varmap, "", 0)?;
                let step = train_step(&model, &varmap, b, device)?;
                let secs = timed_on_device(Box::new(step), self.warmup, self.runs)?;
                Ok(self.record(name, secs, b, Some(3.0 * plain_cnn_forward_flops(224))))
            }
            "dwconv_fwd_bwd" | "dwconv_fwd_bwd_candle" => {
                let (c, h) = (144, 56);
                let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, c, h, h), device)?)?;
                let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (c, 1, 3, 3), device)?)?;
                let ours = name == "dwconv_fwd_bwd";
                let step = move || -> candle_core::Result<()> {
                    let y = if ours {
                        depthwise_conv2d(&x, &w, 1, 1)?
                    } else {
                        x.conv2d(&w, 1, 1, 1, c)?
                    };
                    // On CUDA the sum in two stages: candle's CUDA sum of all elements runs in
                    // one thread block (1.1 ms of a 3 ms step on an H200), these in 0.05 ms. On
                    // CPU the one sum is the faster (the staged backward costs 25% of the step).
                    let loss = if y.device().is_cuda() {
                        y.reshape((b * c, h * h))?.sum(1)?.sum(0)?
                    } else {
                        y.sum_all()?
                    };
                    loss.backward()?;
                    Ok(())
                };
                // candle's own op takes seconds per step on CPU: fewer runs.
                let (warmup, runs) = if ours {
                    (self.warmup, self.runs * 2)
                } else {
                    (1, self.runs)
                };
                let secs = timed_on_device(Box::new(step), warmup, runs)?;
                let flops = (3 * 2 * b * c * h * h * 9) as f64;
                let mut r = self.record(name, secs, 1, None);
                (r.unit, r.median, r.min, r.max) = (
                    "GFLOP/s".into(),
                    round3(r.median * flops / 1e9),
                    round3(r.min * flops / 1e9),
                    round3(r.max * flops / 1e9),
                );
                r.gflops_per_s = Some(r.median);
                Ok(r)
            }
            "data_pipeline" => self.data_pipeline(data),
            "peak_gflops" => {
                let n = 2048;
                let a = Tensor::randn(0f32, 1.0, (n, n), device)?;
                let bm = Tensor::randn(0f32, 1.0, (n, n), device)?;
                let secs =
                    timed_on_device(Box::new(|| a.matmul(&bm).map(drop)), self.warmup, self.runs)?;
                let flops = 2.0 * (n as f64).powi(3);
                let mut r = self.record(name, secs, 1, None);
                (r.unit, r.median, r.min, r.max) = (
                    "GFLOP/s".into(),
                    round3(r.median * flops / 1e9),
                    round3(r.min * flops / 1e9),
                    round3(r.max * flops / 1e9),
                );
                r.gflops_per_s = Some(r.median);
                r.batch = n;
                Ok(r)
            }
            other => bail!("unknown workload {other:?}"),
        }
    }

    /// Reads, hashes, decodes and resizes real films, augments them and stacks them into an
    /// input tensor: the training pipeline's per-epoch work, end to end.
    fn data_pipeline(&self, data: &std::path::Path) -> Result<Record> {
        let mut samples = scan_split(data, "train")
            .with_context(|| format!("data_pipeline reads {}", data.display()))?;
        samples.truncate(512);
        let n = samples.len();
        let preprocessing = Preprocessing {
            size: 224,
            channels: 3,
            normalization: Normalization::MinusOneToOne,
        };
        let config = AugmentConfig::default();
        let step = || -> Result<()> {
            let set = load_images(
                samples.clone(),
                &LoadOptions {
                    size: 224,
                    skip_unreadable: false,
                },
            )?;
            let augmented: Vec<_> = set
                .images
                .par_iter()
                .enumerate()
                .map(|(i, im)| {
                    use rand::SeedableRng;
                    augment(
                        im,
                        &config,
                        &mut rand_chacha::ChaCha8Rng::seed_from_u64(i as u64),
                    )
                })
                .collect();
            for chunk in augmented.chunks(self.batch) {
                let refs: Vec<_> = chunk.iter().collect();
                images_to_tensor(&refs, &preprocessing, &Device::Cpu)?;
            }
            Ok(())
        };
        let secs = timed_any(step, 1, self.runs)?;
        Ok(self.record("data_pipeline", secs, n, None))
    }

    /// Images per second from the run times of `per_run` images each.
    fn record(&self, name: &str, secs: Vec<f64>, per_run: usize, flops: Option<f64>) -> Record {
        let mut rates: Vec<f64> = secs.iter().map(|s| per_run as f64 / s).collect();
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        Record {
            name: name.into(),
            unit: "images/s".into(),
            median: round3(median),
            min: round3(rates[0]),
            max: round3(rates[rates.len() - 1]),
            runs: rates.len(),
            threads: self.threads,
            batch: self.batch,
            config: if self.device.is_cuda() {
                "candle 0.11 + xray-models kernels, f32, NCHW, CUDA".into()
            } else {
                "candle 0.11 + xray-models kernels, f32, NCHW".into()
            },
            gflops_per_s: flops.map(|f| round3(median * f / 1e9)),
            cpu: Some(xray_pneumonia::ops::isa::cpu_model()),
            kernels_isa: Some(xray_pneumonia::ops::isa::kernel_level().into()),
            matmul_isa: Some(xray_pneumonia::ops::isa::matmul_level().into()),
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

fn timed(
    mut step: impl FnMut() -> candle_core::Result<()>,
    warmup: usize,
    runs: usize,
) -> Result<Vec<f64>> {
    timed_any(|| step().map_err(anyhow::Error::from), warmup, runs)
}

fn timed_any(mut step: impl FnMut() -> Result<()>, warmup: usize, runs: usize) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        step()?;
    }
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            step()?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect()
}

/// MobileNetV2 with one logit and `trainable_stages` trained (19: all), He-initialised: the
/// timing does not depend on the weights' values.
fn mobilenet(trainable_stages: usize, device: &Device) -> Result<(Classifier, VarMap)> {
    let varmap = VarMap::new();
    let config = MobileNetV2Config {
        trainable_stages,
        ..MobileNetV2Config::pneumonia()
    };
    let model = Classifier::new(
        &Architecture::MobileNetV2(config),
        VarBuilder::from_varmap(&varmap, DType::F32, device),
    )?;
    seeded_init(&varmap, "", 0)?;
    Ok((model, varmap))
}

/// MobileNetV2 as `predict` runs it (`Classifier::for_inference`): no graph is recorded, as
/// under PyTorch's `no_grad`.
fn mobilenet_for_inference(device: &Device) -> Result<Classifier> {
    let varmap = mobilenet(0, device)?.1;
    let architecture = Architecture::MobileNetV2(MobileNetV2Config::pneumonia());
    Ok(Classifier::for_inference(&architecture, &varmap, device)?)
}

/// pytorch_ref.py's `PlainCnn`: four 3x3 blocks of 32-64-128-256 channels without convolution
/// bias, BatchNorm with batch statistics, ReLU and 2x2 max-pooling; average pool; one logit.
fn plain_cnn() -> ScratchCnnConfig {
    ScratchCnnConfig {
        in_channels: 3,
        channels: vec![32, 64, 128, 256],
        dropout: 0.0,
    }
}

/// One optimiser step of binary cross-entropy on random labels, as a reusable closure.
fn train_step<'a>(
    model: &'a Classifier,
    varmap: &VarMap,
    batch: usize,
    device: &Device,
) -> Result<impl FnMut() -> candle_core::Result<()> + 'a> {
    let mut optimizer = candle_nn::AdamW::new(model.trainable_vars(varmap), Default::default())?;
    let x = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), device)?;
    let y = Tensor::rand(0f32, 1.0, batch, device)?
        .ge(0.5)?
        .to_dtype(DType::F32)?;
    Ok(move || {
        let logits = model.forward_t(&x, true)?;
        optimizer.backward_step(&binary_cross_entropy_with_logit(&logits, &y)?)
    })
}

/// Multiply-adds x 2 of one `PlainCnn` forward pass (convolutions only).
fn plain_cnn_forward_flops(size: usize) -> f64 {
    let (mut hw, mut c, mut macs) = (size, 3, 0.0);
    for out in [32, 64, 128, 256] {
        macs += (hw * hw * c * out * 9) as f64;
        hw /= 2;
        c = out;
    }
    2.0 * macs
}

/// Runs the PyTorch script for one workload with our threads and batch; returns its record.
fn run_reference(python: &PathBuf, args: &Args, name: &str) -> Result<Option<Record>> {
    let mut command = Command::new(python);
    command
        .arg(&args.reference_script)
        .args(["--threads", &args.threads.to_string()])
        .args(["--batch", &args.batch.to_string()])
        .args(["--only", name]);
    if args.quick {
        command.arg("--quick");
    }
    let output = command.output().with_context(|| {
        format!(
            "running {} {}",
            python.display(),
            args.reference_script.display()
        )
    })?;
    if !output.status.success() {
        bail!(
            "the reference script failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut found = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        println!("pytorch: {line}");
        if let Ok(record) = serde_json::from_str::<Record>(line) {
            found = Some(record);
        }
    }
    Ok(found)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Markdown, one row per workload over all rounds: the medians of each side's per-round
/// medians, the speed ratio per round (above 1: we are faster) as median and min-max, our
/// achieved GFLOP/s and its share of the measured peak.
fn comparison_table(rounds: &[(Record, Option<Record>)], selected: &[&str]) -> String {
    let peak = median(
        rounds
            .iter()
            .filter(|(r, _)| r.name == "peak_gflops")
            .map(|(r, _)| r.median)
            .collect(),
    );
    let mut out = format!(
        "CPU: {}, {} threads; our kernels: {}; matrix products (gemm): {}\n\n",
        xray_pneumonia::ops::isa::cpu_model(),
        rounds.first().map_or(0, |(r, _)| r.threads),
        xray_pneumonia::ops::isa::kernel_level(),
        xray_pneumonia::ops::isa::matmul_level(),
    );
    out.push_str(
        "| workload | unit | ours (median of rounds) | PyTorch (median of rounds) | speed ratio, median (min-max) | rounds | ours GFLOP/s | share of peak |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for name in selected {
        let of_name: Vec<&(Record, Option<Record>)> =
            rounds.iter().filter(|(r, _)| r.name == *name).collect();
        let Some((first, _)) = of_name.first() else {
            continue;
        };
        let ours = median(of_name.iter().map(|(r, _)| r.median).collect());
        let theirs: Vec<f64> = of_name
            .iter()
            .filter_map(|(_, t)| t.as_ref().map(|t| t.median))
            .collect();
        let ratios: Vec<f64> = of_name
            .iter()
            .filter_map(|(r, t)| {
                t.as_ref().map(|t| {
                    if r.unit == "ms" {
                        t.median / r.median
                    } else {
                        r.median / t.median
                    }
                })
            })
            .collect();
        let gflops = median(of_name.iter().filter_map(|(r, _)| r.gflops_per_s).collect());
        let dash = || "-".to_string();
        let ratio = if ratios.is_empty() {
            dash()
        } else {
            let (lo, hi) = ratios
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            format!("{:.2} ({lo:.2}-{hi:.2})", median(ratios.clone()))
        };
        out.push_str(&format!(
            "| {name} | {} | {ours:.1} | {} | {ratio} | {} | {} | {} |\n",
            first.unit,
            if theirs.is_empty() {
                dash()
            } else {
                format!("{:.1}", median(theirs))
            },
            of_name.len(),
            if gflops.is_nan() {
                dash()
            } else {
                format!("{gflops:.1}")
            },
            if gflops.is_nan() || peak.is_nan() || peak <= 0.0 {
                dash()
            } else {
                format!("{:.0}%", 100.0 * gflops / peak)
            },
        ));
    }
    out
}
