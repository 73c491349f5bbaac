//! The two training recipes the README's commands run, as library calls: the from-scratch CNN,
//! and ImageNet MobileNetV2 either fine-tuned or with a frozen backbone. Each trains on the
//! train side of a [`PreparedData`], stops early on its validation side, and returns the
//! probabilities of both held-out sides for [`save_run`](crate::pipeline::save_run).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use rand::SeedableRng;
use xray_data::{
    augment, images_to_tensor, AugmentConfig, GrayImage, MeanStd, Normalization, Preprocessing,
    Side,
};
use xray_models::{
    load_weights_strict, seeded_init, Architecture, Classifier, MobileNetV2Config, ScratchCnnConfig,
};
use xray_train::{
    predict_probabilities, BatchSource, FeatureBatches, ImageBatches, Observer, TrainConfig,
    TrainReport, TrainTarget, Trainer,
};

use crate::pipeline::PreparedData;
use crate::Error;

/// What every recipe needs besides its own choices.
pub struct RecipeRun<'a> {
    /// The decoded films and their patient-level split.
    pub data: &'a PreparedData,
    /// Where to train.
    pub device: &'a Device,
    /// The trainer's settings.
    pub train: TrainConfig,
    /// The training augmentation.
    pub augmentation: AugmentConfig,
    /// Told of every step and epoch.
    pub observer: &'a mut dyn Observer,
    /// Where the trainer checkpoints every epoch, and whether to resume from it.
    pub checkpoint: Option<(PathBuf, bool)>,
}

/// A trained model and what [`save_run`](crate::pipeline::save_run) records of it.
pub struct TrainedModel {
    /// The network's variables, the best epoch's.
    pub varmap: VarMap,
    /// The network.
    pub architecture: Architecture,
    /// How films became inputs.
    pub preprocessing: Preprocessing,
    /// The recipe in words and numbers, for the bundle.
    pub recipe: serde_json::Value,
    /// The training report and the held-out sides' probabilities.
    pub scores: RunScores,
}

/// What training reported, and the best epoch's probabilities on the two held-out sides.
pub struct RunScores {
    /// What the trainer reported.
    pub report: TrainReport,
    /// Probabilities of the validation side.
    pub validation: Vec<f64>,
    /// Probabilities of the held-out test side.
    pub test: Vec<f64>,
}

/// How much of MobileNetV2 trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backbone {
    /// The top `stages` feature stages train with the head, on augmented films every epoch.
    FineTune {
        /// Feature stages from the top (19: the whole network).
        stages: usize,
    },
    /// The backbone stays as ImageNet left it: its pooled features are computed once per view
    /// of each film (view 0 unaugmented) and only the head trains.
    Frozen {
        /// Views per training film.
        views: usize,
    },
}

/// MobileNetV2's input side.
pub const MOBILENET_SIZE: u32 = 224;

/// The three sides' image sources for `preprocessing`, augmentation on the train side only.
fn image_sources<'a>(
    run: &RecipeRun<'a>,
    preprocessing: Preprocessing,
) -> Result<[ImageBatches<'a>; 3], Error> {
    let source = |side, augmentation| {
        ImageBatches::new(
            run.data.images(side),
            run.data.targets(side),
            preprocessing,
            augmentation,
            run.train.seed,
        )
    };
    Ok([
        source(Side::Train, Some(run.augmentation))?,
        source(Side::Validation, None)?,
        source(Side::Test, None)?,
    ])
}

/// Trains `trainable` (variables of `model`, all of them in `varmap`) on `sources` (train,
/// validation, test) and scores the two held-out sides with the best epoch's weights.
fn train_and_score<M: ModuleT>(
    run: RecipeRun<'_>,
    model: &M,
    (varmap, trainable): (&VarMap, Vec<candle_core::Var>),
    sources: [&dyn BatchSource; 3],
    score_batch: usize,
) -> Result<RunScores, Error> {
    let target = TrainTarget {
        model,
        varmap,
        trainable,
    };
    let mut trainer = Trainer::new(target, run.train).observer(run.observer);
    if let Some((path, resume)) = run.checkpoint {
        trainer = trainer.checkpoint(path, resume);
    }
    let report = trainer.fit(sources[0], sources[1], run.device)?;
    let validation = predict_probabilities(model, sources[1], score_batch, run.device)?;
    let test = predict_probabilities(model, sources[2], score_batch, run.device)?;
    Ok(RunScores {
        report,
        validation,
        test,
    })
}

/// The from-scratch CNN on gray films at `size`, standardised with the train side's own
/// statistics and initialised from the seed alone. Dropout is off: candle's CPU dropout cannot
/// be seeded, and without it a run reproduces exactly.
pub fn train_scratch(run: RecipeRun<'_>, size: u32) -> Result<TrainedModel, Error> {
    let stats = MeanStd::of(&run.data.images(Side::Train));
    let preprocessing = Preprocessing {
        size,
        channels: 1,
        normalization: Normalization::MeanStd {
            mean: stats.mean,
            std: stats.std,
        },
    };
    let architecture = Architecture::ScratchCnn(ScratchCnnConfig {
        dropout: 0.0,
        ..ScratchCnnConfig::default()
    });
    let varmap = VarMap::new();
    let model = Classifier::seeded(&architecture, &varmap, run.train.seed, run.device)?;
    let recipe = serde_json::json!({
        "mode": "trained from scratch on augmented gray images",
        "augmentation": run.augmentation,
        "initialisation": "Kaiming normal convolutions from a seeded CPU generator",
    });
    let [train, validation, test] = image_sources(&run, preprocessing)?;
    let trainable = (&varmap, model.trainable_vars(&varmap));
    let scores = train_and_score(run, &model, trainable, [&train, &validation, &test], 64)?;
    Ok(TrainedModel {
        varmap,
        architecture,
        preprocessing,
        recipe,
        scores,
    })
}

