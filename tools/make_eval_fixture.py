#!/usr/bin/env python3
"""Writes the independent reference for the evaluation tests (run once, by hand).

Inputs are drawn here with a fixed seed; expected values come from scikit-learn (metrics, ROC and
PR curves, average precision, Brier, reliability bins), SciPy (temperature by bounded Brent
minimisation, normal tail), statsmodels (McNemar) and a direct O(m n) implementation of
DeLong et al. (1988), Biometrics 44:837-845, eqs. for the structural components and their
covariance (pairwise comparisons, no ranks: independent of the Rust mid-rank version).

    python3 -m venv VENV && VENV/bin/pip install numpy scipy scikit-learn statsmodels
    VENV/bin/python tools/make_eval_fixture.py
"""
import json, pathlib

import numpy as np
import scipy, sklearn, statsmodels
from scipy.optimize import minimize_scalar
from scipy.stats import norm, spearmanr
from sklearn.calibration import calibration_curve
from sklearn.metrics import (accuracy_score, average_precision_score, brier_score_loss,
                             f1_score, precision_recall_curve, precision_score, recall_score,
                             roc_auc_score, roc_curve)
from statsmodels.stats.contingency_tables import mcnemar

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/xray-eval/tests/fixtures/eval_reference.json"
N, BINS = 300, 10


def grid(x):
    # Multiples of 1/400 shifted by 1/1600: ties happen, equal-width bin edges never do.
    return np.clip(np.round(x * 400) / 400, 0, 0.995) + 1 / 1600


