//! MobileNetV2's inverted-residual block as one op with its own backward.
//!
//! As separate ops (expansion, depthwise, projection, residual add) candle's graph holds four
//! nodes per block, and its backprop adds each node's gradient into a fresh zero tensor: two
//! passes over memory for every activation, the six-times-expanded ones included, plus a
//! separate ReLU6-mask pass for each activation. Here candle sees one node; the expanded
//! gradients never leave the op. The block runs image by image, so that an image's expanded
//! activation is still in cache when the depthwise and projection read it, and in training
//! only the two activations the backward needs are kept (in the op, until the graph is
//! dropped).

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

use crate::bias_act::{mask_relu6_in_place, plane_sum, Epilogue};
use crate::cpu_storage::{gradient_like, slice};
use crate::depthwise::cpu::{self as depthwise, Element, Geometry};
use crate::depthwise::depthwise_conv2d_bias_act;
use crate::matmul::{matmul, MatRef};
use crate::pointwise::pointwise_conv2d_bias_act;
use crate::scratch;
use crate::uninit::as_uninit;

/// The weights of one inverted-residual block with BatchNorm folded in: each convolution's
/// weight already carries its norm's scale, and its bias is the norm's shift.
#[derive(Debug, Clone, Copy)]
pub struct InvertedResidualWeights<'a> {
    /// 1x1 expansion `(E, C, 1, 1)` and bias `(E,)`, followed by ReLU6; `None` for a block
    /// that does not expand (then `E == C`).
    pub expand: Option<(&'a Tensor, &'a Tensor)>,
    /// 3x3 depthwise convolution `(E, 1, 3, 3)` (padding 1) and bias `(E,)`, then ReLU6.
    pub depthwise: (&'a Tensor, &'a Tensor),
    /// Linear 1x1 projection `(O, E, 1, 1)` and bias `(O,)`.
    pub project: (&'a Tensor, &'a Tensor),
    /// The depthwise convolution's stride.
    pub stride: usize,
    /// Adds the block's input to its output (needs stride 1 and `O == C`).
    pub residual: bool,
}

/// `y = Wp relu6(dw(relu6(We x + be)) + bd) + bp (+ x)` for `x` `(N, C, H, W)`: MobileNetV2's
/// inverted-residual block, differentiable in `x` and every weight. On CPU (f32, f64) one op
/// with a hand-written backward; elsewhere the same block from [`pointwise_conv2d_bias_act`]
/// and [`depthwise_conv2d_bias_act`].
///
/// ```
/// use candle_core::{Device, Tensor};
/// use xray_ops::{inverted_residual, InvertedResidualWeights};
/// let dev = Device::Cpu;
/// let x = Tensor::ones((1, 2, 4, 4), candle_core::DType::F32, &dev)?;
/// let (we, be) = (Tensor::ones((4, 2, 1, 1), candle_core::DType::F32, &dev)?, Tensor::zeros(4, candle_core::DType::F32, &dev)?);
/// let (wd, bd) = (Tensor::zeros((4, 1, 3, 3), candle_core::DType::F32, &dev)?, Tensor::ones(4, candle_core::DType::F32, &dev)?);
/// let (wp, bp) = (Tensor::ones((2, 4, 1, 1), candle_core::DType::F32, &dev)?, Tensor::zeros(2, candle_core::DType::F32, &dev)?);
/// let block = InvertedResidualWeights {
///     expand: Some((&we, &be)), depthwise: (&wd, &bd), project: (&wp, &bp), stride: 1, residual: true,
/// };
/// let y = inverted_residual(&x, &block)?;
/// // Depthwise output relu6(0 + 1) = 1 in each of 4 channels, projected to 4, plus the input 1.
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![5.0; 32]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn inverted_residual(
    x: &Tensor,
    block: &InvertedResidualWeights<'_>,
) -> candle_core::Result<Tensor> {
    let dims = Dims::check(x, block)?;
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) {
        return composed(x, block);
    }
    let save = x.track_op() || block.parts().into_iter().flatten().any(Tensor::track_op);
    if !save {
        // Nothing to differentiate: no op node, and no packed copy of the weights.
        return match x.dtype() {
            DType::F32 => untracked_forward::<f32>(x, block, &dims),
            _ => untracked_forward::<f64>(x, block, &dims),
        };
    }
    let parts = block
        .parts()
        .into_iter()
        .flatten()
        .map(Tensor::flatten_all)
        .collect::<candle_core::Result<Vec<_>>>()?;
    let params = Tensor::cat(&parts, 0)?.contiguous()?;
    x.contiguous()?.apply_op2(
        &params,
        FusedBlock {
            dims,
            save,
            saved: Mutex::new(None),
        },
    )
}

