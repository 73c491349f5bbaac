//! BatchNorm and ReLU as one op with its backward, in training (batch statistics) and in
//! evaluation (stored statistics).
//!
//! candle-nn's training BatchNorm transposes and copies its input, then runs about ten
//! broadcast ops, each a full pass with a fresh buffer, and more backward; on the from-scratch
//! CNN at 224 px these passes cost more than the convolutions. Here: one pass for the
//! statistics, one forward, two backward.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor, Var};
use candle_nn::{BatchNorm, BatchNormConfig, Init, ModuleT, VarBuilder};
use multiversion::multiversion;
use num_traits::Float;
use rayon::prelude::*;

use crate::cpu_storage::{dispatch3, slice};
use crate::norm_relu_pool::NormReluPool;

const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

/// `relu(batch_norm(x))` over the channels of an `(N, C, H, W)` input, with candle-nn's
/// BatchNorm conventions and tensor names (`weight`, `bias`, `running_mean`, `running_var`;
/// eps 1e-5, momentum 0.1, the running variance updated with the unbiased batch variance).
#[derive(Debug, Clone)]
pub struct BatchNormRelu {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    /// The same parameters as a candle-nn layer, for devices other than the CPU.
    fallback: BatchNorm,
}

impl BatchNormRelu {
    /// Loads or creates the parameters under `vb`.
    pub fn new(channels: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        // The same variables as the fallback layer's, so both see every update.
        let fallback = candle_nn::batch_norm(channels, BatchNormConfig::default(), vb.clone())?;
        let running_mean =
            Var::from_tensor(&vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?)?;
        let running_var =
            Var::from_tensor(&vb.get_with_hints(channels, "running_var", Init::Const(1.0))?)?;
        Ok(BatchNormRelu {
            weight,
            bias,
            running_mean,
            running_var,
            fallback,
        })
    }

    /// Normalises with the batch's statistics and updates the running ones (`train`), or with
    /// the running ones; then ReLU.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !x.device().is_cpu() {
            return self.fallback.forward_t(x, train)?.relu();
        }
        let x = x.contiguous()?;
        let op = self.statistics(&x, train)?;
        x.apply_op3(&self.weight, &self.bias, op)
    }

    /// `max_pool_2x2(relu(batch_norm(x)))`, as [`forward_t`](Self::forward_t) then
    /// [`max_pool_2x2`](crate::max_pool_2x2) compute it, but in one op on CPU: the
    /// full-size normalised map is never stored, and its gradient never passes through
    /// candle's autograd (the backward recomputes it from `x`, window by window).
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use candle_nn::{VarBuilder, VarMap};
    /// let varmap = VarMap::new();
    /// let norm = xray_ops::BatchNormRelu::new(2, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    /// let x = Tensor::randn(0f32, 1.0, (3, 2, 6, 5), &Device::Cpu)?;
    /// let fused = norm.forward_pooled_t(&x, false)?;
    /// let composed = xray_ops::max_pool_2x2(&norm.forward_t(&x, false)?)?;
    /// assert_eq!(fused.dims(), &[3, 2, 3, 2]);
    /// assert_eq!(fused.flatten_all()?.to_vec1::<f32>()?, composed.flatten_all()?.to_vec1::<f32>()?);
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn forward_pooled_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if !x.device().is_cpu() || h < 2 || w < 2 {
            return crate::max_pool_2x2(&self.forward_t(x, train)?);
        }
        let x = x.contiguous()?;
        let op = self.statistics(&x, train)?;
        x.apply_op3(&self.weight, &self.bias, NormReluPool(op))
    }

    /// The statistics the op normalises with: the batch's (`train`, updating the running
    /// ones) or the running ones.
    fn statistics(&self, x: &Tensor, train: bool) -> candle_core::Result<NormRelu> {
        let (n, c, h, w) = x.dims4()?;
        let (mean, var) = if train {
            let (mean, var) = channel_moments(x)?;
            let count = (n * h * w) as f64;
            let unbiased = count / (count - 1.0).max(1.0);
            let update = |stat: &Var, batch: &[f64], scale: f64| -> candle_core::Result<()> {
                let old: Vec<f64> = stat
                    .as_tensor()
                    .to_dtype(candle_core::DType::F64)?
                    .to_vec1()?;
                let new: Vec<f64> = old
                    .iter()
                    .zip(batch)
                    .map(|(o, b)| (1.0 - MOMENTUM) * o + MOMENTUM * scale * b)
                    .collect();
                stat.set(&Tensor::new(new, x.device())?.to_dtype(stat.dtype())?)
            };
            update(&self.running_mean, &mean, 1.0)?;
            update(&self.running_var, &var, unbiased)?;
            (mean, var)
        } else {
            let read = |t: &Tensor| t.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>();
            (
                read(self.running_mean.as_tensor())?,
                read(self.running_var.as_tensor())?,
            )
        };
        if mean.len() != c {
            bail!(
                "batch_norm_relu: {} statistics for {c} channels",
                mean.len()
            );
        }
        Ok(NormRelu {
            inv_std: var.iter().map(|v| 1.0 / (v + EPS).sqrt()).collect(),
            mean,
            batch_stats: train,
        })
    }
}

