//! Saliency maps: exact on a model with a known gradient, the image's size after resizing,
//! finite, and overlays that leave unimportant pixels untouched.

use candle_core::{Device, Tensor};
use xray_eval::{heat_overlay, vanilla_gradient};

#[test]
fn gradient_of_a_linear_model_is_its_weights_in_absolute_value() {
    let device = Device::Cpu;
    let (c, h, w) = (3, 5, 7);
    let weights: Vec<f32> = (0..c * h * w).map(|i| ((i as f32) * 0.37).sin()).collect();
    let weight_tensor = Tensor::from_vec(weights.clone(), (1, c, h, w), &device).unwrap();
    let input = Tensor::randn(0f32, 1.0, (1, c, h, w), &device).unwrap();
    let map = vanilla_gradient(|x| (x * &weight_tensor)?.sum((1, 2, 3)), &input).unwrap();
    assert_eq!((map.width, map.height), (w as u32, h as u32));
    for (p, value) in map.values.iter().enumerate() {
        let expected = (0..c)
            .map(|ch| weights[ch * h * w + p].abs())
            .fold(0f32, f32::max);
        assert!((value - expected).abs() < 1e-6, "pixel {p}");
    }
}

#[test]
fn resized_maps_have_the_film_size_and_stay_finite() {
    let device = Device::Cpu;
    let input = Tensor::randn(0f32, 1.0, (1, 1, 16, 16), &device).unwrap();
    let map = vanilla_gradient(|x| x.sqr()?.sum((1, 2, 3)), &input).unwrap();
    let big = map.resized(300, 200);
    assert_eq!(
        (big.width, big.height, big.values.len()),
        (300, 200, 60_000)
    );
    assert!(big.values.iter().all(|v| v.is_finite() && *v >= 0.0));

    let film = image::ImageBuffer::from_fn(300, 200, |x, _| image::Luma([x as f32 / 300.0]));
    let overlay = heat_overlay(&film, &map, 0.6);
    assert_eq!(overlay.dimensions(), (300, 200));
}

#[test]
fn zero_saliency_leaves_the_film_unchanged() {
    let device = Device::Cpu;
    let input = Tensor::zeros((1, 1, 4, 4), candle_core::DType::F32, &device).unwrap();
    // d/dx of sum(x^2) at x = 0 is zero everywhere.
    let map = vanilla_gradient(|x| x.sqr()?.sum((1, 2, 3)), &input).unwrap();
    let film = image::ImageBuffer::from_fn(4, 4, |x, y| image::Luma([(x + y) as f32 / 6.0]));
    let overlay = heat_overlay(&film, &map, 0.6);
    for (px, g) in overlay.pixels().zip(film.pixels()) {
        let gray = (g.0[0] * 255.0).round() as u8;
        assert_eq!(px.0, [gray, gray, gray]);
    }
}

#[test]
fn a_batch_is_refused() {
    let input = Tensor::zeros((2, 1, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(vanilla_gradient(|x| x.sum((1, 2, 3)), &input).is_err());
}
