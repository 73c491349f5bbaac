//! Depthwise 2-D convolution (`groups == channels`) as a candle custom op with its backward.
//!
//! candle 0.11 runs a grouped convolution as one convolution per group, which makes
//! MobileNetV2 about 20x slower than it needs to be on CPU and its backward memory-hungry.
//! This op computes all channels in one pass: on CPU, and on CUDA for f32 with the `cuda`
//! feature. Elsewhere (Metal, CUDA without the feature, CUDA f16/f64) it falls back to
//! candle's grouped `conv2d`.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod flat;

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

use crate::bias_act::{bias_act_backward, bias_relu6, Epilogue};
use crate::cpu_storage::{dispatch, dispatch3, gradient_like, slice};
use crate::tracked::if_tracked;
use cpu::Geometry;

/// Depthwise convolution of `x` `(N, C, H, W)` with `weight` `(C, 1, K, K)` (f32 or f64): square
/// kernel of any size, the same `padding` on every side, any `stride`, dilation 1, no bias.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::ones((1, 2, 4, 4), candle_core::DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let y = xray_ops::depthwise_conv2d(&x, &w, 1, 1)?;
/// assert_eq!(y.dims(), &[1, 2, 4, 4]);
/// assert_eq!(y.get(0)?.get(0)?.get(1)?.get(1)?.to_scalar::<f32>()?, 9.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn depthwise_conv2d(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    check(x, weight, stride, padding)?;
    if !has_own_kernel(x) {
        return x.conv2d(weight, padding, stride, 1, x.dim(1)?);
    }
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, DepthwiseConv2d { stride, padding })
}

/// [`depthwise_conv2d`] followed by [`bias_relu6`]`(_, bias, relu6)`, with the bias and the
/// activation applied to each output plane while it is still in cache.
pub fn depthwise_conv2d_bias_act(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    (stride, padding): (usize, usize),
    relu6: bool,
) -> candle_core::Result<Tensor> {
    check(x, weight, stride, padding)?;
    if !x.device().is_cpu() || bias.dims() != [x.dim(1)?] {
        return bias_relu6(&depthwise_conv2d(x, weight, stride, padding)?, bias, relu6);
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        DepthwiseBiasAct {
            stride,
            padding,
            relu6,
        },
    )
}

/// Whether this module has a kernel for `x`'s device and type; otherwise candle's `conv2d` runs.
fn has_own_kernel(x: &Tensor) -> bool {
    let device = x.device();
    device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda() && x.dtype() == DType::F32)
}

