use candle_core::Tensor;
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Re-initialises the variables whose names start with `prefix` from a generator seeded with
/// `seed`, so that a run depends on its seed alone (candle's CPU generator cannot be seeded).
///
/// Weights of rank 2 or more (convolutions, linear layers) get Kaiming-normal values
/// (`std = sqrt(2 / fan_in)`); other biases get zeros; BatchNorm parameters and statistics
/// (names containing `bn.` or ending in `running_mean`/`running_var`) are left alone.
pub fn seeded_init(varmap: &VarMap, prefix: &str, seed: u64) -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vars = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut names: Vec<&String> = vars.keys().filter(|n| n.starts_with(prefix)).collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let is_norm =
            name.contains("bn.") || name.ends_with("running_mean") || name.ends_with("running_var");
        let (dims, device) = (var.dims().to_vec(), var.device().clone());
        if name.ends_with("weight") && dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            let std = (2.0 / fan_in as f32).sqrt();
            let values: Vec<f32> = (0..var.elem_count())
                .map(|_| {
                    // Box-Muller: one normal sample from two uniforms.
                    let (u1, u2): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
                    std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
                })
                .collect();
            var.set(&Tensor::from_vec(values, dims, &device)?.to_dtype(var.dtype())?)?;
        } else if name.ends_with("bias") && !is_norm {
            var.set(&var.zeros_like()?)?;
        }
    }
    Ok(())
}