/// The forward pass straight on the weights' storage, for inference: no packed copy of the
/// weights (at batch 1 copying them cost as much as a block's products) and no graph node.
fn untracked_forward<T: Element + Float + candle_core::WithDType>(
    x: &Tensor,
    block: &InvertedResidualWeights<'_>,
    d: &Dims,
) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let tensors = block
        .parts()
        .into_iter()
        .map(|t| t.map(Tensor::contiguous).transpose())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let guards: Vec<_> = tensors
        .iter()
        .map(|t| t.as_ref().map(Tensor::storage_and_layout))
        .collect();
    let (x_guard, x_layout) = x.storage_and_layout();
    let mut weights: [&[T]; 6] = [&[]; 6];
    for ((slot, guard), name) in weights.iter_mut().zip(&guards).zip(PARAMETER_NAMES) {
        if let Some((storage, layout)) = guard {
            *slot = cpu_slice(storage, layout, name)?;
        }
    }
    let (y, _) = forward(cpu_slice(&x_guard, x_layout, "input")?, weights, d, false)?;
    let g = d.depthwise();
    Tensor::from_vec(y, (d.batch, d.o, g.out_h(), g.out_w()), x.device())
}

/// The contiguous `T` data of a CPU tensor's storage; `what` names it in the error.
fn cpu_slice<'a, T: candle_core::WithDType>(
    storage: &'a candle_core::Storage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    match storage {
        candle_core::Storage::Cpu(cpu) => {
            slice(cpu.as_slice::<T>()?, layout, "inverted_residual", what)
        }
        _ => bail!("inverted_residual: {what} is not on the CPU"),
    }
}

/// The six parameters' names, in the packed order of [`InvertedResidualWeights::parts`].
const PARAMETER_NAMES: [&str; 6] = [
    "expansion weight",
    "expansion bias",
    "depthwise weight",
    "depthwise bias",
    "projection weight",
    "projection bias",
];

impl<'a> InvertedResidualWeights<'a> {
    /// The six parameters in the packed order (expansion weight and bias, depthwise, then
    /// projection), `None` for the expansion of a block without one.
    fn parts(&self) -> [Option<&'a Tensor>; 6] {
        let (expand_w, expand_b) = match self.expand {
            Some((w, b)) => (Some(w), Some(b)),
            None => (None, None),
        };
        let ((depthwise_w, depthwise_b), (project_w, project_b)) = (self.depthwise, self.project);
        [
            expand_w,
            expand_b,
            Some(depthwise_w),
            Some(depthwise_b),
            Some(project_w),
            Some(project_b),
        ]
    }
}

/// The block from the separate ops: the fallback off CPU.
fn composed(x: &Tensor, block: &InvertedResidualWeights<'_>) -> candle_core::Result<Tensor> {
    let hidden = match block.expand {
        Some((w, b)) => pointwise_conv2d_bias_act(x, w, b, true)?,
        None => x.clone(),
    };
    let (wd, bd) = block.depthwise;
    let hidden = depthwise_conv2d_bias_act(&hidden, wd, bd, (block.stride, 1), true)?;
    let (wp, bp) = block.project;
    let y = pointwise_conv2d_bias_act(&hidden, wp, bp, false)?;
    if block.residual {
        y + x
    } else {
        Ok(y)
    }
}

