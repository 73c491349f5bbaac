use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{linear, Init, Linear, Module, ModuleT, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::conv_norm::{ConvKind, ConvNormAct};
use crate::{InvertedResidual, ModelError};

/// Width of the pooled features MobileNetV2 hands to its classifier.
pub const MOBILENET_V2_FEATURES: usize = 1280;

/// Number of feature stages (`features.0` to `features.18` in torchvision).
pub const MOBILENET_V2_STAGES: usize = 19;

/// `(expand ratio, output channels, repeats, first stride)` of each group of inverted residuals
/// (Sandler et al., 2018, table 2; width multiplier 1.0).
const INVERTED_RESIDUAL_SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// MobileNetV2 options. Padding is symmetric (torchvision's), not Keras' asymmetric stride-2 pad.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MobileNetV2Config {
    /// Outputs of the classifier: 1 logit for pneumonia, 1000 for ImageNet.
    pub num_outputs: usize,
    /// Dropout before the classifier in training (torchvision: 0.2).
    pub dropout: f32,
    /// How many feature stages, counted from the top, are trained (0: frozen backbone, only the
    /// classifier learns; 19: everything).
    pub trainable_stages: usize,
}

impl Default for MobileNetV2Config {
    /// [`MobileNetV2Config::pneumonia`].
    fn default() -> Self {
        Self::pneumonia()
    }
}

impl MobileNetV2Config {
    /// One pneumonia logit on a frozen ImageNet backbone.
    pub fn pneumonia() -> Self {
        MobileNetV2Config {
            num_outputs: 1,
            dropout: 0.2,
            trainable_stages: 0,
        }
    }

    /// The 1000-class ImageNet classifier, as the shared weights ship.
    pub fn imagenet() -> Self {
        MobileNetV2Config {
            num_outputs: 1000,
            ..Self::pneumonia()
        }
    }
}

#[derive(Debug, Clone)]
enum Stage {
    ConvNormAct(ConvNormAct),
    InvertedResidual(InvertedResidual),
}

impl Stage {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Stage::ConvNormAct(m) => m.forward(x),
            Stage::InvertedResidual(m) => m.forward(x),
        }
    }
}

/// MobileNetV2 with torchvision's tensor names, so `../shared/weights` loads without renaming.
///
/// Input: `(N, 3, H, W)` scaled to `[-1, 1]`. BatchNorm uses stored statistics in training too
/// (see [`crate::FrozenBatchNorm`]). Stages below the trainable ones hold detached views of
/// their weights: no autograd graph is recorded through them, in training or evaluation (the
/// input stays differentiable, for saliency maps), so their gradients are never computed.
#[derive(Debug, Clone)]
pub struct MobileNetV2 {
    stages: Vec<Stage>,
    classifier: Linear,
    config: MobileNetV2Config,
}

impl MobileNetV2 {
    /// Floating-point operations (multiply-adds x 2) of one forward pass of the feature
    /// extractor (width 1.0, 1280 features) on a `size` x `size` image: convolutions only.
    pub fn forward_flops(size: usize) -> f64 {
        let mut hw = size / 2;
        let mut macs = (hw * hw * 32 * 3 * 9) as f64;
        let mut c = 32;
        for (t, out, n, s) in INVERTED_RESIDUAL_SETTINGS {
            for i in 0..n {
                let hidden = c * t;
                let in_hw = hw;
                if i == 0 {
                    hw = hw.div_ceil(s);
                }
                if t != 1 {
                    macs += (in_hw * in_hw * c * hidden) as f64;
                }
                macs += (hw * hw * hidden * 9) as f64;
                macs += (hw * hw * hidden * out) as f64;
                c = out;
            }
        }
        macs += (hw * hw * c * 1280) as f64;
        2.0 * macs
    }

