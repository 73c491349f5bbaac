//! Transfer learning: ImageNet MobileNetV2 (../shared/weights) with a new one-logit head, trained
//! on a patient-level split of one folder, saved as a model bundle.
//!
//! With `--finetune-stages 0` (the default) the backbone is frozen: its pooled features are
//! computed once per view of each image and only the head trains. With N > 0 the top N feature
//! stages train too, on augmented images every epoch.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use common::AugmentationKind;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use xray_pneumonia::data::{
    augment, images_to_tensor, AugmentConfig, GrayImage, Normalization, Preprocessing, Side,
    SplitConfig,
};
use xray_pneumonia::eval::DISCLAIMER;
use xray_pneumonia::models::{
    load_weights_strict, seeded_init, Architecture, Classifier, MobileNetV2Config,
};
use xray_pneumonia::pipeline::{
    describe_data, keep_freed_memory, pick_device, prepare_data, save_run, threshold_rule,
    FinishedRun,
};
use xray_pneumonia::train::{
    fit, predict_probabilities, EpochRecord, FeatureBatches, ImageBatches, TrainConfig, TrainTarget,
};

#[derive(Parser, Debug)]
#[command(
    about = "Train the MobileNetV2 transfer-learning bundle (decision support only, not a diagnosis)"
)]
struct Args {
    /// Dataset root holding <split>/{NORMAL,PNEUMONIA}.
    #[arg(long, default_value = "../shared/data/kermany224")]
    data: PathBuf,
    /// Folder under the root to split by patient into train/validation/test.
    #[arg(long, default_value = "train")]
    split: String,
    /// ImageNet MobileNetV2 weights in torchvision's layout.
    #[arg(
        long,
        default_value = "../shared/weights/mobilenet_v2_imagenet_keras_int8.safetensors"
    )]
    weights: PathBuf,
    /// Output bundle directory.
    #[arg(long, default_value = "models/mobilenet_v2")]
    out: PathBuf,
    /// Feature stages trained from the top (19: the whole network; 0: frozen backbone, features
    /// computed once).
    #[arg(long, default_value_t = 19)]
    finetune_stages: usize,
    /// Views per training image when the backbone is frozen: the original plus augmented copies.
    #[arg(long, default_value_t = 3)]
    feature_views: usize,
    /// Most epochs.
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 1e-3)]
    weight_decay: f64,
    /// Training augmentation: `strong` (gamma, blur, noise, wider ranges) or `standard`.
    #[arg(long, value_enum, default_value_t = AugmentationKind::Strong)]
    augmentation: AugmentationKind,
    /// Weight the loss by inverse class frequency (off: the threshold chosen on validation
    /// handles the imbalance, which generalised better in issue 6's study).
    #[arg(long)]
    class_weights: bool,
    /// Epochs without a better validation AUC before stopping.
    #[arg(long, default_value_t = 10)]
    patience: usize,
    /// Seed of the split, shuffling, augmentation and dropout.
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

const SIZE: u32 = 224;