/// The block's shapes: batch, input, expanded and output channels, input plane, stride.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    c: usize,
    e: usize,
    o: usize,
    h: usize,
    w: usize,
    stride: usize,
    expand: bool,
    residual: bool,
}

impl Dims {
    /// The shapes, after checking every weight against `x`, naming the one that does not fit.
    fn check(x: &Tensor, block: &InvertedResidualWeights<'_>) -> candle_core::Result<Dims> {
        let (batch, c, h, w) = x.dims4()?;
        let fits = |t: &Tensor, want: &[usize], what: &str| -> candle_core::Result<()> {
            if t.dims() != want {
                bail!(
                    "inverted_residual: {what} has shape {:?}, expected {want:?} for input {:?}",
                    t.dims(),
                    x.dims()
                );
            }
            Ok(())
        };
        let e = block.depthwise.0.dim(0)?;
        if let Some((we, be)) = block.expand {
            fits(we, &[e, c, 1, 1], "expansion weight")?;
            fits(be, &[e], "expansion bias")?;
        } else if e != c {
            bail!("inverted_residual: without expansion the depthwise convolution needs {c} channels, has {e}");
        }
        fits(block.depthwise.0, &[e, 1, 3, 3], "depthwise weight")?;
        fits(block.depthwise.1, &[e], "depthwise bias")?;
        let o = block.project.0.dim(0)?;
        fits(block.project.0, &[o, e, 1, 1], "projection weight")?;
        fits(block.project.1, &[o], "projection bias")?;
        if block.stride == 0 || h == 0 || w == 0 {
            bail!(
                "inverted_residual: stride {} on a {h}x{w} input",
                block.stride
            );
        }
        if block.residual && (block.stride != 1 || o != c) {
            bail!(
                "inverted_residual: a residual needs stride 1 and as many outputs as inputs ({c}), got stride {} and {o}",
                block.stride
            );
        }
        Ok(Dims {
            batch,
            c,
            e,
            o,
            h,
            w,
            stride: block.stride,
            expand: block.expand.is_some(),
            residual: block.residual,
        })
    }

    /// The depthwise convolution of one image.
    fn depthwise(&self) -> Geometry {
        Geometry {
            batch: 1,
            channels: self.e,
            in_h: self.h,
            in_w: self.w,
            kernel: 3,
            stride: self.stride,
            padding: 1,
        }
    }

    /// Pixels of the input and of the output plane.
    fn pixels(&self) -> (usize, usize) {
        let g = self.depthwise();
        (self.h * self.w, g.out_h() * g.out_w())
    }

    /// Lengths of the packed parameters: expansion weight and bias, depthwise weight and bias,
    /// projection weight and bias.
    fn param_lengths(&self) -> [usize; 6] {
        let (ew, eb) = if self.expand {
            (self.e * self.c, self.e)
        } else {
            (0, 0)
        };
        [ew, eb, self.e * 9, self.e, self.o * self.e, self.o]
    }
}

/// The packed parameters, split back into their six parts.
fn unpack<'a, T>(params: &'a [T], d: &Dims) -> candle_core::Result<[&'a [T]; 6]> {
    let lengths = d.param_lengths();
    if params.len() != lengths.iter().sum::<usize>() {
        bail!(
            "inverted_residual: {} packed parameters, expected {}",
            params.len(),
            lengths.iter().sum::<usize>()
        );
    }
    let mut rest = params;
    Ok(lengths.map(|n| {
        let (part, tail) = rest.split_at(n);
        rest = tail;
        part
    }))
}

/// How images are shared out: `parts` groups run in parallel, `per_part` images each, and the
/// matrix products of one image get `inner_threads`.
fn partition(batch: usize) -> (usize, usize, usize) {
    let threads = rayon::current_num_threads();
    let parts = threads.min(batch).max(1);
    let inner = if parts == 1 { threads } else { 1 };
    (parts, batch.div_ceil(parts), inner)
}

/// `v` cut into `parts` runs of `per` elements (empty runs for an empty `v`).
fn split_parts<T>(v: &mut [T], per: usize, parts: usize) -> Vec<&mut [T]> {
    let mut runs: Vec<&mut [T]> = v.chunks_mut(per.max(1)).collect();
    runs.resize_with(parts, || &mut []);
    runs
}

