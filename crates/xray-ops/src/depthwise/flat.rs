//! The building blocks of the depthwise kernels.
//!
//! A plane is copied once into a zero-padded buffer split into `stride x stride` polyphase
//! components, with every row of a component the same length. Output pixel `(oy, ox)` then
//! reads tap `(ky, kx)` at a fixed offset from the flat index `oy * cols + ox`, so a whole
//! plane is one weighted sum (or one correlation) of contiguous runs, computed in vector
//! registers; the few columns past the output's width are computed too and dropped. Small maps
//! (7x7, 14x14) thereby run as fast per pixel as large ones.
//!
//! The helpers are `#[inline(always)]` so that they take on the target features of the
//! multiversioned kernels that call them.

use super::cpu::Element;

/// Outputs accumulated together: four 8-lane vectors of f32 hide the addition latency.
const WIDE: usize = 32;
/// One vector of f32.
const NARROW: usize = 8;

/// `acc + w * v`, fused into one instruction when `fma` (a constant in each compiled version).
#[inline(always)]
fn mul_acc<T: Element>(acc: T, w: T, v: T, fma: bool) -> T {
    if fma {
        w.fused_mul_add(v, acc)
    } else {
        let mut acc = acc;
        acc += w * v;
        acc
    }
}

/// One input of a weighted sum: where its run starts in the data, and its weight. (Offsets
/// rather than slices, so that a task can keep one tap list for all its planes.)
pub(super) type Tap<T> = (usize, T);

/// `out[i] = sum over taps of weight * data[start + i]`; every run lies inside `data`.
#[inline(always)]
pub(super) fn weighted_sum<T: Element>(out: &mut [T], data: &[T], taps: &[Tap<T>], fma: bool) {
    let start = weighted_sum_lanes::<T, WIDE>(out, data, taps, 0, fma);
    let start = weighted_sum_lanes::<T, NARROW>(out, data, taps, start, fma);
    for (i, o) in out.iter_mut().enumerate().skip(start) {
        let mut acc = T::default();
        for &(run, w) in taps {
            acc = mul_acc(acc, w, data[run + i], fma);
        }
        *o = acc;
    }
}

#[inline(always)]
fn weighted_sum_lanes<T: Element, const L: usize>(
    out: &mut [T],
    data: &[T],
    taps: &[Tap<T>],
    mut start: usize,
    fma: bool,
) -> usize {
    while let Some(chunk) = out[start..].first_chunk_mut::<L>() {
        let mut acc = [T::default(); L];
        for &(run, w) in taps {
            // Fixed-size chunks: no bounds checks inside, so the loop becomes vector code.
            if let Some(v) = data[run + start..].first_chunk::<L>() {
                for l in 0..L {
                    acc[l] = mul_acc(acc[l], w, v[l], fma);
                }
            }
        }
        *chunk = acc;
        start += L;
    }
    start
}

/// Adds `sum_i g[i] * data[starts[t] + i]` to `totals[t]` for each of the `TAPS` taps, loading
/// each chunk of `g` once for all of them; partial sums in `T`, totals in f64.
#[inline(always)]
pub(super) fn correlate<T: Element, const TAPS: usize>(
    g: &[T],
    data: &[T],
    starts: [usize; TAPS],
    totals: &mut [f64],
    fma: bool,
) {
    let mut acc = [[T::default(); NARROW]; TAPS];
    let runs: [&[T]; TAPS] = std::array::from_fn(|t| &data[starts[t]..starts[t] + g.len()]);
    let mut i = 0;
    while let Some(gv) = g[i..].first_chunk::<NARROW>() {
        for (a, run) in acc.iter_mut().zip(&runs) {
            // SAFETY: every run is as long as `g`, which holds `NARROW` values from `i`.
            // (Checked, the nine runs' lengths stayed on the stack with a compare per load.)
            let v = unsafe { run.as_ptr().add(i).cast::<[T; NARROW]>().read_unaligned() };
            for l in 0..NARROW {
                a[l] = mul_acc(a[l], gv[l], v[l], fma);
            }
        }
        i += NARROW;
    }
    for ((total, a), &start) in totals.iter_mut().zip(&acc).zip(&starts) {
        let tail: f64 = g[i..]
            .iter()
            .zip(&data[start + i..])
            .map(|(&x, &y)| (x * y).to_f64())
            .sum();
        *total += a.iter().map(|v| v.to_f64()).sum::<f64>() + tail;
    }
}

