//! Evidence that a bundle's saliency maps are faithful to the model, film by film: deletion and
//! insertion curves against a random tile order, cascading model randomisation (Adebayo et al.,
//! 2018), and the share of saliency inside the thorax. The `explain` example drives this.
//!
//! Each map explains the model's own call at the bundle's operating point (pneumonia evidence for
//! films it calls pneumonia, normal evidence for the others).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use image::RgbImage;
use serde::Serialize;
use xray_data::GrayImage;
use xray_eval::{
    block_ranking, deletion_curve, insertion_curve, overlay, random_block_ranking, side_by_side,
    spearman, ExplainedClass, OverlayStyle, SaliencyMap, ThoracicRegion,
};
use xray_infer::{saliency, Bundle, Method, MethodSettings, References};

use crate::explain::{randomization_cascade, randomize_weights};
use crate::Error;

/// What a faithfulness study computes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaithfulnessConfig {
    /// The methods compared.
    pub methods: Vec<Method>,
    /// Their settings.
    pub settings: MethodSettings,
    /// Films (the first of those explained) whose maps are compared with a randomised model's.
    pub randomization_films: usize,
    /// Points of the deletion and insertion curves (after 0).
    pub perturbation_steps: usize,
    /// How the panels draw each map.
    pub style: OverlayStyle,
    /// Seed of the random orders and the randomised weights.
    pub seed: u64,
}

/// The mean rank correlation between the trained model's maps and those of a model randomised
/// from the output down to one group of layers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RandomizationPoint {
    /// The deepest layer group re-initialised.
    pub randomized_up_to: String,
    /// Mean Spearman correlation over the films.
    pub spearman_mean: f64,
}

/// One method's evidence, averaged over the films.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodEvidence {
    /// Rank correlation with the fully randomised model's maps (low is faithful).
    pub randomization_spearman: f64,
    /// The correlation step by step down the cascade.
    pub randomization_curve: Vec<RandomizationPoint>,
    /// Whether the fully randomised model's maps correlate below 0.5.
    pub passes_randomization_check: bool,
    /// Area under the deletion curve (low is faithful).
    pub deletion_auc: f64,
    /// The same for a random tile order.
    pub deletion_auc_random: f64,
    /// Area under the insertion curve (high is faithful).
    pub insertion_auc: f64,
    /// The same for a random tile order.
    pub insertion_auc_random: f64,
    /// Share of saliency inside the thoracic region.
    pub lung_share: f64,
    /// Seconds per map.
    pub seconds_per_image: f64,
}

/// A finished study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaithfulnessReport {
    /// Films explained.
    pub films: usize,
    /// Films in the randomisation check.
    pub randomization_films: usize,
    /// The randomisation cascade: layer groups and their parameter prefixes.
    pub cascade: Vec<(String, Vec<String>)>,
    /// The thoracic region the lung share is measured in.
    pub region: ThoracicRegion,
    /// The region's share of the image area (what a flat map would score).
    pub area_fraction: f64,
    /// Every method's evidence, by name.
    pub methods: BTreeMap<&'static str, MethodEvidence>,
}

/// What a study reports while it runs.
pub enum StudyEvent<'a> {
    /// A film was explained: its panel (the film, then each method's overlay).
    Film {
        /// Its index among the films given.
        index: usize,
        /// The panel.
        panel: &'a RgbImage,
    },
    /// One step of the randomisation cascade finished.
    RandomizationStep {
        /// 1-based.
        step: usize,
        /// Steps in all.
        of: usize,
    },
}

