//! Each saliency method's gradient path against finite differences or an exact closed form,
//! occlusion and perturbation curves against naive loops, and the thoracic region's share.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xray_eval::*;

const C: usize = 2;
const H: usize = 6;
const W: usize = 5;

fn random_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn tensor(values: &[f64], shape: (usize, usize, usize, usize)) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).expect("tensor")
}

/// A smooth non-linear "model" per image: `sum a * tanh(b * x) + (sum v * x)^2 / 4`.
struct Smooth {
    a: Tensor,
    b: Tensor,
    v: Tensor,
}

impl Smooth {
    fn new(seed: u64) -> Smooth {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = C * H * W;
        Smooth {
            a: tensor(&random_vec(&mut rng, n), (1, C, H, W)),
            b: tensor(&random_vec(&mut rng, n), (1, C, H, W)),
            v: tensor(&random_vec(&mut rng, n), (1, C, H, W)),
        }
    }
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let first = x.broadcast_mul(&self.b)?.tanh()?.broadcast_mul(&self.a)?;
        let second = x.broadcast_mul(&self.v)?.sum((1, 2, 3))?.sqr()? * 0.25;
        first.sum((1, 2, 3))? + second?
    }
    fn value(&self, x: &[f64]) -> f64 {
        self.logits(&tensor(x, (1, C, H, W)))
            .and_then(|t| t.to_vec1::<f64>())
            .expect("logit")[0]
    }
}

fn finite_difference(f: impl Fn(&[f64]) -> f64, x: &[f64], i: usize) -> f64 {
    let eps = 1e-6;
    let (mut up, mut down) = (x.to_vec(), x.to_vec());
    up[i] += eps;
    down[i] -= eps;
    (f(&up) - f(&down)) / (2.0 * eps)
}

#[test]
fn vanilla_gradient_matches_finite_differences() {
    let model = Smooth::new(1);
    let x = random_vec(&mut ChaCha8Rng::seed_from_u64(2), C * H * W);
    let map = vanilla_gradient(|t| model.logits(t), &tensor(&x, (1, C, H, W))).expect("map");
    for p in 0..H * W {
        let expected = (0..C)
            .map(|c| finite_difference(|v| model.value(v), &x, c * H * W + p).abs())
            .fold(0.0, f64::max);
        assert!(
            (f64::from(map.values[p]) - expected).abs() < 1e-5,
            "pixel {p}"
        );
    }
}

#[test]
fn smooth_grad_without_noise_is_the_vanilla_gradient_for_every_batch_member() {
    let model = Smooth::new(3);
    let x = tensor(
        &random_vec(&mut ChaCha8Rng::seed_from_u64(4), C * H * W),
        (1, C, H, W),
    );
    let vanilla = vanilla_gradient(|t| model.logits(t), &x).expect("vanilla");
    let config = SmoothGradConfig {
        samples: 5,
        noise_fraction: 0.0,
        seed: 0,
        batch: 3,
    };
    let smooth = smooth_grad(|t| model.logits(t), &x, &config).expect("smooth");
    for (a, b) in smooth.values.iter().zip(&vanilla.values) {
        assert!((a - b).abs() < 1e-6);
    }
    // With noise the map changes but stays finite and the same for the same seed.
    let noisy = SmoothGradConfig {
        noise_fraction: 0.2,
        ..config
    };
    let once = smooth_grad(|t| model.logits(t), &x, &noisy).expect("smooth");
    let again = smooth_grad(|t| model.logits(t), &x, &noisy).expect("smooth");
    assert_eq!(once, again);
    assert_ne!(once.values, smooth.values);
}

