//! Shared plumbing of the CPU custom ops: contiguous slices of a storage, running a kernel on
//! two f32 or two f64 storages, and handing computed gradients back as tensors.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Tensor};

/// A gradient a backward computed from the storages (if it was asked for), as a tensor shaped
/// like the argument it belongs to.
pub(crate) fn gradient_like<T: candle_core::WithDType>(
    values: Option<Vec<T>>,
    like: &Tensor,
) -> candle_core::Result<Option<Tensor>> {
    values
        .map(|v| Tensor::from_vec(v, like.shape(), like.device()))
        .transpose()
}

/// The contiguous data of `layout` in `data`; `op` and `what` name the op and the argument in
/// the error.
pub(crate) fn slice<'a, T>(
    data: &'a [T],
    layout: &Layout,
    op: &str,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: {what} must be contiguous"),
    }
}

/// Runs `kernel` on two f32 or two f64 storages.
pub(crate) fn dispatch(
    op: &str,
    a: (&CpuStorage, &Layout, &str),
    b: (&CpuStorage, &Layout, &str),
    kernel_f32: impl Fn(&[f32], &[f32]) -> Vec<f32>,
    kernel_f64: impl Fn(&[f64], &[f64]) -> Vec<f64>,
) -> candle_core::Result<CpuStorage> {
    try_dispatch(
        op,
        a,
        b,
        |x, y| Ok(kernel_f32(x, y)),
        |x, y| Ok(kernel_f64(x, y)),
    )
}

/// [`dispatch`] for kernels that can fail.
pub(crate) fn try_dispatch(
    op: &str,
    (s1, l1, what1): (&CpuStorage, &Layout, &str),
    (s2, l2, what2): (&CpuStorage, &Layout, &str),
    kernel_f32: impl Fn(&[f32], &[f32]) -> candle_core::Result<Vec<f32>>,
    kernel_f64: impl Fn(&[f64], &[f64]) -> candle_core::Result<Vec<f64>>,
) -> candle_core::Result<CpuStorage> {
    match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => Ok(CpuStorage::F32(kernel_f32(
            slice(a, l1, op, what1)?,
            slice(b, l2, op, what2)?,
        )?)),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => Ok(CpuStorage::F64(kernel_f64(
            slice(a, l1, op, what1)?,
            slice(b, l2, op, what2)?,
        )?)),
        _ => bail!(
            "{op}: {what1} and {what2} must both be f32 or both f64, got {:?} and {:?}",
            s1.dtype(),
            s2.dtype()
        ),
    }
}

/// Runs `kernel` on three f32 or three f64 storages.
pub(crate) fn dispatch3(
    op: &str,
    a: (&CpuStorage, &Layout, &str),
    b: (&CpuStorage, &Layout, &str),
    c: (&CpuStorage, &Layout, &str),
    kernel_f32: impl Fn(&[f32], &[f32], &[f32]) -> Vec<f32>,
    kernel_f64: impl Fn(&[f64], &[f64], &[f64]) -> Vec<f64>,
) -> candle_core::Result<CpuStorage> {
    try_dispatch3(
        op,
        a,
        b,
        c,
        |x, y, z| Ok(kernel_f32(x, y, z)),
        |x, y, z| Ok(kernel_f64(x, y, z)),
    )
}

/// [`dispatch3`] for kernels that can fail.
pub(crate) fn try_dispatch3(
    op: &str,
    (s1, l1, what1): (&CpuStorage, &Layout, &str),
    (s2, l2, what2): (&CpuStorage, &Layout, &str),
    (s3, l3, what3): (&CpuStorage, &Layout, &str),
    kernel_f32: impl Fn(&[f32], &[f32], &[f32]) -> candle_core::Result<Vec<f32>>,
    kernel_f64: impl Fn(&[f64], &[f64], &[f64]) -> candle_core::Result<Vec<f64>>,
) -> candle_core::Result<CpuStorage> {
    match (s1, s2, s3) {
        (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
            Ok(CpuStorage::F32(kernel_f32(
                slice(a, l1, op, what1)?,
                slice(b, l2, op, what2)?,
                slice(c, l3, op, what3)?,
            )?))
        }
        (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
            Ok(CpuStorage::F64(kernel_f64(
                slice(a, l1, op, what1)?,
                slice(b, l2, op, what2)?,
                slice(c, l3, op, what3)?,
            )?))
        }
        _ => bail!(
            "{op}: {what1}, {what2} and {what3} must all be f32 or all f64, got {:?}, {:?} and {:?}",
            s1.dtype(),
            s2.dtype(),
            s3.dtype()
        ),
    }
}
