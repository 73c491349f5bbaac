//! A weights file with a missing, mis-shaped or extra tensor, or no valid header, is an error
//! that names the tensor or the file.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use xray_models::{load_weights_strict, Architecture, Classifier, ModelError, ScratchCnnConfig};

fn small_model(varmap: &VarMap) -> Classifier {
    let config = ScratchCnnConfig {
        in_channels: 1,
        channels: vec![4],
        dropout: 0.0,
    };
    Classifier::new(
        &Architecture::ScratchCnn(config),
        VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu),
    )
    .expect("model")
}

fn tensors_of(varmap: &VarMap) -> HashMap<String, Tensor> {
    let vars = varmap.data().lock().expect("varmap");
    vars.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

fn save(tensors: &HashMap<String, Tensor>, path: &Path) {
    candle_core::safetensors::save(tensors, path).expect("save");
}

#[test]
fn round_trip_loads() {
    let dir = tempfile::tempdir().unwrap();
    let source = VarMap::new();
    small_model(&source);
    save(&tensors_of(&source), &dir.path().join("w.safetensors"));
    let target = VarMap::new();
    small_model(&target);
    load_weights_strict(&target, &dir.path().join("w.safetensors"), &[]).unwrap();
    let a = tensors_of(&source)["features.0.conv.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = tensors_of(&target)["features.0.conv.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let varmap = VarMap::new();
    small_model(&varmap);
    let mut tensors = tensors_of(&varmap);
    tensors.remove("head.weight");
    let path = dir.path().join("w.safetensors");
    save(&tensors, &path);
    let err = load_weights_strict(&varmap, &path, &[]).unwrap_err();
    assert!(
        matches!(err, ModelError::MissingTensor { ref tensor, .. } if tensor == "head.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("head.weight"));
}

#[test]
fn misshaped_tensor_is_named_with_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let varmap = VarMap::new();
    small_model(&varmap);
    let mut tensors = tensors_of(&varmap);
    tensors.insert(
        "features.0.conv.weight".into(),
        Tensor::zeros((4, 1, 5, 5), DType::F32, &Device::Cpu).unwrap(),
    );
    let path = dir.path().join("w.safetensors");
    save(&tensors, &path);
    let message = load_weights_strict(&varmap, &path, &[])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("features.0.conv.weight")
            && message.contains("[4, 1, 5, 5]")
            && message.contains("[4, 1, 3, 3]"),
        "{message}"
    );
}

#[test]
fn extra_tensor_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let varmap = VarMap::new();
    small_model(&varmap);
    let mut tensors = tensors_of(&varmap);
    tensors.insert(
        "features.9.conv.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let path = dir.path().join("w.safetensors");
    save(&tensors, &path);
    let message = load_weights_strict(&varmap, &path, &[])
        .unwrap_err()
        .to_string();
    assert!(message.contains("features.9.conv.weight"), "{message}");
}

#[test]
fn truncated_or_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let varmap = VarMap::new();
    small_model(&varmap);
    let path = dir.path().join("w.safetensors");
    save(&tensors_of(&varmap), &path);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let message = load_weights_strict(&varmap, &path, &[])
        .unwrap_err()
        .to_string();
    assert!(message.contains("w.safetensors"), "{message}");
    let message = load_weights_strict(&varmap, &dir.path().join("none.safetensors"), &[])
        .unwrap_err()
        .to_string();
    assert!(message.contains("none.safetensors"), "{message}");
}