fn check(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> candle_core::Result<()> {
    let (_, c, h, w) = x.dims4()?;
    let (wc, one, kh, kw) = weight.dims4()?;
    if wc != c || one != 1 || kh != kw {
        bail!(
            "depthwise_conv2d: weight shape {:?} does not fit input {:?}: expected ({c}, 1, K, K)",
            weight.dims(),
            x.dims()
        );
    }
    if stride == 0 || h + 2 * padding < kh || w + 2 * padding < kw {
        bail!("depthwise_conv2d: kernel {kh}, stride {stride}, padding {padding} do not fit a {h}x{w} input");
    }
    Ok(())
}

fn geometry(
    x: &Layout,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Geometry> {
    let (batch, channels, in_h, in_w) = x.shape().dims4()?;
    Ok(Geometry {
        batch,
        channels,
        in_h,
        in_w,
        kernel,
        stride,
        padding,
    })
}

struct DepthwiseConv2d {
    stride: usize,
    padding: usize,
}

impl CustomOp2 for DepthwiseConv2d {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let kernel = l2.shape().dims4()?.2;
        let g = geometry(l1, kernel, self.stride, self.padding)?;
        let out = dispatch(
            "depthwise_conv2d",
            (s1, l1, "input"),
            (s2, l2, "weight"),
            |x, w| cpu::forward(x, w, &g, None),
            |x, w| cpu::forward(x, w, &g, None),
        )?;
        Ok((
            out,
            Shape::from((g.batch, g.channels, g.out_h(), g.out_w())),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let kernel = l2.shape().dims4()?.2;
        let g = geometry(l1, kernel, self.stride, self.padding)?;
        let out = cuda::forward((s1, l1), (s2, l2), &g)?;
        Ok((
            out,
            Shape::from((g.batch, g.channels, g.out_h(), g.out_w())),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        backward(x, weight, &grad.contiguous()?, self.stride, self.padding)
    }
}

/// Input and weight gradients from the (contiguous) output gradient.
fn backward(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    if x.device().is_cpu() {
        return cpu_backward(x, weight, grad, stride, padding);
    }
    let (_, _, in_h, in_w) = x.dims4()?;
    let grad_x = if_tracked(x, || {
        let geometry = InputGrad {
            stride,
            padding,
            in_h,
            in_w,
        };
        grad.apply_op2_no_bwd(weight, &geometry)
    })?;
    let grad_w = if_tracked(weight, || {
        let geometry = WeightGrad {
            stride,
            padding,
            kernel: weight.dim(2)?,
        };
        x.apply_op2_no_bwd(grad, &geometry)
    })?;
    Ok((grad_x, grad_w))
}

/// [`backward`] on CPU: both gradients in one pass ([`cpu::backward`]), straight from the
/// storages (two gradients from one kernel do not fit a custom op's single output).
fn cpu_backward(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    let wanted = (x.track_op(), weight.track_op());
    if wanted == (false, false) {
        return Ok((None, None));
    }
    let (x_storage, x_layout) = x.storage_and_layout();
    let (w_storage, w_layout) = weight.storage_and_layout();
    let (g_storage, g_layout) = grad.storage_and_layout();
    let g = geometry(x_layout, weight.dim(2)?, stride, padding)?;
    let op = "depthwise_conv2d backward";
    use candle_core::Storage::Cpu;
    match (&*x_storage, &*w_storage, &*g_storage) {
        (Cpu(CpuStorage::F32(xs)), Cpu(CpuStorage::F32(ws)), Cpu(CpuStorage::F32(gs))) => {
            let xs = slice(xs, x_layout, op, "input")?;
            let ws = slice(ws, w_layout, op, "weight")?;
            let gs = slice(gs, g_layout, op, "output gradient")?;
            let (gx, gw) = cpu::backward(xs, gs, ws, &g, wanted);
            Ok((gradient_like(gx, x)?, gradient_like(gw, weight)?))
        }
        (Cpu(CpuStorage::F64(xs)), Cpu(CpuStorage::F64(ws)), Cpu(CpuStorage::F64(gs))) => {
            let xs = slice(xs, x_layout, op, "input")?;
            let ws = slice(ws, w_layout, op, "weight")?;
            let gs = slice(gs, g_layout, op, "output gradient")?;
            let (gx, gw) = cpu::backward(xs, gs, ws, &g, wanted);
            Ok((gradient_like(gx, x)?, gradient_like(gw, weight)?))
        }
        _ => bail!(
            "{op}: input, weight and output gradient must all be f32 or all f64, got {:?}, {:?} and {:?}",
            x.dtype(),
            weight.dtype(),
            grad.dtype()
        ),
    }
}

struct DepthwiseBiasAct {
    stride: usize,
    padding: usize,
    relu6: bool,
}

impl CustomOp3 for DepthwiseBiasAct {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-bias-relu6"
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
        let kernel = l2.shape().dims4()?.2;
        let g = geometry(l1, kernel, self.stride, self.padding)?;
        let relu6 = self.relu6;
        let out = dispatch3(
            "depthwise_conv2d_bias_act",
            (s1, l1, "input"),
            (s2, l2, "weight"),
            (s3, l3, "bias"),
            |x, w, bias| cpu::forward(x, w, &g, Some(Epilogue { bias, relu6 })),
            |x, w, bias| cpu::forward(x, w, &g, Some(Epilogue { bias, relu6 })),
        )?;
        Ok((
            out,
            Shape::from((g.batch, g.channels, g.out_h(), g.out_w())),
        ))
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
        let (grad_x, grad_w) = backward(x, weight, &grad_z, self.stride, self.padding)?;
        Ok((grad_x, grad_w, Some(grad_bias)))
    }
}

/// `(grad_out, weight) -> grad_input`.
struct InputGrad {
    stride: usize,
    padding: usize,
    in_h: usize,
    in_w: usize,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geometry(l1, l2)?;
        let out = dispatch(
            "depthwise_conv2d",
            (s1, l1, "output gradient"),
            (s2, l2, "weight"),
            |go, w| cpu::input_grad(go, w, &g),
            |go, w| cpu::input_grad(go, w, &g),
        )?;
        Ok((out, Shape::from((g.batch, g.channels, g.in_h, g.in_w))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let g = self.geometry(l1, l2)?;
        let out = cuda::input_grad((s1, l1), (s2, l2), &g)?;
        Ok((out, Shape::from((g.batch, g.channels, g.in_h, g.in_w))))
    }
}

impl InputGrad {
    fn geometry(&self, grad_out: &Layout, weight: &Layout) -> candle_core::Result<Geometry> {
        let (batch, channels, _, _) = grad_out.shape().dims4()?;
        Ok(Geometry {
            batch,
            channels,
            in_h: self.in_h,
            in_w: self.in_w,
            kernel: weight.shape().dims4()?.2,
            stride: self.stride,
            padding: self.padding,
        })
    }
}

/// `(input, grad_out) -> grad_weight`.
struct WeightGrad {
    stride: usize,
    padding: usize,
    kernel: usize,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geometry(l1, self.kernel, self.stride, self.padding)?;
        let out = dispatch(
            "depthwise_conv2d",
            (s1, l1, "input"),
            (s2, l2, "output gradient"),
            |x, go| cpu::weight_grad(x, go, &g),
            |x, go| cpu::weight_grad(x, go, &g),
        )?;
        Ok((out, Shape::from((g.channels, 1, self.kernel, self.kernel))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let g = geometry(l1, self.kernel, self.stride, self.padding)?;
        let out = cuda::weight_grad((s1, l1), (s2, l2), &g)?;
        Ok((out, Shape::from((g.channels, 1, self.kernel, self.kernel))))
    }
}