/// Applies `epilogue` to each channel plane of one image; over the threads with `parallel` (one
/// image at a time, as at batch 1).
fn epilogue_planes<T: Float + Send + Sync>(
    image: &mut [T],
    pixels: usize,
    epilogue: Epilogue<'_, T>,
    parallel: bool,
) {
    let pixels = pixels.max(1);
    if parallel {
        image
            .par_chunks_exact_mut(pixels)
            .enumerate()
            .for_each(|(channel, plane)| epilogue.apply(channel, plane));
    } else {
        image
            .chunks_exact_mut(pixels)
            .enumerate()
            .for_each(|(channel, plane)| epilogue.apply(channel, plane));
    }
}

/// The activations the backward needs: expanded (empty without expansion) and depthwise
/// outputs, after their ReLU6, for the whole batch.
struct Saved<T> {
    expanded: Vec<T>,
    depthwise: Vec<T>,
}

/// The forward pass; `save` keeps the activations for the backward.
fn forward<T: Element + Float>(
    x: &[T],
    weights: [&[T]; 6],
    d: &Dims,
    save: bool,
) -> candle_core::Result<(Vec<T>, Option<Saved<T>>)> {
    let [we, be, wd, bd, wp, bp] = weights;
    let (p1, p2) = d.pixels();
    let (c, e, o) = (d.c, d.e, d.o);
    let g = d.depthwise();
    let (parts, per_part, inner) = partition(d.batch);
    let saved_len = |n: usize| if save { d.batch * n } else { 0 };
    let mut y = vec![T::zero(); d.batch * o * p2];
    let mut expanded = vec![T::zero(); if d.expand { saved_len(e * p1) } else { 0 }];
    let mut depthwise_out = vec![T::zero(); saved_len(e * p2)];
    if parts == 1 && inner > 1 {
        // One image over several threads (batch 1): share its hidden channels out instead.
        let (mut scratch1, mut scratch2) = scratch_buffers(d, save);
        for (n, y_n) in y.chunks_exact_mut(o * p2).enumerate() {
            let x_n = &x[n * c * p1..(n + 1) * c * p1];
            let h1 = if d.expand {
                image_buffer(&mut expanded, &mut scratch1, n, e * p1)
            } else {
                &mut []
            };
            let h2 = image_buffer(&mut depthwise_out, &mut scratch2, n, e * p2);
            forward_image_by_channel_groups(x_n, weights, d, (h1, h2), y_n, inner)?;
        }
        scratch::give(scratch1);
        scratch::give(scratch2);
        let saved = save.then_some(Saved {
            expanded,
            depthwise: depthwise_out,
        });
        return Ok((y, saved));
    }
    let y_parts = split_parts(&mut y, per_part * o * p2, parts);
    let h1_parts = split_parts(&mut expanded, per_part * e * p1, parts);
    let h2_parts = split_parts(&mut depthwise_out, per_part * e * p2, parts);
    y_parts
        .into_par_iter()
        .zip(h1_parts)
        .zip(h2_parts)
        .enumerate()
        .try_for_each(|(part, ((y_part, h1_part), h2_part))| {
            let (mut scratch1, mut scratch2) = scratch_buffers(d, save);
            for (i, y_n) in y_part.chunks_exact_mut(o * p2).enumerate() {
                let n = part * per_part + i;
                let x_n = &x[n * c * p1..(n + 1) * c * p1];
                let h1_n: &[T] = if d.expand {
                    let h1 = image_buffer(h1_part, &mut scratch1, i, e * p1);
                    matmul(
                        h1,
                        MatRef::row_major(we, e, c),
                        MatRef::row_major(x_n, c, p1),
                        false,
                        inner,
                    )?;
                    let relu6 = Epilogue {
                        bias: be,
                        relu6: true,
                    };
                    epilogue_planes(h1, p1, relu6, inner > 1);
                    h1
                } else {
                    x_n
                };
                let h2 = image_buffer(h2_part, &mut scratch2, i, e * p2);
                let relu6 = Epilogue {
                    bias: bd,
                    relu6: true,
                };
                depthwise::forward_into(h1_n, wd, &g, Some(relu6), h2);
                if d.residual {
                    y_n.copy_from_slice(x_n);
                }
                matmul(
                    y_n,
                    MatRef::row_major(wp, o, e),
                    MatRef::row_major(h2, e, p2),
                    d.residual,
                    inner,
                )?;
                let linear = Epilogue {
                    bias: bp,
                    relu6: false,
                };
                epilogue_planes(y_n, p2, linear, inner > 1);
            }
            scratch::give(scratch1);
            scratch::give(scratch2);
            candle_core::Result::Ok(())
        })?;
    let saved = save.then_some(Saved {
        expanded,
        depthwise: depthwise_out,
    });
    Ok((y, saved))
}

