use candle_core::{Result, Tensor, Var};
use candle_nn::{Module, ModuleT, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::{MobileNetV2, MobileNetV2Config, ModelError, ScratchCnn, ScratchCnnConfig};

/// Which network a bundle holds, with its configuration; serialised into `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Architecture {
    /// [`ScratchCnn`].
    ScratchCnn(ScratchCnnConfig),
    /// [`MobileNetV2`] with one output.
    MobileNetV2(MobileNetV2Config),
}

/// A pneumonia classifier: images in, one logit per image out (positive: pneumonia).
#[derive(Debug, Clone)]
pub enum Classifier {
    /// A from-scratch CNN.
    ScratchCnn(ScratchCnn),
    /// ImageNet-pretrained MobileNetV2 with a one-logit head.
    MobileNetV2(MobileNetV2),
}

impl Classifier {
    /// Builds the network described by `architecture` with variables from `vb`.
    pub fn new(
        architecture: &Architecture,
        vb: VarBuilder,
    ) -> std::result::Result<Self, ModelError> {
        match architecture {
            Architecture::ScratchCnn(c) => Ok(Classifier::ScratchCnn(ScratchCnn::new(c, vb)?)),
            Architecture::MobileNetV2(c) => {
                if c.num_outputs != 1 {
                    return Err(ModelError::InvalidConfig {
                        parameter: "num_outputs",
                        reason: format!(
                            "a pneumonia classifier has one output, not {}",
                            c.num_outputs
                        ),
                    });
                }
                Ok(Classifier::MobileNetV2(MobileNetV2::new(*c, vb)?))
            }
        }
    }

    /// A new network on `device` whose every weight depends on `seed` alone
    /// ([`seeded_init`](crate::seeded_init)), its variables in `varmap`.
    pub fn seeded(
        architecture: &Architecture,
        varmap: &VarMap,
        seed: u64,
        device: &candle_core::Device,
    ) -> std::result::Result<Self, ModelError> {
        let model = Classifier::new(
            architecture,
            VarBuilder::from_varmap(varmap, candle_core::DType::F32, device),
        )?;
        crate::seeded_init(varmap, "", seed)?;
        Ok(model)
    }

    /// The network `architecture` over detached views of `varmap`'s variables, for inference.
    /// The views share the variables' storage, so setting a variable changes this network too;
    /// but a forward pass records no graph, so each activation is freed once the next layer
    /// has read it. Over the variables themselves every activation lives until the output is
    /// dropped: 30 MB per 224 px film for MobileNetV2. Gradients with respect to an input that
    /// is a variable still flow.
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use xray_models::{Architecture, Classifier, ScratchCnnConfig};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let architecture = Architecture::ScratchCnn(ScratchCnnConfig::default());
    /// let varmap = candle_nn::VarMap::new();
    /// let trained = Classifier::seeded(&architecture, &varmap, 7, &Device::Cpu)?;
    /// let frozen = Classifier::for_inference(&architecture, &varmap, &Device::Cpu)?;
    /// let x = Tensor::randn(0f32, 1.0, (1, 1, 64, 64), &Device::Cpu)?;
    /// assert_eq!(trained.logits(&x)?.to_vec1::<f32>()?, frozen.logits(&x)?.to_vec1::<f32>()?);
    /// # Ok(()) }
    /// ```
    pub fn for_inference(
        architecture: &Architecture,
        varmap: &VarMap,
        device: &candle_core::Device,
    ) -> std::result::Result<Self, ModelError> {
        let detached = varmap
            .data()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect();
        Classifier::new(
            architecture,
            VarBuilder::from_tensors(detached, candle_core::DType::F32, device),
        )
    }

    /// Evaluation-mode logits of shape `(N,)`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }

    /// The activation Grad-CAM explains, `(N, K, h, w)`: MobileNetV2's last feature stage
    /// (`features.18`), or the scratch CNN's last convolutional block before its pooling.
    pub fn cam_activation(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Classifier::ScratchCnn(m) => m.last_block_activation(x),
            Classifier::MobileNetV2(m) => m.feature_map(x),
        }
    }

    /// Evaluation-mode logits `(N,)` from [`cam_activation`](Self::cam_activation)'s output, so
    /// that `logits_from_cam_activation(cam_activation(x)) == logits(x)`.
    pub fn logits_from_cam_activation(&self, activation: &Tensor) -> Result<Tensor> {
        match self {
            Classifier::ScratchCnn(m) => m.head_from_last_block(activation)?.squeeze(1),
            Classifier::MobileNetV2(m) => m.head_from_feature_map(activation)?.squeeze(1),
        }
    }

    /// Evaluation-mode pooled features `(N, D)` that the last linear layer reads (1280 for
    /// MobileNetV2, the last block's width for the scratch CNN): what an out-of-distribution
    /// score measures. `logits_from_pooled(pooled_features(x)) == logits(x)`.
    pub fn pooled_features(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Classifier::ScratchCnn(m) => m.pooled_features(x),
            Classifier::MobileNetV2(m) => m.forward_features(x),
        }
    }

    /// Logits `(N,)` from [`pooled_features`](Self::pooled_features)'s output.
    pub fn logits_from_pooled(&self, features: &Tensor) -> Result<Tensor> {
        match self {
            Classifier::ScratchCnn(m) => m.head().forward(features)?.squeeze(1),
            Classifier::MobileNetV2(m) => m.classifier().forward(features)?.squeeze(1),
        }
    }

    /// The parameters training may change: everything for the scratch CNN; the classifier and
    /// the configured top stages for MobileNetV2. BatchNorm running statistics are excluded.
    pub fn trainable_vars(&self, varmap: &VarMap) -> Vec<Var> {
        let prefixes = match self {
            Classifier::ScratchCnn(_) => vec![String::new()],
            Classifier::MobileNetV2(m) => m.trainable_prefixes(),
        };
        let vars = varmap
            .data()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut chosen: Vec<(&String, &Var)> = vars
            .iter()
            .filter(|(name, _)| prefixes.iter().any(|p| name.starts_with(p.as_str())))
            .filter(|(name, _)| !name.ends_with("running_mean") && !name.ends_with("running_var"))
            .collect();
        chosen.sort_by(|a, b| a.0.cmp(b.0));
        chosen.into_iter().map(|(_, v)| v.clone()).collect()
    }
}

impl ModuleT for Classifier {
    /// Logits of shape `(N,)`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let logits = match self {
            Classifier::ScratchCnn(m) => m.forward_t(x, train)?,
            Classifier::MobileNetV2(m) => m.forward_t(x, train)?,
        };
        logits.squeeze(1)
    }
}
