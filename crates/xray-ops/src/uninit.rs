//! Output buffers that a kernel writes completely, handed to it without zero-filling them first.
//!
//! A fresh 58 MB activation (the depthwise workload's) filled with zeros costs one more pass
//! over memory than the kernel's own write to it: `memset` was a tenth of that workload's
//! profile. Kernels that write every element of their output therefore write into
//! [`MaybeUninit`] planes, and [`filled`] turns the buffer into a `Vec` once they are done.

use std::mem::MaybeUninit;

/// `len` values, all written by `fill` (in any order, from any threads) before anything reads
/// them.
///
/// In debug builds (the tests) the buffer holds NaN before `fill` runs, so an element a kernel
/// forgets to write fails every comparison with a reference instead of passing as a stale zero.
///
/// # Safety
/// `fill` must write every one of the `len` elements it is given.
pub(crate) unsafe fn filled<T: num_traits::Float>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Vec<T> {
    let mut values = Vec::with_capacity(len);
    let spare = &mut values.spare_capacity_mut()[..len];
    if cfg!(debug_assertions) {
        spare.fill(MaybeUninit::new(T::nan()));
    }
    fill(spare);
    // SAFETY: the capacity is at least `len`, and the caller guarantees that `fill` wrote all
    // `len` elements.
    unsafe { values.set_len(len) };
    values
}

/// `values` seen as possibly uninitialised, for a kernel that writes into either kind of
/// buffer.
///
/// # Safety
/// Only initialised values may be written through the result (`MaybeUninit::write`, never
/// `MaybeUninit::uninit()`), since `values` is read as initialised afterwards.
pub(crate) unsafe fn as_uninit<T>(values: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`; the caller writes only initialised values.
    unsafe { &mut *(values as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// `values` as initialised, once every element has been written.
///
/// # Safety
/// Every element of `values` must have been written.
pub(crate) unsafe fn assume_written<T>(values: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`, and the caller guarantees every element
    // is initialised.
    unsafe { &mut *(values as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// Writes `src` into the start of `dst` (which must be at least as long).
#[inline(always)]
pub(crate) fn write_copy<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    for (d, &s) in dst[..src.len()].iter_mut().zip(src) {
        d.write(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_returns_what_the_kernel_wrote() {
        // SAFETY: the closure writes every element.
        let v: Vec<f32> = unsafe {
            filled(1000, |out| {
                for (i, o) in out.iter_mut().enumerate() {
                    o.write(i as f32);
                }
            })
        };
        assert_eq!(v.len(), 1000);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
    }

    #[test]
    fn an_element_left_unwritten_is_nan_in_debug_builds() {
        // Writes all but the last element: legal here only because debug builds fill NaN
        // first, which is exactly what this test checks.
        if !cfg!(debug_assertions) {
            return;
        }
        // SAFETY: in debug builds every element is initialised to NaN before `fill` runs.
        let v: Vec<f64> = unsafe {
            filled(8, |out| {
                for o in &mut out[..7] {
                    o.write(1.0);
                }
            })
        };
        assert!(v[..7].iter().all(|&x| x == 1.0));
        assert!(v[7].is_nan());
    }
}
