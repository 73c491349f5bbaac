//! Evidence that saliency maps are faithful: cascading model randomisation (Adebayo et al.,
//! 2018). The methods themselves are [`xray_infer::Method`]; the `explain` example drives this.

use candle_core::Tensor;
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use xray_eval::EvalError;
use xray_models::Classifier;

/// The cascade of model randomisation: groups of parameter-name prefixes, from the output
/// towards the input; step `k` re-initialises groups `0..=k`.
pub fn randomization_cascade(model: &Classifier) -> Vec<(String, Vec<String>)> {
    let stages = |range: std::ops::RangeInclusive<usize>| -> Vec<String> {
        range.rev().map(|i| format!("features.{i}.")).collect()
    };
    match model {
        Classifier::MobileNetV2(_) => vec![
            ("classifier".into(), vec!["classifier.".into()]),
            ("features.14-18".into(), stages(14..=18)),
            ("features.7-13".into(), stages(7..=13)),
            ("features.1-6".into(), stages(1..=6)),
            ("features.0".into(), stages(0..=0)),
        ],
        Classifier::ScratchCnn(_) => vec![
            ("head".into(), vec!["head.".into()]),
            ("features.3".into(), stages(3..=3)),
            ("features.2".into(), stages(2..=2)),
            ("features.1".into(), stages(1..=1)),
            ("features.0".into(), stages(0..=0)),
        ],
    }
}

/// Re-initialises every weight tensor (two or more dimensions: convolutions and linear layers)
/// whose name starts with one of `prefixes`, with He-normal values from `seed`. One-dimensional
/// parameters (biases, BatchNorm affine and statistics) are left: randomising the weights already
/// destroys what the layer learnt.
pub fn randomize_weights(
    varmap: &VarMap,
    prefixes: &[String],
    seed: u64,
) -> Result<usize, EvalError> {
    let vars = varmap
        .data()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut names: Vec<&String> = vars
        .keys()
        .filter(|name| prefixes.iter().any(|p| name.starts_with(p.as_str())))
        .collect();
    names.sort();
    let mut changed = 0;
    for (k, name) in names.into_iter().enumerate() {
        let var = &vars[name];
        let dims = var.dims().to_vec();
        if dims.len() < 2 {
            continue;
        }
        let fan_in: usize = dims[1..].iter().product();
        let std = (2.0 / fan_in.max(1) as f64).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(k as u64));
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (z * std) as f32
            })
            .collect();
        let fresh =
            Tensor::from_vec(values, dims.as_slice(), var.device())?.to_dtype(var.dtype())?;
        var.set(&fresh)?;
        changed += 1;
    }
    Ok(changed)
}
