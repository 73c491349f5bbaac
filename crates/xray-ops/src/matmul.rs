//! A bounds-checked, safe front to the `gemm` crate's matrix product (the one candle uses),
//! for ops that need products candle's `matmul` cannot express without copies: accumulation
//! into an existing result, and transposed operands read through their strides.

use candle_core::bail;
use num_traits::Float;
use rayon::prelude::*;

/// A read-only matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, as a view of the same data.
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst = lhs * rhs` (or `dst += lhs * rhs` with `accumulate`), `dst` row-major
/// `lhs.rows x rhs.cols`. `threads > 1` lets gemm split the product over rayon.
pub(crate) fn matmul<T: num_traits::Float + 'static>(
    dst: &mut [T],
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    accumulate: bool,
    threads: usize,
) -> candle_core::Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k || dst.len() != m * n || !lhs.in_bounds() || !rhs.in_bounds() {
        bail!(
            "matmul: {}x{} times {}x{} into {} elements does not fit",
            lhs.rows,
            lhs.cols,
            rhs.rows,
            rhs.cols,
            dst.len()
        );
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            dst.fill(T::zero());
        }
        return Ok(());
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index gemm reads or writes is `i * row_stride + j * col_stride` with
    // `i < rows`, `j < cols` of its matrix; `in_bounds` and the length check above put the
    // largest of these inside each slice, and `dst` is exclusively borrowed. `read_dst` is only
    // set when accumulating into initialised values.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// Threads the per-image helpers use: images run in parallel, each product on one thread, when
/// there are enough of them to keep every thread busy; otherwise the products are split.
fn threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `product(input image, output image, threads)` for every image.
pub(crate) fn per_image<T: Float + Send + Sync + 'static>(
    input: &[T],
    in_size: usize,
    out_size: usize,
    product: impl Fn(&[T], &mut [T], usize) -> candle_core::Result<()> + Sync,
) -> candle_core::Result<Vec<T>> {
    let images = input.len() / in_size.max(1);
    let mut out = vec![T::zero(); images * out_size];
    let (in_size, out_size) = (in_size.max(1), out_size.max(1));
    if images >= threads() {
        out.par_chunks_mut(out_size)
            .zip(input.par_chunks(in_size))
            .try_for_each(|(y, x)| product(x, y, 1))?;
    } else {
        for (y, x) in out.chunks_mut(out_size).zip(input.chunks(in_size)) {
            product(x, y, threads())?;
        }
    }
    Ok(out)
}

/// Where [`sum_of_products`] finds an image's right-hand matrix.
pub(crate) enum Columns<'a, T> {
    /// A slice of the input itself.
    Input(&'a [T]),
    /// The buffer the callback just filled.
    Buffer,
}

/// `sum_i G_i A_i^T` for `(rows, cols, pixels)`: `G_i` is image `i`'s `rows x pixels` block of
/// `g` and `A_i` the `cols x pixels` matrix `a_of(i, buffer)` names; one partial sum per thread
/// over its share of the images, accumulated in place, then the partial sums added.
pub(crate) fn sum_of_products<'a, T: Float + Send + Sync + 'static>(
    g: &[T],
    (rows, cols, pixels): (usize, usize, usize),
    a_of: impl Fn(usize, &mut Vec<T>) -> Columns<'a, T> + Sync,
) -> candle_core::Result<Vec<T>> {
    let images = g.len() / (rows * pixels).max(1);
    let parts = threads().min(images).max(1);
    let per_part = images.div_ceil(parts);
    let inner_threads = if parts == 1 { threads() } else { 1 };
    let partials = (0..parts)
        .into_par_iter()
        .map(|part| {
            let (mut acc, mut buffer) = (vec![T::zero(); rows * cols], Vec::new());
            for i in part * per_part..((part + 1) * per_part).min(images) {
                let a = match a_of(i, &mut buffer) {
                    Columns::Input(a) => a,
                    Columns::Buffer => &buffer[..],
                };
                let gi =
                    MatRef::row_major(&g[i * rows * pixels..(i + 1) * rows * pixels], rows, pixels);
                matmul(
                    &mut acc,
                    gi,
                    MatRef::row_major(a, cols, pixels).t(),
                    true,
                    inner_threads,
                )?;
            }
            Ok(acc)
        })
        .collect::<candle_core::Result<Vec<Vec<T>>>>()?;
    let mut total = vec![T::zero(); rows * cols];
    for partial in partials {
        total.iter_mut().zip(partial).for_each(|(t, v)| *t = *t + v);
    }
    Ok(total)
}
