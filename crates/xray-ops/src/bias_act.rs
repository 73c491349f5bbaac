//! Per-channel bias plus optional ReLU6 in one pass, with its backward: what remains of a
//! frozen-statistics BatchNorm and its activation once the BatchNorm scale is folded into the
//! convolution weight.
//!
//! As separate candle ops (broadcast multiply, broadcast add, maximum, minimum) this took four
//! full passes over every activation forward, more backward, and a fresh buffer each time; on
//! MobileNetV2 those element-wise passes cost more than the matrix products.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;

use crate::cpu_storage::{dispatch, slice};

/// `clamp(x + bias[c], 0, 6)` (or just `x + bias[c]` without `relu6`) for `x` `(N, C, H, W)` and
/// `bias` `(C,)`, f32 or f64. Differentiable in both arguments; off CPU it uses candle's ops.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[[[-1f32, 2.0]], [[5.0, 7.0]]]], &Device::Cpu)?;
/// let bias = Tensor::new(&[0.5f32, 0.5], &Device::Cpu)?;
/// let y = xray_ops::bias_relu6(&x, &bias, true)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![0.0, 2.5, 5.5, 6.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn bias_relu6(x: &Tensor, bias: &Tensor, relu6: bool) -> candle_core::Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    if bias.dims() != [c] {
        bail!(
            "bias_relu6: bias shape {:?} does not fit input {:?}: expected ({c},)",
            bias.dims(),
            x.dims()
        );
    }
    if !x.device().is_cpu() {
        let y = x.broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
        return if relu6 { y.clamp(0f32, 6f32) } else { Ok(y) };
    }
    x.contiguous()?
        .apply_op2(&bias.contiguous()?, BiasAct { relu6 })
}

struct BiasAct {
    relu6: bool,
}

/// Elements per parallel task: small maps (7x7) are grouped, so that scheduling does not
/// outweigh the work.
const TASK_ELEMENTS: usize = 1 << 14;

/// Channel planes of `x`, each with its channel index, processed in parallel.
fn forward<T>(x: &[T], bias: &[T], plane: usize, relu6: bool) -> Vec<T>
where
    T: num_traits::Float + Send + Sync,
{
    let channels = bias.len();
    let planes_per_task = (TASK_ELEMENTS / plane).max(1);
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(plane * planes_per_task)
        .zip(x.par_chunks(plane * planes_per_task))
        .enumerate()
        .for_each(|(task, (o, xs))| {
            for (i, (o, xs)) in o.chunks_mut(plane).zip(xs.chunks(plane)).enumerate() {
                let b = bias[(task * planes_per_task + i) % channels];
                bias_act_plane(o, xs, b, relu6);
            }
        });
    out
}

/// `o = x + b`, clamped to `[0, 6]` with `relu6`. Comparisons rather than `max`/`min`: they
/// vectorise, and a NaN stays NaN (so a diverging run is still caught by its loss).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn bias_act_plane<T: num_traits::Float>(o: &mut [T], xs: &[T], b: T, relu6: bool) {
    let (zero, six) = (T::zero(), T::from(6.0).unwrap_or(T::max_value()));
    if relu6 {
        for (o, &v) in o.iter_mut().zip(xs) {
            let y = v + b;
            let y = if y < zero { zero } else { y };
            *o = if y > six { six } else { y };
        }
    } else {
        for (o, &v) in o.iter_mut().zip(xs) {
            *o = v + b;
        }
    }
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-relu6"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, _, h, w) = l1.shape().dims4()?;
        let plane = (h * w).max(1);
        let relu6 = self.relu6;
        let out = dispatch(
            "bias_relu6",
            (s1, l1, "input"),
            (s2, l2, "bias"),
            |x, b| forward(x, b, plane, relu6),
            |x, b| forward(x, b, plane, relu6),
        )?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (grad_x, grad_bias) = bias_act_backward(grad, res, self.relu6)?;
        Ok((Some(grad_x), Some(grad_bias)))
    }
}

/// A per-channel bias and optional ReLU6, applied by a convolution to each output plane while
/// the plane is still in cache (one pass over memory fewer than a separate op).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue<'a, T> {
    pub bias: &'a [T],
    pub relu6: bool,
}

