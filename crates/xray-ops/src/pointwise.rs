//! The 1x1 convolution as one op with its backward, each image one matrix product.
//!
//! As candle's batched `matmul` against a weight broadcast over the batch, the weight gradient
//! comes out as one `(O, C)` matrix per image, which candle's broadcast backward then sums with
//! its generic strided reduction; here the per-image products accumulate straight into one
//! weight gradient.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use num_traits::Float;

use crate::bias_act::{bias_act_backward, bias_relu6, Epilogue};
use crate::cpu_storage::{try_dispatch, try_dispatch3};
use crate::matmul::{matmul, per_image, sum_of_products, Columns, MatRef};
use crate::tracked::if_tracked;

/// `y[n, o] = sum_c w[o, c] * x[n, c]` over the pixels of `x` `(N, C, H, W)` with `weight`
/// `(O, C, 1, 1)`: a 1x1 convolution without bias. Differentiable; f32 or f64 on CPU,
/// candle's `matmul` elsewhere.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[[[1f32]], [[2.0]]]], &Device::Cpu)?; // (1, 2, 1, 1)
/// let w = Tensor::new(&[[[[3f32]], [[4.0]]]], &Device::Cpu)?; // (1, 2, 1, 1)
/// let y = xray_ops::pointwise_conv2d(&x, &w)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![11.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn pointwise_conv2d(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let out_c = check(x, weight)?;
    if !x.device().is_cpu() {
        let w2 = weight.reshape((1, out_c, c))?.broadcast_as((n, out_c, c))?;
        return w2
            .matmul(&x.reshape((n, c, h * w))?)?
            .reshape((n, out_c, h, w));
    }
    x.contiguous()?.apply_op2(&weight.contiguous()?, Pointwise)
}

/// [`pointwise_conv2d`] followed by [`bias_relu6`]`(_, bias, relu6)`, with the bias and the
/// activation applied to each image's output while it is still in cache.
pub fn pointwise_conv2d_bias_act(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    relu6: bool,
) -> candle_core::Result<Tensor> {
    let out_c = check(x, weight)?;
    if !x.device().is_cpu() || bias.dims() != [out_c] {
        return bias_relu6(&pointwise_conv2d(x, weight)?, bias, relu6);
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        PointwiseBiasAct { relu6 },
    )
}

/// The output channels, after checking that `weight` is `(O, C, 1, 1)` for `x`'s `C`.
fn check(x: &Tensor, weight: &Tensor) -> candle_core::Result<usize> {
    let c = x.dims4()?.1;
    let (out_c, in_c, kh, kw) = weight.dims4()?;
    if in_c != c || (kh, kw) != (1, 1) {
        bail!(
            "pointwise_conv2d: weight shape {:?} does not fit input {:?}: expected (O, {c}, 1, 1)",
            weight.dims(),
            x.dims()
        );
    }
    Ok(out_c)
}

/// `W X_n` for every image, each output plane then given the `epilogue`, if any.
fn forward<T: Float + Send + Sync + 'static>(
    x: &[T],
    weight: &[T],
    (c, out_c, pixels): (usize, usize, usize),
    epilogue: Option<Epilogue<'_, T>>,
) -> candle_core::Result<Vec<T>> {
    per_image(x, c * pixels, out_c * pixels, |x, y, threads| {
        let w = MatRef::row_major(weight, out_c, c);
        matmul(y, w, MatRef::row_major(x, c, pixels), false, threads)?;
        if let Some(epilogue) = &epilogue {
            for (channel, plane) in y.chunks_exact_mut(pixels.max(1)).enumerate() {
                epilogue.apply(channel, plane);
            }
        }
        Ok(())
    })
}

struct Pointwise;