/// ImageNet MobileNetV2 from `weights` (torchvision's layout) with a new one-logit head seeded
/// from the run's seed, trained as `backbone` says, on films scaled to `[-1, 1]`.
pub fn train_mobilenet(
    run: RecipeRun<'_>,
    weights: &Path,
    backbone: Backbone,
) -> Result<TrainedModel, Error> {
    let preprocessing = Preprocessing {
        size: MOBILENET_SIZE,
        channels: 3,
        normalization: Normalization::MinusOneToOne,
    };
    let architecture = Architecture::MobileNetV2(MobileNetV2Config {
        trainable_stages: match backbone {
            Backbone::FineTune { stages } => stages,
            Backbone::Frozen { .. } => 0,
        },
        // candle's CPU dropout cannot be seeded: without it a run reproduces exactly.
        dropout: 0.0,
        ..MobileNetV2Config::pneumonia()
    });
    let varmap = VarMap::new();
    let model = Classifier::new(
        &architecture,
        VarBuilder::from_varmap(&varmap, DType::F32, run.device),
    )?;
    load_weights_strict(&varmap, weights, &["classifier."])?;
    seeded_init(&varmap, "classifier.", run.train.seed)?;
    let augmentation = run.augmentation;
    let (scores, recipe) = match backbone {
        Backbone::FineTune { stages } => {
            let [train, validation, test] = image_sources(&run, preprocessing)?;
            let sources: [&dyn BatchSource; 3] = [&train, &validation, &test];
            let trainable = (&varmap, model.trainable_vars(&varmap));
            let scores = train_and_score(run, &model, trainable, sources, 32)?;
            let recipe = serde_json::json!({
                "mode": format!("top {stages} feature stages fine-tuned on augmented images"),
                "augmentation": augmentation,
                "padding": "symmetric (torchvision)",
                "batchnorm": "pretrained statistics, eval mode; affine parameters trainable",
            });
            (scores, recipe)
        }
        Backbone::Frozen { views } => {
            let Classifier::MobileNetV2(net) = &model else {
                return Err(Error::from(crate::ErrorKind::Invalid(
                    "a frozen backbone needs MobileNetV2".into(),
                )));
            };
            let views = views.max(1);
            let features = |side, views| {
                backbone_features(&model, &run.data.images(side), views, &run, &preprocessing)
            };
            let (train, validation, test) = (
                features(Side::Train, views)?,
                features(Side::Validation, 1)?,
                features(Side::Test, 1)?,
            );
            let targets = |side| run.data.targets(side);
            let train_targets = (0..views).flat_map(|_| targets(Side::Train)).collect();
            let train = FeatureBatches::new(train, train_targets)?;
            let validation = FeatureBatches::new(validation, targets(Side::Validation))?;
            let test = FeatureBatches::new(test, targets(Side::Test))?;
            let head = HeadOnly(net.classifier());
            let sources: [&dyn BatchSource; 3] = [&train, &validation, &test];
            let trainable = (&varmap, model.trainable_vars(&varmap));
            let scores = train_and_score(run, &head, trainable, sources, 256)?;
            let recipe = serde_json::json!({
                "mode": "frozen backbone, pooled features computed once per view",
                "feature_views": views,
                "augmentation": augmentation,
                "padding": "symmetric (torchvision)",
                "batchnorm": "pretrained statistics, eval mode",
            });
            (scores, recipe)
        }
    };
    Ok(TrainedModel {
        varmap,
        architecture,
        preprocessing,
        recipe,
        scores,
    })
}

/// The classifier alone, applied to precomputed features.
struct HeadOnly<'a>(&'a candle_nn::Linear);

impl ModuleT for HeadOnly<'_> {
    fn forward_t(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        candle_nn::Module::forward(self.0, x)
    }
}

/// Pooled backbone features of `images`, `views` per image (view 0 unaugmented), each later
/// view augmented with a generator seeded by the run's seed, the view and the image.
fn backbone_features(
    model: &Classifier,
    images: &[&GrayImage],
    views: usize,
    run: &RecipeRun<'_>,
    preprocessing: &Preprocessing,
) -> Result<Tensor, Error> {
    let Classifier::MobileNetV2(net) = model else {
        return Err(crate::ErrorKind::Invalid("backbone features need MobileNetV2".into()).into());
    };
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
                            run.train.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        );
                        augment(im, &run.augmentation, &mut rng)
                    }
                })
                .collect();
            let refs: Vec<&GrayImage> = owned.iter().collect();
            let x = images_to_tensor(&refs, preprocessing, run.device)?;
            // Detached: a kept feature must not hold its batch's whole autograd graph in memory.
            rows.push(net.forward_features(&x)?.detach());
        }
    }
    Ok(Tensor::cat(&rows, 0)?)
}
