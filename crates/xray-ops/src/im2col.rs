//! The column matrix of one input plane (im2col) and its scatter back (col2im), the pieces
//! [`dense_conv2d`](crate::dense_conv2d) builds its image-by-image products from.
//!
//! Built from candle ops instead (padding, nine shifted views, a stack), each view's backward
//! materialises a zero tensor of the padded input's size and adds into it: nine extra passes
//! over the input per convolution. Here the backward is one scatter-add pass.

use multiversion::multiversion;

use crate::geometry::Geometry;

/// The `K*K x OH*OW` column block of one input plane; every entry is written (zeros where the
/// window leaves the plane), so the block may be a reused buffer.
pub(crate) fn plane_columns<T: Copy + Default>(x: &[T], block: &mut [T], g: &Geometry) {
    let (k, oh, ow) = (g.kernel, g.out_h(), g.out_w());
    for (t, rows) in block.chunks_exact_mut(oh * ow).enumerate() {
        let (ky, kx) = (t / k, t % k);
        let (valid_rows, cols) = (g.valid(ky, g.in_h, oh), g.valid(kx, g.in_w, ow));
        for (oy, row) in rows.chunks_exact_mut(ow).enumerate() {
            if !valid_rows.contains(&oy) || cols.is_empty() {
                row.fill(T::default());
                continue;
            }
            let src = &x[g.input(oy, ky) * g.in_w..][..g.in_w];
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
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
pub(crate) fn scatter_plane<T>(x: &mut [T], block: &[T], g: &Geometry)
where
    T: Copy + std::ops::AddAssign,
{
    let (k, oh, ow) = (g.kernel, g.out_h(), g.out_w());
    for (t, rows) in block.chunks_exact(oh * ow).enumerate() {
        let (ky, kx) = (t / k, t % k);
        let cols = g.valid(kx, g.in_w, ow);
        if cols.is_empty() {
            continue;
        }
        for oy in g.valid(ky, g.in_h, oh) {
            let first_x = g.input(cols.start, kx);
            let dst = &mut x[g.input(oy, ky) * g.in_w + first_x..];
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