impl<T: num_traits::Float> Epilogue<'_, T> {
    /// Applies channel `channel`'s bias and activation to `plane` in place.
    pub fn apply(&self, channel: usize, plane: &mut [T]) {
        bias_act_in_place(plane, self.bias[channel], self.relu6);
    }
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn bias_act_in_place<T: num_traits::Float>(o: &mut [T], b: T, relu6: bool) {
    let (zero, six) = (T::zero(), T::from(6.0).unwrap_or(T::max_value()));
    if relu6 {
        for o in o.iter_mut() {
            let y = *o + b;
            let y = if y < zero { zero } else { y };
            *o = if y > six { six } else { y };
        }
    } else {
        for o in o.iter_mut() {
            *o = *o + b;
        }
    }
}

/// The backward of `bias_act(z)` given its `output`: the gradient with respect to `z` and to
/// the bias. Shared by [`bias_relu6`] and the convolutions that apply an [`Epilogue`].
pub(crate) fn bias_act_backward(
    grad: &Tensor,
    output: &Tensor,
    relu6: bool,
) -> candle_core::Result<(Tensor, Tensor)> {
    let grad = grad.contiguous()?;
    let grad_z = if relu6 {
        grad.apply_op2_no_bwd(output, &Relu6Grad)?
    } else {
        grad
    };
    let grad_bias = grad_z.apply_op1_no_bwd(&ChannelSum)?;
    Ok((grad_z, grad_bias))
}

/// `(grad_out, output) -> grad_out` where `0 < output < 6`, else 0: ReLU6's derivative read
/// from the op's own output (the kinks count as flat, as in PyTorch).
struct Relu6Grad;

fn relu6_grad<T: num_traits::Float + Send + Sync>(grad: &[T], out: &[T]) -> Vec<T> {
    let mut result = vec![T::zero(); grad.len()];
    result
        .par_chunks_mut(TASK_ELEMENTS)
        .zip(
            grad.par_chunks(TASK_ELEMENTS)
                .zip(out.par_chunks(TASK_ELEMENTS)),
        )
        .for_each(|(r, (g, o))| {
            // The chunk stays in cache between the copy and the mask: one write to memory.
            r.copy_from_slice(g);
            mask_relu6_in_place(r, o);
        });
    result
}

/// `g = g` where `0 < out < 6`, else 0, in place: [`Relu6Grad`] for a gradient the caller owns.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
pub(crate) fn mask_relu6_in_place<T: num_traits::Float>(g: &mut [T], out: &[T]) {
    let (zero, six) = (T::zero(), T::from(6.0).unwrap_or(T::max_value()));
    for (g, &o) in g.iter_mut().zip(out) {
        *g = if o > zero && o < six { *g } else { zero };
    }
}

impl CustomOp2 for Relu6Grad {
    fn name(&self) -> &'static str {
        "relu6-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = dispatch(
            "relu6 backward",
            (s1, l1, "output gradient"),
            (s2, l2, "output"),
            relu6_grad,
            relu6_grad,
        )?;
        Ok((out, l1.shape().clone()))
    }
}

/// `(N, C, H, W) -> (C,)`: the sum of each channel, one parallel pass over contiguous planes
/// (candle's reduction over dimensions 0, 2 and 3 walks the tensor element by element).
struct ChannelSum;

fn channel_sum<T: num_traits::Float + Send + Sync + std::iter::Sum>(
    x: &[T],
    channels: usize,
    plane: usize,
) -> Vec<T> {
    let planes: Vec<T> = x.par_chunks(plane).map(plane_sum).collect();
    let mut out = vec![T::zero(); channels];
    for (i, v) in planes.into_iter().enumerate() {
        out[i % channels] = out[i % channels] + v;
    }
    out
}

/// The sum of one plane in eight partial sums, which the compiler keeps in a vector register
/// (one running float sum cannot be vectorised: it fixes the order of the additions).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
pub(crate) fn plane_sum<T: num_traits::Float>(values: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = *l + v;
        }
    }
    let tail = chunks.remainder().iter().fold(T::zero(), |a, &v| a + v);
    lanes.iter().fold(tail, |a, &v| a + v)
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = l.shape().dims4()?;
        let plane = (h * w).max(1);
        let out = match s {
            CpuStorage::F32(x) => {
                CpuStorage::F32(channel_sum(slice(x, l, "channel sum", "input")?, c, plane))
            }
            CpuStorage::F64(x) => {
                CpuStorage::F64(channel_sum(slice(x, l, "channel sum", "input")?, c, plane))
            }
            _ => bail!("channel sum: unsupported dtype {:?}", s.dtype()),
        };
        Ok((out, Shape::from(c)))
    }
}
