//! 2x2 max-pooling with stride 2 as one op with its backward.
//!
//! Written with candle ops (a reshape and two `max`es) it is exact but slow backward: each `max`
//! re-broadcasts its result, compares, converts and multiplies, four full passes, and every
//! tied element receives the whole gradient (a flat patch of film passes four times the
//! gradient). Here the backward is one pass and, as in PyTorch, only the first maximum of each
//! window receives the gradient. Other devices gather each window's first maximum with candle's
//! ops, whose backward scatters to that one element, so they train the same way.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use multiversion::multiversion;
use num_traits::Float;
use rayon::prelude::*;

use crate::cpu_storage::{dispatch, slice};

/// 2x2 max-pooling with stride 2 of an `(N, C, H, W)` tensor (odd trailing rows and columns
/// dropped, as `max_pool2d` does). Differentiable; f32 or f64 on CPU, candle's ops elsewhere.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[[[1f32, 5.0, 2.0], [3.0, 4.0, 9.0]]]], &Device::Cpu)?;
/// let y = xray_ops::max_pool_2x2(&x)?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![5.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn max_pool_2x2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = (h / 2, w / 2);
    if oh == 0 || ow == 0 {
        bail!("max_pool_2x2: a {h}x{w} map is smaller than one 2x2 window");
    }
    if !x.device().is_cpu() {
        return pool_by_gather(x);
    }
    x.contiguous()?.apply_op1(MaxPool)
}

/// [`max_pool_2x2`] with candle's ops, for any device: each window's first maximum is gathered,
/// and the gather's backward sends the gradient to that element alone.
fn pool_by_gather(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h / 2, w / 2);
    let windows = x
        .narrow(2, 0, 2 * oh)?
        .narrow(3, 0, 2 * ow)?
        .reshape((n, c, oh, 2, ow, 2))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((n, c, oh, ow, 4))?;
    let first_max = windows.detach().argmax_keepdim(4)?;
    windows.gather(&first_max, 4)?.squeeze(4)
}

struct MaxPool;

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max-pool-2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let out = match s {
            CpuStorage::F32(x) => {
                CpuStorage::F32(pool(slice(x, l, "max_pool_2x2", "input")?, h, w))
            }
            CpuStorage::F64(x) => {
                CpuStorage::F64(pool(slice(x, l, "max_pool_2x2", "input")?, h, w))
            }
            other => bail!(
                "max_pool_2x2: input must be f32 or f64, got {:?}",
                other.dtype()
            ),
        };
        Ok((out, Shape::from((n, c, h / 2, w / 2))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &MaxPoolGrad)?))
    }
}

fn pool<T: Float + Send + Sync>(x: &[T], h: usize, w: usize) -> Vec<T> {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![T::zero(); x.len() / (h * w) * oh * ow];
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(o, x)| {
            for (orow, pair) in o.chunks_exact_mut(ow).zip(row_pairs(x, w)) {
                pool_row(orow, pair);
            }
        });
    out
}

/// A plane `w` wide as row pairs `(top, bottom)`, a trailing odd row dropped: the rows of
/// the 2x2 windows.
pub(crate) fn row_pairs<T>(plane: &[T], w: usize) -> impl Iterator<Item = (&[T], &[T])> {
    plane.chunks_exact(2 * w).map(move |pair| pair.split_at(w))
}

/// [`row_pairs`] for writing.
pub(crate) fn row_pairs_mut<T>(
    plane: &mut [T],
    w: usize,
) -> impl Iterator<Item = (&mut [T], &mut [T])> {
    plane
        .chunks_exact_mut(2 * w)
        .map(move |pair| pair.split_at_mut(w))
}

