//! The whole pipeline on a small subset of the real films in ../shared: decode, split by
//! patient, train the scratch CNN briefly, pick a threshold on validation, save the bundle,
//! reload it, predict identically, and explain one film.

use std::path::PathBuf;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use xray_pneumonia::data::{
    decode_gray, images_to_tensor, AugmentConfig, MeanStd, Normalization, Preprocessing, Side,
    SplitConfig,
};
use xray_pneumonia::eval::{heat_overlay, vanilla_gradient, ThresholdRule};
use xray_pneumonia::infer::{Bundle, BundleConfig, TrainingRecord};
use xray_pneumonia::models::{seeded_init, Architecture, Classifier, ScratchCnnConfig};
use xray_pneumonia::pipeline::{close_run, prepare_data};
use xray_pneumonia::train::{fit, predict_probabilities, ImageBatches, TrainConfig, TrainTarget};

fn kermany() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/kermany224")
}

#[test]
fn train_save_reload_and_explain_on_real_films() -> anyhow::Result<()> {
    let device = Device::Cpu;
    let split_config = SplitConfig {
        validation_fraction: 0.25,
        test_fraction: 0.25,
        seed: 1,
    };
    let data = prepare_data(&kermany(), "train", 32, false, Some(40), &split_config)?;
    assert_eq!(data.set.samples.len(), 80);
    assert!(data.split.shared_patients(&data.set.samples).is_empty());

    let stats = MeanStd::of(&data.images(Side::Train));
    let preprocessing = Preprocessing {
        size: 32,
        channels: 1,
        normalization: Normalization::MeanStd {
            mean: stats.mean,
            std: stats.std,
        },
    };
    let architecture = Architecture::ScratchCnn(ScratchCnnConfig {
        in_channels: 1,
        channels: vec![8, 16],
        dropout: 0.0,
    });
    let varmap = VarMap::new();
    let model = Classifier::new(
        &architecture,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    seeded_init(&varmap, "", 5)?;
    let train = ImageBatches::new(
        data.images(Side::Train),
        data.targets(Side::Train),
        preprocessing,
        Some(AugmentConfig::default()),
        5,
    )?;
    let val = ImageBatches::new(
        data.images(Side::Validation),
        data.targets(Side::Validation),
        preprocessing,
        None,
        5,
    )?;
    let test = ImageBatches::new(
        data.images(Side::Test),
        data.targets(Side::Test),
        preprocessing,
        None,
        5,
    )?;
    let config = TrainConfig {
        epochs: 3,
        batch_size: 8,
        learning_rate: 3e-3,
        seed: 5,
        ..TrainConfig::default()
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
        &mut |_| {},
    )?;
    assert!(report.epochs.iter().all(|e| e.train_loss.is_finite()));

    let val_probs = predict_probabilities(&model, &val, 16, &device)?;
    let test_probs = predict_probabilities(&model, &test, 16, &device)?;
    let (threshold, val_metrics, test_metrics) = close_run(
        ThresholdRule::Youden,
        (&val_probs, &data.labels(Side::Validation)),
        (&test_probs, &data.labels(Side::Test)),
    )?;
    let training = TrainingRecord {
        config: config.to_record(),
        recipe: serde_json::json!({}),
        epochs_run: report.epochs.len(),
        best_epoch: report.best_epoch,
        seconds: report.seconds,
    };
    let bundle_config = BundleConfig::new(
        architecture,
        preprocessing,
        threshold,
        5,
        data.split_record(&split_config),
        data.data_record(),
        training,
        val_metrics,
        test_metrics,
    );
    let dir = tempfile::tempdir()?;
    Bundle::save(dir.path(), &bundle_config, &varmap)?;
    let bundle = Bundle::load(dir.path(), &device)?.with_batch_size(16);
    assert_eq!(
        bundle.config.split.lists.test_patients,
        data.split.patients(&data.set.samples, Side::Test)
    );
    let reloaded = bundle.probabilities(&data.images(Side::Test))?;
    assert_eq!(
        reloaded, test_probs,
        "the reloaded bundle predicts identically"
    );

    let film_path = kermany().join("train/PNEUMONIA/person1_bacteria_1.jpeg");
    let film = decode_gray(&film_path, &std::fs::read(&film_path)?)?;
    let small = image::imageops::resize(&film, 32, 32, image::imageops::FilterType::Triangle);
    let input = images_to_tensor(&[&small], &preprocessing, &device)?;
    let map =
        vanilla_gradient(|x| bundle.model.logits(x), &input)?.resized(film.width(), film.height());
    assert_eq!((map.width, map.height), film.dimensions());
    assert!(map.values.iter().all(|v| v.is_finite()) && map.values.iter().any(|&v| v > 0.0));
    assert_eq!(
        heat_overlay(&film, &map, 0.6).dimensions(),
        film.dimensions()
    );
    Ok(())
}

#[test]
fn mobilenet_saliency_reaches_the_input() -> anyhow::Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let architecture =
        Architecture::MobileNetV2(xray_pneumonia::models::MobileNetV2Config::pneumonia());
    let model = Classifier::new(
        &architecture,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    let weights = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/weights/mobilenet_v2_imagenet_keras_int8.safetensors");
    xray_pneumonia::models::load_weights_strict(&varmap, &weights, &["classifier."])?;
    seeded_init(&varmap, "classifier.", 0)?;
    let film_path = kermany().join("train/NORMAL/IM-0115-0001.jpeg");
    let film = decode_gray(&film_path, &std::fs::read(&film_path)?)?;
    let preprocessing = Preprocessing {
        size: 224,
        channels: 3,
        normalization: Normalization::MinusOneToOne,
    };
    let input = images_to_tensor(&[&film], &preprocessing, &device)?;
    let map = vanilla_gradient(|x| model.logits(x), &input)?;
    assert_eq!((map.width, map.height), (224, 224));
    assert!(
        map.values.iter().all(|v| v.is_finite())
            && map.values.iter().filter(|&&v| v > 0.0).count() > 1000
    );
    Ok(())
}
