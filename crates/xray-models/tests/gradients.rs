//! Every model's gradients against central finite differences, along random directions, for
//! parameters across the network and for the input. In f64, so that the difference step can be
//! small enough never to cross a ReLU kink and round-off stays far below the tolerance.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use xray_models::{seeded_init, Architecture, Classifier, MobileNetV2Config, ScratchCnnConfig};

fn objective(
    model: &Classifier,
    x: &Tensor,
    weights: &Tensor,
    train: bool,
) -> candle_core::Result<Tensor> {
    (model.forward_t(x, train)? * weights)?.sum_all()
}

fn value(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap_or(f64::NAN)
}

/// Checks d objective / d var along a random direction against a central difference.
fn check_direction(
    name: &str,
    var: &Var,
    eval: &dyn Fn() -> f64,
    grad: &Tensor,
) -> candle_core::Result<()> {
    let original = var.as_tensor().copy()?;
    let direction = original.randn_like(0.0, 1.0)?;
    let analytic = value(&(grad * &direction)?.sum_all()?);
    let eps = 1e-7;
    var.set(&(&original + (&direction * eps)?)?)?;
    let plus = eval();
    var.set(&(&original - (&direction * eps)?)?)?;
    let minus = eval();
    var.set(&original)?;
    let numeric = (plus - minus) / (2.0 * eps);
    let tolerance = 1e-4 * analytic.abs().max(numeric.abs()) + 1e-6;
    assert!(
        (analytic - numeric).abs() <= tolerance,
        "{name}: analytic {analytic:.6}, finite difference {numeric:.6}"
    );
    Ok(())
}

fn check_model(
    architecture: Architecture,
    input_shape: (usize, usize, usize, usize),
    train: bool,
    names: &[&str],
) -> candle_core::Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = Classifier::new(
        &architecture,
        VarBuilder::from_varmap(&varmap, DType::F64, &device),
    )?;
    seeded_init(&varmap, "", 1)?;
    let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, input_shape, &device)?)?;
    let weights = Tensor::randn(0f64, 1.0, input_shape.0, &device)?;
    let grads = objective(&model, &x, &weights, train)?.backward()?;
    let eval = || value(&objective(&model, &x, &weights, train).expect("forward"));

    let vars = varmap.data().lock().expect("varmap").clone();
    for name in names {
        let var = vars
            .get(*name)
            .unwrap_or_else(|| panic!("no variable {name}"));
        let grad = grads
            .get(var)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        check_direction(name, var, &eval, grad)?;
    }
    let grad_x = grads.get(&x).expect("input gradient");
    check_direction("input", &x, &eval, grad_x)
}

#[test]
fn scratch_cnn_gradients_match_finite_differences() -> candle_core::Result<()> {
    let config = ScratchCnnConfig {
        in_channels: 1,
        channels: vec![4, 8],
        dropout: 0.0,
    };
    check_model(
        Architecture::ScratchCnn(config),
        (3, 1, 12, 12),
        true,
        &[
            "features.0.conv.weight",
            "features.1.conv.weight",
            "features.1.bn.weight",
            "head.weight",
            "head.bias",
        ],
    )
}

#[test]
fn mobilenet_v2_gradients_match_finite_differences() -> candle_core::Result<()> {
    let config = MobileNetV2Config {
        num_outputs: 1,
        dropout: 0.0,
        trainable_stages: 19,
    };
    check_model(
        Architecture::MobileNetV2(config),
        (2, 3, 32, 32),
        false,
        &[
            "features.0.0.weight",
            "features.1.conv.0.0.weight",
            "features.2.conv.1.0.weight",
            "features.4.conv.2.weight",
            "features.9.conv.1.1.bias",
            "features.18.0.weight",
            "classifier.1.weight",
        ],
    )
}

#[test]
fn frozen_stages_get_no_gradient() -> candle_core::Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let config = MobileNetV2Config {
        num_outputs: 1,
        dropout: 0.0,
        trainable_stages: 2,
    };
    let model = Classifier::new(
        &Architecture::MobileNetV2(config),
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    let x = Tensor::randn(0f32, 1.0, (1, 3, 32, 32), &device)?;
    let grads = model.forward_t(&x, true)?.sum_all()?.backward()?;
    let vars = varmap.data().lock().expect("varmap").clone();
    assert!(
        grads.get(&vars["features.16.conv.1.0.weight"]).is_none(),
        "stage 16 is frozen"
    );
    assert!(
        grads.get(&vars["features.17.conv.1.0.weight"]).is_some(),
        "stage 17 trains"
    );
    assert!(grads.get(&vars["classifier.1.weight"]).is_some());
    let trainable = model.trainable_vars(&varmap).len();
    // Stage 17: 3 convs + 3 norms x 2 affine params; stage 18: conv + norm x 2; head: 2.
    assert_eq!(trainable, 3 + 6 + 1 + 2 + 2);
    Ok(())
}
