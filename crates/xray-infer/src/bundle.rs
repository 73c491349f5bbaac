//! A trained model on a device: its network, its variables and its config, loaded from or saved
//! to a bundle directory.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use sha2::{Digest, Sha256};
use xray_data::{images_to_tensor, GrayImage};
use xray_models::{load_weights_strict_from_bytes, Classifier};

use crate::{BundleConfig, InferError, OperatingPoint};

/// Films per forward pass unless [`Bundle::with_batch_size`] says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// A trained model ready to predict: weights, network, config, the device it runs on and the
/// operating point its decisions use.
///
/// ```no_run
/// # fn main() -> Result<(), xray_infer::InferError> {
/// let bundle = xray_infer::Bundle::load("models/mobilenet_v2".as_ref(), &candle_core::Device::Cpu)?
///     .with_operating_point("sensitivity_0.975")?;
/// println!("{} at threshold {:.3}", bundle.operating_point().name, bundle.operating_point().threshold);
/// # Ok(()) }
/// ```
pub struct Bundle {
    /// What the bundle's `config.json` says.
    pub config: BundleConfig,
    /// The network, reading detached views of the weights: a forward pass records no graph for
    /// them, so each activation is freed once the next layer has read it. Gradients with
    /// respect to an input still flow (saliency makes its input a variable); for gradients
    /// with respect to the weights use [`Bundle::model_with_weight_gradients`].
    pub model: Classifier,
    /// Its variables, sharing storage with `model`'s weights: setting one changes the model.
    pub varmap: VarMap,
    device: Device,
    batch_size: usize,
    operating_point: OperatingPoint,
    weights_sha256: String,
}

impl Bundle {
    /// Weights file name inside a bundle directory.
    pub const WEIGHTS: &'static str = "model.safetensors";
    /// Config file name inside a bundle directory.
    pub const CONFIG: &'static str = "config.json";

