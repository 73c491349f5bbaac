//! The saliency methods on the shipped bundles and real films from ../shared: Integrated
//! Gradients (from the blurred film, its default baseline) is complete to 2% for both bundles
//! (the scratch CNN at 64 steps, MobileNetV2 at 512), Grad-CAM's split of the network reproduces its
//! logits, and every method gives a finite, non-trivial map of the film's size.

use std::path::{Path, PathBuf};

use candle_core::Device;
use xray_pneumonia::data::{load_images, scan_split, LoadOptions};
use xray_pneumonia::eval::{integrated_gradients, ExplainedClass};
use xray_pneumonia::infer::Bundle;
use xray_pneumonia::infer::{saliency, Method, MethodSettings, References};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Two real films (one per class) at the bundle's input size, as the model's references.
fn films(bundle: &Bundle, device: &Device) -> Vec<References> {
    let data = root().join("../shared/data/kermany224");
    let mut samples = scan_split(&data, "train").expect("scan");
    samples.sort_by(|a, b| a.path.cmp(&b.path));
    let normal = samples
        .iter()
        .position(|s| s.path.to_string_lossy().contains("NORMAL/"));
    let pneumonia = samples
        .iter()
        .position(|s| s.path.to_string_lossy().contains("PNEUMONIA/"));
    let chosen = [normal, pneumonia].map(|i| samples[i.expect("both classes")].clone());
    let options = LoadOptions {
        size: bundle.config.preprocessing.size,
        skip_unreadable: false,
    };
    let set = load_images(chosen.to_vec(), &options).expect("decode");
    set.images
        .iter()
        .map(|f| References::new(f, &bundle.config.preprocessing, device).expect("references"))
        .collect()
}

/// `completeness` bounds Integrated Gradients' `|sum - logit difference| / |difference|` at
/// `steps` steps.
fn check_bundle(dir: &Path, completeness: f64, steps: usize) {
    let device = Device::Cpu;
    let bundle = Bundle::load(dir, &device).expect("bundle");
    let size = bundle.config.preprocessing.size as usize;
    for references in films(&bundle, &device) {
        let x = &references.input;
        let direct = bundle
            .model
            .logits(x)
            .and_then(|t| t.to_vec1::<f32>())
            .expect("logits");
        let split = bundle
            .model
            .cam_activation(x)
            .and_then(|a| bundle.model.logits_from_cam_activation(&a))
            .and_then(|t| t.to_vec1::<f32>())
            .expect("split logits");
        assert!(
            (direct[0] - split[0]).abs() < 1e-4,
            "{direct:?} vs {split:?}"
        );

        for class in [ExplainedClass::Pneumonia, ExplainedClass::Normal] {
            let ig = integrated_gradients(
                |t| bundle.model.logits(t),
                x,
                &references.blurred,
                steps,
                16,
                class,
            )
            .expect("ig");
            assert!(
                ig.completeness_error() < completeness,
                "{}: sum {} vs logit difference {}",
                dir.display(),
                ig.attribution_sum,
                ig.logit_difference
            );
        }
        let class = ExplainedClass::predicted(direct[0], bundle.config.threshold.value);
        for method in Method::ALL {
            let settings = MethodSettings {
                ig_steps: 8,
                ..Default::default()
            };
            let map = saliency(&bundle.model, method, &references, class, &settings).expect("map");
            assert_eq!((map.width as usize, map.height as usize), (size, size));
            assert!(map.values.iter().all(|v| v.is_finite() && *v >= 0.0));
            assert!(
                map.values.iter().any(|&v| v > 0.0),
                "{method:?} gave an all-zero map"
            );
        }
    }
}

#[test]
fn scratch_cnn_bundle() {
    check_bundle(&root().join("models/scratch_cnn"), 0.02, 64);
}

#[test]
fn mobilenet_v2_bundle() {
    // The bundle trained with wide blur (issue 17) scores the blurred baseline close to one of
    // these films (logit difference 1.6), and ReLU6 kinks along the path make quadrature error
    // fall unevenly there: measured 7.3% at 64 steps, 0.8% at 128, 2.4% at 256, 1.0% at 512.
    check_bundle(&root().join("models/mobilenet_v2"), 0.02, 512);
}