/// The hidden channels `0..e` cut into `groups` runs, each a multiple of 16 channels (one
/// AVX-512 register of f32) but the last.
fn channel_groups(e: usize, groups: usize) -> Vec<std::ops::Range<usize>> {
    let per = e.div_ceil(groups.max(1)).next_multiple_of(16).max(1);
    (0..e)
        .step_by(per)
        .map(|start| start..(start + per).min(e))
        .collect()
}

/// One image with its hidden channels shared out over `groups` threads: each group expands,
/// convolves and projects its own channels with single-threaded products, so the block is one
/// parallel region rather than one per product and epilogue (at batch 1 those made a second
/// thread worth only 15%). The groups' partial projections are then added, with the bias and
/// the residual. `h1` (empty without expansion) and `h2` receive the image's activations.
fn forward_image_by_channel_groups<T: Element + Float>(
    x_n: &[T],
    [we, be, wd, bd, wp, bp]: [&[T]; 6],
    d: &Dims,
    (h1, h2): (&mut [T], &mut [T]),
    y_n: &mut [T],
    groups: usize,
) -> candle_core::Result<()> {
    let (p1, p2) = d.pixels();
    let (c, e, o) = (d.c, d.e, d.o);
    let ranges = channel_groups(e, groups);
    // Each group's slices of the image's activations.
    let (mut h1_rest, mut h2_rest) = (h1, h2);
    let mut tasks = Vec::with_capacity(ranges.len());
    for range in ranges {
        let len = range.len();
        let (h1_g, tail) =
            std::mem::take(&mut h1_rest).split_at_mut(if d.expand { len * p1 } else { 0 });
        h1_rest = tail;
        let (h2_g, tail) = std::mem::take(&mut h2_rest).split_at_mut(len * p2);
        h2_rest = tail;
        tasks.push((range, h1_g, h2_g));
    }
    let partials = tasks
        .into_par_iter()
        .map(|(range, h1_g, h2_g)| {
            let (r0, r1, len) = (range.start, range.end, range.len());
            let input: &[T] = if d.expand {
                matmul(
                    h1_g,
                    MatRef::row_major(&we[r0 * c..r1 * c], len, c),
                    MatRef::row_major(x_n, c, p1),
                    false,
                    1,
                )?;
                let relu6 = Epilogue {
                    bias: &be[range.clone()],
                    relu6: true,
                };
                epilogue_planes(h1_g, p1, relu6, false);
                h1_g
            } else {
                &x_n[r0 * p1..r1 * p1]
            };
            let g = Geometry {
                channels: len,
                ..d.depthwise()
            };
            let relu6 = Epilogue {
                bias: &bd[range.clone()],
                relu6: true,
            };
            depthwise::forward_into(input, &wd[r0 * 9..r1 * 9], &g, Some(relu6), h2_g);
            // Not pooled: taken on a worker, it would be handed back on the calling thread.
            let mut partial = vec![T::zero(); o * p2];
            let columns = MatRef {
                data: &wp[r0..],
                rows: o,
                cols: len,
                row_stride: e,
                col_stride: 1,
            };
            matmul(
                &mut partial,
                columns,
                MatRef::row_major(h2_g, len, p2),
                false,
                1,
            )?;
            candle_core::Result::Ok(partial)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    y_n.par_chunks_exact_mut(p2.max(1))
        .enumerate()
        .for_each(|(j, plane)| {
            let at = j * p2..(j + 1) * p2;
            if d.residual {
                plane.copy_from_slice(&x_n[at.clone()]);
            } else {
                plane.fill(T::zero());
            }
            for partial in &partials {
                plane
                    .iter_mut()
                    .zip(&partial[at.clone()])
                    .for_each(|(y, p)| *y += *p);
            }
            Epilogue {
                bias: bp,
                relu6: false,
            }
            .apply(j, plane);
        });
    Ok(())
}

/// Reusable buffers for one image's expanded and depthwise activations where they are not
/// kept for the backward (empty where they are, or where the block does not expand).
fn scratch_buffers<T: scratch::Pooled>(d: &Dims, save: bool) -> (Vec<T>, Vec<T>) {
    if save {
        return (Vec::new(), Vec::new());
    }
    let (p1, p2) = d.pixels();
    let expanded = if d.expand { d.e * p1 } else { 0 };
    (scratch::take(expanded), scratch::take(d.e * p2))
}

/// Image `i`'s `len` values: in the part's saved activations when they are kept, else in a
/// scratch buffer reused across images.
fn image_buffer<'a, T: Float>(
    part: &'a mut [T],
    scratch: &'a mut Vec<T>,
    i: usize,
    len: usize,
) -> &'a mut [T] {
    if part.is_empty() {
        if scratch.len() < len {
            scratch.resize(len, T::zero());
        }
        &mut scratch[..len]
    } else {
        &mut part[i * len..(i + 1) * len]
    }
}

