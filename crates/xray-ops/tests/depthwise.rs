//! The depthwise op against a naive f64 loop (forward, input and weight gradients) on random
//! shapes, strides, paddings and batch sizes, including odd sizes and 1x1 maps. With the `cuda`
//! feature, the CUDA kernels face the same reference (the build then expects a GPU).

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xray_ops::depthwise_conv2d;

struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

impl Case {
    fn out(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.pad - self.k) / self.stride + 1,
            (self.w + 2 * self.pad - self.k) / self.stride + 1,
        )
    }
}

/// Returns (y, dL/dx, dL/dw) for L = sum(y * g), by direct summation in f64.
fn naive(case: &Case, x: &[f32], w: &[f32], g: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let Case {
        n,
        c,
        h,
        w: wd,
        k,
        stride,
        pad,
    } = *case;
    let (oh, ow) = case.out();
    let mut y = vec![0f64; n * c * oh * ow];
    let mut gx = vec![0f64; n * c * h * wd];
    let mut gw = vec![0f64; c * k * k];
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let o = ((b * c + ch) * oh + oy) * ow + ox;
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            let i = ((b * c + ch) * h + iy as usize) * wd + ix as usize;
                            let wi = (ch * k + ky) * k + kx;
                            y[o] += x[i] as f64 * w[wi] as f64;
                            gx[i] += g[o] as f64 * w[wi] as f64;
                            gw[wi] += g[o] as f64 * x[i] as f64;
                        }
                    }
                }
            }
        }
    }
    (y, gx, gw)
}

fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - w).abs() / scale;
        assert!(
            err <= 1e-4,
            "{what}[{i}]: got {g}, want {w} (relative error {err:.2e})"
        );
    }
}

fn random_vec(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn check(case: &Case, rng: &mut ChaCha8Rng) -> candle_core::Result<()> {
    check_on(&Device::Cpu, case, rng)
}

fn check_on(dev: &Device, case: &Case, rng: &mut ChaCha8Rng) -> candle_core::Result<()> {
    let (oh, ow) = case.out();
    let xs = random_vec(rng, case.n * case.c * case.h * case.w);
    let ws = random_vec(rng, case.c * case.k * case.k);
    let gs = random_vec(rng, case.n * case.c * oh * ow);
    let x = Var::from_vec(xs.clone(), (case.n, case.c, case.h, case.w), dev)?;
    let w = Var::from_vec(ws.clone(), (case.c, 1, case.k, case.k), dev)?;
    let g = Tensor::from_vec(gs.clone(), (case.n, case.c, oh, ow), dev)?;
    let y = depthwise_conv2d(&x, &w, case.stride, case.pad)?;
    let grads = (&y * &g)?.sum_all()?.backward()?;
    let (y_ref, gx_ref, gw_ref) = naive(case, &xs, &ws, &gs);
    let label = format!(
        "{dev:?} n{} c{} {}x{} k{} s{} p{}",
        case.n, case.c, case.h, case.w, case.k, case.stride, case.pad
    );
    assert_close(
        &format!("{label} forward"),
        &y.flatten_all()?.to_vec1()?,
        &y_ref,
    );
    let gx = grads.get(&x).expect("input gradient");
    let gw = grads.get(&w).expect("weight gradient");
    assert_close(
        &format!("{label} input grad"),
        &gx.flatten_all()?.to_vec1()?,
        &gx_ref,
    );
    assert_close(
        &format!("{label} weight grad"),
        &gw.flatten_all()?.to_vec1()?,
        &gw_ref,
    );
    Ok(())
}

fn random_case(rng: &mut ChaCha8Rng) -> Case {
    let k: usize = [1, 3, 5][rng.random_range(0..3)];
    let stride = rng.random_range(1..=2);
    let pad = rng.random_range(0..=k / 2 + 1).min(k - 1);
    let h = rng.random_range(k.saturating_sub(2 * pad).max(1)..12);
    let w = rng.random_range(k.saturating_sub(2 * pad).max(1)..12);
    Case {
        n: rng.random_range(1..4),
        c: rng.random_range(1..6),
        h,
        w,
        k,
        stride,
        pad,
    }
}

#[test]
fn matches_naive_reference_on_random_shapes() -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..40 {
        let case = random_case(&mut rng);
        check(&case, &mut rng)?;
    }
    Ok(())
}

