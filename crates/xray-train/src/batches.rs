use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use xray_data::{augment, images_to_tensor, AugmentConfig, GrayImage, Preprocessing};

use crate::TrainError;

/// Where the trainer gets model inputs from. Targets are 1 for pneumonia, 0 for normal.
pub trait BatchSource {
    /// Number of examples.
    fn len(&self) -> usize;

    /// True when there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All targets, in example order.
    fn targets(&self) -> &[f32];

    /// The inputs of `indices`, augmented when `train` (deterministically per `epoch`).
    fn inputs(
        &self,
        indices: &[usize],
        epoch: usize,
        train: bool,
        device: &Device,
    ) -> Result<Tensor, TrainError>;
}

/// Decoded images, turned into model inputs batch by batch, with optional augmentation.
pub struct ImageBatches<'a> {
    images: Vec<&'a GrayImage>,
    targets: Vec<f32>,
    preprocessing: Preprocessing,
    augmentation: Option<AugmentConfig>,
    seed: u64,
}

impl<'a> ImageBatches<'a> {
    /// A source over `images` with their `targets`; `augmentation` applies in training only.
    pub fn new(
        images: Vec<&'a GrayImage>,
        targets: Vec<f32>,
        preprocessing: Preprocessing,
        augmentation: Option<AugmentConfig>,
        seed: u64,
    ) -> Result<Self, TrainError> {
        if images.len() != targets.len() {
            return Err(TrainError::InvalidConfig {
                name: "targets",
                reason: format!("{} images but {} targets", images.len(), targets.len()),
            });
        }
        Ok(ImageBatches {
            images,
            targets,
            preprocessing,
            augmentation,
            seed,
        })
    }
}

impl BatchSource for ImageBatches<'_> {
    fn len(&self) -> usize {
        self.images.len()
    }

    fn targets(&self) -> &[f32] {
        &self.targets
    }

    fn inputs(
        &self,
        indices: &[usize],
        epoch: usize,
        train: bool,
        device: &Device,
    ) -> Result<Tensor, TrainError> {
        let tensor = match (&self.augmentation, train) {
            (Some(config), true) => {
                // One RNG per (epoch, image): the same augmentations whatever the thread count.
                let augmented: Vec<GrayImage> = indices
                    .par_iter()
                    .map(|&i| {
                        let stream = (epoch as u64) << 32 | i as u64;
                        let mut rng = ChaCha8Rng::seed_from_u64(
                            self.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        );
                        augment(self.images[i], config, &mut rng)
                    })
                    .collect();
                let refs: Vec<&GrayImage> = augmented.iter().collect();
                images_to_tensor(&refs, &self.preprocessing, device)?
            }
            _ => {
                let refs: Vec<&GrayImage> = indices.iter().map(|&i| self.images[i]).collect();
                images_to_tensor(&refs, &self.preprocessing, device)?
            }
        };
        Ok(tensor)
    }
}

/// Precomputed features `(N, F)` (e.g. a frozen backbone's), for training a head only.
pub struct FeatureBatches {
    features: Tensor,
    targets: Vec<f32>,
}

impl FeatureBatches {
    /// A source over the rows of `features`.
    pub fn new(features: Tensor, targets: Vec<f32>) -> Result<Self, TrainError> {
        let rows = features.dim(0)?;
        if rows != targets.len() {
            return Err(TrainError::InvalidConfig {
                name: "targets",
                reason: format!("{rows} feature rows but {} targets", targets.len()),
            });
        }
        Ok(FeatureBatches { features, targets })
    }
}

impl BatchSource for FeatureBatches {
    fn len(&self) -> usize {
        self.targets.len()
    }

    fn targets(&self) -> &[f32] {
        &self.targets
    }

    fn inputs(
        &self,
        indices: &[usize],
        _epoch: usize,
        _train: bool,
        device: &Device,
    ) -> Result<Tensor, TrainError> {
        let ids: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
        let ids = Tensor::from_vec(ids, indices.len(), self.features.device())?;
        Ok(self.features.index_select(&ids, 0)?.to_device(device)?)
    }
}
