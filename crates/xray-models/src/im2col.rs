//! The column matrix of one input plane (im2col) and its scatter back (col2im), the pieces
//! [`dense_conv2d`](crate::dense_conv2d) builds its image-by-image products from.
//!
//! Built from candle ops instead (padding, nine shifted views, a stack), each view's backward
//! materialises a zero tensor of the padded input's size and adds into it: nine extra passes
//! over the input per convolution. Here the backward is one scatter-add pass.

use multiversion::multiversion;

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
