//! AdamW whose state can be saved and restored, so a resumed run continues exactly where an
//! interrupted one stopped. The update is candle-nn's `AdamW` op for op (same results), whose
//! moments are private and so cannot be checkpointed.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};

/// Decoupled weight-decay Adam (Loshchilov & Hutter, 2019) with bias correction.
#[derive(Debug)]
pub struct AdamW {
    /// Each parameter with its first and second moments.
    vars: Vec<(Var, Var, Var)>,
    step_t: usize,
    params: ParamsAdamW,
}

impl Optimizer for AdamW {
    type Config = ParamsAdamW;

    fn new(vars: Vec<Var>, params: ParamsAdamW) -> Result<Self> {
        let vars = vars
            .into_iter()
            .filter(|var| var.dtype().is_float())
            .map(|var| {
                let m = Var::zeros(var.shape(), var.dtype(), var.device())?;
                let v = Var::zeros(var.shape(), var.dtype(), var.device())?;
                Ok((var, m, v))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            vars,
            step_t: 0,
            params,
        })
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_t += 1;
        let p = &self.params;
        let (beta1, beta2) = (p.beta1, p.beta2);
        let scale_m = 1f64 / (1f64 - beta1.powi(self.step_t as i32));
        let scale_v = 1f64 / (1f64 - beta2.powi(self.step_t as i32));
        for (theta, m, v) in &self.vars {
            let Some(g) = grads.get(theta) else { continue };
            let next_m = ((m.as_tensor() * beta1)? + (g * (1.0 - beta1))?)?;
            let next_v = ((v.as_tensor() * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let next_theta = (theta.as_tensor() * (1f64 - p.lr * p.weight_decay))?;
            let adjusted = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            let next_theta = (next_theta - (adjusted * p.lr)?)?;
            m.set(&next_m)?;
            v.set(&next_v)?;
            theta.set(&next_theta)?;
        }
        Ok(())
    }
}

impl AdamW {
    /// Steps taken so far (the bias correction's `t`).
    pub fn steps(&self) -> usize {
        self.step_t
    }

    /// The moments, named `m.<name>` and `v.<name>` after each parameter's `name_of`, for a
    /// checkpoint. A parameter `name_of` cannot name is an error.
    pub fn state(
        &self,
        name_of: impl Fn(&Var) -> Option<String>,
    ) -> Result<HashMap<String, Tensor>> {
        let mut state = HashMap::new();
        for (theta, m, v) in &self.vars {
            let name = name_of(theta).ok_or_else(|| unnamed(theta))?;
            state.insert(format!("m.{name}"), m.as_tensor().clone());
            state.insert(format!("v.{name}"), v.as_tensor().clone());
        }
        Ok(state)
    }

    /// Restores moments saved by [`AdamW::state`] and the step count; every parameter's moments
    /// must be there with its shape.
    pub fn restore(
        &mut self,
        state: &HashMap<String, Tensor>,
        steps: usize,
        name_of: impl Fn(&Var) -> Option<String>,
    ) -> Result<()> {
        for (theta, m, v) in &self.vars {
            let name = name_of(theta).ok_or_else(|| unnamed(theta))?;
            for (key, moment) in [(format!("m.{name}"), m), (format!("v.{name}"), v)] {
                let saved = state.get(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state has no moment `{key}`"))
                })?;
                moment.set(&saved.to_device(moment.device())?)?;
            }
        }
        self.step_t = steps;
        Ok(())
    }
}

fn unnamed(var: &Var) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "a trained parameter of shape {:?} is not in the varmap",
        var.dims()
    ))
}