/// The larger of `a` and `b`, a NaN winning, so that a diverging activation is not hidden.
fn nan_max<T: Float>(a: T, b: T) -> T {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

/// The largest of a 2x2 window's four values (row-major), a NaN winning.
#[inline(always)]
pub(crate) fn window_max<T: Float>(cells: [T; 4]) -> T {
    nan_max(nan_max(nan_max(cells[0], cells[1]), cells[2]), cells[3])
}

/// The first maximum of a 2x2 window's `keys` (row-major; a NaN counts as larger than a
/// number): its position 0-3 as a float, its key, and `payload` at that position. Selects on
/// values, no indexing, so that loops over windows vectorise.
#[inline(always)]
pub(crate) fn first_max<T: Float>(keys: [T; 4], payload: [T; 4]) -> (T, T, T) {
    let (mut position, mut best, mut at) = (T::zero(), keys[0], payload[0]);
    let mut here = T::zero();
    for i in 1..4 {
        here = here + T::one();
        let wins = keys[i] > best || (keys[i].is_nan() && !best.is_nan());
        position = if wins { here } else { position };
        best = if wins { keys[i] } else { best };
        at = if wins { payload[i] } else { at };
    }
    (position, best, at)
}

/// `g` at `position` (0-3, as [`first_max`] gives it) of a 2x2 window, zero at the other
/// three cells, row-major.
#[inline(always)]
pub(crate) fn route<T: Float>(position: T, g: T) -> [T; 4] {
    let mut i = T::zero();
    [(); 4].map(|()| {
        let share = if position == i { g } else { T::zero() };
        i = i + T::one();
        share
    })
}

/// Each 2x2 window of a row pair, straight over the rows (no index arithmetic, so the
/// compiler vectorises it).
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn pool_row<T: Float>(out: &mut [T], (top, bottom): (&[T], &[T])) {
    for ((v, t), b) in out
        .iter_mut()
        .zip(top.chunks_exact(2))
        .zip(bottom.chunks_exact(2))
    {
        *v = window_max([t[0], t[1], b[0], b[1]]);
    }
}

/// `(x, grad_out) -> grad_x`: each window's gradient goes to its first maximum (row-major).
struct MaxPoolGrad;

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "max-pool-2x2-grad"
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
            "max_pool_2x2 backward",
            (s1, l1, "input"),
            (s2, l2, "output gradient"),
            |x, g| unpool(x, g, h, w),
            |x, g| unpool(x, g, h, w),
        )?;
        Ok((out, l1.shape().clone()))
    }
}

fn unpool<T: Float + Send + Sync>(x: &[T], grad: &[T], h: usize, w: usize) -> Vec<T> {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w).zip(grad.par_chunks(oh * ow)))
        .for_each(|(gx, (x, g))| {
            let rows = row_pairs_mut(gx, w)
                .zip(row_pairs(x, w))
                .zip(g.chunks_exact(ow));
            for ((gx_pair, x_pair), g_row) in rows {
                unpool_row(gx_pair, x_pair, g_row);
            }
        });
    out
}

/// Each window's gradient to its first maximum in row-major order (a NaN counting as the
/// maximum), zero to the other three cells; a trailing odd column is left as it is.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn unpool_row<T: Float>(
    (gx_top, gx_bottom): (&mut [T], &mut [T]),
    (top, bottom): (&[T], &[T]),
    g: &[T],
) {
    let windows = gx_top
        .chunks_exact_mut(2)
        .zip(gx_bottom.chunks_exact_mut(2))
        .zip(top.chunks_exact(2).zip(bottom.chunks_exact(2)))
        .zip(g);
    for (((gt, gb), (t, b)), &g) in windows {
        let cells = [t[0], t[1], b[0], b[1]];
        let (first, _, _) = first_max(cells, cells);
        let [g0, g1, g2, g3] = route(first, g);
        (gt[0], gt[1], gb[0], gb[1]) = (g0, g1, g2, g3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    /// The path other devices take trains as the CPU op does, ties included: values drawn from
    /// {0, 1, 2} tie in most windows, where candle's two `max`es would pass the gradient to every
    /// tied element.
    #[test]
    fn gather_path_matches_the_cpu_op_with_ties() -> candle_core::Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (h, w) in [(4, 4), (7, 5), (2, 9)] {
            let values: Vec<f32> = (0..2 * 3 * h * w)
                .map(|_| rng.random_range(0..3) as f32)
                .collect();
            let x = Var::from_vec(values, (2, 3, h, w), &Device::Cpu)?;
            let upstream = Tensor::randn(0f32, 1.0, (2, 3, h / 2, w / 2), &Device::Cpu)?;
            let results: Vec<(Vec<f32>, Vec<f32>)> = [true, false]
                .into_iter()
                .map(|on_cpu_op| {
                    let y = if on_cpu_op {
                        max_pool_2x2(&x)?
                    } else {
                        pool_by_gather(&x)?
                    };
                    let grads = (&y * &upstream)?.sum_all()?.backward()?;
                    let grad = grads.get(&x).expect("gradient").flatten_all()?.to_vec1()?;
                    Ok((y.flatten_all()?.to_vec1()?, grad))
                })
                .collect::<candle_core::Result<_>>()?;
            assert_eq!(results[0].0, results[1].0, "{h}x{w} forward");
            assert_eq!(results[0].1, results[1].1, "{h}x{w} gradient");
        }
        Ok(())
    }
}
