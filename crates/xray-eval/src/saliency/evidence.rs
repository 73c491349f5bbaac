use candle_core::{DType, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{batched_logits, single_image, ExplainedClass, SaliencyMap};
use crate::ranks::mid_ranks;
use crate::EvalError;

/// Pixel indices (row-major) from the most to the least important; ties keep image order.
pub fn ranking(map: &SaliencyMap) -> Vec<usize> {
    let mut order: Vec<usize> = (0..map.values.len()).collect();
    order.sort_by(|&a, &b| map.values[b].total_cmp(&map.values[a]));
    order
}

/// A seeded random order of `pixels` indices: the baseline every ranking must beat.
pub fn random_ranking(pixels: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pixels).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
}

/// Pixel indices in order of importance of `block` x `block` tiles (mean of the map over the
/// tile), most important tile first, pixels of one tile together.
///
/// Removing scattered single pixels is itself a strong, unnatural perturbation: on these models a
/// tenth of the pixels replaced at random already saturates the output, whatever the order, so
/// pixel-level curves cannot tell maps apart. Tiles (8 px at 224) keep the perturbation closer to
/// what a film can look like.
pub fn block_ranking(map: &SaliencyMap, block: usize) -> Vec<usize> {
    let (w, h) = (map.width as usize, map.height as usize);
    let tiles = tiles(w, h, block);
    let mut scored: Vec<(f64, usize)> = tiles
        .iter()
        .enumerate()
        .map(|(t, pixels)| {
            let sum: f64 = pixels.iter().map(|&p| f64::from(map.values[p])).sum();
            (sum / pixels.len() as f64, t)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .flat_map(|(_, t)| tiles[t].iter().copied())
        .collect()
}

/// Tiles of a `width` x `height` image in a seeded random order, expanded to pixel indices as in
/// [`block_ranking`]: its random baseline.
pub fn random_block_ranking(width: u32, height: u32, block: usize, seed: u64) -> Vec<usize> {
    let mut tiles = tiles(width as usize, height as usize, block);
    tiles.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    tiles.into_iter().flatten().collect()
}

/// Row-major pixel indices of each `block` x `block` tile (edge tiles may be smaller).
fn tiles(w: usize, h: usize, block: usize) -> Vec<Vec<usize>> {
    let block = block.max(1);
    let mut out = Vec::new();
    for y0 in (0..h).step_by(block) {
        for x0 in (0..w).step_by(block) {
            let tile = (y0..(y0 + block).min(h))
                .flat_map(|y| (x0..(x0 + block).min(w)).map(move |x| y * w + x))
                .collect();
            out.push(tile);
        }
    }
    out
}

/// Spearman's rank correlation of two maps (Pearson correlation of their mid-ranks); 0 when
/// either is constant.
pub fn spearman(a: &[f32], b: &[f32]) -> Result<f64, EvalError> {
    if a.len() != b.len() || a.is_empty() {
        return Err(EvalError::LengthMismatch {
            scores: a.len(),
            labels: b.len(),
        });
    }
    let (ra, rb) = (mid_ranks(a), mid_ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    Ok(if va > 0.0 && vb > 0.0 {
        cov / (va * vb).sqrt()
    } else {
        0.0
    })
}

/// The explained class's probability as pixels are replaced, and the area under it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PerturbationCurve {
    /// Share of pixels replaced at each point, `0, 1/steps, ..., 1`.
    pub fractions: Vec<f64>,
    /// Probability of the explained class at each point.
    pub probabilities: Vec<f64>,
    /// Trapezoid area under the curve over `[0, 1]`.
    pub auc: f64,
}

/// Starts from `from` and replaces pixels (all channels), in `order`, by `to`'s values, scoring
/// after each `1/steps` of the pixels.
fn replacement_curve<F>(
    logit_fn: &F,
    from: &Tensor,
    to: &Tensor,
    order: &[usize],
    steps: usize,
    batch: usize,
    class: ExplainedClass,
) -> Result<PerturbationCurve, EvalError>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    let (c, h, w) = single_image(from)?;
    if to.dims() != from.dims() || order.len() != h * w {
        return Err(candle_core::Error::Msg(format!(
            "perturbation needs images of one shape and a ranking of all {} pixels, got {:?}, {:?} and {} indices",
            h * w,
            from.dims(),
            to.dims(),
            order.len()
        ))
        .into());
    }
    if steps == 0 {
        return Err(EvalError::InvalidParameter {
            name: "perturbation steps",
            value: 0.0,
            reason: "need at least one",
        });
    }
    let dtype = from.dtype();
    let mut current: Vec<f32> = from.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let target: Vec<f32> = to.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let pixels = h * w;
    let mut images = Vec::with_capacity(steps + 1);
    let mut fractions = Vec::with_capacity(steps + 1);
    let mut done = 0;
    for k in 0..=steps {
        let upto = pixels * k / steps;
        for &p in &order[done..upto] {
            for ch in 0..c {
                current[ch * pixels + p] = target[ch * pixels + p];
            }
        }
        done = upto;
        fractions.push(upto as f64 / pixels as f64);
        images
            .push(Tensor::from_vec(current.clone(), (1, c, h, w), from.device())?.to_dtype(dtype)?);
    }
    let sign = class.sign();
    let probabilities: Vec<f64> = batched_logits(logit_fn, &images, batch)?
        .into_iter()
        .map(|z| 1.0 / (1.0 + (-sign * f64::from(z)).exp()))
        .collect();
    let auc = fractions
        .windows(2)
        .zip(probabilities.windows(2))
        .map(|(f, p)| (f[1] - f[0]) * (p[0] + p[1]) / 2.0)
        .sum();
    Ok(PerturbationCurve {
        fractions,
        probabilities,
        auc,
    })
}

/// Deletion curve (Petsiuk et al., 2018): pixels of `input` replaced by `fill`, most important
/// first. A faithful map makes the probability fall fast: a small area.
pub fn deletion_curve<F>(
    logit_fn: F,
    input: &Tensor,
    fill: &Tensor,
    order: &[usize],
    steps: usize,
    batch: usize,
    class: ExplainedClass,
) -> Result<PerturbationCurve, EvalError>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    replacement_curve(&logit_fn, input, fill, order, steps, batch, class)
}

/// Insertion curve (Petsiuk et al., 2018): starting from `start` (e.g. a blurred film), the
/// input's pixels are put back, most important first. A faithful map makes the probability rise
/// fast: a large area.
pub fn insertion_curve<F>(
    logit_fn: F,
    input: &Tensor,
    start: &Tensor,
    order: &[usize],
    steps: usize,
    batch: usize,
    class: ExplainedClass,
) -> Result<PerturbationCurve, EvalError>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    replacement_curve(&logit_fn, start, input, order, steps, batch, class)
}