/// Per-channel mean and (biased) variance of an `(N, C, H, W)` tensor, in f64.
fn channel_moments(x: &Tensor) -> candle_core::Result<(Vec<f64>, Vec<f64>)> {
    let (n, _, h, w) = x.dims4()?;
    let sums = x.apply_op1_no_bwd(&ChannelSums)?.to_vec2::<f64>()?;
    let count = (n * h * w) as f64;
    let mean: Vec<f64> = sums[0].iter().map(|s| s / count).collect();
    let var = sums[1]
        .iter()
        .zip(&mean)
        .map(|(s2, m)| (s2 / count - m * m).max(0.0))
        .collect();
    Ok((mean, var))
}

/// `(N, C, H, W) -> (2, C)` in f64: per channel the sum and the sum of squares.
struct ChannelSums;

impl CustomOp1 for ChannelSums {
    fn name(&self) -> &'static str {
        "channel-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = l.shape().dims4()?;
        let per_plane = match s {
            CpuStorage::F32(x) => plane_moments(slice(x, l, "batch_norm_relu", "input")?, h * w),
            CpuStorage::F64(x) => plane_moments(slice(x, l, "batch_norm_relu", "input")?, h * w),
            other => bail!(
                "batch_norm_relu: input must be f32 or f64, got {:?}",
                other.dtype()
            ),
        };
        let sums = channel_totals::<f64>(per_plane, c);
        Ok((CpuStorage::F64(sums), Shape::from((2, c))))
    }
}

fn plane_moments<T: Float + Send + Sync>(x: &[T], plane: usize) -> Vec<(f64, f64)> {
    x.par_chunks(plane.max(1)).map(sums_of_plane).collect()
}

/// Lanes of the partial sums: one AVX-512 register of f32.
const LANES: usize = 16;

/// Values each lane adds in the input's own precision before its sum joins the f64 total:
/// the vector units stay on f32, and no f32 partial sum covers more than 64 values.
const BLOCK: usize = LANES * 64;

/// Sum and sum of squares of one plane: in blocks of [`BLOCK`] values in `T`, across blocks in
/// f64.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn sums_of_plane<T: Float>(x: &[T]) -> (f64, f64) {
    let (mut s, mut s2) = (0f64, 0f64);
    for block in x.chunks(BLOCK) {
        let (mut bs, mut bs2) = ([T::zero(); LANES], [T::zero(); LANES]);
        let mut chunks = block.chunks_exact(LANES);
        for chunk in &mut chunks {
            for l in 0..LANES {
                bs[l] = bs[l] + chunk[l];
                bs2[l] = bs2[l] + chunk[l] * chunk[l];
            }
        }
        for &v in chunks.remainder() {
            bs[0] = bs[0] + v;
            bs2[0] = bs2[0] + v * v;
        }
        s += lane_total(&bs);
        s2 += lane_total(&bs2);
    }
    (s, s2)
}

/// The lanes' sum in f64.
fn lane_total<T: Float>(lanes: &[T]) -> f64 {
    lanes.iter().map(|v| v.to_f64().unwrap_or(f64::NAN)).sum()
}

/// `relu((x - mean) * inv_std * weight + bias)` per channel; `batch_stats` says whether `mean`
/// and `inv_std` came from this batch (so the backward differentiates through them).
pub(crate) struct NormRelu {
    pub(crate) mean: Vec<f64>,
    pub(crate) inv_std: Vec<f64>,
    pub(crate) batch_stats: bool,
}

impl NormRelu {
    /// Per channel `(a, d)` with `relu(x * a + d)` the output, computed in f64 and cast to `T`
    /// (every op that recomputes the output from `x` takes them from here, so all agree to the
    /// bit).
    pub(crate) fn affine<T: Float>(&self, weight: &[f64], bias: &[f64]) -> Vec<(T, T)> {
        (0..self.mean.len())
            .map(|c| {
                let a = self.inv_std[c] * weight[c];
                let [a, d] = cast_all([a, bias[c] - self.mean[c] * a]);
                (a, d)
            })
            .collect()
    }
}