/// The CUDA kernels on random shapes, on kernel sizes without a kernel of their own (2, 4 and
/// 7 take the per-tap weight gradient) and on MobileNetV2's largest layers at batch 4 (whose
/// weight gradients sum 50,000 products per tap).
#[cfg(feature = "cuda")]
#[test]
fn cuda_kernels_match_naive_reference() -> candle_core::Result<()> {
    let dev = Device::new_cuda(0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for _ in 0..60 {
        let case = random_case(&mut rng);
        check_on(&dev, &case, &mut rng)?;
    }
    for (k, stride, pad) in [(2, 1, 0), (4, 2, 1), (7, 1, 3), (7, 2, 2)] {
        let case = Case {
            n: 3,
            c: 5,
            h: 11,
            w: 9,
            k,
            stride,
            pad,
        };
        check_on(&dev, &case, &mut rng)?;
    }
    for (c, h, stride) in [(32, 112, 1), (96, 112, 2), (144, 56, 1), (960, 7, 1)] {
        let case = Case {
            n: 4,
            c,
            h,
            w: h,
            k: 3,
            stride,
            pad: 1,
        };
        check_on(&dev, &case, &mut rng)?;
    }
    Ok(())
}

#[test]
fn handles_one_by_one_maps_and_mobilenet_shapes() -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for case in [
        Case {
            n: 2,
            c: 4,
            h: 1,
            w: 1,
            k: 3,
            stride: 1,
            pad: 1,
        },
        Case {
            n: 1,
            c: 3,
            h: 1,
            w: 1,
            k: 3,
            stride: 2,
            pad: 1,
        },
        Case {
            n: 2,
            c: 8,
            h: 14,
            w: 14,
            k: 3,
            stride: 1,
            pad: 1,
        },
        Case {
            n: 2,
            c: 8,
            h: 15,
            w: 13,
            k: 3,
            stride: 2,
            pad: 1,
        },
        // Rows long enough for the 32- and 8-wide vector paths and a scalar tail.
        Case {
            n: 2,
            c: 3,
            h: 21,
            w: 45,
            k: 3,
            stride: 1,
            pad: 1,
        },
        Case {
            n: 1,
            c: 3,
            h: 19,
            w: 87,
            k: 3,
            stride: 2,
            pad: 1,
        },
        Case {
            n: 1,
            c: 2,
            h: 9,
            w: 50,
            k: 5,
            stride: 2,
            pad: 2,
        },
    ] {
        check(&case, &mut rng)?;
    }
    Ok(())
}

/// The backward computes only the gradients candle tracks: with one argument a plain tensor
/// (an input image, a frozen weight), the other's gradient still matches the reference, in f32
/// and in f64, and the untracked one gets none.
#[test]
fn one_tracked_argument_gets_its_gradient_alone() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for (i, dtype) in (0..12).zip([DType::F32, DType::F64].into_iter().cycle()) {
        let case = random_case(&mut rng);
        let (oh, ow) = case.out();
        let xs = random_vec(&mut rng, case.n * case.c * case.h * case.w);
        let ws = random_vec(&mut rng, case.c * case.k * case.k);
        let gs = random_vec(&mut rng, case.n * case.c * oh * ow);
        let (_, gx_ref, gw_ref) = naive(&case, &xs, &ws, &gs);
        let x = Tensor::from_vec(xs, (case.n, case.c, case.h, case.w), &dev)?.to_dtype(dtype)?;
        let w = Tensor::from_vec(ws, (case.c, 1, case.k, case.k), &dev)?.to_dtype(dtype)?;
        let g = Tensor::from_vec(gs, (case.n, case.c, oh, ow), &dev)?.to_dtype(dtype)?;
        let loss = |x: &Tensor, w: &Tensor| {
            (depthwise_conv2d(x, w, case.stride, case.pad)? * &g)?.sum_all()
        };
        let as_f32 = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        let label = format!("case {i} {dtype:?} k{} s{}", case.k, case.stride);

        let x_var = Var::from_tensor(&x)?;
        let grads = loss(&x_var, &w)?.backward()?;
        let gx = grads.get(&x_var).expect("input gradient");
        assert_close(&format!("{label} input grad alone"), &as_f32(gx)?, &gx_ref);
        assert!(
            grads.get(&w).is_none(),
            "{label}: untracked weight got a gradient"
        );

        let w_var = Var::from_tensor(&w)?;
        let grads = loss(&x, &w_var)?.backward()?;
        let gw = grads.get(&w_var).expect("weight gradient");
        assert_close(&format!("{label} weight grad alone"), &as_f32(gw)?, &gw_ref);
        assert!(
            grads.get(&x).is_none(),
            "{label}: untracked input got a gradient"
        );
    }
    Ok(())
}

#[test]
fn agrees_with_candle_grouped_convolution() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 6, 9, 9), &dev)?;
    let w = Tensor::randn(0f32, 1.0, (6, 1, 3, 3), &dev)?;
    for stride in [1, 2] {
        let ours = depthwise_conv2d(&x, &w, stride, 1)?;
        let candle = x.conv2d(&w, 1, stride, 1, 6)?;
        let diff = (ours - candle)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "stride {stride}: max difference {diff}");
    }
    Ok(())
}

#[test]
fn rejects_a_weight_that_does_not_fit() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 4, 8, 8), candle_core::DType::F32, &dev)?;
    let w = Tensor::zeros((3, 1, 3, 3), candle_core::DType::F32, &dev)?;
    let err = depthwise_conv2d(&x, &w, 1, 1).unwrap_err().to_string();
    assert!(err.contains("does not fit"), "{err}");
    Ok(())
}