/// One part's sums of the parameter gradients, in the packed order.
struct ParamGrads<T> {
    expand_w: Vec<T>,
    expand_b: Vec<T>,
    depthwise_w: Vec<f64>,
    depthwise_b: Vec<T>,
    project_w: Vec<T>,
    project_b: Vec<T>,
}

impl<T: Float> ParamGrads<T> {
    fn zeros(d: &Dims) -> Self {
        let [ew, eb, dw, db, pw, pb] = d.param_lengths();
        ParamGrads {
            expand_w: vec![T::zero(); ew],
            expand_b: vec![T::zero(); eb],
            depthwise_w: vec![0.0; dw],
            depthwise_b: vec![T::zero(); db],
            project_w: vec![T::zero(); pw],
            project_b: vec![T::zero(); pb],
        }
    }

    fn add(mut self, other: Self) -> Self {
        let add = |a: &mut Vec<T>, b: Vec<T>| a.iter_mut().zip(b).for_each(|(a, b)| *a = *a + b);
        add(&mut self.expand_w, other.expand_w);
        add(&mut self.expand_b, other.expand_b);
        self.depthwise_w
            .iter_mut()
            .zip(other.depthwise_w)
            .for_each(|(a, b)| *a += b);
        add(&mut self.depthwise_b, other.depthwise_b);
        add(&mut self.project_w, other.project_w);
        add(&mut self.project_b, other.project_b);
        self
    }

    fn packed(self) -> Vec<T>
    where
        T: Element,
    {
        let mut out = self.expand_w;
        out.extend(self.expand_b);
        out.extend(self.depthwise_w.into_iter().map(T::from_f64));
        out.extend(self.depthwise_b);
        out.extend(self.project_w);
        out.extend(self.project_b);
        out
    }
}

/// Adds each channel plane's sum of `image` to `sums`.
fn add_plane_sums<T: Float>(sums: &mut [T], image: &[T], pixels: usize) {
    for (s, plane) in sums.iter_mut().zip(image.chunks_exact(pixels.max(1))) {
        *s = *s + plane_sum(plane);
    }
}

/// What the backward is asked for.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    input: bool,
    params: bool,
}