/// `relu(v * a + d)`: the one expression every op of this module and of
/// [`norm_relu_pool`](crate::norm_relu_pool) computes the output with. A comparison, not
/// `max`: it vectorises, and a NaN stays NaN.
#[inline(always)]
pub(crate) fn affine_relu<T: Float>(v: T, a: T, d: T) -> T {
    let y = v * a + d;
    if y < T::zero() {
        T::zero()
    } else {
        y
    }
}

pub(crate) fn as_f64<T: Float>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64().unwrap_or(f64::NAN)).collect()
}

impl CustomOp3 for NormRelu {
    fn name(&self) -> &'static str {
        "batch-norm-relu"
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
        let (_, _, h, w) = l1.shape().dims4()?;
        let plane = (h * w).max(1);
        let out = dispatch3(
            "batch_norm_relu",
            (s1, l1, "input"),
            (s2, l2, "weight"),
            (s3, l3, "bias"),
            |x, wt, b| self.forward(x, wt, b, plane),
            |x, wt, b| self.forward(x, wt, b, plane),
        )?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, c, h, w) = x.dims4()?;
        let grad = grad.contiguous()?;
        // Per channel: sum of the gradient that passes the ReLU, and of its product with the
        // normalised input: the bias and weight gradients, and what the input gradient needs.
        let sums = x.apply_op3_no_bwd(res, &grad, &GradSums(self))?;
        let sums = sums.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
        let (grad_bias, grad_weight) = (&sums[0], &sums[1]);
        let count = (x.elem_count() / c) as f64;
        let weight = weight.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
        let terms = self.input_grad_terms(&weight, (grad_bias, grad_weight), count);
        let grad_x = x.apply_op3_no_bwd(
            res,
            &grad,
            &InputGrad {
                terms,
                plane: (h * w).max(1),
            },
        )?;
        let to_tensor = |v: &Vec<f64>| Tensor::new(v.as_slice(), x.device())?.to_dtype(x.dtype());
        Ok((
            Some(grad_x),
            Some(to_tensor(grad_weight)?),
            Some(to_tensor(grad_bias)?),
        ))
    }
}

impl NormRelu {
    /// Per channel `[k, slope, offset]` of the input gradient `dx = k * dy' - (slope * x +
    /// offset)`, from the backward's per-channel `(sum dy', sum dy' * xhat)` over `count`
    /// values: `dx = weight * inv_std * (dy' - [batch] (sum dy' + xhat * sum dy' xhat) / count)`.
    pub(crate) fn input_grad_terms(
        &self,
        weight: &[f64],
        (grad_bias, grad_weight): (&[f64], &[f64]),
        count: f64,
    ) -> Vec<[f64; 3]> {
        (0..self.mean.len())
            .map(|c| {
                let k = weight[c] * self.inv_std[c];
                let (k_bias, k_weight) = if self.batch_stats {
                    (k * grad_bias[c] / count, k * grad_weight[c] / count)
                } else {
                    (0.0, 0.0)
                };
                let slope = k_weight * self.inv_std[c];
                [k, slope, k_bias - slope * self.mean[c]]
            })
            .collect()
    }

    fn forward<T: Float + Send + Sync>(
        &self,
        x: &[T],
        weight: &[T],
        bias: &[T],
        plane: usize,
    ) -> Vec<T> {
        let ad: Vec<(T, T)> = self.affine(&as_f64(weight), &as_f64(bias));
        let channels = ad.len();
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .enumerate()
            .for_each(|(p, (o, x))| {
                let (a, d) = ad[p % channels];
                affine_relu_plane(o, x, a, d);
            });
        out
    }
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn affine_relu_plane<T: Float>(o: &mut [T], x: &[T], a: T, d: T) {
    for (o, &v) in o.iter_mut().zip(x) {
        *o = affine_relu(v, a, d);
    }
}

/// `(x, y, dy) -> (2, C)`: per channel `sum dy'` and `sum dy' * xhat`, where `dy'` is the
/// gradient where the ReLU passed (`y > 0`) and `xhat = (x - mean) * inv_std`.
struct GradSums<'a>(&'a NormRelu);

