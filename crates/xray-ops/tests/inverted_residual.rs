//! The fused inverted-residual block against the same block built from candle's own ops
//! (`conv2d`, grouped `conv2d`, `index_select`, `broadcast_add`, `clamp`) and candle's autograd: forward and
//! every gradient, in f64, on random shapes, with and without expansion, stride 1 and 2, with
//! and without the residual, and with the images split unevenly over threads.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xray_ops::{inverted_residual, InvertedResidualWeights};

/// One block's shapes.
#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    c: usize,
    e: usize,
    o: usize,
    h: usize,
    w: usize,
    stride: usize,
    expand: bool,
    residual: bool,
}

fn random_case(rng: &mut ChaCha8Rng) -> Case {
    let c = rng.random_range(1..6);
    let expand = rng.random_bool(0.75);
    let e = if expand {
        c * rng.random_range(2..5)
    } else {
        c
    };
    let stride = rng.random_range(1..3);
    let residual = stride == 1 && rng.random_bool(0.6);
    let o = if residual { c } else { rng.random_range(1..7) };
    Case {
        n: rng.random_range(1..6),
        c,
        e,
        o,
        h: rng.random_range(1..10),
        w: rng.random_range(1..10),
        stride,
        expand,
        residual,
    }
}

/// The block's variables: input, then expansion, depthwise and projection weight and bias.
struct Block {
    x: Var,
    expand: Option<(Var, Var)>,
    depthwise: (Var, Var),
    project: (Var, Var),
}

fn var(rng: &mut ChaCha8Rng, shape: &[usize], scale: f64, offset: f64) -> Var {
    let len = shape.iter().product();
    let values: Vec<f64> = (0..len)
        .map(|_| offset + scale * rng.random_range(-1.0..1.0))
        .collect();
    Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap()).unwrap()
}

impl Block {
    /// Weights scaled so that activations fall on both sides of both ReLU6 kinks.
    fn random(case: &Case, rng: &mut ChaCha8Rng) -> Block {
        let Case {
            n, c, e, o, h, w, ..
        } = *case;
        Block {
            x: var(rng, &[n, c, h, w], 4.0, 1.0),
            expand: case
                .expand
                .then(|| (var(rng, &[e, c, 1, 1], 1.5, 0.0), var(rng, &[e], 2.0, 1.0))),
            depthwise: (var(rng, &[e, 1, 3, 3], 1.0, 0.1), var(rng, &[e], 2.0, 1.0)),
            project: (var(rng, &[o, e, 1, 1], 1.0, 0.0), var(rng, &[o], 1.0, 0.0)),
        }
    }

    fn weights(&self, case: &Case) -> InvertedResidualWeights<'_> {
        InvertedResidualWeights {
            expand: self
                .expand
                .as_ref()
                .map(|(w, b)| (w.as_tensor(), b.as_tensor())),
            depthwise: (self.depthwise.0.as_tensor(), self.depthwise.1.as_tensor()),
            project: (self.project.0.as_tensor(), self.project.1.as_tensor()),
            stride: case.stride,
            residual: case.residual,
        }
    }

    /// Every variable with its name.
    fn vars(&self) -> Vec<(&'static str, &Var)> {
        let mut vars = vec![("input", &self.x)];
        if let Some((w, b)) = &self.expand {
            vars.extend([("expansion weight", w), ("expansion bias", b)]);
        }
        vars.extend([
            ("depthwise weight", &self.depthwise.0),
            ("depthwise bias", &self.depthwise.1),
            ("projection weight", &self.project.0),
            ("projection bias", &self.project.1),
        ]);
        vars
    }
}

/// The block from candle's own ops.
fn reference(x: &Tensor, b: &InvertedResidualWeights<'_>) -> candle_core::Result<Tensor> {
    let bias = |t: &Tensor, bias: &Tensor| {
        let c = bias.dim(0)?;
        t.broadcast_add(&bias.reshape((1, c, 1, 1))?)
    };
    let hidden = match b.expand {
        Some((w, bi)) => bias(&x.conv2d(w, 0, 1, 1, 1)?, bi)?.clamp(0f64, 6f64)?,
        None => x.clone(),
    };
    let (wd, bd) = b.depthwise;
    let groups = wd.dim(0)?;
    // Stride as every `stride`-th output of the stride-1 convolution: candle's own strided
    // convolution has no correct backward for every input size.
    let dense = hidden.conv2d(wd, 1, 1, 1, groups)?;
    let every = |t: &Tensor, dim: usize| -> candle_core::Result<Tensor> {
        let keep: Vec<u32> = (0..t.dim(dim)? as u32).step_by(b.stride).collect();
        t.index_select(&Tensor::new(keep, t.device())?, dim)
    };
    let strided = every(&every(&dense, 2)?, 3)?;
    let hidden = bias(&strided, bd)?.clamp(0f64, 6f64)?;
    let (wp, bp) = b.project;
    let y = bias(&hidden.conv2d(wp, 0, 1, 1, 1)?, bp)?;
    if b.residual {
        y + x
    } else {
        Ok(y)
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn check(case: &Case, rng: &mut ChaCha8Rng) {
    let block = Block::random(case, rng);
    let weights = block.weights(case);
    let x = block.x.as_tensor();
    let ours = inverted_residual(x, &weights).unwrap();
    let theirs = reference(x, &weights).unwrap();
    assert_eq!(ours.dims(), theirs.dims(), "{case:?}");
    let diff = max_abs_diff(&ours, &theirs);
    assert!(diff < 1e-10, "{case:?}: forward differs by {diff}");

    let upstream = Tensor::randn(0f64, 1.0, theirs.dims(), &Device::Cpu).unwrap();
    let loss = |y: &Tensor| (y * &upstream).unwrap().sum_all().unwrap();
    let ours_grads = loss(&ours).backward().unwrap();
    let theirs_grads = loss(&theirs).backward().unwrap();
    for (name, v) in block.vars() {
        let a = ours_grads.get(v.as_tensor()).expect(name);
        let b = theirs_grads.get(v.as_tensor()).expect(name);
        let scale = 1.0 + max_abs_diff(b, &b.zeros_like().unwrap());
        let diff = max_abs_diff(a, b);
        assert!(
            diff < 1e-10 * scale,
            "{case:?}: {name} gradient differs by {diff}"
        );
    }
}

#[test]
fn matches_candle_ops_forward_and_backward_on_random_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    for _ in 0..40 {
        let case = random_case(&mut rng);
        check(&case, &mut rng);
    }
    // MobileNetV2's shapes, scaled down: an expanding stride-2 block and a residual one.
    for (c, e, o, stride, residual) in [(4, 24, 6, 2, false), (6, 36, 6, 1, true)] {
        let case = Case {
            n: 3,
            c,
            e,
            o,
            h: 14,
            w: 14,
            stride,
            expand: true,
            residual,
        };
        check(&case, &mut rng);
    }
}

#[test]
fn splits_images_over_any_number_of_threads() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            for n in [1, 2, 4, 5] {
                let case = Case {
                    n,
                    c: 3,
                    e: 9,
                    o: 3,
                    h: 5,
                    w: 6,
                    stride: 1,
                    expand: true,
                    residual: true,
                };
                check(&case, &mut rng);
            }
        });
    }
}

