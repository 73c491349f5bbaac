//! Criterion benches of the hot paths, on CPU in f32. Throughput is in images (read
//! "elem/s" as images/s) or, for the convolution kernels, in floating-point operations (read
//! "Gelem/s" as GFLOP/s). Run: `cargo bench --bench kernels`. The comparison with PyTorch is
//! the `bench` example (`docs/benchmarks.md`).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{ModuleT, Optimizer, VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use xray_pneumonia::models::{
    dense_conv2d, depthwise_conv2d, pointwise_conv2d, seeded_init, Architecture, Classifier,
    MobileNetV2Config, ScratchCnnConfig,
};

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
    xray_pneumonia::pipeline::keep_freed_memory();
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

fn mobilenet_inference(c: &mut Criterion) {
    xray_pneumonia::pipeline::keep_freed_memory();
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = Classifier::new(
        &Architecture::MobileNetV2(MobileNetV2Config::pneumonia()),
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )
    .unwrap();
    let batch = 8;
    let x = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &device).unwrap();
    let mut group = c.benchmark_group("mnv2_infer");
    group.throughput(Throughput::Elements(batch as u64));
    group.sample_size(10);
    group.bench_function("cpu_f32/b8_224", |b| b.iter(|| model.logits(&x).unwrap()));
    group.finish();
}

fn scratch_training_step(c: &mut Criterion) {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = Classifier::new(
        &Architecture::ScratchCnn(ScratchCnnConfig {
            dropout: 0.0,
            ..ScratchCnnConfig::default()
        }),
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )
    .unwrap();
    seeded_init(&varmap, "", 0).unwrap();
    let mut optimizer = candle_nn::AdamW::new(varmap.all_vars(), Default::default()).unwrap();
    let batch = 32;
    let x = Tensor::randn(0f32, 1.0, (batch, 1, 96, 96), &device).unwrap();
    let mut group = c.benchmark_group("scratch_train_step");
    group.throughput(Throughput::Elements(batch as u64));
    group.sample_size(10);
    group.bench_function("cpu_f32/b32_96", |b| {
        b.iter(|| {
            let loss = model
                .forward_t(&x, true)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap();
            optimizer.backward_step(&loss).unwrap()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    depthwise,
    matrix_product_convolutions,
    mobilenet_inference,
    scratch_training_step
);
criterion_main!(benches);