impl CustomOp3 for GradSums<'_> {
    fn name(&self) -> &'static str {
        "batch-norm-relu-grad-sums"
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
        let (_, c, h, w) = l1.shape().dims4()?;
        let plane = (h * w).max(1);
        let norm = self.0;
        let out = dispatch3(
            "batch_norm_relu backward",
            (s1, l1, "input"),
            (s2, l2, "output"),
            (s3, l3, "output gradient"),
            |x, y, g| grad_sums(norm, x, y, g, plane),
            |x, y, g| grad_sums(norm, x, y, g, plane),
        )?;
        Ok((out, Shape::from((2, c))))
    }
}

fn grad_sums<T: Float + Send + Sync>(
    norm: &NormRelu,
    x: &[T],
    y: &[T],
    g: &[T],
    plane: usize,
) -> Vec<T> {
    let channels = norm.mean.len();
    let per_plane: Vec<(f64, f64)> = x
        .par_chunks(plane)
        .zip(y.par_chunks(plane))
        .zip(g.par_chunks(plane))
        .enumerate()
        .map(|(p, ((x, y), g))| {
            let c = p % channels;
            let (s, sx) = gated_sums(x, y, g, T::from(norm.mean[c]).unwrap_or(T::nan()));
            (s, sx * norm.inv_std[c])
        })
        .collect();
    channel_totals(per_plane, channels)
}

/// Per-plane `(a, b)` pairs (planes in `(N, C)` order) summed per channel, as `(2, C)`
/// row-major: the `a` totals, then the `b` totals.
pub(crate) fn channel_totals<T: Float>(per_plane: Vec<(f64, f64)>, channels: usize) -> Vec<T> {
    let mut out = vec![0f64; 2 * channels];
    for (p, (a, b)) in per_plane.into_iter().enumerate() {
        out[p % channels] += a;
        out[channels + p % channels] += b;
    }
    out.into_iter()
        .map(|v| T::from(v).unwrap_or(T::nan()))
        .collect()
}

/// `values` cast to `T` (NaN where one does not fit).
pub(crate) fn cast_all<T: Float, const N: usize>(values: [f64; N]) -> [T; N] {
    values.map(|v| T::from(v).unwrap_or(T::nan()))
}

/// `(sum dy', sum dy' * (x - mean))` over one plane, partial sums in four f64 lanes.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn gated_sums<T: Float>(x: &[T], y: &[T], g: &[T], mean: T) -> (f64, f64) {
    let (mut s, mut sx) = ([0f64; 4], [0f64; 4]);
    for (i, ((&x, &y), &g)) in x.iter().zip(y).zip(g).enumerate() {
        let dy = if y > T::zero() { g } else { T::zero() };
        let dy = dy.to_f64().unwrap_or(f64::NAN);
        s[i % 4] += dy;
        sx[i % 4] += dy * (x - mean).to_f64().unwrap_or(f64::NAN);
    }
    (s.iter().sum(), sx.iter().sum())
}

/// `(x, y, dy) -> dx = k * dy' - (slope * x + offset)` per channel, from
/// [`NormRelu::input_grad_terms`].
struct InputGrad {
    terms: Vec<[f64; 3]>,
    plane: usize,
}

impl CustomOp3 for InputGrad {
    fn name(&self) -> &'static str {
        "batch-norm-relu-input-grad"
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
        let out = dispatch3(
            "batch_norm_relu backward",
            (s1, l1, "input"),
            (s2, l2, "output"),
            (s3, l3, "output gradient"),
            |x, y, g| self.compute(x, y, g),
            |x, y, g| self.compute(x, y, g),
        )?;
        Ok((out, l1.shape().clone()))
    }
}

impl InputGrad {
    fn compute<T: Float + Send + Sync>(&self, x: &[T], y: &[T], g: &[T]) -> Vec<T> {
        let channels = self.terms.len();
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut(self.plane)
            .zip(x.par_chunks(self.plane))
            .zip(y.par_chunks(self.plane).zip(g.par_chunks(self.plane)))
            .enumerate()
            .for_each(|(p, ((o, x), (y, g)))| {
                let [k, slope, offset] = cast_all(self.terms[p % channels]);
                input_grad_plane(o, x, y, g, k, slope, offset);
            });
        out
    }
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn input_grad_plane<T: Float>(o: &mut [T], x: &[T], y: &[T], g: &[T], k: T, slope: T, offset: T) {
    for (((o, &x), &y), &g) in o.iter_mut().zip(x).zip(y).zip(g) {
        let dy = if y > T::zero() { g } else { T::zero() };
        *o = k * dy - (slope * x + offset);
    }
}