impl CustomOp2 for Pointwise {
    fn name(&self) -> &'static str {
        "pointwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let out_c = l2.shape().dims4()?.0;
        let out = try_dispatch(
            "pointwise_conv2d",
            (s1, l1, "input"),
            (s2, l2, "weight"),
            |x, wt| forward(x, wt, (c, out_c, h * w), None),
            |x, wt| forward(x, wt, (c, out_c, h * w), None),
        )?;
        Ok((out, Shape::from((n, out_c, h, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        backward(x, weight, &grad.contiguous()?)
    }
}

/// Input and weight gradients from the (contiguous) output gradient.
fn backward(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    Ok((
        if_tracked(x, || grad.apply_op2_no_bwd(weight, &InputGrad))?,
        if_tracked(weight, || x.apply_op2_no_bwd(grad, &WeightGrad))?,
    ))
}

struct PointwiseBiasAct {
    relu6: bool,
}

impl CustomOp3 for PointwiseBiasAct {
    fn name(&self) -> &'static str {
        "pointwise-conv2d-bias-relu6"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let out_c = l2.shape().dims4()?.0;
        let relu6 = self.relu6;
        let out = try_dispatch3(
            "pointwise_conv2d_bias_act",
            (s1, l1, "input"),
            (s2, l2, "weight"),
            (s3, l3, "bias"),
            |x, wt, bias| forward(x, wt, (c, out_c, h * w), Some(Epilogue { bias, relu6 })),
            |x, wt, bias| forward(x, wt, (c, out_c, h * w), Some(Epilogue { bias, relu6 })),
        )?;
        Ok((out, Shape::from((n, out_c, h, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad_z, grad_bias) = bias_act_backward(grad, res, self.relu6)?;
        let (grad_x, grad_w) = backward(x, weight, &grad_z)?;
        Ok((grad_x, grad_w, Some(grad_bias)))
    }
}

/// `(grad_out (N, O, H, W), weight (O, C, 1, 1)) -> grad_input (N, C, H, W)`: `W^T G` per image.
struct InputGrad;

fn input_grad<T: Float + Send + Sync + 'static>(
    grad: &[T],
    weight: &[T],
    (c, out_c, pixels): (usize, usize, usize),
) -> candle_core::Result<Vec<T>> {
    per_image(grad, out_c * pixels, c * pixels, |g, y, threads| {
        let wt = MatRef::row_major(weight, out_c, c).t();
        matmul(y, wt, MatRef::row_major(g, out_c, pixels), false, threads)
    })
}

/// `sum_n G_n X_n^T`: the input is already each image's right-hand matrix.
fn weight_grad<T: Float + Send + Sync + 'static>(
    x: &[T],
    grad: &[T],
    (c, out_c, pixels): (usize, usize, usize),
) -> candle_core::Result<Vec<T>> {
    let image = c * pixels;
    sum_of_products(grad, (out_c, c, pixels), |i, _| {
        Columns::Input(&x[i * image..(i + 1) * image])
    })
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "pointwise-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, out_c, h, w) = l1.shape().dims4()?;
        let c = l2.shape().dims4()?.1;
        let out = try_dispatch(
            "pointwise_conv2d backward",
            (s1, l1, "output gradient"),
            (s2, l2, "weight"),
            |g, wt| input_grad(g, wt, (c, out_c, h * w)),
            |g, wt| input_grad(g, wt, (c, out_c, h * w)),
        )?;
        Ok((out, Shape::from((n, c, h, w))))
    }
}

/// `(input (N, C, H, W), grad_out (N, O, H, W)) -> grad_weight (O, C, 1, 1)`:
/// `sum_n G_n X_n^T`, accumulated in place.
struct WeightGrad;

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "pointwise-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = l1.shape().dims4()?;
        let out_c = l2.shape().dims4()?.1;
        let out = try_dispatch(
            "pointwise_conv2d backward",
            (s1, l1, "input"),
            (s2, l2, "output gradient"),
            |x, g| weight_grad(x, g, (c, out_c, h * w)),
            |x, g| weight_grad(x, g, (c, out_c, h * w)),
        )?;
        Ok((out, Shape::from((out_c, c, 1, 1))))
    }
}
