//! Several bundles scored on the same films and compared: each at its own stored threshold with
//! 95% patient-bootstrap intervals, and paired tests between every pair (McNemar on the
//! decisions, DeLong on the ROC AUCs). The `compare` example drives this.

use std::collections::BTreeMap;

use serde::Serialize;
use xray_data::{load_images, Label, LoadOptions, Sample};
use xray_eval::{
    delong_test, mcnemar_test, BootstrapConfig, DeLongTest, McNemarTest, MetricIntervals, Metrics,
    DISCLAIMER,
};
use xray_infer::Bundle;

use crate::evaluation::patient_groups;
use crate::Error;

/// One model's metrics and intervals.
#[derive(Debug, Clone, Serialize)]
pub struct ModelResult {
    /// The bundle, as named by the caller.
    pub model: String,
    /// Metrics at its stored threshold.
    pub metrics: Metrics,
    /// Their patient-bootstrap intervals.
    pub intervals: MetricIntervals,
}

/// The paired tests of two models.
#[derive(Debug, Clone, Serialize)]
pub struct PairResult {
    /// The first model.
    pub a: String,
    /// The second model.
    pub b: String,
    /// McNemar's test on which films each gets right.
    pub mcnemar: McNemarTest,
    /// DeLong's test on the two ROC AUCs.
    pub delong: DeLongTest,
}

/// A finished comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Films scored.
    pub films: usize,
    /// Distinct patients among them.
    pub patients: usize,
    /// The bootstrap's settings.
    pub bootstrap: BootstrapConfig,
    /// Every model, in the order given.
    pub models: Vec<ModelResult>,
    /// Every pair of models.
    pub pairs: Vec<PairResult>,
}

/// Scores each named bundle on `samples` (decoded once per input size) and compares them.
pub fn compare_bundles(
    bundles: &[(String, Bundle)],
    samples: &[Sample],
    bootstrap: BootstrapConfig,
) -> Result<Comparison, Error> {
    let labels: Vec<bool> = samples
        .iter()
        .map(|s| s.label == Label::Pneumonia)
        .collect();
    let patients: Vec<String> = samples.iter().map(|s| s.patient_id.clone()).collect();
    let groups = patient_groups(&patients);
    let mut probabilities = Vec::new();
    let mut models = Vec::new();
    let mut decoded: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for (name, bundle) in bundles {
        let size = bundle.input_size();
        if let std::collections::btree_map::Entry::Vacant(slot) = decoded.entry(size) {
            let options = LoadOptions {
                size,
                skip_unreadable: false,
            };
            slot.insert(load_images(samples.to_vec(), &options)?.images);
        }
        let images: Vec<_> = decoded[&size].iter().collect();
        let p = bundle.probabilities(&images)?;
        let threshold = bundle.config.threshold.value;
        models.push(ModelResult {
            model: name.clone(),
            metrics: Metrics::compute(&p, &labels, threshold)?,
            intervals: MetricIntervals::compute(&p, &labels, &groups, threshold, &bootstrap)?,
        });
        probabilities.push(p);
    }
    let correct = |k: usize| -> Vec<bool> {
        let t = bundles[k].1.config.threshold.value;
        let calls = probabilities[k].iter().map(|&p| p >= t);
        calls.zip(&labels).map(|(call, &l)| call == l).collect()
    };
    let mut pairs = Vec::new();
    for a in 0..bundles.len() {
        for b in a + 1..bundles.len() {
            pairs.push(PairResult {
                a: models[a].model.clone(),
                b: models[b].model.clone(),
                mcnemar: mcnemar_test(&correct(a), &correct(b))?,
                delong: delong_test(&probabilities[a], &probabilities[b], &labels)?,
            });
        }
    }
    Ok(Comparison {
        films: samples.len(),
        patients: groups.iter().max().map_or(0, |g| g + 1),
        bootstrap,
        models,
        pairs,
    })
}

fn cell(i: &xray_eval::Interval) -> String {
    format!("{:.3} ({:.3}-{:.3})", i.estimate, i.lower, i.upper)
}

impl Comparison {
    /// The comparison as Markdown: a table of the models, then one of the pairs; `data` says
    /// in words which films were scored.
    pub fn markdown(&self, data: &str) -> String {
        let mut md = format!(
            "# Model comparison\n\n{DISCLAIMER}\n\nData: {data}: {} films, {} patients. 95% \
             intervals: {} patient-bootstrap resamples, seed {}. Each model at its own stored \
             (validation-chosen) threshold.\n\n\
             | model | accuracy | precision | recall | F1 | ROC AUC | specificity |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n",
            self.films, self.patients, self.bootstrap.resamples, self.bootstrap.seed
        );
        for r in &self.models {
            let i = &r.intervals;
            md += &format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.model,
                cell(&i.accuracy),
                cell(&i.precision),
                cell(&i.recall),
                cell(&i.f1),
                cell(&i.roc_auc),
                cell(&i.specificity),
            );
        }
        md += "\n| A | B | only A right | only B right | McNemar p (exact) | AUC A | AUC B | \
               DeLong z | DeLong p |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
        for p in &self.pairs {
            md += &format!(
                "| {} | {} | {} | {} | {:.4} ({:.4}) | {:.4} | {:.4} | {:.3} | {:.4} |\n",
                p.a,
                p.b,
                p.mcnemar.only_a_correct,
                p.mcnemar.only_b_correct,
                p.mcnemar.p_value,
                p.mcnemar.exact_p_value,
                p.delong.auc_a,
                p.delong.auc_b,
                p.delong.z,
                p.delong.p_value
            );
        }
        md + &format!("\n{DISCLAIMER}\n")
    }
}