#[derive(Default)]
struct Accumulator {
    seconds: Vec<f64>,
    deletion: Vec<f64>,
    insertion: Vec<f64>,
    lung_share: Vec<f64>,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// A map the randomisation check compares: film, class explained, method, map.
type KeptMap = (usize, ExplainedClass, Method, SaliencyMap);

/// Runs the study on `films` (at the bundle's input size). The randomised models are fresh
/// loads of the bundle in `bundle_dir`, so `bundle` itself is never changed.
pub fn faithfulness_study(
    bundle_dir: &Path,
    bundle: &Bundle,
    films: &[&GrayImage],
    config: &FaithfulnessConfig,
    observer: &mut dyn FnMut(StudyEvent<'_>) -> Result<(), Error>,
) -> Result<FaithfulnessReport, Error> {
    let mut methods = config.methods.clone();
    methods.dedup();
    let region = ThoracicRegion::pediatric_frontal();
    let device = bundle.device();
    let mut acc: BTreeMap<Method, Accumulator> = BTreeMap::new();
    let (mut random_deletion, mut random_insertion) = (Vec::new(), Vec::new());
    let mut kept: Vec<KeptMap> = Vec::new();
    let mut kept_references: Vec<References> = Vec::new();
    let threshold = bundle.operating_point().threshold;
    let (steps, batch) = (config.perturbation_steps, config.settings.batch);
    for (k, film) in films.iter().enumerate() {
        let references = References::new(film, &bundle.config.preprocessing, device)?;
        let logit = bundle.model.logits(&references.input)?.to_vec1::<f32>()?[0];
        let class = ExplainedClass::predicted(logit, threshold);
        let pixels = (film.width() * film.height()) as usize;
        let block = (film.width() as usize / 28).max(1);
        let random = random_block_ranking(
            film.width(),
            film.height(),
            block,
            config.seed.wrapping_add(k as u64),
        );
        // Deletion and insertion areas of one tile order.
        let areas = |order: &[usize]| -> Result<(f64, f64), Error> {
            let logits = |x: &candle_core::Tensor| bundle.model.logits(x);
            let (input, blurred) = (&references.input, &references.blurred);
            let deletion = deletion_curve(logits, input, blurred, order, steps, batch, class)?;
            let insertion = insertion_curve(logits, input, blurred, order, steps, batch, class)?;
            Ok((deletion.auc, insertion.auc))
        };
        let (deletion, insertion) = areas(&random)?;
        random_deletion.push(deletion);
        random_insertion.push(insertion);
        let blank = SaliencyMap::from_values(film.width(), film.height(), vec![0.0; pixels], logit);
        let mut tiles = vec![overlay(film, &blank, &config.style)];
        for &method in &methods {
            let started = Instant::now();
            let map = saliency(&bundle.model, method, &references, class, &config.settings)?;
            let seconds = started.elapsed().as_secs_f64();
            let (deletion, insertion) = areas(&block_ranking(&map, block))?;
            let a = acc.entry(method).or_default();
            a.seconds.push(seconds);
            a.deletion.push(deletion);
            a.insertion.push(insertion);
            a.lung_share.push(region.share(&map));
            tiles.push(overlay(film, &map, &config.style));
            if k < config.randomization_films {
                kept.push((k, class, method, map));
            }
        }
        if k < config.randomization_films {
            kept_references.push(references);
        }
        observer(StudyEvent::Film {
            index: k,
            panel: &side_by_side(&tiles, 4),
        })?;
    }

    let cascade = randomization_cascade(&bundle.model);
    let curves = randomization_curves(
        bundle_dir,
        bundle,
        &cascade,
        &kept,
        &kept_references,
        config,
        observer,
    )?;
    let mut report = BTreeMap::new();
    for (method, a) in &acc {
        let curve = curves.get(method).cloned().unwrap_or_default();
        let last = curve.last().map_or(f64::NAN, |p| p.spearman_mean);
        report.insert(
            method.name(),
            MethodEvidence {
                randomization_spearman: last,
                randomization_curve: curve,
                passes_randomization_check: last < 0.5,
                deletion_auc: mean(&a.deletion),
                deletion_auc_random: mean(&random_deletion),
                insertion_auc: mean(&a.insertion),
                insertion_auc_random: mean(&random_insertion),
                lung_share: mean(&a.lung_share),
                seconds_per_image: mean(&a.seconds),
            },
        );
    }
    let size = bundle.input_size();
    Ok(FaithfulnessReport {
        films: films.len(),
        randomization_films: kept_references.len(),
        cascade,
        area_fraction: region.area_fraction(size, size),
        region,
        methods: report,
    })
}

/// Cascading randomisation: a fresh copy of the model per step, re-initialised from the top
/// down to that step's layers, and each kept map's rank correlation with the copy's map.
fn randomization_curves(
    bundle_dir: &Path,
    bundle: &Bundle,
    cascade: &[(String, Vec<String>)],
    kept: &[KeptMap],
    references: &[References],
    config: &FaithfulnessConfig,
    observer: &mut dyn FnMut(StudyEvent<'_>) -> Result<(), Error>,
) -> Result<BTreeMap<Method, Vec<RandomizationPoint>>, Error> {
    let mut curves: BTreeMap<Method, Vec<RandomizationPoint>> = BTreeMap::new();
    for step in 0..cascade.len() {
        let randomized = Bundle::load(bundle_dir, bundle.device())?;
        let prefixes: Vec<String> = cascade[..=step]
            .iter()
            .flat_map(|(_, p)| p.iter().cloned())
            .collect();
        randomize_weights(&randomized.varmap, &prefixes, config.seed)?;
        let mut per_method: BTreeMap<Method, Vec<f64>> = BTreeMap::new();
        for (k, class, method, trained) in kept {
            let map = saliency(
                &randomized.model,
                *method,
                &references[*k],
                *class,
                &config.settings,
            )?;
            per_method
                .entry(*method)
                .or_default()
                .push(spearman(&trained.values, &map.values)?);
        }
        for (method, values) in per_method {
            curves.entry(method).or_default().push(RandomizationPoint {
                randomized_up_to: cascade[step].0.clone(),
                spearman_mean: mean(&values),
            });
        }
        observer(StudyEvent::RandomizationStep {
            step: step + 1,
            of: cascade.len(),
        })?;
    }
    Ok(curves)
}

/// `limit` items spread evenly over `items` (all of them if there are fewer).
pub fn spread<T: Clone>(items: &[T], limit: usize) -> Vec<T> {
    let step = (items.len() as f64 / limit.max(1) as f64).max(1.0);
    (0..limit.min(items.len()))
        .map(|k| items[(k as f64 * step) as usize].clone())
        .collect()
}

impl FaithfulnessReport {
    /// Writes [`FaithfulnessReport::to_json`] to `path`, pretty-printed.
    pub fn write_json(
        &self,
        path: &Path,
        config: &FaithfulnessConfig,
        model: &Path,
        data: serde_json::Value,
    ) -> Result<(), Error> {
        let json =
            serde_json::to_string_pretty(&self.to_json(config, model, data)).map_err(|source| {
                crate::ErrorKind::Json {
                    what: path.display().to_string(),
                    source,
                }
            })?;
        std::fs::write(path, json + "\n").map_err(|e| Error::io(path, e))
    }

    /// `explain.json`: the model and data (`data`, as the caller describes it), the settings,
    /// how the curves and the randomisation were made, and every method's evidence.
    pub fn to_json(
        &self,
        config: &FaithfulnessConfig,
        model: &Path,
        data: serde_json::Value,
    ) -> serde_json::Value {
        serde_json::json!({
            "model": model,
            "data": data,
            "explained_class": "the model's decision at the bundle threshold",
            "settings": config.settings,
            "perturbation": {
                "steps": config.perturbation_steps,
                "deletion_fill": "the film blurred with sigma = 5% of its side",
                "order": "8x8-pixel tiles at 224 px (side / 28), by mean saliency",
                "insertion_start": "film blurred with sigma = 5% of its side",
            },
            "randomization": {
                "films": self.randomization_films,
                "cascade": self.cascade,
                "reinitialised": "weights with 2+ dimensions, He-normal",
            },
            "region": { "definition": self.region, "area_fraction": self.area_fraction },
            "methods": self.methods,
            "disclaimer": xray_eval::DISCLAIMER,
        })
    }

    /// One line per method: the randomisation correlation, the deletion and insertion areas
    /// against random, the lung share and the time per map.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<22} {:>12} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}\n",
            "method", "random rho", "del", "del rnd", "ins", "ins rnd", "lung share", "s/image"
        );
        for (name, r) in &self.methods {
            out += &format!(
                "{:<22} {:>12.3} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>10.3} {:>9.3}\n",
                name,
                r.randomization_spearman,
                r.deletion_auc,
                r.deletion_auc_random,
                r.insertion_auc,
                r.insertion_auc_random,
                r.lung_share,
                r.seconds_per_image
            );
        }
        out + &format!(
            "thoracic region: {:.3} of the image area (a flat map's share)\n",
            self.area_fraction
        )
    }
}