/// The gradients with respect to the input and to the packed parameters, from the output
/// gradient `gy` and the saved activations.
fn backward<T: Element + Float>(
    (x, params, gy): (&[T], &[T], &[T]),
    saved: &Saved<T>,
    d: &Dims,
    wanted: Wanted,
) -> candle_core::Result<(Vec<T>, Vec<T>)> {
    let [we, _, wd, _, wp, _] = unpack(params, d)?;
    let (p1, p2) = d.pixels();
    let (c, e, o) = (d.c, d.e, d.o);
    let g = d.depthwise();
    let (parts, per_part, inner) = partition(d.batch);
    let mut gx = vec![T::zero(); if wanted.input { x.len() } else { 0 }];
    let gx_parts = split_parts(&mut gx, per_part * c * p1, parts);
    let grads = gx_parts
        .into_par_iter()
        .enumerate()
        .map(|(part, gx_part)| {
            let mut acc = ParamGrads::zeros(d);
            let (mut gz2, mut gz1) = (vec![T::zero(); e * p2], vec![T::zero(); e * p1]);
            let images = (part * per_part)..((part + 1) * per_part).min(d.batch);
            for (i, n) in images.enumerate() {
                let x_n = &x[n * c * p1..(n + 1) * c * p1];
                let gy_n = &gy[n * o * p2..(n + 1) * o * p2];
                let h2_n = &saved.depthwise[n * e * p2..(n + 1) * e * p2];
                let h1_n = if d.expand {
                    &saved.expanded[n * e * p1..(n + 1) * e * p1]
                } else {
                    x_n
                };
                if wanted.params {
                    add_plane_sums(&mut acc.project_b, gy_n, p2);
                    let h2t = MatRef::row_major(h2_n, e, p2).t();
                    matmul(
                        &mut acc.project_w,
                        MatRef::row_major(gy_n, o, p2),
                        h2t,
                        true,
                        inner,
                    )?;
                }
                let wpt = MatRef::row_major(wp, o, e).t();
                matmul(&mut gz2, wpt, MatRef::row_major(gy_n, o, p2), false, inner)?;
                mask_relu6_in_place(&mut gz2, h2_n);
                if wanted.params {
                    add_plane_sums(&mut acc.depthwise_b, &gz2, p2);
                }
                let expand_params = d.expand && wanted.params;
                let needs_gz1 = wanted.input || expand_params;
                // Both depthwise gradients in one pass over `gz2`.
                depthwise::backward_into(
                    h1_n,
                    &gz2,
                    wd,
                    &g,
                    d.expand.then_some(h1_n),
                    // SAFETY: the kernel writes only initialised values.
                    needs_gz1.then(|| unsafe { as_uninit(&mut gz1[..]) }),
                    wanted.params.then_some(&mut acc.depthwise_w[..]),
                );
                if !needs_gz1 {
                    continue;
                }
                if expand_params {
                    add_plane_sums(&mut acc.expand_b, &gz1, p1);
                    let xt = MatRef::row_major(x_n, c, p1).t();
                    matmul(
                        &mut acc.expand_w,
                        MatRef::row_major(&gz1, e, p1),
                        xt,
                        true,
                        inner,
                    )?;
                }
                if !wanted.input {
                    continue;
                }
                let gx_n = &mut gx_part[i * c * p1..(i + 1) * c * p1];
                if d.residual {
                    gx_n.copy_from_slice(gy_n);
                }
                if d.expand {
                    let wet = MatRef::row_major(we, e, c).t();
                    matmul(gx_n, wet, MatRef::row_major(&gz1, e, p1), d.residual, inner)?;
                } else {
                    for (g, &v) in gx_n.iter_mut().zip(&gz1) {
                        *g = if d.residual { *g + v } else { v };
                    }
                }
            }
            Ok(acc)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let total = grads
        .into_iter()
        .reduce(ParamGrads::add)
        .unwrap_or_else(|| ParamGrads::zeros(d));
    let gparams = if wanted.params {
        total.packed()
    } else {
        Vec::new()
    };
    Ok((gx, gparams))
}

/// The candle op: `(x, packed parameters) -> y`, keeping the activations for its backward.
struct FusedBlock {
    dims: Dims,
    save: bool,
    saved: Mutex<Option<SavedStorage>>,
}

/// [`Saved`] for either float type.
enum SavedStorage {
    F32(Saved<f32>),
    F64(Saved<f64>),
}

impl CustomOp2 for FusedBlock {
    fn name(&self) -> &'static str {
        "inverted-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let op = "inverted_residual";
        let d = &self.dims;
        let (y, saved) = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(p)) => {
                let x = slice(x, l1, op, "input")?;
                let (y, saved) =
                    forward(x, unpack(slice(p, l2, op, "parameters")?, d)?, d, self.save)?;
                (CpuStorage::F32(y), saved.map(SavedStorage::F32))
            }
            (CpuStorage::F64(x), CpuStorage::F64(p)) => {
                let x = slice(x, l1, op, "input")?;
                let (y, saved) =
                    forward(x, unpack(slice(p, l2, op, "parameters")?, d)?, d, self.save)?;
                (CpuStorage::F64(y), saved.map(SavedStorage::F64))
            }
            _ => bail!(
                "{op}: input and weights must both be f32 or both f64, got {:?} and {:?}",
                s1.dtype(),
                s2.dtype()
            ),
        };
        if let Some(saved) = saved {
            *self.saved.lock().map_err(|_| lock_error())? = Some(saved);
        }
        let g = d.depthwise();
        Ok((y, Shape::from((d.batch, d.o, g.out_h(), g.out_w()))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let wanted = Wanted {
            input: x.track_op(),
            params: params.track_op(),
        };
        let grad = grad.contiguous()?;
        let guard = self.saved.lock().map_err(|_| lock_error())?;
        let (x_storage, x_layout) = x.storage_and_layout();
        let (p_storage, p_layout) = params.storage_and_layout();
        let (g_storage, g_layout) = grad.storage_and_layout();
        use candle_core::Storage::Cpu;
        let op = "inverted_residual backward";
        let gradients = match (&*x_storage, &*p_storage, &*g_storage, guard.as_ref()) {
            (
                Cpu(CpuStorage::F32(xs)),
                Cpu(CpuStorage::F32(ps)),
                Cpu(CpuStorage::F32(gs)),
                Some(SavedStorage::F32(saved)),
            ) => self.backward_as(
                [(xs, x_layout), (ps, p_layout), (gs, g_layout)],
                saved,
                wanted,
                (x, params),
            )?,
            (
                Cpu(CpuStorage::F64(xs)),
                Cpu(CpuStorage::F64(ps)),
                Cpu(CpuStorage::F64(gs)),
                Some(SavedStorage::F64(saved)),
            ) => self.backward_as(
                [(xs, x_layout), (ps, p_layout), (gs, g_layout)],
                saved,
                wanted,
                (x, params),
            )?,
            (_, _, _, None) => {
                bail!("{op}: the forward pass kept no activations (nothing was tracked)")
            }
            _ => bail!("{op}: input, weights, gradient and kept activations differ in type"),
        };
        Ok(gradients)
    }
}

impl FusedBlock {
    /// [`backward`] on one float type's contiguous input, parameters and output gradient, the
    /// gradients asked for wrapped as tensors shaped like `x` and `params`.
    fn backward_as<T: Element + Float + candle_core::WithDType>(
        &self,
        [(xs, xl), (ps, pl), (gs, gl)]: [(&[T], &Layout); 3],
        saved: &Saved<T>,
        wanted: Wanted,
        (x, params): (&Tensor, &Tensor),
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let op = "inverted_residual backward";
        let args = (
            slice(xs, xl, op, "input")?,
            slice(ps, pl, op, "parameters")?,
            slice(gs, gl, op, "output gradient")?,
        );
        let (gx, gp) = backward(args, saved, &self.dims, wanted)?;
        Ok((
            gradient_like(wanted.input.then_some(gx), x)?,
            gradient_like(wanted.params.then_some(gp), params)?,
        ))
    }
}

fn lock_error() -> candle_core::Error {
    candle_core::Error::Msg(
        "inverted_residual: a thread panicked holding the kept activations".into(),
    )
}