/// An expanding residual block of 3 channels on 4x4 maps.
fn small_residual_case(n: usize) -> Case {
    Case {
        n,
        c: 3,
        e: 6,
        o: 3,
        h: 4,
        w: 4,
        stride: 1,
        expand: true,
        residual: true,
    }
}

#[test]
fn gradients_only_for_what_is_tracked() {
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    let case = small_residual_case(2);
    let block = Block::random(&case, &mut rng);
    let weights = block.weights(&case);
    let detached = |t: &Tensor| t.detach();
    let (we, be) = weights.expand.unwrap();
    let (we, be) = (detached(we), detached(be));
    let (wd, bd) = (detached(weights.depthwise.0), detached(weights.depthwise.1));
    let (wp, bp) = (detached(weights.project.0), detached(weights.project.1));
    let frozen = InvertedResidualWeights {
        expand: Some((&we, &be)),
        depthwise: (&wd, &bd),
        project: (&wp, &bp),
        ..weights
    };
    // Frozen weights, tracked input (saliency): the input gradient only, still exact.
    let x = block.x.as_tensor();
    let grads = inverted_residual(x, &frozen)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let want = reference(x, &frozen)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let diff = max_abs_diff(grads.get(x).unwrap(), want.get(x).unwrap());
    assert!(diff < 1e-10, "input gradient differs by {diff}");
    assert!(grads.get(&we).is_none());
    // Untracked input, tracked weights (the first trainable block): no input gradient.
    let input = x.detach();
    let grads = inverted_residual(&input, &weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(grads.get(&input).is_none());
    let (w, _) = block.expand.as_ref().unwrap();
    assert!(grads.get(w.as_tensor()).is_some());
    // Nothing tracked (inference): no graph, and the f32 result agrees.
    let x32 = input.to_dtype(DType::F32).unwrap();
    let to32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let (we, be, wd, bd, wp, bp) = (
        to32(&we),
        to32(&be),
        to32(&wd),
        to32(&bd),
        to32(&wp),
        to32(&bp),
    );
    let frozen32 = InvertedResidualWeights {
        expand: Some((&we, &be)),
        depthwise: (&wd, &bd),
        project: (&wp, &bp),
        ..weights
    };
    let y32 = inverted_residual(&x32, &frozen32).unwrap();
    assert!(!y32.track_op());
    let y64 = reference(&input, &frozen).unwrap();
    let diff = max_abs_diff(&y32.to_dtype(DType::F64).unwrap(), &y64);
    assert!(diff < 1e-4, "f32 forward differs by {diff}");
}

#[test]
fn rejects_weights_that_do_not_fit_naming_them() {
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let case = small_residual_case(1);
    let block = Block::random(&case, &mut rng);
    let weights = block.weights(&case);
    let x = block.x.as_tensor();
    let wrong = Tensor::zeros((6, 1, 5, 5), DType::F64, &Device::Cpu).unwrap();
    let bad = InvertedResidualWeights {
        depthwise: (&wrong, weights.depthwise.1),
        ..weights
    };
    let err = inverted_residual(x, &bad).unwrap_err().to_string();
    assert!(err.contains("depthwise weight"), "{err}");
    let bad = InvertedResidualWeights {
        stride: 2,
        ..weights
    };
    let err = inverted_residual(x, &bad).unwrap_err().to_string();
    assert!(err.contains("residual"), "{err}");
    let short_bias = Tensor::zeros(2, DType::F64, &Device::Cpu).unwrap();
    let bad = InvertedResidualWeights {
        project: (weights.project.0, &short_bias),
        ..weights
    };
    let err = inverted_residual(x, &bad).unwrap_err().to_string();
    assert!(err.contains("projection bias"), "{err}");
}
