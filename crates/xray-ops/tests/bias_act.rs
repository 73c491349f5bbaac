//! The fused bias + ReLU6 op against candle's separate ops (forward and both gradients) on
//! random shapes, values straddling both kinks.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xray_ops::bias_relu6;

fn reference(x: &Tensor, bias: &Tensor, relu6: bool) -> candle_core::Result<Tensor> {
    let c = bias.dim(0)?;
    let y = x.broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
    if relu6 {
        y.clamp(0f64, 6f64)
    } else {
        Ok(y)
    }
}

#[test]
fn fused_bias_relu6_matches_separate_ops_with_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for case in 0..20 {
        let (n, c, h, w) = (
            rng.random_range(1..4),
            rng.random_range(1..6),
            rng.random_range(1..7),
            rng.random_range(1..7),
        );
        let relu6 = case % 4 != 0;
        let values: Vec<f64> = (0..n * c * h * w)
            .map(|_| rng.random_range(-3.0..9.0))
            .collect();
        let bias: Vec<f64> = (0..c).map(|_| rng.random_range(-1.0..1.0)).collect();
        let x = Var::from_tensor(&Tensor::from_vec(values, (n, c, h, w), &Device::Cpu).unwrap())
            .unwrap();
        let b = Var::from_tensor(&Tensor::from_vec(bias, c, &Device::Cpu).unwrap()).unwrap();
        let upstream = Tensor::rand(0f64, 1.0, (n, c, h, w), &Device::Cpu).unwrap();

        let ours = bias_relu6(x.as_tensor(), b.as_tensor(), relu6).unwrap();
        let theirs = reference(x.as_tensor(), b.as_tensor(), relu6).unwrap();
        let diff = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(
            diff.to_scalar::<f64>().unwrap() < 1e-12,
            "case {case}: forward"
        );

        let g1 = (&ours * &upstream)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (&theirs * &upstream)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (var, name) in [(&x, "input"), (&b, "bias")] {
            let a = g1.get(var.as_tensor()).unwrap();
            let r = g2.get(var.as_tensor()).unwrap();
            let diff = (a - r).unwrap().abs().unwrap().max_all().unwrap();
            assert!(
                diff.to_scalar::<f64>().unwrap() < 1e-9,
                "case {case}: {name} gradient"
            );
        }
    }
    let f32_input = Tensor::ones((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let wrong_bias = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
    assert!(bias_relu6(&f32_input, &wrong_bias, true).is_err());
}
