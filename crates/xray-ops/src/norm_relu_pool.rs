//! BatchNorm, ReLU and 2x2 max-pooling as one op: the from-scratch CNN's block ending.
//!
//! As two ops, the full-size normalised map is written, read again by the pooling, and its
//! gradient is materialised by the unpooling and then added into a fresh zero tensor by
//! candle's autograd before the BatchNorm backward reads it: about twelve passes over the
//! largest activations of the network. Here the forward writes only the pooled map, and the
//! backward recomputes each window's normalised values from `x` (the same arithmetic, so the
//! same values and the same first maximum) in two passes.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use multiversion::multiversion;
use num_traits::Float;
use rayon::prelude::*;

use crate::batch_norm_relu::{affine_relu, as_f64, cast_all, channel_totals, NormRelu};
use crate::cpu_storage::{dispatch, dispatch3};
use crate::max_pool::{first_max, route, row_pairs, row_pairs_mut, window_max};

/// `max_pool_2x2(relu(x * a + d))` per channel, `(a, d)` from the statistics and the affine
/// parameters; the statistics as [`NormRelu`] holds them.
pub(crate) struct NormReluPool(pub(crate) NormRelu);

impl CustomOp3 for NormReluPool {
    fn name(&self) -> &'static str {
        "batch-norm-relu-max-pool"
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
        let out = dispatch3(
            "batch_norm_relu_max_pool",
            (s1, l1, "input"),
            (s2, l2, "weight"),
            (s3, l3, "bias"),
            |x, wt, b| forward(x, &self.0.affine(&as_f64(wt), &as_f64(b)), h, w),
            |x, wt, b| forward(x, &self.0.affine(&as_f64(wt), &as_f64(b)), h, w),
        )?;
        Ok((out, Shape::from((n, c, h / 2, w / 2))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let norm = &self.0;
        let (_, c, _, _) = x.dims4()?;
        let grad = grad.contiguous()?;
        let read = |t: &Tensor| t.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>();
        let (weight, bias) = (read(weight)?, read(bias)?);
        // Per channel: the sum of the gradient reaching a window's first maximum where the
        // ReLU passed, and of its product with the normalised input there.
        let sums = x.apply_op2_no_bwd(
            &grad,
            &GradSums {
                norm,
                weight: &weight,
                bias: &bias,
            },
        )?;
        let sums = sums.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
        let (grad_bias, grad_weight) = (&sums[0], &sums[1]);
        let count = (x.elem_count() / c) as f64;
        let terms = norm.input_grad_terms(&weight, (grad_bias, grad_weight), count);
        let grad_x = x.apply_op2_no_bwd(
            &grad,
            &InputGrad {
                norm,
                weight: &weight,
                bias: &bias,
                terms,
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

fn forward<T: Float + Send + Sync>(x: &[T], ad: &[(T, T)], h: usize, w: usize) -> Vec<T> {
    let (oh, ow) = (h / 2, w / 2);
    let channels = ad.len().max(1);
    let mut out = vec![T::zero(); x.len() / (h * w).max(1) * oh * ow];
    out.par_chunks_mut((oh * ow).max(1))
        .zip(x.par_chunks((h * w).max(1)))
        .enumerate()
        .for_each(|(p, (o, x))| {
            let (a, d) = ad[p % channels];
            for (orow, pair) in o.chunks_exact_mut(ow).zip(row_pairs(x, w)) {
                pool_row(orow, pair, (a, d));
            }
        });
    out
}

/// A window's four inputs and their normalised values, row-major.
#[inline(always)]
fn window<T: Float>(t: &[T], b: &[T], (a, d): (T, T)) -> ([T; 4], [T; 4]) {
    let x = [t[0], t[1], b[0], b[1]];
    (x, x.map(|v| affine_relu(v, a, d)))
}

/// One row pair: each 2x2 window's largest normalised value.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn pool_row<T: Float>(out: &mut [T], (top, bottom): (&[T], &[T]), ad: (T, T)) {
    for ((v, t), b) in out
        .iter_mut()
        .zip(top.chunks_exact(2))
        .zip(bottom.chunks_exact(2))
    {
        *v = window_max(window(t, b, ad).1);
    }
}

/// `(x, pooled gradient) -> (2, C)`: per channel `sum dy'` and `sum dy' * xhat`.
struct GradSums<'a> {
    norm: &'a NormRelu,
    weight: &'a [f64],
    bias: &'a [f64],
}

impl CustomOp2 for GradSums<'_> {
    fn name(&self) -> &'static str {
        "batch-norm-relu-max-pool-grad-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = l1.shape().dims4()?;
        let out = dispatch(
            "batch_norm_relu_max_pool backward",
            (s1, l1, "input"),
            (s2, l2, "output gradient"),
            |x, g| self.sums(x, g, h, w),
            |x, g| self.sums(x, g, h, w),
        )?;
        Ok((out, Shape::from((2, c))))
    }
}

impl GradSums<'_> {
    fn sums<T: Float + Send + Sync>(&self, x: &[T], g: &[T], h: usize, w: usize) -> Vec<T> {
        let ad: Vec<(T, T)> = self.norm.affine(self.weight, self.bias);
        let channels = ad.len().max(1);
        let (oh, ow) = (h / 2, w / 2);
        let per_plane: Vec<(f64, f64)> = x
            .par_chunks((h * w).max(1))
            .zip(g.par_chunks((oh * ow).max(1)))
            .enumerate()
            .map(|(p, (x, g))| {
                let c = p % channels;
                let (a, d) = ad[c];
                let mean = T::from(self.norm.mean[c]).unwrap_or(T::nan());
                let (mut s, mut sx) = (0f64, 0f64);
                for (pair, g_row) in row_pairs(x, w).zip(g.chunks_exact(ow)) {
                    let (rs, rsx) = row_grad_sums(pair, g_row, (a, d), mean);
                    s += rs;
                    sx += rsx;
                }
                (s, sx * self.norm.inv_std[c])
            })
            .collect();
        channel_totals(per_plane, channels)
    }
}

