//! The fused CPU ops against independent references: candle's own ops (`conv2d`, the broadcast
//! matrix product, candle-nn's BatchNorm plus ReLU, the separate bias op) and a naive loop
//! (max-pooling), forward and backward, on random shapes including odd sizes.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{BatchNormConfig, ModuleT, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xray_ops::{max_pool_2x2, BatchNormRelu};

fn randn(rng: &mut ChaCha8Rng, shape: &[usize], dtype: DType) -> candle_core::Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f64> {
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

fn max_abs(a: &Tensor) -> candle_core::Result<f64> {
    a.abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, rel: f64) -> candle_core::Result<()> {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes");
    let diff = max_abs_diff(got, want)?;
    let scale = max_abs(want)?.max(1.0);
    assert!(
        diff <= rel * scale,
        "{what}: max difference {diff} (scale {scale})"
    );
    Ok(())
}

/// Our layer and candle-nn's BatchNorm (+ ReLU) with the same random affine parameters.
fn norm_pair(
    c: usize,
    dtype: DType,
    rng: &mut ChaCha8Rng,
) -> candle_core::Result<(BatchNormRelu, candle_nn::BatchNorm, VarMap, VarMap)> {
    let (mut ours_map, mut ref_map) = (VarMap::new(), VarMap::new());
    let ours = BatchNormRelu::new(c, VarBuilder::from_varmap(&ours_map, dtype, &Device::Cpu))?;
    let reference = candle_nn::batch_norm(
        c,
        BatchNormConfig::default(),
        VarBuilder::from_varmap(&ref_map, dtype, &Device::Cpu),
    )?;
    for name in ["weight", "bias", "running_mean"] {
        let v = randn(rng, &[c], dtype)?;
        ours_map.set_one(name, &v)?;
        ref_map.set_one(name, &v)?;
    }
    let var = (randn(rng, &[c], dtype)?.abs()? + 0.5)?;
    ours_map.set_one("running_var", &var)?;
    ref_map.set_one("running_var", &var)?;
    Ok((ours, reference, ours_map, ref_map))
}

/// Back-propagates `sum(y * r)` and `sum(want * r)`, then compares the input gradients, the
/// `weight` and `bias` gradients and the running statistics of our layer (first map) and the
/// reference (second).
fn assert_same_training_step(
    what: &str,
    (x, y, want): (&Var, &Tensor, &Tensor),
    r: &Tensor,
    (ours_map, ref_map): (&VarMap, &VarMap),
    tol: f64,
) -> candle_core::Result<()> {
    let g = (y * r)?.sum_all()?.backward()?;
    let gw = (want * r)?.sum_all()?.backward()?;
    let input = format!("input gradient, {what}");
    assert_close(&input, g.get(x).expect("x"), gw.get(x).expect("x"), tol)?;
    let (ours_vars, ref_vars) = (
        ours_map.data().lock().unwrap(),
        ref_map.data().lock().unwrap(),
    );
    for name in ["weight", "bias"] {
        let (a, b) = (ours_vars[name].as_tensor(), ref_vars[name].as_tensor());
        let label = format!("{name} gradient, {what}");
        assert_close(
            &label,
            g.get(a).expect("grad"),
            gw.get(b).expect("grad"),
            tol,
        )?;
    }
    for name in ["running_mean", "running_var"] {
        let label = format!("{name} after the step, {what}");
        let (a, b) = (ours_vars[name].as_tensor(), ref_vars[name].as_tensor());
        assert_close(&label, a, b, tol)?;
    }
    Ok(())
}

/// Cases alternate between f64 (even) and f32 (odd), so every property is checked in both.
fn dtype_of_case(case: usize) -> DType {
    if case.is_multiple_of(2) {
        DType::F64
    } else {
        DType::F32
    }
}

#[test]
fn batch_norm_relu_matches_candle_nn_in_both_modes() -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for case in 0..12 {
        let dtype = dtype_of_case(case);
        let tol = if dtype == DType::F64 { 1e-9 } else { 2e-4 };
        let shape = [
            rng.random_range(1..4),
            rng.random_range(1..5),
            rng.random_range(1..7),
            rng.random_range(1..9),
        ];
        if shape[0] * shape[2] * shape[3] < 2 {
            continue; // one value per channel has no variance
        }
        for train in [true, false] {
            let (ours, reference, ours_map, ref_map) = norm_pair(shape[1], dtype, &mut rng)?;
            let x = Var::from_tensor(&randn(&mut rng, &shape, dtype)?.affine(3.0, 1.0)?)?;
            let y = ours.forward_t(&x, train)?;
            let want = reference.forward_t(&x, train)?.relu()?;
            assert_close("forward", &y, &want, tol)?;
            let r = randn(&mut rng, &shape, dtype)?;
            let what = format!("train {train}");
            let pair = (&ours_map, &ref_map);
            assert_same_training_step(&what, (&x, &y, &want), &r, pair, tol)?;
        }
    }
    Ok(())
}