/// A zero-padded plane split into `stride x stride` polyphase components of `rows x cols`:
/// component `(a, b)` holds padded pixel `(stride * r + a, stride * c + b)` at `(r, c)`.
pub(super) struct PolyphasePlane<T> {
    data: Vec<T>,
    stride: usize,
    rows: usize,
    cols: usize,
}

/// Where a plane goes in a [`PolyphasePlane`]: its size, the zero rows and columns before it,
/// and the size of each component.
#[derive(Debug, Clone, Copy)]
pub(super) struct PlaneLayout {
    pub height: usize,
    pub width: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub stride: usize,
    pub rows: usize,
    pub cols: usize,
}

impl<T: Element> PolyphasePlane<T> {
    pub fn new() -> Self {
        PolyphasePlane {
            data: Vec::new(),
            stride: 1,
            rows: 0,
            cols: 0,
        }
    }

    /// Copies `plane` in, zeros around it. One spare row at the end lets the last
    /// component's shifted runs read past its end (into values that only dropped columns use).
    #[inline(always)]
    pub fn fill(&mut self, plane: &[T], p: &PlaneLayout) {
        let s = p.stride;
        (self.stride, self.rows, self.cols) = (s, p.rows, p.cols);
        let component = p.rows * p.cols;
        // Every element is written below, so a reused buffer needs no clearing pass.
        self.data.resize(s * s * component + p.cols, T::default());
        let (components, spare) = self.data.split_at_mut(s * s * component);
        spare.fill(T::default());
        for (ab, comp) in components.chunks_exact_mut(component).enumerate() {
            let (a, b) = (ab / s, ab % s);
            // Padded column s*c + b is source column s*c + b - pad_left: the same for every row.
            let first_c = p.pad_left.saturating_sub(b).div_ceil(s).min(p.cols);
            let first_x = first_c * s + b - p.pad_left;
            for (r, row) in comp.chunks_exact_mut(p.cols).enumerate() {
                // Padded row s*r + a is source row s*r + a - pad_top, if that exists.
                let y = (s * r + a).checked_sub(p.pad_top).filter(|&y| y < p.height);
                let Some(y) = y else {
                    row.fill(T::default());
                    continue;
                };
                let src = &plane[y * p.width..(y + 1) * p.width];
                let (before, from) = row.split_at_mut(first_c);
                before.fill(T::default());
                let written = if s == 1 {
                    let n = p.width.saturating_sub(first_x).min(from.len());
                    from[..n].copy_from_slice(&src[first_x..first_x + n]);
                    n
                } else {
                    from.iter_mut()
                        .zip(src.iter().skip(first_x).step_by(s))
                        .map(|(dst, &v)| *dst = v)
                        .count()
                };
                from[written..].fill(T::default());
            }
        }
    }

    /// Where the run for tap `(ky, kx)` starts in [`data`](Self::data): component
    /// `(ky % s, kx % s)` from row `ky / s`, column `kx / s`, read in flat `cols`-wide indexing.
    #[inline(always)]
    pub fn run_start(&self, ky: usize, kx: usize) -> usize {
        let s = self.stride;
        let component = ((ky % s) * s + kx % s) * self.rows * self.cols;
        component + (ky / s) * self.cols + kx / s
    }

    /// The whole buffer.
    #[inline(always)]
    pub fn data(&self) -> &[T] {
        &self.data
    }
}
