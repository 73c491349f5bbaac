//! A CNN trained from scratch on gray films at 96x96, on a patient-level split of one folder,
//! saved as a model bundle.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use common::AugmentationKind;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::DType;
use candle_nn::{VarBuilder, VarMap};
use clap::Parser;
use xray_pneumonia::data::{MeanStd, Normalization, Preprocessing, Side, SplitConfig};
use xray_pneumonia::eval::DISCLAIMER;
use xray_pneumonia::models::{seeded_init, Architecture, Classifier, ScratchCnnConfig};
use xray_pneumonia::pipeline::{
    describe_data, keep_freed_memory, pick_device, prepare_data, save_run, threshold_rule,
    FinishedRun,
};
use xray_pneumonia::train::{
    fit, predict_probabilities, EpochRecord, ImageBatches, TrainConfig, TrainTarget,
};

#[derive(Parser, Debug)]
#[command(about = "Train the from-scratch CNN bundle (decision support only, not a diagnosis)")]
struct Args {
    /// Dataset root holding <split>/{NORMAL,PNEUMONIA}.
    #[arg(long, default_value = "../shared/data/kermany224")]
    data: PathBuf,
    /// Folder under the root to split by patient into train/validation/test.
    #[arg(long, default_value = "train")]
    split: String,
    /// Output bundle directory.
    #[arg(long, default_value = "models/scratch_cnn")]
    out: PathBuf,
    /// Input side in pixels.
    #[arg(long, default_value_t = 96)]
    size: u32,
    /// Most epochs.
    #[arg(long, default_value_t = 16)]
    epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// Training augmentation: `strong` (gamma, blur, noise, wider ranges) or `standard`.
    #[arg(long, value_enum, default_value_t = AugmentationKind::Strong)]
    augmentation: AugmentationKind,
    /// Epochs without a better validation AUC before stopping.
    #[arg(long, default_value_t = 5)]
    patience: usize,
    /// Seed of the split, initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Sensitivity the threshold must reach on validation; omit for Youden's J.
    #[arg(long)]
    target_sensitivity: Option<f64>,
    /// Skip unreadable images (listed in the bundle) instead of stopping.
    #[arg(long)]
    skip_unreadable: bool,
    /// Use only the first N images of each class (smoke tests).
    #[arg(long)]
    limit_per_class: Option<usize>,
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
    let started = Instant::now();
    let device = pick_device(args.cpu)?;
    let split_config = SplitConfig {
        seed: args.seed,
        ..SplitConfig::default()
    };
    let data = prepare_data(
        &args.data,
        &args.split,
        args.size,
        args.skip_unreadable,
        args.limit_per_class,
        &split_config,
    )
    .with_context(|| format!("preparing {}", args.data.display()))?;
    describe_data(&data, args.seed);

    // Standardise with the training side's own statistics.
    let stats = MeanStd::of(&data.images(Side::Train));
    let preprocessing = Preprocessing {
        size: args.size,
        channels: 1,
        normalization: Normalization::MeanStd {
            mean: stats.mean,
            std: stats.std,
        },
    };
    // candle's CPU dropout cannot be seeded: without it a run reproduces exactly.
    let architecture = Architecture::ScratchCnn(ScratchCnnConfig {
        dropout: 0.0,
        ..ScratchCnnConfig::default()
    });
    let varmap = VarMap::new();
    let model = seeded_model(&architecture, &varmap, args.seed)?;
    let augmentation = args.augmentation.config();
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        weight_decay: args.weight_decay,
        warmup_epochs: 1,
        patience: args.patience,
        seed: args.seed,
        class_weighted: true,
    };
    let train = ImageBatches::new(
        data.images(Side::Train),
        data.targets(Side::Train),
        preprocessing,
        Some(augmentation),
        args.seed,
    )?;
    let val = ImageBatches::new(
        data.images(Side::Validation),
        data.targets(Side::Validation),
        preprocessing,
        None,
        args.seed,
    )?;
    let test = ImageBatches::new(
        data.images(Side::Test),
        data.targets(Side::Test),
        preprocessing,
        None,
        args.seed,
    )?;
    let mut log = Vec::new();
    let mut on_epoch = |r: &EpochRecord| {
        let line = serde_json::to_string(r).unwrap_or_default();
        println!("{line}");
        log.push(line);
    };
    let report = fit(
        TrainTarget {
            model: &model,
            varmap: &varmap,
            trainable: model.trainable_vars(&varmap),
        },
        &train,
        &val,
        &config,
        &device,
        &mut on_epoch,
    )?;
    let val_probs = predict_probabilities(&model, &val, 64, &device)?;
    let test_probs = predict_probabilities(&model, &test, 64, &device)?;

    let recipe = serde_json::json!({
        "mode": "trained from scratch on augmented gray images",
        "augmentation": augmentation,
        "initialisation": "Kaiming normal convolutions from a seeded CPU generator",
    });
    save_run(
        &args.out,
        &data,
        &varmap,
        FinishedRun {
            architecture,
            preprocessing,
            config,
            split_config,
            recipe,
            report,
            log,
            started,
            rule: threshold_rule(args.target_sensitivity),
            validation_probabilities: val_probs,
            test_probabilities: test_probs,
        },
    )?;
    Ok(())
}

/// Builds the model with an initialisation that depends only on `seed`.
fn seeded_model(architecture: &Architecture, varmap: &VarMap, seed: u64) -> Result<Classifier> {
    let model = Classifier::new(
        architecture,
        VarBuilder::from_varmap(varmap, DType::F32, &candle_core::Device::Cpu),
    )?;
    seeded_init(varmap, "", seed)?;
    Ok(model)
}
