use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{DataError, GrayImage, Preprocessing};

/// Stacks images into a `(N, channels, size, size)` f32 tensor, normalised per `preprocessing`.
///
/// Every image must already be `size` x `size` (see [`crate::load_images`]).
pub fn images_to_tensor(
    images: &[&GrayImage],
    preprocessing: &Preprocessing,
    device: &Device,
) -> Result<Tensor, DataError> {
    let size = preprocessing.size;
    if let Some(bad) = images.iter().find(|im| im.dimensions() != (size, size)) {
        return Err(DataError::InvalidParameter {
            name: "image size",
            value: format!("{:?}", bad.dimensions()),
            reason: format!("expected {size}x{size}"),
        });
    }
    if !matches!(preprocessing.channels, 1 | 3) {
        return Err(DataError::InvalidParameter {
            name: "channels",
            value: preprocessing.channels.to_string(),
            reason: "must be 1 or 3".into(),
        });
    }
    let plane = (size * size) as usize;
    let channels = preprocessing.channels;
    let mut data = Vec::with_capacity(images.len() * channels * plane);
    for image in images {
        let start = data.len();
        data.extend(
            image
                .as_raw()
                .iter()
                .map(|&v| preprocessing.normalization.apply(v)),
        );
        // Repeat the gray plane for ImageNet-pretrained backbones (here, not with a broadcast
        // copy: candle copies broadcast views element by element).
        for _ in 1..channels {
            data.extend_from_within(start..start + plane);
        }
    }
    let (n, s) = (images.len(), size as usize);
    let tensor = Tensor::from_vec(data, (n, channels, s, s), device)?;
    Ok(tensor)
}

/// A permutation of `0..n` that depends only on `seed` and `epoch`.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed.wrapping_add(epoch as u64)
            .wrapping_mul(0x2545_F491_4F6C_DD1D),
    );
    order.shuffle(&mut rng);
    order
}