    /// Builds the network under `vb` (`features.*`, `classifier.1.*`).
    pub fn new(config: MobileNetV2Config, vb: VarBuilder) -> std::result::Result<Self, ModelError> {
        if config.trainable_stages > MOBILENET_V2_STAGES {
            return Err(ModelError::InvalidConfig {
                parameter: "trainable_stages",
                reason: format!(
                    "{} exceeds the {MOBILENET_V2_STAGES} stages",
                    config.trainable_stages
                ),
            });
        }
        // Frozen stages read their weights as detached views of the same storage: loading
        // weights still reaches them, but no autograd graph is ever recorded through them (as
        // under PyTorch's no_grad), so a frozen backbone runs at inference cost in training.
        let first_trainable = MOBILENET_V2_STAGES - config.trainable_stages;
        let frozen = VarBuilder::from_backend(
            Box::new(DetachedWeights(vb.clone())),
            vb.dtype(),
            vb.device().clone(),
        );
        let stage_vb = |i: usize| {
            let root = if i < first_trainable { &frozen } else { &vb };
            root.pp("features").pp(i)
        };
        let mut stages = vec![Stage::ConvNormAct(ConvNormAct::new(
            3,
            32,
            3,
            2,
            ConvKind::Dense,
            stage_vb(0),
        )?)];
        let mut in_c = 32;
        for (t, c, n, s) in INVERTED_RESIDUAL_SETTINGS {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let block = InvertedResidual::new(in_c, c, stride, t, stage_vb(stages.len()))?;
                stages.push(Stage::InvertedResidual(block));
                in_c = c;
            }
        }
        let last = ConvNormAct::new(
            in_c,
            MOBILENET_V2_FEATURES,
            1,
            1,
            ConvKind::Dense,
            stage_vb(stages.len()),
        )?;
        stages.push(Stage::ConvNormAct(last));
        let classifier = linear(
            MOBILENET_V2_FEATURES,
            config.num_outputs,
            vb.pp("classifier").pp(1),
        )?;
        Ok(MobileNetV2 {
            stages,
            classifier,
            config,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &MobileNetV2Config {
        &self.config
    }

    /// Globally pooled features `(N, 1280)`, differentiable with respect to the input.
    ///
    /// The result keeps its autograd graph (every activation of the batch) alive: `.detach()` it
    /// before storing features, as `train_mobilenet` does.
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        self.features(x, false)
    }

    /// Pooled features; see [`stage_output`](Self::stage_output) for `detach_frozen`.
    fn features(&self, x: &Tensor, detach_frozen: bool) -> Result<Tensor> {
        self.stage_output(x, detach_frozen)?.mean((2, 3))
    }

    /// The last stage's output before pooling. With `detach_frozen`, the activations entering
    /// the first trainable stage are cut from the autograd graph, so training never
    /// back-propagates through frozen stages.
    fn stage_output(&self, x: &Tensor, detach_frozen: bool) -> Result<Tensor> {
        let first_trainable = MOBILENET_V2_STAGES - self.config.trainable_stages;
        let mut x = x.clone();
        for (i, stage) in self.stages.iter().enumerate() {
            if detach_frozen && i == first_trainable {
                x = x.detach();
            }
            x = stage.forward(&x)?;
        }
        if detach_frozen && first_trainable == MOBILENET_V2_STAGES {
            x = x.detach();
        }
        Ok(x)
    }

    /// Evaluation-mode output of the last feature stage (`features.18`, 1280 channels, 1/32 of
    /// the input size) before pooling: the layer Grad-CAM explains.
    pub fn feature_map(&self, x: &Tensor) -> Result<Tensor> {
        self.stage_output(x, false)
    }

    /// Logits `(N, num_outputs)` from [`feature_map`](Self::feature_map): average pooling and
    /// the classifier, in evaluation mode.
    pub fn head_from_feature_map(&self, feature_map: &Tensor) -> Result<Tensor> {
        self.classifier.forward(&feature_map.mean((2, 3))?)
    }

    /// The classifier (`classifier.1`): pooled features to logits.
    pub fn classifier(&self) -> &Linear {
        &self.classifier
    }

    /// Name prefixes of the parameters that training may change.
    pub fn trainable_prefixes(&self) -> Vec<String> {
        let first = MOBILENET_V2_STAGES - self.config.trainable_stages;
        let mut prefixes: Vec<String> = (first..MOBILENET_V2_STAGES)
            .map(|i| format!("features.{i}."))
            .collect();
        prefixes.push("classifier.".to_string());
        prefixes
    }
}

/// A [`VarBuilder`] backend that hands out detached views of another builder's tensors: the
/// same storage (so `VarMap::load` and `Var::set` still reach them), never tracked by autograd.
struct DetachedWeights<'a>(VarBuilder<'a>);

impl SimpleBackend for DetachedWeights<'_> {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, _dev: &Device) -> Result<Tensor> {
        Ok(self.0.get_with_hints_dtype(s, name, h, dtype)?.detach())
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _dev: &Device) -> Result<Tensor> {
        Ok(self.0.get_unchecked_dtype(name, dtype)?.detach())
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

impl ModuleT for MobileNetV2 {
    /// Logits `(N, num_outputs)`. Frozen stages never get gradients; in training the
    /// activations entering the first trainable stage are also cut from the graph, while in
    /// evaluation the input stays differentiable, for saliency maps.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let features = self.features(x, train)?;
        let features = if train && self.config.dropout > 0.0 {
            candle_nn::ops::dropout(&features, self.config.dropout)?
        } else {
            features
        };
        self.classifier.forward(&features)
    }
}