    /// Writes `model.safetensors` and `config.json` into `dir` (created if needed). Each file is
    /// written beside its final name and then renamed over it, so a crash leaves the old file or
    /// the new one, never half of one.
    pub fn save(dir: &Path, config: &BundleConfig, varmap: &VarMap) -> Result<(), InferError> {
        std::fs::create_dir_all(dir).map_err(|source| InferError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let weights = dir.join(Self::WEIGHTS);
        let partial = partial_path(&weights);
        varmap
            .save(&partial)
            .map_err(|source| InferError::WriteWeights {
                path: weights.clone(),
                source,
            })?;
        rename(&partial, &weights)?;
        Self::save_config(dir, config)
    }

    /// Rewrites only `config.json` in `dir` (atomically), e.g. after fitting calibration or
    /// out-of-distribution statistics to an existing bundle.
    pub fn save_config(dir: &Path, config: &BundleConfig) -> Result<(), InferError> {
        let config_path = dir.join(Self::CONFIG);
        let json = serde_json::to_string_pretty(config).map_err(|source| InferError::Config {
            path: config_path.clone(),
            source,
        })?;
        write_atomically(&config_path, (json + "\n").as_bytes())
    }

    /// Reads a bundle directory onto `device`; every weight must be present with its shape.
    /// Decisions use the bundle's main threshold until [`Bundle::with_operating_point`].
    pub fn load(dir: &Path, device: &Device) -> Result<Bundle, InferError> {
        let config_path = dir.join(Self::CONFIG);
        let text = std::fs::read_to_string(&config_path).map_err(|source| InferError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: BundleConfig =
            serde_json::from_str(&text).map_err(|source| InferError::Config {
                path: config_path,
                source,
            })?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        // Creates the variables, with their shapes, for the weights to be loaded into.
        Classifier::new(&config.architecture, vb)?;
        let weights = dir.join(Self::WEIGHTS);
        // Read once: the same bytes are loaded and hashed.
        let bytes = std::fs::read(&weights).map_err(|source| InferError::Io {
            path: weights.clone(),
            source,
        })?;
        load_weights_strict_from_bytes(&varmap, &weights, &bytes, &[])?;
        // Detached views of the weights: a forward pass over the variables themselves keeps
        // every activation alive until its output is dropped (0.97 GB for a batch of 32).
        let model = Classifier::for_inference(&config.architecture, &varmap, device)?;
        let weights_sha256 = hex(&Sha256::digest(&bytes));
        let operating_point = OperatingPoint::main(&config);
        Ok(Bundle {
            config,
            model,
            varmap,
            device: device.clone(),
            batch_size: DEFAULT_BATCH_SIZE,
            operating_point,
            weights_sha256,
        })
    }

    /// The same bundle deciding at the stored operating point `name` (`default` is the main
    /// threshold; the others are in `config.operating_points`).
    pub fn with_operating_point(mut self, name: &str) -> Result<Bundle, InferError> {
        self.operating_point = OperatingPoint::named(&self.config, name)?;
        Ok(self)
    }

    /// The same bundle running `batch_size` films per forward pass (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Bundle {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The operating point decisions are made at.
    pub fn operating_point(&self) -> &OperatingPoint {
        &self.operating_point
    }

    /// The same network over the bundle's variables themselves, for gradients with respect to
    /// the weights (e.g. to compare a backward pass across devices). It keeps every activation
    /// of a forward pass alive until the output is dropped: predict with [`Bundle::model`].
    pub fn model_with_weight_gradients(&self) -> Result<Classifier, InferError> {
        let vb = VarBuilder::from_varmap(&self.varmap, DType::F32, &self.device);
        Ok(Classifier::new(&self.config.architecture, vb)?)
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Films per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// SHA-256 of `model.safetensors` as loaded, in hexadecimal: names the exact weights that
    /// made a prediction.
    pub fn weights_sha256(&self) -> &str {
        &self.weights_sha256
    }

    /// The side of the square the network reads; films are resized to it.
    pub fn input_size(&self) -> u32 {
        self.config.preprocessing.size
    }

    /// Pooled features (row-major, [`Classifier::pooled_features`]) of films already at the
    /// bundle's input size, and their width.
    pub fn pooled_features(&self, images: &[&GrayImage]) -> Result<(Vec<f32>, usize), InferError> {
        let mut rows = Vec::new();
        let mut dim = 0;
        for chunk in images.chunks(self.batch_size) {
            let x = images_to_tensor(chunk, &self.config.preprocessing, &self.device)?;
            let f = self.model.pooled_features(&x)?.detach();
            dim = f.dim(1)?;
            rows.extend(f.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok((rows, dim))
    }

    /// Uncalibrated pneumonia probabilities of films already at the bundle's input size, with
    /// no decision and no out-of-distribution check: the raw scores evaluation and calibration
    /// work on.
    pub fn probabilities(&self, images: &[&GrayImage]) -> Result<Vec<f64>, InferError> {
        let mut probabilities = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch_size) {
            let x = images_to_tensor(chunk, &self.config.preprocessing, &self.device)?;
            let p = candle_nn::ops::sigmoid(&self.model.logits(&x)?)?;
            probabilities.extend(p.to_vec1::<f32>()?.into_iter().map(f64::from));
        }
        Ok(probabilities)
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), InferError> {
    std::fs::rename(from, to).map_err(|source| InferError::Io {
        path: to.to_path_buf(),
        source,
    })
}

/// Where a file is written before it is renamed over `path`: beside it, `.partial` appended.
fn partial_path(path: &Path) -> std::path::PathBuf {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    partial.into()
}

/// Writes `bytes` beside `path` and renames the file over it.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), InferError> {
    let partial = partial_path(path);
    std::fs::write(&partial, bytes).map_err(|source| InferError::Io {
        path: partial.clone(),
        source,
    })?;
    rename(&partial, path)
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
