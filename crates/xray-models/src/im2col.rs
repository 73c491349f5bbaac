//! The column matrix of a convolution (im2col) and its scatter back (col2im), per plane, plus
//! the whole-batch stride-1 [`im2col`] op with its backward. [`dense_conv2d`](crate::dense_conv2d)
//! uses the per-plane helpers image by image.
//!
//! Built from candle ops (padding, nine shifted views, a stack), each view's backward
//! materialises a zero tensor of the padded input's size and adds into it: nine extra passes
//! over the input per convolution. Here the backward is one scatter-add pass.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Shape, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;

use crate::cpu_storage::slice;

/// `(N, C, H, W) -> (N, C*K*K, OH*OW)` for a `kernel` x `kernel`, stride-1 convolution with
/// `padding` zeros on each side: row `c*K*K + ky*K + kx`, column `oy*OW + ox` holds
/// `x[c, oy + ky - padding, ox + kx - padding]` (zero outside). The rows follow the flattening
/// of an `(O, C, K, K)` weight. Differentiable; f32 or f64; off CPU, candle's ops.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::arange(0f32, 4.0, &Device::Cpu)?.reshape((1, 1, 2, 2))?;
/// let cols = xray_models::im2col(&x, 2, 0)?;
/// assert_eq!(cols.dims(), &[1, 4, 1]);
/// assert_eq!(cols.flatten_all()?.to_vec1::<f32>()?, vec![0.0, 1.0, 2.0, 3.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn im2col(x: &Tensor, kernel: usize, padding: usize) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if kernel == 0 || h + 2 * padding < kernel || w + 2 * padding < kernel {
        bail!("im2col: kernel {kernel} with padding {padding} does not fit a {h}x{w} input");
    }
    let g = Geometry {
        h,
        w,
        kernel,
        stride: 1,
        padding,
    };
    if !x.device().is_cpu() {
        return im2col_with_candle_ops(x, &g);
    }
    let cols = x.contiguous()?.apply_op1(Im2Col(g))?;
    cols.reshape((n, c * kernel * kernel, g.out_h() * g.out_w()))
}

fn im2col_with_candle_ops(x: &Tensor, g: &Geometry) -> candle_core::Result<Tensor> {
    let (n, c, _, _) = x.dims4()?;
    let (k, p, oh, ow) = (g.kernel, g.padding, g.out_h(), g.out_w());
    let padded = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
    let mut shifted = Vec::with_capacity(k * k);
    for ky in 0..k {
        for kx in 0..k {
            shifted.push(padded.narrow(2, ky, oh)?.narrow(3, kx, ow)?);
        }
    }
    Tensor::stack(&shifted, 2)?.reshape((n, c * k * k, oh * ow))
}

/// Plane size, kernel, stride and padding of a convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub h: usize,
    pub w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Geometry {
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.padding - self.kernel) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Output positions `o` whose input position `o * stride + k - padding` lies in `0..len`.
    fn valid(&self, k: usize, len: usize, out: usize) -> std::ops::Range<usize> {
        let first = self
            .padding
            .saturating_sub(k)
            .div_ceil(self.stride)
            .min(out);
        let end = (len + self.padding)
            .checked_sub(k + 1)
            .map_or(0, |last| last / self.stride + 1)
            .min(out);
        first..end.max(first)
    }

    /// Input position of output position `o` through kernel offset `k` (valid `o` only).
    fn input(&self, o: usize, k: usize) -> usize {
        o * self.stride + k - self.padding
    }
}

/// Output `(N, C, K*K, OH*OW)`; the caller reshapes it to `(N, C*K*K, OH*OW)`.
struct Im2Col(Geometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (n, c, _, _) = l.shape().dims4()?;
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(columns(slice(x, l, "im2col", "input")?, &g)),
            CpuStorage::F64(x) => CpuStorage::F64(columns(slice(x, l, "im2col", "input")?, &g)),
            other => bail!("im2col: input must be f32 or f64, got {:?}", other.dtype()),
        };
        let shape = Shape::from((n, c, g.kernel * g.kernel, g.out_h() * g.out_w()));
        Ok((out, shape))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (n, c, h, w) = x.dims4()?;
        let g = self.0;
        let grad = grad
            .reshape((n, c, g.kernel * g.kernel, g.out_h() * g.out_w()))?
            .contiguous()?;
        Ok(Some(
            grad.apply_op1_no_bwd(&Col2Im(g))?.reshape((n, c, h, w))?,
        ))
    }
}

