//! Criterion benches of the convolution kernels, on CPU in f32. Throughput is in floating-point
//! operations (read "Gelem/s" as GFLOP/s). Run: `cargo bench -p xray-ops`. The comparison with PyTorch is
//! the `bench` example (`docs/benchmarks.md`).

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use xray_ops::{dense_conv2d, depthwise_conv2d, pointwise_conv2d};

fn depthwise(c: &mut Criterion) {
    let device = Device::Cpu;
    let (n, ch, hw) = (8, 144, 56);
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, ch, hw, hw), &device).unwrap()).unwrap();
    let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (ch, 1, 3, 3), &device).unwrap()).unwrap();
    let mut group = c.benchmark_group("depthwise_fwd_bwd");
    // Forward, input gradient and weight gradient: 3 passes of 2*N*C*H*W*9 operations.
    group.throughput(Throughput::Elements((3 * 2 * n * ch * hw * hw * 9) as u64));
    group.sample_size(20);
    group.bench_function("cpu_f32/b8_c144_56x56_k3s1", |b| {
        b.iter(|| {
            depthwise_conv2d(&x, &w, 1, 1)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    group.finish();
}

/// Forward and backward (input and weight gradients) of one convolution: 3 passes of
/// `flops_per_pass` each, reported as GFLOP/s.
fn conv_fwd_bwd(
    c: &mut Criterion,
    name: &str,
    x_shape: (usize, usize, usize, usize),
    w_shape: (usize, usize, usize, usize),
    conv: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
) {
    let device = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, x_shape, &device).unwrap()).unwrap();
    let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, w_shape, &device).unwrap()).unwrap();
    let y = conv(&x, &w).unwrap();
    let (_, ci, k, _) = w_shape;
    let flops_per_pass = 2 * y.elem_count() * ci * k * k;
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements((3 * flops_per_pass) as u64));
    group.sample_size(10);
    group.bench_function("cpu_f32", |b| {
        b.iter(|| conv(&x, &w).unwrap().sum_all().unwrap().backward().unwrap())
    });
    group.finish();
}

fn matrix_product_convolutions(c: &mut Criterion) {
    xray_ops::process::keep_freed_memory();
    // MobileNetV2's projection at 56x56 (144 -> 24 channels), batch 8.
    conv_fwd_bwd(
        c,
        "pointwise_fwd_bwd/b8_144to24_56x56",
        (8, 144, 56, 56),
        (24, 144, 1, 1),
        pointwise_conv2d,
    );
    // The plain CNN's second layer (32 -> 64 channels, 3x3) at 112x112, batch 8.
    conv_fwd_bwd(
        c,
        "dense3x3_fwd_bwd/b8_32to64_112x112",
        (8, 32, 112, 112),
        (64, 32, 3, 3),
        |x, w| dense_conv2d(x, w, 1, 1),
    );
}

criterion_group!(benches, depthwise, matrix_product_convolutions);
criterion_main!(benches);
