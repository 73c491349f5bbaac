//! With the `cuda` feature: the shipped bundles give the same predictions, out-of-distribution
//! flags and weight gradients on the GPU as on the CPU, for real films from ../shared. The build
//! then expects a CUDA device; without the feature this file is empty.
#![cfg(feature = "cuda")]

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use xray_pneumonia::data::{images_to_tensor, load_images, GrayImage, LoadOptions, Side};
use xray_pneumonia::infer::Bundle;
use xray_pneumonia::pipeline::samples_on_side;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every 40th film of the bundle's held-out test patients (both classes), at its input size.
fn heldout_films(bundle: &Bundle) -> Vec<GrayImage> {
    let data = root().join("../shared/data/kermany224");
    let mut samples = samples_on_side(&data, "train", &bundle.config.split, Some(Side::Test))
        .expect("held-out films");
    samples.sort_by(|a, b| a.path.cmp(&b.path));
    let chosen: Vec<_> = samples.into_iter().step_by(40).collect();
    let options = LoadOptions {
        size: bundle.config.preprocessing.size,
        skip_unreadable: false,
    };
    load_images(chosen, &options).expect("decode").images
}

/// Gradients of the summed logits with respect to every weight, by name.
fn weight_gradients(
    bundle: &Bundle,
    films: &[&GrayImage],
    device: &Device,
) -> Vec<(String, Tensor)> {
    let x = images_to_tensor(films, &bundle.config.preprocessing, device).expect("batch");
    let grads = bundle
        .model_with_weight_gradients()
        .expect("tracked model")
        .logits(&x)
        .and_then(|l| l.sum_all())
        .and_then(|l| l.backward())
        .expect("backward");
    let mut named: Vec<(String, Tensor)> = bundle
        .varmap
        .data()
        .lock()
        .expect("varmap")
        .iter()
        .filter_map(|(name, var)| grads.get(var).map(|g| (name.clone(), g.clone())))
        .collect();
    assert!(!named.is_empty(), "no weight received a gradient");
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

fn check_bundle(name: &str) {
    let dir = root().join("models").join(name);
    let gpu = Device::new_cuda(0).expect("the cuda feature expects a CUDA device");
    let on_cpu = Bundle::load(&dir, &Device::Cpu)
        .expect("load on CPU")
        .with_batch_size(8);
    let on_gpu = Bundle::load(&dir, &gpu)
        .expect("load on GPU")
        .with_batch_size(8);
    let films = heldout_films(&on_cpu);
    let refs: Vec<&GrayImage> = films.iter().collect();
    assert!(refs.len() >= 15, "{name}: only {} films", refs.len());

    let cpu = on_cpu.predict_batch(&refs).expect("CPU");
    let cuda = on_gpu.predict_batch(&refs).expect("GPU");
    for (i, (c, g)) in cpu.iter().zip(&cuda).enumerate() {
        assert!(
            (c.probability - g.probability).abs() < 1e-4,
            "{name} film {i}: probability {} on CPU, {} on GPU",
            c.probability,
            g.probability
        );
        let (cs, gs) = (c.ood_score.expect("score"), g.ood_score.expect("score"));
        assert!(
            (cs - gs).abs() <= 1e-3 * cs.abs().max(1.0),
            "{name} film {i}: OOD score {cs} on CPU, {gs} on GPU"
        );
    }

    let batch = &refs[..4];
    let cpu_grads = weight_gradients(&on_cpu, batch, &Device::Cpu);
    let gpu_grads = weight_gradients(&on_gpu, batch, &gpu);
    assert_eq!(cpu_grads.len(), gpu_grads.len(), "{name}: gradient count");
    assert!(!cpu_grads.is_empty(), "{name}: no gradients");
    for ((n, c), (_, g)) in cpu_grads.iter().zip(&gpu_grads) {
        let c = c
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("cpu");
        let g = g
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("gpu");
        let scale = c.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let worst = c
            .iter()
            .zip(&g)
            .map(|(a, b)| (a - b).abs() / scale)
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-3,
            "{name} gradient of {n}: relative error {worst:.2e}"
        );
    }
}

#[test]
fn mobilenet_runs_the_same_on_gpu() {
    check_bundle("mobilenet_v2");
}

#[test]
fn scratch_cnn_runs_the_same_on_gpu() {
    check_bundle("scratch_cnn");
}

/// The trainer refuses a model built on another device than the one it trains on, naming a
/// parameter; `Classifier::seeded`, which `train_scratch` uses, builds on the device it is given.
#[test]
fn a_model_on_another_device_is_refused_by_the_trainer() {
    use candle_nn::VarMap;
    use xray_pneumonia::models::{Architecture, Classifier, ScratchCnnConfig};
    use xray_pneumonia::train::{check_devices, TrainError};
    let gpu = Device::new_cuda(0).expect("the cuda feature expects a CUDA device");
    let architecture = Architecture::ScratchCnn(ScratchCnnConfig::default());
    let on_cpu = VarMap::new();
    Classifier::seeded(&architecture, &on_cpu, 42, &Device::Cpu).expect("CPU model");
    match check_devices(&on_cpu, &gpu) {
        Err(TrainError::DeviceMismatch { parameter, .. }) => assert!(!parameter.is_empty()),
        other => panic!("a CPU model on a CUDA trainer must be refused, got {other:?}"),
    }
    let on_gpu = VarMap::new();
    Classifier::seeded(&architecture, &on_gpu, 42, &gpu).expect("GPU model");
    check_devices(&on_gpu, &gpu).expect("a model built on the training device is accepted");
}