#[test]
fn integrated_gradients_are_exact_for_a_quadratic_and_complete_for_a_smooth_model() {
    // For f = sum q x^2 the gradient is linear along the path, so the midpoint rule is exact:
    // attribution = q (x^2 - x0^2), summed over channels.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let q = tensor(&random_vec(&mut rng, C * H * W), (1, C, H, W));
    let x = random_vec(&mut rng, C * H * W);
    let x0 = random_vec(&mut rng, C * H * W);
    let ig = integrated_gradients(
        |t| t.sqr()?.broadcast_mul(&q)?.sum((1, 2, 3)),
        &tensor(&x, (1, C, H, W)),
        &tensor(&x0, (1, C, H, W)),
        3,
        2,
        ExplainedClass::Pneumonia,
    )
    .expect("ig");
    let qv = q.flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("q");
    for p in 0..H * W {
        let expected: f64 = (0..C)
            .map(|c| {
                let i = c * H * W + p;
                qv[i] * (x[i] * x[i] - x0[i] * x0[i])
            })
            .sum();
        assert!((f64::from(ig.attributions[p]) - expected).abs() < 1e-5);
    }
    assert!(ig.completeness_error() < 1e-5);

    let model = Smooth::new(6);
    let x = tensor(&random_vec(&mut rng, C * H * W), (1, C, H, W));
    let baseline = x.zeros_like().expect("zeros");
    for class in [ExplainedClass::Pneumonia, ExplainedClass::Normal] {
        let ig =
            integrated_gradients(|t| model.logits(t), &x, &baseline, 64, 16, class).expect("ig");
        assert!(
            ig.completeness_error() < 0.02,
            "{}",
            ig.completeness_error()
        );
    }
}

#[test]
fn grad_cam_weights_are_the_head_gradient_by_finite_differences() {
    // Activation = the input itself (K = C channels); head = sum w * tanh(A) + bias.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let w = random_vec(&mut rng, C * H * W);
    let a = random_vec(&mut rng, C * H * W);
    let wt = tensor(&w, (1, C, H, W));
    let head = |t: &Tensor| t.tanh()?.broadcast_mul(&wt)?.sum((1, 2, 3));
    let head_value = |v: &[f64]| -> f64 {
        head(&tensor(v, (1, C, H, W)))
            .and_then(|t| t.to_vec1::<f64>())
            .expect("head")[0]
    };
    for class in [ExplainedClass::Pneumonia, ExplainedClass::Normal] {
        let map = grad_cam(|t| Ok(t.clone()), head, &tensor(&a, (1, C, H, W)), class).expect("cam");
        let alphas: Vec<f64> = (0..C)
            .map(|k| {
                (0..H * W)
                    .map(|p| class.sign() * finite_difference(head_value, &a, k * H * W + p))
                    .sum::<f64>()
                    / (H * W) as f64
            })
            .collect();
        for p in 0..H * W {
            let cam: f64 = (0..C).map(|k| alphas[k] * a[k * H * W + p]).sum();
            assert!(
                (f64::from(map.values[p]) - cam.max(0.0)).abs() < 1e-5,
                "{class:?} pixel {p}"
            );
        }
    }
}

#[test]
fn occlusion_matches_a_naive_loop_on_a_linear_model() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let (h, w) = (9, 8);
    let weights = random_vec(&mut rng, h * w);
    let x = random_vec(&mut rng, h * w);
    let fill = vec![0.25; h * w];
    let wt = tensor(&weights, (1, 1, h, w));
    let config = OcclusionConfig {
        patch: 3,
        stride: 2,
        batch: 5,
    };
    let map = occlusion(
        |t| t.broadcast_mul(&wt)?.sum((1, 2, 3)),
        &tensor(&x, (1, 1, h, w)),
        &tensor(&fill, (1, 1, h, w)),
        &config,
        ExplainedClass::Pneumonia,
    )
    .expect("occlusion");
    // Patch starts 0, 2, 4, 6 and the far edge (6 for 9 rows is covered; 5 for 8 columns).
    let rows = [0usize, 2, 4, 6];
    let cols = [0usize, 2, 4, 5];
    let mut total = vec![0.0; h * w];
    let mut count = vec![0.0; h * w];
    for &y0 in &rows {
        for &x0 in &cols {
            let drop: f64 = (y0..y0 + 3)
                .flat_map(|y| (x0..x0 + 3).map(move |x| y * w + x))
                .map(|i| weights[i] * (x[i] - fill[i]))
                .sum();
            for y in y0..y0 + 3 {
                for xx in x0..x0 + 3 {
                    total[y * w + xx] += drop;
                    count[y * w + xx] += 1.0;
                }
            }
        }
    }
    for i in 0..h * w {
        let expected = (total[i] / count[i]).max(0.0);
        assert!(
            (f64::from(map.values[i]) - expected).abs() < 1e-5,
            "pixel {i}"
        );
    }
}