/// One row pair's `(sum dy', sum dy' * (x - mean))`.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn row_grad_sums<T: Float>(
    (top, bottom): (&[T], &[T]),
    g: &[T],
    (a, d): (T, T),
    mean: T,
) -> (f64, f64) {
    // Sixteen windows at a time into sixteen partial sums: a sum over one running value is a
    // chain the compiler may not reorder, so it would stay scalar.
    const LANES: usize = 16;
    let (mut s, mut sx) = ([T::zero(); LANES], [T::zero(); LANES]);
    // The gradient reaches x only at the first maximum, and only where the ReLU passed.
    let gated = |t: &[T], b: &[T], g: T| {
        let (x, y) = window(t, b, (a, d));
        let (_, best, at) = first_max(y, x);
        let g = if best > T::zero() { g } else { T::zero() };
        (g, g * (at - mean))
    };
    let groups = top
        .chunks_exact(2 * LANES)
        .zip(bottom.chunks_exact(2 * LANES))
        .zip(g.chunks_exact(LANES));
    for ((t, b), g) in groups {
        for l in 0..LANES {
            let (ds, dsx) = gated(&t[2 * l..], &b[2 * l..], g[l]);
            s[l] = s[l] + ds;
            sx[l] = sx[l] + dsx;
        }
    }
    let done = g.len() / LANES * LANES;
    for (i, &g) in g.iter().enumerate().skip(done) {
        let (ds, dsx) = gated(&top[2 * i..], &bottom[2 * i..], g);
        s[0] = s[0] + ds;
        sx[0] = sx[0] + dsx;
    }
    let total = |lanes: [T; LANES]| lanes.iter().map(|v| v.to_f64().unwrap_or(f64::NAN)).sum();
    (total(s), total(sx))
}