/// Naive 2x2 pooling and its gradient (to the first maximum of each window, row-major).
fn naive_pool(x: &[f64], n_planes: usize, h: usize, w: usize, g: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (oh, ow) = (h / 2, w / 2);
    let mut y = vec![0.0; n_planes * oh * ow];
    let mut gx = vec![0.0; x.len()];
    for p in 0..n_planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = p * h * w + 2 * oy * w + 2 * ox;
                for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                    let i = p * h * w + (2 * oy + dy) * w + 2 * ox + dx;
                    if x[i] > x[best] {
                        best = i;
                    }
                }
                let o = (p * oh + oy) * ow + ox;
                y[o] = x[best];
                gx[best] += g[o];
            }
        }
    }
    (y, gx)
}

/// The fused BatchNorm-ReLU-pooling against candle-nn's BatchNorm, ReLU and `max_pool_2x2` (itself
/// checked against a naive loop below): values, the three gradients and the running statistics,
/// with odd sizes (pixels no window covers still get the batch statistics' gradient).
#[test]
fn batch_norm_relu_pool_matches_the_ops_it_replaces() -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for case in 0..16 {
        let dtype = dtype_of_case(case);
        let tol = if dtype == DType::F64 { 1e-9 } else { 2e-4 };
        let shape = [
            rng.random_range(1..4),
            rng.random_range(1..5),
            rng.random_range(2..9),
            rng.random_range(2..9),
        ];
        for train in [true, false] {
            let (ours, reference, ours_map, ref_map) = norm_pair(shape[1], dtype, &mut rng)?;
            let x = Var::from_tensor(&randn(&mut rng, &shape, dtype)?.affine(3.0, 1.0)?)?;
            let y = ours.forward_pooled_t(&x, train)?;
            let want = max_pool_2x2(&reference.forward_t(&x, train)?.relu()?)?;
            let what = format!("forward, shape {shape:?}, train {train}");
            assert_close(&what, &y, &want, tol)?;
            let r = randn(&mut rng, y.dims(), dtype)?;
            let what = format!("shape {shape:?}, train {train}");
            let pair = (&ours_map, &ref_map);
            assert_same_training_step(&what, (&x, &y, &want), &r, pair, tol)?;
        }
    }
    Ok(())
}

/// Fused and composed give the same bits forward (the same arithmetic), so a model that switches
/// to the fused op predicts exactly as before.
#[test]
fn batch_norm_relu_pool_forward_is_bit_identical_to_the_composition() -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    let (ours, _, _, _) = norm_pair(6, DType::F32, &mut rng)?;
    let x = randn(&mut rng, &[3, 6, 13, 10], DType::F32)?;
    let fused = ours.forward_pooled_t(&x, false)?;
    let composed = max_pool_2x2(&ours.forward_t(&x, false)?)?;
    assert_eq!(
        fused.flatten_all()?.to_vec1::<f32>()?,
        composed.flatten_all()?.to_vec1::<f32>()?
    );
    Ok(())
}

#[test]
fn max_pool_matches_a_naive_loop_including_ties() -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for case in 0..20 {
        let shape = [
            rng.random_range(1..3),
            rng.random_range(1..4),
            rng.random_range(2..10),
            rng.random_range(2..10),
        ];
        // Half the cases are ReLU-like, with many tied zeros.
        let mut x = randn(&mut rng, &shape, DType::F64)?;
        if case % 2 == 1 {
            x = x.relu()?;
        }
        let xv = Var::from_tensor(&x)?;
        let y = max_pool_2x2(&xv)?;
        let g = randn(&mut rng, y.dims(), DType::F64)?;
        let grads = (&y * &g)?.sum_all()?.backward()?;
        let planes = shape[0] * shape[1];
        let (want_y, want_gx) = naive_pool(
            &x.flatten_all()?.to_vec1()?,
            planes,
            shape[2],
            shape[3],
            &g.flatten_all()?.to_vec1()?,
        );
        assert_eq!(
            y.flatten_all()?.to_vec1::<f64>()?,
            want_y,
            "forward, shape {shape:?}"
        );
        let got_gx = grads
            .get(&xv)
            .expect("grad")
            .flatten_all()?
            .to_vec1::<f64>()?;
        assert_eq!(got_gx, want_gx, "gradient, shape {shape:?}");
    }
    Ok(())
}

