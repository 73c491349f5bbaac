//! The dense convolution as one op with its backward, image by image: the image's
//! column matrix (im2col) is built in a reused buffer and multiplied by the
//! weight; backward, the weight's transpose times the output gradient is scattered back
//! (col2im), and the weight gradient accumulates `G_i C_i^T` in place.
//!
//! Compared with the column matrix of the whole batch and candle's batched `matmul` against a
//! broadcast weight, nothing batch-sized but the input and output is ever allocated, and the
//! weight gradient is not one matrix per image summed by candle's strided reduction.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Shape, Tensor};
use num_traits::Float;

use crate::cpu_storage::try_dispatch;
use crate::geometry::Geometry;
use crate::im2col::{plane_columns, scatter_plane};
use crate::matmul::{matmul, per_image, sum_of_products, Columns, MatRef};
use crate::tracked::if_tracked;

/// A convolution of `x` `(N, C, H, W)` with `weight` `(O, C, K, K)`, `stride` and `padding`
/// zeros on each side, no bias, dilation 1. Differentiable; f32 or f64 on CPU, candle's
/// `conv2d` elsewhere.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let y = xray_ops::dense_conv2d(&x, &w, 1, 1)?;
/// assert_eq!(y.dims(), &[1, 2, 3, 3]);
/// assert_eq!(y.get(0)?.get(1)?.get(1)?.get(1)?.to_scalar::<f32>()?, 9.0); // the centre
/// assert_eq!(y.get(0)?.get(0)?.get(0)?.get(0)?.to_scalar::<f32>()?, 4.0); // a corner
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn dense_conv2d(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (_, in_c, kh, kw) = weight.dims4()?;
    if in_c != c || kh != kw || stride == 0 || h + 2 * padding < kh || w + 2 * padding < kw {
        bail!(
            "dense_conv2d: weight {:?} with stride {stride}, padding {padding} does not fit input {:?}",
            weight.dims(),
            x.dims()
        );
    }
    let g = Geometry {
        batch: n,
        channels: c,
        in_h: h,
        in_w: w,
        kernel: kh,
        stride,
        padding,
    };
    if !x.device().is_cpu() {
        return x.conv2d(weight, padding, stride, 1, 1);
    }
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, DenseConv(g))
}

struct DenseConv(Geometry);

/// Fills `buffer` with the `C*K*K x OH*OW` column matrix of one image.
fn image_columns<T: Float + Default>(image: &[T], g: &Geometry, buffer: &mut Vec<T>) {
    let block = g.kernel * g.kernel * g.out_h() * g.out_w();
    let planes = image.len() / (g.in_h * g.in_w).max(1);
    buffer.resize(planes * block, T::zero());
    for (plane, cols) in image
        .chunks_exact(g.in_h * g.in_w)
        .zip(buffer.chunks_exact_mut(block))
    {
        plane_columns(plane, cols, g);
    }
}

fn forward<T: Float + Default + Send + Sync + 'static>(
    x: &[T],
    weight: &[T],
    g: &Geometry,
    (c, out_c): (usize, usize),
) -> candle_core::Result<Vec<T>> {
    let (ckk, pixels) = (c * g.kernel * g.kernel, g.out_h() * g.out_w());
    per_image(
        x,
        c * g.in_h * g.in_w,
        out_c * pixels,
        |image, y, threads| {
            let mut columns = Vec::new();
            image_columns(image, g, &mut columns);
            let w = MatRef::row_major(weight, out_c, ckk);
            matmul(
                y,
                w,
                MatRef::row_major(&columns, ckk, pixels),
                false,
                threads,
            )
        },
    )
}

impl CustomOp2 for DenseConv {
    fn name(&self) -> &'static str {
        "dense-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, _, _) = l1.shape().dims4()?;
        let out_c = l2.shape().dims4()?.0;
        let g = self.0;
        let out = try_dispatch(
            "dense_conv2d",
            (s1, l1, "input"),
            (s2, l2, "weight"),
            |x, w| forward(x, w, &g, (c, out_c)),
            |x, w| forward(x, w, &g, (c, out_c)),
        )?;
        Ok((out, Shape::from((n, out_c, g.out_h(), g.out_w()))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let c = x.dim(1)?;
        let grad_x = if_tracked(x, || grad.apply_op2_no_bwd(weight, &InputGrad(self.0, c)))?;
        let grad_w = if_tracked(weight, || x.apply_op2_no_bwd(&grad, &WeightGrad(self.0)))?;
        Ok((grad_x, grad_w))
    }
}

/// `(grad_out, weight) -> grad_input`: `W^T G` per image, scattered back through col2im.
struct InputGrad(Geometry, usize);

fn input_grad<T: Float + std::ops::AddAssign + Send + Sync + 'static>(
    grad: &[T],
    weight: &[T],
    g: &Geometry,
    (c, out_c): (usize, usize),
) -> candle_core::Result<Vec<T>> {
    let (kk, pixels) = (g.kernel * g.kernel, g.out_h() * g.out_w());
    per_image(
        grad,
        out_c * pixels,
        c * g.in_h * g.in_w,
        |go, gx, threads| {
            let mut columns = vec![T::zero(); c * kk * pixels];
            let w = MatRef::row_major(weight, out_c, c * kk).t();
            matmul(
                &mut columns,
                w,
                MatRef::row_major(go, out_c, pixels),
                false,
                threads,
            )?;
            for (plane, cols) in gx
                .chunks_exact_mut(g.in_h * g.in_w)
                .zip(columns.chunks_exact(kk * pixels))
            {
                scatter_plane(plane, cols, g);
            }
            Ok(())
        },
    )
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "dense-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, out_c, _, _) = l1.shape().dims4()?;
        let (g, c) = (self.0, self.1);
        if l2.shape().dims4()?.1 != c {
            bail!(
                "dense_conv2d backward: weight {:?} for {c} input channels",
                l2.shape()
            );
        }
        let out = try_dispatch(
            "dense_conv2d backward",
            (s1, l1, "output gradient"),
            (s2, l2, "weight"),
            |go, w| input_grad(go, w, &g, (c, out_c)),
            |go, w| input_grad(go, w, &g, (c, out_c)),
        )?;
        Ok((out, Shape::from((n, c, g.in_h, g.in_w))))
    }
}

/// `(input, grad_out) -> grad_weight`: `sum_i G_i C_i^T` with each image's columns rebuilt.
struct WeightGrad(Geometry);

fn weight_grad<T: Float + Default + Send + Sync + 'static>(
    x: &[T],
    grad: &[T],
    g: &Geometry,
    (c, out_c): (usize, usize),
) -> candle_core::Result<Vec<T>> {
    let (ckk, pixels, image) = (
        c * g.kernel * g.kernel,
        g.out_h() * g.out_w(),
        c * g.in_h * g.in_w,
    );
    sum_of_products(grad, (out_c, ckk, pixels), |i, buffer| {
        image_columns(&x[i * image..(i + 1) * image], g, buffer);
        Columns::Buffer
    })
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "dense-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, _, _) = l1.shape().dims4()?;
        let out_c = l2.shape().dims4()?.1;
        let g = self.0;
        let out = try_dispatch(
            "dense_conv2d backward",
            (s1, l1, "input"),
            (s2, l2, "output gradient"),
            |x, go| weight_grad(x, go, &g, (c, out_c)),
            |x, go| weight_grad(x, go, &g, (c, out_c)),
        )?;
        Ok((out, Shape::from((out_c, c, g.kernel, g.kernel))))
    }
}