/// `(x, pooled gradient) -> dx = k * dy' - (slope * x + offset)` per channel, from
/// [`NormRelu::input_grad_terms`].
struct InputGrad<'a> {
    norm: &'a NormRelu,
    weight: &'a [f64],
    bias: &'a [f64],
    terms: Vec<[f64; 3]>,
}

impl CustomOp2 for InputGrad<'_> {
    fn name(&self) -> &'static str {
        "batch-norm-relu-max-pool-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, _, h, w) = l1.shape().dims4()?;
        let out = dispatch(
            "batch_norm_relu_max_pool backward",
            (s1, l1, "input"),
            (s2, l2, "output gradient"),
            |x, g| self.compute(x, g, h, w),
            |x, g| self.compute(x, g, h, w),
        )?;
        Ok((out, l1.shape().clone()))
    }
}

impl InputGrad<'_> {
    fn compute<T: Float + Send + Sync>(&self, x: &[T], g: &[T], h: usize, w: usize) -> Vec<T> {
        let ad: Vec<(T, T)> = self.norm.affine(self.weight, self.bias);
        let channels = ad.len().max(1);
        let (oh, ow) = (h / 2, w / 2);
        let mut out = vec![T::zero(); x.len()];
        out.par_chunks_mut((h * w).max(1))
            .zip(x.par_chunks((h * w).max(1)))
            .zip(g.par_chunks((oh * ow).max(1)))
            .enumerate()
            .for_each(|(p, ((o, x), g))| {
                let c = p % channels;
                let [k, slope, offset]: [T; 3] = cast_all(self.terms[c]);
                // Where no gradient arrives, dx = -(slope * x + offset): the batch statistics'
                // share, which every pixel of the map has, pooled or not.
                let rest = |o: &mut [T], x: &[T]| {
                    for (o, &x) in o.iter_mut().zip(x) {
                        *o = -(slope * x + offset);
                    }
                };
                let pairs = row_pairs_mut(o, w)
                    .zip(row_pairs(x, w))
                    .zip(g.chunks_exact(ow));
                for (((o_top, o_bottom), (top, bottom)), g_row) in pairs {
                    input_grad_row(
                        (&mut *o_top, &mut *o_bottom),
                        (top, bottom),
                        g_row,
                        ad[c],
                        [k, slope, offset],
                    );
                    // A trailing odd column: never pooled.
                    if w % 2 == 1 {
                        rest(&mut o_top[w - 1..], &top[w - 1..]);
                        rest(&mut o_bottom[w - 1..], &bottom[w - 1..]);
                    }
                }
                // A trailing odd row: never pooled.
                if h % 2 == 1 {
                    let last = (h - 1) * w;
                    rest(&mut o[last..], &x[last..]);
                }
            });
        out
    }
}

/// One row pair of the input gradient: each window's gradient to its first maximum where the
/// ReLU passed, and every cell's share of the batch statistics' gradient.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn input_grad_row<T: Float>(
    (o_top, o_bottom): (&mut [T], &mut [T]),
    (top, bottom): (&[T], &[T]),
    g: &[T],
    (a, d): (T, T),
    [k, slope, offset]: [T; 3],
) {
    let windows = o_top
        .chunks_exact_mut(2)
        .zip(o_bottom.chunks_exact_mut(2))
        .zip(top.chunks_exact(2).zip(bottom.chunks_exact(2)))
        .zip(g);
    for (((ot, ob), (t, b)), &g) in windows {
        let (x, y) = window(t, b, (a, d));
        let (first, best, _) = first_max(y, x);
        let g = if best > T::zero() { g } else { T::zero() };
        let dy = route(first, g);
        let dx = |i: usize| k * dy[i] - (slope * x[i] + offset);
        (ot[0], ot[1], ob[0], ob[1]) = (dx(0), dx(1), dx(2), dx(3));
    }
}
