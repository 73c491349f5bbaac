//! CPU kernels of the depthwise convolution: one image plane (or, for the weight gradient, one
//! channel) per rayon task. Each task copies its plane once into a zero-padded polyphase buffer
//! ([`flat`](super::flat)), so that the whole plane is one weighted sum of contiguous runs with
//! no bounds logic inside, computed in vector registers. The plane kernels are compiled for
//! AVX2 and FMA (and NEON) besides the baseline, and the fastest one the CPU supports runs.

use multiversion::multiversion;
use multiversion::target::selected_target;
use rayon::prelude::*;

use crate::bias_act::{mask_relu6_in_place, Epilogue};

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
    let mut out = vec![T::default(); g.batch * g.channels * g.out_h() * g.out_w()];
    forward_into(x, w, g, epilogue, &mut out);
    out
}

/// [`forward`] into `out`, which holds `g.batch * g.channels` output planes.
pub(crate) fn forward_into<T: Element + num_traits::Float>(
    x: &[T],
    w: &[T],
    g: &Geometry,
    epilogue: Option<Epilogue<'_, T>>,
    out: &mut [T],
) {
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.kernel);
    let in_plane = g.in_h * g.in_w;
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each_init(scratch, |scratch, (plane, o)| {
            let c = plane % g.channels;
            let x = &x[plane * in_plane..(plane + 1) * in_plane];
            forward_plane(x, &w[c * k * k..(c + 1) * k * k], o, g, scratch);
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
    out: &mut [T],
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
        o.copy_from_slice(&f[..ow]);
    }
}

/// Gradient with respect to the input: each input pixel gathers the output gradients it fed,
/// through the same kernel weights.
pub(crate) fn input_grad<T: Element + num_traits::Float>(
    grad_out: &[T],
    w: &[T],
    g: &Geometry,
) -> Vec<T> {
    let mut grad_in = vec![T::default(); g.batch * g.channels * g.in_h * g.in_w];
    input_grad_into(grad_out, w, g, None, &mut grad_in);
    grad_in
}

/// [`input_grad`] into `grad_in`; with `relu6_output`, each plane is then masked by ReLU6's
/// derivative read from that output (the input of this convolution), while it is in cache.
pub(crate) fn input_grad_into<T: Element + num_traits::Float>(
    grad_out: &[T],
    w: &[T],
    g: &Geometry,
    relu6_output: Option<&[T]>,
    grad_in: &mut [T],
) {
    let (oh, ow, k) = (g.out_h(), g.out_w(), g.kernel);
    let in_plane = g.in_h * g.in_w;
    grad_in
        .par_chunks_mut(in_plane)
        .enumerate()
        .for_each_init(scratch, |scratch, (plane, gi)| {
            let c = plane % g.channels;
            let go = &grad_out[plane * oh * ow..(plane + 1) * oh * ow];
            input_grad_plane(go, &w[c * k * k..(c + 1) * k * k], gi, g, scratch);
            if let Some(out) = relu6_output {
                mask_relu6_in_place(gi, &out[plane * in_plane..(plane + 1) * in_plane]);
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
    gi: &mut [T],
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
            row.copy_from_slice(&flat[phase_row(0) + p..phase_row(0) + p + g.in_w]);
            continue;
        }
        // Input column ix is padded column ix + p: phase (ix + p) % s, index (ix + p) / s. Each
        // phase fills every s-th column, its index rising by one (no division per pixel).
        for b in 0..s {
            let first = (b + s - p % s) % s;
            let src = &flat[phase_row(b) + (first + p) / s..];
            for (v, &f) in row.iter_mut().skip(first).step_by(s).zip(src) {
                *v = f;
            }
        }
    }
}

/// Gradient with respect to the weights: per channel, the correlation of output gradients with
/// the (padded) inputs, summed over the batch in f64.
pub(crate) fn weight_grad<T: Element>(x: &[T], grad_out: &[T], g: &Geometry) -> Vec<T> {
    let k = g.kernel;
    let mut acc = vec![0f64; g.channels * k * k];
    weight_grad_accumulate(x, grad_out, g, &mut acc);
    acc.into_iter().map(T::from_f64).collect()
}

/// Adds [`weight_grad`]'s sums, in f64, to `acc` (`g.channels * k * k`): channels in parallel.
pub(crate) fn weight_grad_accumulate<T: Element>(
    x: &[T],
    grad_out: &[T],
    g: &Geometry,
    acc: &mut [f64],
) {
    let k = g.kernel;
    acc.par_chunks_mut(k * k)
        .enumerate()
        .for_each_init(scratch, |scratch, (c, acc)| {
            for n in 0..g.batch {
                weight_grad_plane(x, grad_out, n * g.channels + c, g, scratch, acc);
            }
        });
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
