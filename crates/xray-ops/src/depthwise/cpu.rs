//! CPU kernels of the depthwise convolution: one image plane (or, for the weight gradient, one
//! channel) per rayon task. Each task copies its plane once into a zero-padded polyphase buffer
//! ([`flat`](super::flat)), so that the whole plane is one weighted sum of contiguous runs with
//! no bounds logic inside, computed in vector registers. The plane kernels are compiled for
//! AVX2 and FMA (and NEON) besides the baseline, and the fastest one the CPU supports runs.

use multiversion::multiversion;
use multiversion::target::selected_target;
use rayon::prelude::*;

use std::mem::MaybeUninit;

use crate::bias_act::{mask_relu6_in_place, Epilogue};
use crate::uninit::{as_uninit, assume_written, filled, write_copy};

use super::flat::{correlate, weighted_sum, PlaneLayout, PolyphasePlane, Tap};

/// What a rayon task keeps between planes: the padded plane, the flat output and the taps.
type Scratch<T> = (PolyphasePlane<T>, Vec<T>, Vec<Tap<T>>);

fn scratch<T: Element>() -> Scratch<T> {
    (PolyphasePlane::new(), Vec::new(), Vec::new())
}

/// The float types the kernels run on.
pub(crate) trait Element:
    Copy
    + Default
    + Send
    + Sync
    + std::ops::Mul<Output = Self>
    + std::ops::AddAssign
    + std::iter::Sum
    + crate::scratch::Pooled
    + 'static
{
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    /// `self * a + b` in one rounding; only used where the CPU has FMA (a library call
    /// otherwise).
    fn fused_mul_add(self, a: Self, b: Self) -> Self;
}

impl Element for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn fused_mul_add(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }
}

impl Element for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn fused_mul_add(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }
}

// The depthwise kernels (CPU and CUDA) and the dense convolution share one description.
pub(crate) use crate::geometry::Geometry;

impl Geometry {
    /// Where the forward pass and the weight gradient put an input plane: each output pixel's
    /// taps at fixed offsets from its flat index in rows of `cols`.
    fn input_layout(&self) -> PlaneLayout {
        let reach = (self.kernel - 1) / self.stride;
        PlaneLayout {
            height: self.in_h,
            width: self.in_w,
            pad_top: self.padding,
            pad_left: self.padding,
            stride: self.stride,
            rows: self.out_h() + reach,
            cols: self.out_w() + reach,
        }
    }
}

/// `out[n, c] = sum_{ky,kx} w[c, ky, kx] * x[n, c, shifted]`, then the `epilogue`'s bias and
/// activation if there is one.
pub(crate) fn forward<T: Element + num_traits::Float>(
    x: &[T],
    w: &[T],
    g: &Geometry,
    epilogue: Option<Epilogue<'_, T>>,
) -> Vec<T> {
    let len = g.batch * g.channels * g.out_h() * g.out_w();
    // SAFETY: `forward_planes` writes every output plane whole.
    unsafe { filled(len, |out| forward_planes(x, w, g, epilogue, out)) }
}

/// [`forward`] into `out`, which holds `g.batch * g.channels` output planes.
pub(crate) fn forward_into<T: Element + num_traits::Float>(
    x: &[T],
    w: &[T],
    g: &Geometry,
    epilogue: Option<Epilogue<'_, T>>,
    out: &mut [T],
) {
    // SAFETY: the kernels write only initialised values.
    forward_planes(x, w, g, epilogue, unsafe { as_uninit(out) });
}

/// Writes every plane of `out` (`g.batch * g.channels` output planes).
fn forward_planes<T: Element + num_traits::Float>(
    x: &[T],
    w: &[T],
    g: &Geometry,
    epilogue: Option<Epilogue<'_, T>>,
    out: &mut [MaybeUninit<T>],
) {
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.kernel);
    let in_plane = g.in_h * g.in_w;
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each_init(scratch, |scratch, (plane, o)| {
            let c = plane % g.channels;
            let x = &x[plane * in_plane..(plane + 1) * in_plane];
            forward_plane(x, &w[c * k * k..(c + 1) * k * k], o, g, scratch);
            // SAFETY: `forward_plane` wrote every row of the plane.
            let o = unsafe { assume_written(o) };
            if let Some(epilogue) = &epilogue {
                epilogue.apply(c, o);
            }
        });
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn forward_plane<T: Element>(
    x: &[T],
    wk: &[T],
    out: &mut [MaybeUninit<T>],
    g: &Geometry,
    (padded, flat, taps): &mut Scratch<T>,
) {
    // A constant in each compiled version: FMA where that version may use it.
    const HAS_FMA: bool = selected_target!().supports_feature_str("fma");
    let has_fma = HAS_FMA;
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.kernel);
    let layout = g.input_layout();
    padded.fill(x, &layout);
    flat.resize(oh * layout.cols, T::default());
    taps.clear();
    taps.extend((0..k * k).map(|t| (padded.run_start(t / k, t % k), wk[t])));
    weighted_sum(flat, padded.data(), taps, has_fma);
    for (o, f) in out.chunks_exact_mut(ow).zip(flat.chunks_exact(layout.cols)) {
        write_copy(o, &f[..ow]);
    }
}

