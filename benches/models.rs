//! Criterion benches of whole networks, on CPU in f32. Throughput is in images (read "elem/s"
//! as images/s). Run: `cargo bench --bench models`; the kernels' own benches are in
//! `crates/xray-ops/benches`. The comparison with PyTorch is the `bench` example
//! (`docs/benchmarks.md`).

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, Optimizer, VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use xray_pneumonia::models::{
    seeded_init, Architecture, Classifier, MobileNetV2Config, ScratchCnnConfig,
};

fn mobilenet_inference(c: &mut Criterion) {
    xray_pneumonia::ops::process::keep_freed_memory();
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let architecture = Architecture::MobileNetV2(MobileNetV2Config::pneumonia());
    Classifier::seeded(&architecture, &varmap, 0, &device).unwrap();
    // As `predict` runs it: no graph recorded, as under PyTorch's `no_grad`.
    let model = Classifier::for_inference(&architecture, &varmap, &device).unwrap();
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

criterion_group!(benches, mobilenet_inference, scratch_training_step);
criterion_main!(benches);