/// Pooled backbone features of `images`, `views` per image (view 0 unaugmented).
fn backbone_features(
    model: &Classifier,
    images: &[&GrayImage],
    views: usize,
    augmentation: &AugmentConfig,
    preprocessing: &Preprocessing,
    seed: u64,
    device: &Device,
) -> Result<Tensor> {
    let Classifier::MobileNetV2(net) = model else {
        anyhow::bail!("backbone features need MobileNetV2");
    };
    let bar =
        ProgressBar::new((images.len() * views) as u64).with_style(ProgressStyle::with_template(
            "features [{bar:30}] {pos}/{len} images, {per_sec}, eta {eta}",
        )?);
    let mut rows = Vec::new();
    for view in 0..views {
        for (c, chunk) in images.chunks(32).enumerate() {
            let owned: Vec<GrayImage> = chunk
                .iter()
                .enumerate()
                .map(|(i, im)| {
                    if view == 0 {
                        (*im).clone()
                    } else {
                        let id = (view as u64) << 40 | (c * 32 + i) as u64;
                        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                            seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        );
                        augment(im, augmentation, &mut rng)
                    }
                })
                .collect();
            let refs: Vec<&GrayImage> = owned.iter().collect();
            let x = images_to_tensor(&refs, preprocessing, device)?;
            // Detached: a kept feature must not hold its batch's whole autograd graph in memory.
            rows.push(net.forward_features(&x)?.detach());
            bar.inc(chunk.len() as u64);
        }
    }
    bar.finish_and_clear();
    Ok(Tensor::cat(&rows, 0)?)
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
        SIZE,
        args.skip_unreadable,
        args.limit_per_class,
        &split_config,
    )
    .with_context(|| format!("preparing {}", args.data.display()))?;
    describe_data(&data, args.seed);

    let preprocessing = Preprocessing {
        size: SIZE,
        channels: 3,
        normalization: Normalization::MinusOneToOne,
    };
    let architecture = Architecture::MobileNetV2(MobileNetV2Config {
        trainable_stages: args.finetune_stages,
        // candle's CPU dropout cannot be seeded: without it a run reproduces exactly.
        dropout: 0.0,
        ..MobileNetV2Config::pneumonia()
    });
    let varmap = VarMap::new();
    let model = Classifier::new(
        &architecture,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    load_weights_strict(&varmap, &args.weights, &["classifier."])?;
    seeded_init(&varmap, "classifier.", args.seed)?;
    let augmentation = args.augmentation.config();
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        weight_decay: args.weight_decay,
        warmup_epochs: 1,
        patience: args.patience,
        seed: args.seed,
        class_weighted: args.class_weights,
    };
    let mut log = Vec::new();
    let mut on_epoch = |r: &EpochRecord| {
        let line = serde_json::to_string(r).unwrap_or_default();
        println!("{line}");
        log.push(line);
    };

    let (val_probs, test_probs, report, recipe) = if args.finetune_stages == 0 {
        let Classifier::MobileNetV2(net) = &model else {
            anyhow::bail!("train_mobilenet built a model that is not MobileNetV2")
        };
        let views = args.feature_views.max(1);
        let t = Instant::now();
        let train_images = data.images(Side::Train);
        let train_features = backbone_features(
            &model,
            &train_images,
            views,
            &augmentation,
            &preprocessing,
            args.seed,
            &device,
        )?;
        let val_features = backbone_features(
            &model,
            &data.images(Side::Validation),
            1,
            &augmentation,
            &preprocessing,
            args.seed,
            &device,
        )?;
        let test_features = backbone_features(
            &model,
            &data.images(Side::Test),
            1,
            &augmentation,
            &preprocessing,
            args.seed,
            &device,
        )?;
        let feature_seconds = t.elapsed().as_secs_f64();
        let n_features =
            (train_images.len() + data.split.validation.len() + data.split.test.len()) as f64;
        eprintln!(
            "backbone features in {feature_seconds:.0} s ({:.1} images/s)",
            (n_features + ((views - 1) * train_images.len()) as f64) / feature_seconds
        );
        let train_targets: Vec<f32> = (0..views).flat_map(|_| data.targets(Side::Train)).collect();
        let train = FeatureBatches::new(train_features, train_targets)?;
        let val = FeatureBatches::new(val_features, data.targets(Side::Validation))?;
        let test = FeatureBatches::new(test_features, data.targets(Side::Test))?;
        let head = HeadOnly(net.classifier());
        let report = fit(
            TrainTarget {
                model: &head,
                varmap: &varmap,
                trainable: model.trainable_vars(&varmap),
            },
            &train,
            &val,
            &config,
            &device,
            &mut on_epoch,
        )?;
        let val_probs = predict_probabilities(&head, &val, 256, &device)?;
        let test_probs = predict_probabilities(&head, &test, 256, &device)?;
        let recipe = serde_json::json!({
            "mode": "frozen backbone, pooled features computed once per view",
            "feature_views": views,
            "augmentation": augmentation,
            "feature_seconds": feature_seconds,
            "padding": "symmetric (torchvision)",
            "batchnorm": "pretrained statistics, eval mode",
        });
        (val_probs, test_probs, report, recipe)
    } else {
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
        let recipe = serde_json::json!({
            "mode": format!("top {} feature stages fine-tuned on augmented images", args.finetune_stages),
            "augmentation": augmentation,
            "padding": "symmetric (torchvision)",
            "batchnorm": "pretrained statistics, eval mode; affine parameters trainable",
        });
        (
            predict_probabilities(&model, &val, 32, &device)?,
            predict_probabilities(&model, &test, 32, &device)?,
            report,
            recipe,
        )
    };

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

/// The classifier alone, applied to precomputed features.
struct HeadOnly<'a>(&'a candle_nn::Linear);

impl ModuleT for HeadOnly<'_> {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        candle_nn::Module::forward(self.0, x)
    }
}