/// Gradient with respect to the input: each input pixel gathers the output gradients it fed,
/// through the same kernel weights.
pub(crate) fn input_grad<T: Element + num_traits::Float>(
    grad_out: &[T],
    w: &[T],
    g: &Geometry,
) -> Vec<T> {
    backward(&[], grad_out, w, g, (true, false))
        .0
        .unwrap_or_default()
}

/// Gradient with respect to the weights: per channel, the correlation of output gradients with
/// the (padded) inputs, summed over the batch in f64.
pub(crate) fn weight_grad<T: Element + num_traits::Float>(
    x: &[T],
    grad_out: &[T],
    g: &Geometry,
) -> Vec<T> {
    backward(x, grad_out, &[], g, (false, true))
        .1
        .unwrap_or_default()
}

/// The input gradient (if `want_input`) and the weight gradient (if `want_weight`) in one pass
/// ([`backward_into`]). Reading the output gradient once instead of twice, and writing the input
/// gradient without zeroing it first, saves two of the five passes over memory that the
/// separate kernels make.
pub(crate) fn backward<T: Element + num_traits::Float>(
    x: &[T],
    grad_out: &[T],
    w: &[T],
    g: &Geometry,
    (want_input, want_weight): (bool, bool),
) -> (Option<Vec<T>>, Option<Vec<T>>) {
    let mut sums = vec![0f64; g.channels * g.kernel * g.kernel];
    let weight_sums = want_weight.then_some(&mut sums[..]);
    let grad_in = if want_input {
        let len = g.batch * g.channels * g.in_h * g.in_w;
        let fill = |grad_in: &mut [MaybeUninit<T>]| {
            backward_into(x, grad_out, w, g, None, Some(grad_in), weight_sums);
        };
        // SAFETY: `backward_into` writes every plane of the input gradient it is given.
        Some(unsafe { filled(len, fill) })
    } else {
        backward_into(x, grad_out, w, g, None, None, weight_sums);
        None
    };
    let grad_w = want_weight.then(|| sums.into_iter().map(T::from_f64).collect());
    (grad_in, grad_w)
}

/// Both gradients in one pass over the planes: each task takes one channel and, image by
/// image, writes that plane's input gradient into `grad_in` (masked by ReLU6's derivative read
/// from `relu6_output`, if given) and adds its weight-gradient sums to `weight_sums` (in f64,
/// over the images in order) while the plane's output gradient is still in cache. Every plane
/// of `grad_in` is written.
pub(crate) fn backward_into<T: Element + num_traits::Float>(
    x: &[T],
    grad_out: &[T],
    w: &[T],
    g: &Geometry,
    relu6_output: Option<&[T]>,
    grad_in: Option<&mut [MaybeUninit<T>]>,
    weight_sums: Option<&mut [f64]>,
) {
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.kernel);
    let (in_plane, out_plane) = (g.in_h * g.in_w, oh * ow);
    // Each channel's input-gradient planes (one per image), so that a task owns them all.
    let mut by_channel: Vec<Vec<&mut [MaybeUninit<T>]>> = (0..g.channels)
        .map(|_| Vec::with_capacity(g.batch))
        .collect();
    if let Some(grad_in) = grad_in {
        for (plane, gi) in grad_in.chunks_exact_mut(in_plane.max(1)).enumerate() {
            by_channel[plane % g.channels].push(gi);
        }
    }
    let want_weight = weight_sums.is_some();
    let mut no_sums = vec![0f64; if want_weight { 0 } else { g.channels * k * k }];
    let sums = weight_sums.unwrap_or(&mut no_sums);
    by_channel
        .into_par_iter()
        .zip(sums.par_chunks_mut(k * k))
        .enumerate()
        .for_each_init(scratch, |scratch, (c, (mut planes, sums))| {
            for n in 0..g.batch {
                let plane = n * g.channels + c;
                if let Some(gi) = planes.get_mut(n) {
                    let go = &grad_out[plane * out_plane..(plane + 1) * out_plane];
                    let wk = &w[c * k * k..(c + 1) * k * k];
                    input_grad_plane(go, wk, gi, g, scratch);
                    // SAFETY: `input_grad_plane` wrote every pixel of the plane.
                    let gi = unsafe { assume_written(gi) };
                    if let Some(out) = relu6_output {
                        mask_relu6_in_place(gi, &out[plane * in_plane..(plane + 1) * in_plane]);
                    }
                }
                if want_weight {
                    weight_grad_plane(x, grad_out, plane, g, scratch, sums);
                }
            }
        });
}