#[test]
fn deletion_by_true_contributions_beats_random_and_insertion_mirrors_it() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (h, w) = (10, 10);
    // Positive contributions of very different sizes: a linear logit with a few strong pixels.
    let weights: Vec<f64> = (0..h * w)
        .map(|i| if i % 13 == 0 { 3.0 } else { 0.05 })
        .collect();
    let x: Vec<f64> = (0..h * w).map(|_| rng.random_range(0.5..1.0)).collect();
    let wt = tensor(&weights, (1, 1, h, w));
    let logit = |t: &Tensor| t.broadcast_mul(&wt)?.sum((1, 2, 3))? - 3.0;
    let input = tensor(&x, (1, 1, h, w));
    let fill = input.zeros_like().expect("zeros");
    let contributions: Vec<f32> = weights
        .iter()
        .zip(&x)
        .map(|(a, b)| (a * b) as f32)
        .collect();
    let map = SaliencyMap::from_values(w as u32, h as u32, contributions, 0.0);
    let order = ranking(&map);
    let random = random_ranking(h * w, 1);
    let class = ExplainedClass::Pneumonia;
    let del = deletion_curve(logit, &input, &fill, &order, 10, 4, class).expect("deletion");
    let del_random = deletion_curve(logit, &input, &fill, &random, 10, 4, class).expect("deletion");
    let ins = insertion_curve(logit, &input, &fill, &order, 10, 4, class).expect("insertion");
    let ins_random =
        insertion_curve(logit, &input, &fill, &random, 10, 4, class).expect("insertion");
    assert!(
        del.auc < del_random.auc,
        "{} vs {}",
        del.auc,
        del_random.auc
    );
    assert!(
        ins.auc > ins_random.auc,
        "{} vs {}",
        ins.auc,
        ins_random.auc
    );
    // Naive check of one point: after deleting the top 10% the logit lost their contributions.
    let removed: f64 = order[..10].iter().map(|&i| weights[i] * x[i]).sum();
    let total: f64 = weights.iter().zip(&x).map(|(a, b)| a * b).sum();
    let expected = 1.0 / (1.0 + (-(total - removed - 3.0)).exp());
    assert!((del.probabilities[1] - expected).abs() < 1e-6);
    assert_eq!(del.fractions.len(), 11);
    assert!((del.fractions[10] - 1.0).abs() < 1e-12);
}

#[test]
fn thoracic_region_share_is_one_inside_and_its_area_for_a_flat_map() {
    let region = ThoracicRegion::pediatric_frontal();
    let (w, h) = (64u32, 64u32);
    let inside: Vec<f32> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| f32::from(u8::from(region.contains_pixel(x, y, w, h))))
        .collect();
    let map = SaliencyMap::from_values(w, h, inside, 0.0);
    assert!((region.share(&map) - 1.0).abs() < 1e-12);
    let flat = SaliencyMap::from_values(w, h, vec![1.0; (w * h) as usize], 0.0);
    let area = region.area_fraction(w, h);
    assert!((region.share(&flat) - area).abs() < 1e-12);
    assert!(area > 0.2 && area < 0.35, "{area}");
    // Corners (text markers) are outside.
    assert!(!region.contains_pixel(0, 0, w, h) && !region.contains_pixel(w - 1, h - 1, w, h));
}

#[test]
fn methods_refuse_bad_shapes() {
    let x = Tensor::zeros((2, 1, 4, 4), DType::F64, &Device::Cpu).expect("zeros");
    let one = Tensor::zeros((1, 1, 4, 4), DType::F64, &Device::Cpu).expect("zeros");
    let f = |t: &Tensor| t.sum((1, 2, 3));
    assert!(smooth_grad(f, &x, &SmoothGradConfig::default()).is_err());
    assert!(integrated_gradients(f, &one, &x, 8, 4, ExplainedClass::Pneumonia).is_err());
    assert!(integrated_gradients(f, &one, &one, 0, 4, ExplainedClass::Pneumonia).is_err());
    let too_big = OcclusionConfig {
        patch: 5,
        stride: 1,
        batch: 1,
    };
    assert!(occlusion(f, &one, &one, &too_big, ExplainedClass::Pneumonia).is_err());
}
