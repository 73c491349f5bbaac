//! CPU kernels of the depthwise convolution: one image plane per rayon task, inner loops over
//! contiguous rows so that the compiler vectorises them at stride 1.

use rayon::prelude::*;

/// The float types the kernels run on.
pub(crate) trait Element:
    Copy
    + Default
    + Send
    + Sync
    + std::ops::Mul<Output = Self>
    + std::ops::AddAssign
    + std::iter::Sum
    + 'static
{
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

impl Element for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Element for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// Shapes of one depthwise convolution (square kernel, symmetric padding, dilation 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Geometry {
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.padding - self.kernel) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Output columns `ox` whose input column `ox * stride + kx - padding` lies inside the row.
    fn valid_cols(&self, kx: usize) -> std::ops::Range<usize> {
        self.valid(kx, self.in_w, self.out_w())
    }

    fn valid_rows(&self, ky: usize) -> std::ops::Range<usize> {
        self.valid(ky, self.in_h, self.out_h())
    }

    fn valid(&self, k: usize, input: usize, output: usize) -> std::ops::Range<usize> {
        let first = self.padding.saturating_sub(k).div_ceil(self.stride);
        if input + self.padding <= k {
            return 0..0;
        }
        let last = (input - 1 + self.padding - k) / self.stride + 1;
        first.min(output)..last.min(output)
    }
}

/// `out[n, c] = sum_{ky,kx} w[c, ky, kx] * x[n, c, shifted]`.
pub(crate) fn forward<T: Element>(x: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (oh, ow, k, s) = (g.out_h(), g.out_w(), g.kernel, g.stride);
    let in_plane = g.in_h * g.in_w;
    let mut out = vec![T::default(); g.batch * g.channels * oh * ow];
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(plane, o)| {
            let c = plane % g.channels;
            let xin = &x[plane * in_plane..(plane + 1) * in_plane];
            let wk = &w[c * k * k..(c + 1) * k * k];
            for ky in 0..k {
                for oy in g.valid_rows(ky) {
                    let iy = oy * s + ky - g.padding;
                    let irow = &xin[iy * g.in_w..(iy + 1) * g.in_w];
                    let orow = &mut o[oy * ow..(oy + 1) * ow];
                    for kx in 0..k {
                        let wv = wk[ky * k + kx];
                        let cols = g.valid_cols(kx);
                        if cols.is_empty() {
                            continue;
                        }
                        let first_in = cols.start * s + kx - g.padding;
                        if s == 1 {
                            let src = &irow[first_in..first_in + cols.len()];
                            for (ov, iv) in orow[cols].iter_mut().zip(src) {
                                *ov += wv * *iv;
                            }
                        } else {
                            for (i, ov) in orow[cols].iter_mut().enumerate() {
                                *ov += wv * irow[first_in + i * s];
                            }
                        }
                    }
                }
            }
        });
    out
}

/// Gradient with respect to the input: scatters each output gradient back through the kernel.
pub(crate) fn input_grad<T: Element>(grad_out: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (oh, ow, k, s) = (g.out_h(), g.out_w(), g.kernel, g.stride);
    let in_plane = g.in_h * g.in_w;
    let mut grad_in = vec![T::default(); g.batch * g.channels * in_plane];
    grad_in
        .par_chunks_mut(in_plane)
        .enumerate()
        .for_each(|(plane, gi)| {
            let c = plane % g.channels;
            let go = &grad_out[plane * oh * ow..(plane + 1) * oh * ow];
            let wk = &w[c * k * k..(c + 1) * k * k];
            for ky in 0..k {
                for oy in g.valid_rows(ky) {
                    let iy = oy * s + ky - g.padding;
                    let grow = &go[oy * ow..(oy + 1) * ow];
                    let irow = &mut gi[iy * g.in_w..(iy + 1) * g.in_w];
                    for kx in 0..k {
                        let wv = wk[ky * k + kx];
                        let cols = g.valid_cols(kx);
                        if cols.is_empty() {
                            continue;
                        }
                        let first_in = cols.start * s + kx - g.padding;
                        if s == 1 {
                            let dst = &mut irow[first_in..first_in + cols.len()];
                            for (iv, gv) in dst.iter_mut().zip(&grow[cols]) {
                                *iv += wv * *gv;
                            }
                        } else {
                            for (i, gv) in grow[cols].iter().enumerate() {
                                irow[first_in + i * s] += wv * *gv;
                            }
                        }
                    }
                }
            }
        });
    grad_in
}

/// Gradient with respect to the weights: per channel, correlates output gradients with inputs.
/// Rows are summed in the element type and accumulated across rows and images in f64.
pub(crate) fn weight_grad<T: Element>(x: &[T], grad_out: &[T], g: &Geometry) -> Vec<T> {
    let (oh, ow, k, s) = (g.out_h(), g.out_w(), g.kernel, g.stride);
    let in_plane = g.in_h * g.in_w;
    let mut grad_w = vec![T::default(); g.channels * k * k];
    grad_w
        .par_chunks_mut(k * k)
        .enumerate()
        .for_each(|(c, gw)| {
            let mut acc = vec![0f64; k * k];
            for n in 0..g.batch {
                let plane = n * g.channels + c;
                let xin = &x[plane * in_plane..(plane + 1) * in_plane];
                let go = &grad_out[plane * oh * ow..(plane + 1) * oh * ow];
                for ky in 0..k {
                    for oy in g.valid_rows(ky) {
                        let iy = oy * s + ky - g.padding;
                        let irow = &xin[iy * g.in_w..(iy + 1) * g.in_w];
                        let grow = &go[oy * ow..(oy + 1) * ow];
                        for kx in 0..k {
                            let cols = g.valid_cols(kx);
                            if cols.is_empty() {
                                continue;
                            }
                            let first_in = cols.start * s + kx - g.padding;
                            let row_sum: T = if s == 1 {
                                let src = &irow[first_in..first_in + cols.len()];
                                grow[cols].iter().zip(src).map(|(&a, &b)| a * b).sum()
                            } else {
                                grow[cols]
                                    .iter()
                                    .enumerate()
                                    .map(|(i, &a)| a * irow[first_in + i * s])
                                    .sum()
                            };
                            acc[ky * k + kx] += row_sum.to_f64();
                        }
                    }
                }
            }
            for (dst, src) in gw.iter_mut().zip(acc) {
                *dst = T::from_f64(src);
            }
        });
    grad_w
}