#[test]
fn pointwise_conv_matches_broadcast_matmul_with_gradients() -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for case in 0..16 {
        let dtype = dtype_of_case(case);
        let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
        // Batch 1 splits the product itself; larger batches run images in parallel.
        let (n, c, o) = (
            [1, 2, 5][case % 3],
            rng.random_range(1..20),
            rng.random_range(1..20),
        );
        let (h, w) = (rng.random_range(1..9), rng.random_range(1..9));
        let x = Var::from_tensor(&randn(&mut rng, &[n, c, h, w], dtype)?)?;
        let wt = Var::from_tensor(&randn(&mut rng, &[o, c, 1, 1], dtype)?)?;
        let ours = xray_ops::pointwise_conv2d(&x, &wt)?;
        let want = wt
            .reshape((1, o, c))?
            .broadcast_as((n, o, c))?
            .matmul(&x.reshape((n, c, h * w))?)?
            .reshape((n, o, h, w))?;
        assert_close("pointwise forward", &ours, &want, tol)?;
        let r = randn(&mut rng, &[n, o, h, w], dtype)?;
        let g = (&ours * &r)?.sum_all()?.backward()?;
        let gw = (&want * &r)?.sum_all()?.backward()?;
        for (name, var) in [("input", &x), ("weight", &wt)] {
            let what = format!("pointwise {name} gradient");
            assert_close(
                &what,
                g.get(var).expect("grad"),
                gw.get(var).expect("grad"),
                tol,
            )?;
        }
    }
    Ok(())
}

#[test]
fn dense_conv_matches_candle_conv2d_with_gradients() -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    for case in 0..14 {
        let dtype = dtype_of_case(case);
        let tol = if dtype == DType::F64 { 1e-10 } else { 2e-5 };
        let k: usize = [1, 3, 5][case % 3];
        let p = rng.random_range(0..k);
        let (n, c, o) = (
            [1, 3][case % 2],
            rng.random_range(1..5),
            rng.random_range(1..6),
        );
        let (h, w) = (
            rng.random_range(k.saturating_sub(2 * p).max(1)..11),
            rng.random_range(k.saturating_sub(2 * p).max(1)..11),
        );
        let x = Var::from_tensor(&randn(&mut rng, &[n, c, h, w], dtype)?)?;
        let wt = Var::from_tensor(&randn(&mut rng, &[o, c, k, k], dtype)?)?;
        let stride = 1 + (case / 3) % 2;
        let ours = xray_ops::dense_conv2d(&x, &wt, stride, p)?;
        // The stride-s convolution is the stride-1 one sampled every s pixels (candle's own
        // stride-2 backward fails on sizes that do not divide evenly).
        let dense = x.conv2d(&wt, p, 1, 1, 1)?;
        let every = |len: usize| {
            let idx: Vec<u32> = (0..len).step_by(stride).map(|i| i as u32).collect();
            Tensor::new(idx, &Device::Cpu)
        };
        let want = dense
            .index_select(&every(dense.dim(2)?)?, 2)?
            .index_select(&every(dense.dim(3)?)?, 3)?;
        assert_close("conv forward", &ours, &want, tol)?;
        let r = randn(&mut rng, ours.dims(), dtype)?;
        let g = (&ours * &r)?.sum_all()?.backward()?;
        let gw = (&want * &r)?.sum_all()?.backward()?;
        for (name, var) in [("input", &x), ("weight", &wt)] {
            let what = format!("conv {name} gradient (k {k}, stride {stride}, padding {p})");
            assert_close(
                &what,
                g.get(var).expect("grad"),
                gw.get(var).expect("grad"),
                tol,
            )?;
        }
    }
    Ok(())
}

/// Gradients of `sum(f(x, w, b) * r)` with respect to `x`, `w` and `b`.
fn three_gradients(
    f: impl Fn(&Tensor, &Tensor, &Tensor) -> candle_core::Result<Tensor>,
    (x, w, b): (&Var, &Var, &Var),
    r: &Tensor,
) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
    let y = f(x, w, b)?;
    let grads = (&y * r)?.sum_all()?.backward()?;
    let mut out = Vec::new();
    for v in [x, w, b] {
        out.push(grads.get(v).expect("gradient of a used variable").clone());
    }
    Ok((y, out))
}