/// Padded input pixel `(s*R + a, s*C + b)` receives output pixel `(R - m, C - n)` through
/// weight `(a + s*m, b + s*n)`: for each phase `(a, b)`, a correlation of the output gradient
/// (padded by `(K-1)/s` zeros before) with a sub-kernel, again as one flat weighted sum.
#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn input_grad_plane<T: Element>(
    go: &[T],
    wk: &[T],
    gi: &mut [MaybeUninit<T>],
    g: &Geometry,
    (padded, flat, taps): &mut Scratch<T>,
) {
    // A constant in each compiled version: FMA where that version may use it.
    const HAS_FMA: bool = selected_target!().supports_feature_str("fma");
    let has_fma = HAS_FMA;
    let (oh, ow, k, s, p) = (g.out_h(), g.out_w(), g.kernel, g.stride, g.padding);
    let lead = (k - 1) / s;
    // Phase rows and columns that hold real input pixels.
    let (phase_rows, phase_cols) = ((p + g.in_h - 1) / s + 1, (p + g.in_w - 1) / s + 1);
    let layout = PlaneLayout {
        height: oh,
        width: ow,
        pad_top: lead,
        pad_left: lead,
        stride: 1,
        rows: phase_rows.max(oh) + lead,
        cols: phase_cols.max(ow) + lead,
    };
    padded.fill(go, &layout);
    let cols = layout.cols;
    let len = phase_rows * cols;
    flat.resize(s * s * len, T::default());
    for (ab, phase) in flat.chunks_exact_mut(len).enumerate() {
        let (a, b) = (ab / s, ab % s);
        taps.clear();
        for m in (0..).take_while(|m| a + s * m < k) {
            for n in (0..).take_while(|n| b + s * n < k) {
                let start = (lead - m) * cols + (lead - n);
                taps.push((start, wk[(a + s * m) * k + b + s * n]));
            }
        }
        weighted_sum(phase, padded.data(), taps, has_fma);
    }
    for (iy, row) in gi.chunks_exact_mut(g.in_w).enumerate() {
        let r = iy + p;
        let phase_row = |b: usize| ((r % s) * s + b) * len + (r / s) * cols;
        if s == 1 {
            write_copy(row, &flat[phase_row(0) + p..phase_row(0) + p + g.in_w]);
            continue;
        }
        // Input column ix is padded column ix + p: phase (ix + p) % s, index (ix + p) / s. Each
        // phase fills every s-th column, its index rising by one (no division per pixel); as b
        // runs over the s phases, `first` runs over 0..s, so every column is written.
        for b in 0..s {
            let first = (b + s - p % s) % s;
            let src = &flat[phase_row(b) + (first + p) / s..];
            for (v, &f) in row.iter_mut().skip(first).step_by(s).zip(src) {
                v.write(f);
            }
        }
    }
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn weight_grad_plane<T: Element>(
    x: &[T],
    grad_out: &[T],
    plane: usize,
    g: &Geometry,
    (padded, flat, _): &mut Scratch<T>,
    acc: &mut [f64],
) {
    // A constant in each compiled version: FMA where that version may use it.
    const HAS_FMA: bool = selected_target!().supports_feature_str("fma");
    let has_fma = HAS_FMA;
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.kernel);
    let in_plane = g.in_h * g.in_w;
    let layout = g.input_layout();
    padded.fill(&x[plane * in_plane..(plane + 1) * in_plane], &layout);
    // The output gradient in the same flat indexing, zero in the dropped columns.
    let cols = layout.cols;
    flat.resize(oh * cols, T::default());
    let go = &grad_out[plane * oh * ow..(plane + 1) * oh * ow];
    for (f, src) in flat.chunks_exact_mut(cols).zip(go.chunks_exact(ow)) {
        f[..ow].copy_from_slice(src);
        f[ow..].fill(T::default());
    }
    if k == 3 {
        // The common case: all nine partial sums in registers in one pass.
        let starts = std::array::from_fn(|t| padded.run_start(t / 3, t % 3));
        correlate::<T, 9>(flat, padded.data(), starts, acc, has_fma);
        return;
    }
    for t in 0..k * k {
        let starts = [padded.run_start(t / k, t % k)];
        correlate::<T, 1>(flat, padded.data(), starts, &mut acc[t..t + 1], has_fma);
    }
}
