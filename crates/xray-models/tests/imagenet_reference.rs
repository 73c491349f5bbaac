//! MobileNetV2 with the shared ImageNet weights reproduces torchvision's 1000-class logits.
//! The fixture comes from `tools/make_imagenet_fixture.py` (run once with torchvision).

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use xray_models::{load_weights_strict, MobileNetV2, MobileNetV2Config};

fn shared_weights() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/weights/mobilenet_v2_imagenet_keras_int8.safetensors")
}

fn fixture_input() -> candle_core::Result<Tensor> {
    let n = 2 * 3 * 224 * 224;
    let values: Vec<f32> = (0..n as u64)
        .map(|i| (((i * 7919) % 10007) as f64 / 10007.0 * 2.0 - 1.0) as f32)
        .collect();
    Tensor::from_vec(values, (2, 3, 224, 224), &Device::Cpu)
}

#[test]
fn reproduces_torchvision_logits() -> Result<(), Box<dyn std::error::Error>> {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/imagenet_logits.json"))?;
    let expected: Vec<Vec<f64>> = serde_json::from_value(fixture["logits"].clone())?;

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = MobileNetV2::new(MobileNetV2Config::imagenet(), vb)?;
    load_weights_strict(&varmap, &shared_weights(), &[])?;
    let logits: Vec<Vec<f32>> = model.forward_t(&fixture_input()?, false)?.to_vec2()?;

    for (row, (got, want)) in logits.iter().zip(&expected).enumerate() {
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(want)
            .map(|(g, w)| (*g as f64 - w).abs() / scale)
            .fold(0f64, f64::max);
        assert!(
            worst <= 1e-4,
            "image {row}: worst relative difference {worst:.2e}"
        );
        let argmax = |v: &[f64]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b]));
        let got64: Vec<f64> = got.iter().map(|&v| v as f64).collect();
        assert_eq!(
            argmax(&got64),
            argmax(want),
            "image {row}: top-1 class differs"
        );
    }
    Ok(())
}