fn columns<T: Copy + Default + Send + Sync>(x: &[T], g: &Geometry) -> Vec<T> {
    let block = g.kernel * g.kernel * g.out_h() * g.out_w();
    let plane = g.h * g.w;
    let mut out = vec![T::default(); x.len() / plane * block];
    out.par_chunks_mut(block)
        .zip(x.par_chunks(plane))
        .for_each(|(block, x)| plane_columns(x, block, g));
    out
}

/// The `K*K x OH*OW` column block of one input plane; every entry is written (zeros where the
/// window leaves the plane), so the block may be a reused buffer.
pub(crate) fn plane_columns<T: Copy + Default>(x: &[T], block: &mut [T], g: &Geometry) {
    let (k, oh, ow) = (g.kernel, g.out_h(), g.out_w());
    for (t, rows) in block.chunks_exact_mut(oh * ow).enumerate() {
        let (ky, kx) = (t / k, t % k);
        let (valid_rows, cols) = (g.valid(ky, g.h, oh), g.valid(kx, g.w, ow));
        for (oy, row) in rows.chunks_exact_mut(ow).enumerate() {
            if !valid_rows.contains(&oy) || cols.is_empty() {
                row.fill(T::default());
                continue;
            }
            let src = &x[g.input(oy, ky) * g.w..][..g.w];
            let first_x = g.input(cols.start, kx);
            row[..cols.start].fill(T::default());
            if g.stride == 1 {
                row[cols.clone()].copy_from_slice(&src[first_x..first_x + cols.len()]);
            } else {
                for (d, &v) in row[cols.clone()]
                    .iter_mut()
                    .zip(src[first_x..].iter().step_by(g.stride))
                {
                    *d = v;
                }
            }
            row[cols.end..].fill(T::default());
        }
    }
}

/// `(N, C, K*K, OH*OW) -> (N, C, H, W)`: each input pixel sums the column entries it fed.
struct Col2Im(Geometry);

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (n, c, _, _) = l.shape().dims4()?;
        let out = match s {
            CpuStorage::F32(cols) => {
                CpuStorage::F32(scatter(slice(cols, l, "im2col", "output gradient")?, &g))
            }
            CpuStorage::F64(cols) => {
                CpuStorage::F64(scatter(slice(cols, l, "im2col", "output gradient")?, &g))
            }
            other => bail!(
                "im2col: gradient must be f32 or f64, got {:?}",
                other.dtype()
            ),
        };
        Ok((out, Shape::from((n, c, g.h, g.w))))
    }
}

fn scatter<T>(cols: &[T], g: &Geometry) -> Vec<T>
where
    T: Copy + Default + Send + Sync + std::ops::AddAssign,
{
    let (k, oh, ow) = (g.kernel, g.out_h(), g.out_w());
    let block = k * k * oh * ow;
    let mut out = vec![T::default(); cols.len() / block * g.h * g.w];
    out.par_chunks_mut(g.h * g.w)
        .zip(cols.par_chunks(block))
        .for_each(|(x, block)| scatter_plane(x, block, g));
    out
}

/// Adds a `K*K x OH*OW` column block back into the input plane it came from.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx", "aarch64+neon"))]
pub(crate) fn scatter_plane<T>(x: &mut [T], block: &[T], g: &Geometry)
where
    T: Copy + std::ops::AddAssign,
{
    let (k, oh, ow) = (g.kernel, g.out_h(), g.out_w());
    for (t, rows) in block.chunks_exact(oh * ow).enumerate() {
        let (ky, kx) = (t / k, t % k);
        let cols = g.valid(kx, g.w, ow);
        if cols.is_empty() {
            continue;
        }
        for oy in g.valid(ky, g.h, oh) {
            let first_x = g.input(cols.start, kx);
            let dst = &mut x[g.input(oy, ky) * g.w + first_x..];
            let src = &rows[oy * ow + cols.start..oy * ow + cols.end];
            if g.stride == 1 {
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d += v;
                }
            } else {
                for (d, &v) in dst.iter_mut().step_by(g.stride).zip(src) {
                    *d += v;
                }
            }
        }
    }
}