#[test]
fn convolutions_with_bias_and_relu6_match_the_separate_ops() -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for case in 0..12 {
        let (dtype, tol) = if case % 2 == 0 {
            (DType::F64, 1e-12)
        } else {
            (DType::F32, 1e-5)
        };
        let relu6 = case % 4 < 2;
        let (n, c, h, w) = (
            1 + case % 3,
            rng.random_range(1..6),
            rng.random_range(1..9),
            rng.random_range(1..9),
        );
        let x = Var::from_tensor(&randn(&mut rng, &[n, c, h, w], dtype)?.affine(3.0, 0.0)?)?;
        let b = Var::from_tensor(&randn(&mut rng, &[c], dtype)?)?;
        // Depthwise, stride 1 or 2.
        let stride = 1 + case % 2;
        let wd = Var::from_tensor(&randn(&mut rng, &[c, 1, 3, 3], dtype)?)?;
        let y = xray_ops::depthwise_conv2d(&x, &wd, stride, 1)?;
        let r = randn(&mut rng, y.dims(), dtype)?;
        let fused = |x: &Tensor, w: &Tensor, b: &Tensor| {
            xray_ops::depthwise_conv2d_bias_act(x, w, b, (stride, 1), relu6)
        };
        let separate = |x: &Tensor, w: &Tensor, b: &Tensor| {
            xray_ops::bias_relu6(&xray_ops::depthwise_conv2d(x, w, stride, 1)?, b, relu6)
        };
        let (y1, g1) = three_gradients(fused, (&x, &wd, &b), &r)?;
        let (y2, g2) = three_gradients(separate, (&x, &wd, &b), &r)?;
        assert_close("depthwise + bias + relu6", &y1, &y2, tol)?;
        for (name, (a, e)) in ["input", "weight", "bias"].iter().zip(g1.iter().zip(&g2)) {
            assert_close(&format!("depthwise fused {name} gradient"), a, e, tol)?;
        }
        // 1x1 to `o` channels.
        let o = rng.random_range(1..6);
        let wp = Var::from_tensor(&randn(&mut rng, &[o, c, 1, 1], dtype)?)?;
        let bp = Var::from_tensor(&randn(&mut rng, &[o], dtype)?)?;
        let r = randn(&mut rng, &[n, o, h, w], dtype)?;
        let fused = |x: &Tensor, w: &Tensor, b: &Tensor| {
            xray_ops::pointwise_conv2d_bias_act(x, w, b, relu6)
        };
        let separate = |x: &Tensor, w: &Tensor, b: &Tensor| {
            xray_ops::bias_relu6(&xray_ops::pointwise_conv2d(x, w)?, b, relu6)
        };
        let (y1, g1) = three_gradients(fused, (&x, &wp, &bp), &r)?;
        let (y2, g2) = three_gradients(separate, (&x, &wp, &bp), &r)?;
        assert_close("1x1 + bias + relu6", &y1, &y2, tol)?;
        for (name, (a, e)) in ["input", "weight", "bias"].iter().zip(g1.iter().zip(&g2)) {
            assert_close(&format!("1x1 fused {name} gradient"), a, e, tol)?;
        }
    }
    Ok(())
}

/// A convolution under test, input and weight to output.
type Convolution = Box<dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>>;

/// An input no variable feeds (the network's image) gets no gradient, and the weight's
/// gradient is the same as when the input is tracked.
#[test]
fn untracked_inputs_get_no_gradient() -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    let x = randn(&mut rng, &[2, 3, 9, 9], DType::F64)?;
    let convs: [(&str, Convolution, [usize; 4]); 3] = [
        (
            "dense",
            Box::new(|x, w| xray_ops::dense_conv2d(x, w, 2, 1)),
            [4, 3, 3, 3],
        ),
        ("1x1", Box::new(xray_ops::pointwise_conv2d), [4, 3, 1, 1]),
        (
            "depthwise",
            Box::new(|x, w| xray_ops::depthwise_conv2d(x, w, 1, 1)),
            [3, 1, 3, 3],
        ),
    ];
    for (name, conv, w_shape) in convs {
        let w = Var::from_tensor(&randn(&mut rng, &w_shape, DType::F64)?)?;
        let plain = conv(&x, &w)?.sqr()?.sum_all()?.backward()?;
        assert!(
            plain.get(&x).is_none(),
            "{name}: an untracked input got a gradient"
        );
        let xv = Var::from_tensor(&x)?;
        let tracked = conv(&xv, &w)?.sqr()?.sum_all()?.backward()?;
        assert!(
            tracked.get(&xv).is_some(),
            "{name}: a tracked input got no gradient"
        );
        let (a, b) = (
            plain.get(&w).expect("weight"),
            tracked.get(&w).expect("weight"),
        );
        assert_close(&format!("{name} weight gradient"), a, b, 1e-12)?;
    }
    Ok(())
}
