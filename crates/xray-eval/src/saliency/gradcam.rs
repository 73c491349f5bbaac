use candle_core::{DType, Tensor, Var};

use super::{single_image, ExplainedClass, SaliencyMap};
use crate::EvalError;

/// Grad-CAM (Selvaraju et al., 2017) for one image `(1, C, H, W)`.
///
/// `activation_fn` gives the explained layer's activation `A`, `(1, K, h, w)`; `head_fn` maps it
/// to the logit. With weights `a_k = mean_ij d(s z)/dA_kij`, the map is `ReLU(sum_k a_k A_k)`,
/// bilinearly upsampled to `H x W`. The one-logit output `z` has no class scores to pick from:
/// `s = +1` explains pneumonia (what raises `z`), `s = -1` the normal class (what lowers it);
/// the ReLU keeps only evidence for the explained class.
pub fn grad_cam<A, H>(
    activation_fn: A,
    head_fn: H,
    input: &Tensor,
    class: ExplainedClass,
) -> Result<SaliencyMap, EvalError>
where
    A: Fn(&Tensor) -> candle_core::Result<Tensor>,
    H: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    let (_, height, width) = single_image(input)?;
    let activation = Var::from_tensor(&activation_fn(input)?.detach())?;
    let (_, _, h, w) = activation.dims4()?;
    let logit = head_fn(activation.as_tensor())?.flatten_all()?;
    let grads = (logit.sum_all()? * class.sign())?.backward()?;
    let grad = grads.get(activation.as_tensor()).ok_or_else(|| {
        candle_core::Error::Msg("the logit does not depend on the explained layer".into())
    })?;
    let weights = grad.mean_keepdim((2, 3))?;
    let cam = activation
        .as_tensor()
        .broadcast_mul(&weights)?
        .sum((0, 1))?
        .relu()?;
    let values: Vec<f32> = cam.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let logit = logit.to_dtype(DType::F32)?.to_vec1::<f32>()?[0];
    Ok(SaliencyMap::from_values(w as u32, h as u32, values, logit)
        .resized(width as u32, height as u32))
}