def main():
    rng = np.random.default_rng(20261125)
    labels = rng.random(N) < 0.6
    groups = np.sort(rng.integers(0, 180, N))
    noise_a, noise_b = rng.normal(size=N), rng.normal(size=N)
    scores_a = grid(1 / (1 + np.exp(-(1.6 * labels - 0.8 + 1.1 * noise_a))))
    scores_b = grid(1 / (1 + np.exp(-(1.2 * labels - 0.1 + 0.8 * noise_a + 0.7 * noise_b))))
    logits = np.log(scores_a / (1 - scores_a)) * 2.3 + 0.1 * rng.normal(size=N)
    y = labels.astype(int)

    def at(t, s):
        pred = (s >= t).astype(int)
        return dict(threshold=t, accuracy=accuracy_score(y, pred),
                    precision=precision_score(y, pred, zero_division=0),
                    recall=recall_score(y, pred), specificity=recall_score(1 - y, 1 - pred),
                    f1=f1_score(y, pred, zero_division=0))

    fpr, tpr, roc_t = roc_curve(y, scores_a, drop_intermediate=False)
    prec, rec, pr_t = precision_recall_curve(y, scores_a)
    spec = 1 - fpr

    def sens_at_spec(target):
        ok = spec >= target - 1e-12
        best = np.lexsort((spec[ok], tpr[ok]))[-1]
        return dict(target=target, threshold=float(roc_t[ok][best]), sensitivity=tpr[ok][best],
                    specificity=spec[ok][best])

    def spec_at_sens(target):
        ok = tpr >= target - 1e-12
        best = np.lexsort((tpr[ok], spec[ok]))[-1]
        return dict(target=target, threshold=float(roc_t[ok][best]), sensitivity=tpr[ok][best],
                    specificity=spec[ok][best])

    youden = 1 + tpr - fpr - 1
    finite = np.isfinite(roc_t)
    j_best = np.max(youden[finite])
    youden_threshold = float(np.min(roc_t[finite][youden[finite] >= j_best - 1e-12]))

    def spec_rule(target):  # lowest threshold whose specificity reaches target
        ok = finite & (spec >= target)
        return float(np.min(roc_t[ok]))

    # Calibration: equal-width via sklearn's bins, equal-mass by array_split of a stable sort.
    prob_true, prob_pred = calibration_curve(y, scores_a, n_bins=BINS, strategy="uniform")
    edges = np.linspace(0, 1, BINS + 1)
    ids = np.searchsorted(edges[1:-1], scores_a)
    counts = np.bincount(ids, minlength=BINS)
    counts = counts[counts > 0]
    ece_width = float(np.sum(counts / N * np.abs(prob_true - prob_pred)))
    order = np.argsort(scores_a, kind="stable")
    ece_mass = sum(len(c) / N * abs(y[c].mean() - scores_a[c].mean())
                   for c in np.array_split(order, BINS))

    def nll(t):
        z = logits / t
        return float(np.mean(np.logaddexp(0, z) - y * z))

    temperature = minimize_scalar(nll, bounds=(0.05, 20), method="bounded",
                                  options=dict(xatol=1e-12)).x

    # DeLong by definition: psi over every (positive, negative) pair.
    def components(s):
        x, w = s[labels], s[~labels]
        psi = (x[:, None] > w[None, :]) + 0.5 * (x[:, None] == w[None, :])
        return psi.mean(axis=1), psi.mean(axis=0)
    a10, a01 = components(scores_a)
    b10, b01 = components(scores_b)
    m, n = labels.sum(), (~labels).sum()
    s10, s01 = np.cov(np.vstack([a10, b10])), np.cov(np.vstack([a01, b01]))
    s = s10 / m + s01 / n
    var_diff = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    z = (a10.mean() - b10.mean()) / np.sqrt(var_diff)

    correct_a = (scores_a >= 0.5) == labels
    correct_b = (scores_b >= 0.5) == labels
    table = [[np.sum(correct_a & correct_b), np.sum(correct_a & ~correct_b)],
             [np.sum(~correct_a & correct_b), np.sum(~correct_a & ~correct_b)]]
    chi = mcnemar(table, exact=False, correction=True)
    exact = mcnemar(table, exact=True)

    half = at(0.5, scores_a)
    prevalence = 0.625
    ppv = half["recall"] * prevalence / (half["recall"] * prevalence
                                         + (1 - half["specificity"]) * (1 - prevalence))
    npv = half["specificity"] * (1 - prevalence) / (half["specificity"] * (1 - prevalence)
                                                     + (1 - half["recall"]) * prevalence)

    out = dict(
        source=f"tools/make_eval_fixture.py with scikit-learn {sklearn.__version__}, SciPy "
               f"{scipy.__version__}, statsmodels {statsmodels.__version__}, numpy {np.__version__}",
        labels=labels.tolist(), groups=groups.tolist(), scores_a=scores_a.tolist(),
        scores_b=scores_b.tolist(), logits=logits.tolist(), bins=BINS,
        at_threshold=[at(0.5, scores_a), at(0.3700625, scores_a)],
        roc_auc=roc_auc_score(y, scores_a),
        roc_curve=dict(fpr=fpr.tolist(), tpr=tpr.tolist(), thresholds=roc_t[1:].tolist()),
        pr_curve=dict(precision=prec[:-1].tolist(), recall=rec[:-1].tolist(),
                      thresholds=pr_t.tolist()),
        average_precision=average_precision_score(y, scores_a),
        brier=brier_score_loss(y, scores_a),
        reliability_equal_width=dict(observed=prob_true.tolist(), mean=prob_pred.tolist(),
                                     counts=counts.tolist()),
        ece_equal_width=ece_width, ece_equal_mass=float(ece_mass),
        temperature=float(temperature),
        sensitivity_at_specificity=[sens_at_spec(0.9), sens_at_spec(0.95)],
        specificity_at_sensitivity=[spec_at_sens(0.95), spec_at_sens(0.975)],
        youden_threshold=youden_threshold,
        target_specificity_threshold=dict(target=0.9, threshold=spec_rule(0.9)),
        delong=dict(auc_a=a10.mean(), auc_b=b10.mean(), variance_a=s[0, 0], variance_b=s[1, 1],
                    covariance=s[0, 1], z=z, p_value=2 * norm.sf(abs(z))),
        mcnemar=dict(only_a_correct=int(table[0][1]), only_b_correct=int(table[1][0]),
                     statistic=chi.statistic, p_value=chi.pvalue, exact_p_value=exact.pvalue),
        predictive_values=dict(prevalence=prevalence, ppv=ppv, npv=npv),
        spearman_a_b=float(spearmanr(scores_a, scores_b).statistic),
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
