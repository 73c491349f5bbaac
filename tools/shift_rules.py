"""Issue 17: which threshold rule and which refer band hold up under shift.

Reads the per-film logits that ``tools/recipe_study.py`` saved (``reports/shift_study/logits.npz``:
validation and held-out logits of every run, with each design's split) and, for each design and
recipe, applies threshold rules chosen on validation to the held-out films:

- Youden's J, and the highest threshold reaching a target sensitivity (0.99 ... 0.90);
- class-conditional split conformal prediction at error rate alpha: normal conforms while
  p <= the (n+1)(1-alpha) quantile of validation normals' p, pneumonia while 1 - p <= the same
  quantile of validation pneumonias' 1 - p; a set of both or neither is a refer.

Accuracy, precision and F1 are also given reweighted to the official test's prevalence (62.5%
pneumonia), from recall and specificity. Means over seeds, then the seed ensemble (mean logit).
Several logits files are merged (``tools/import_predictions.py`` writes Rust bundles' in the same
layout); ``--mix A+B`` adds, per design and seed, a recipe whose logit is the mean of recipes A's
and B's (an ensemble of two architectures).
Usage: ``python tools/shift_rules.py [FILE.npz ...] [--mix A+B ...]`` (NumPy only; default file
``reports/shift_study/logits.npz``).
"""
import argparse

import numpy as np

PREVALENCE = 0.625


def youden(s, y):
    best, best_t = -1.0, 0.0
    for t in np.unique(s):
        p = s >= t
        j = (p & (y == 1)).sum() / (y == 1).sum() + (~p & (y == 0)).sum() / (y == 0).sum()
        if j > best:
            best, best_t = j, t
    return best_t


def target_sensitivity(s, y, target):
    positives = np.sort(s[y == 1])
    return positives[int(np.floor((1 - target) * len(positives)))]


def at(s, y, t):
    p = s >= t
    recall = (p & (y == 1)).sum() / (y == 1).sum()
    spec = (~p & (y == 0)).sum() / (y == 0).sum()
    precision = PREVALENCE * recall / (PREVALENCE * recall + (1 - PREVALENCE) * (1 - spec))
    accuracy = PREVALENCE * recall + (1 - PREVALENCE) * spec
    return np.array([recall, spec, precision, accuracy, 2 * precision * recall / (precision + recall)])


def conformal_quantile(scores, alpha):
    n = len(scores)
    rank = int(np.ceil((n + 1) * (1 - alpha)))
    return np.inf if rank > n else np.sort(scores)[rank - 1]


def conformal_bounds(p, y, alpha):
    """(normal_upper, pneumonia_lower) of class-conditional split conformal prediction fitted on
    probabilities p with labels y (1 = pneumonia), as ``ConformalBounds::fit`` computes them."""
    return conformal_quantile(p[y == 0], alpha), 1 - conformal_quantile(1 - p[y == 1], alpha)


def band(v, yv, h, yh, alpha):
    """Coverage, accuracy on the films called, and the shares of each class referred."""
    pv, ph = 1 / (1 + np.exp(-v)), 1 / (1 + np.exp(-h))
    normal_upper, pneumonia_lower = conformal_bounds(pv, yv, alpha)
    normal, pneumonia = ph <= normal_upper, ph >= pneumonia_lower
    called = normal ^ pneumonia
    right = (pneumonia[called] == (yh[called] == 1)).mean()
    return np.array([called.mean(), right, (~called)[yh == 0].mean(), (~called)[yh == 1].mean()])


def em_prior(p, training_prior):
    """Saerens et al. (2002): the prevalence of films with posteriors p (made under
    training_prior), re-estimated until it settles."""
    prior = training_prior
    z = np.log(np.clip(p, 1e-12, 1 - 1e-12) / (1 - np.clip(p, 1e-12, 1 - 1e-12)))
    for _ in range(10000):
        shift = np.log(prior / (1 - prior)) - np.log(training_prior / (1 - training_prior))
        new = (1 / (1 + np.exp(-(z + shift)))).mean()
        if abs(new - prior) < 1e-9:
            return new
        prior = new
    return prior


def adapted(v, yv, h, yh, alpha=0.025):
    """The conformal threshold before and after EM prior-shift adaptation (raw logits taken as
    calibrated): true and estimated held-out prevalence, recall and specificity both ways."""
    positives = np.sort(1 - 1 / (1 + np.exp(-v[yv == 1])))
    t = 1 - positives[min(int(np.ceil((len(positives) + 1) * (1 - alpha))), len(positives)) - 1]
    prior = em_prior(1 / (1 + np.exp(-h)), yv.mean())
    shift = np.log(prior / (1 - prior)) - np.log(yv.mean() / (1 - yv.mean()))
    t2 = 1 / (1 + np.exp(-(np.log(t / (1 - t)) - shift)))
    ph = 1 / (1 + np.exp(-h))
    def rs(th):
        p = ph >= th
        return (p & (yh == 1)).sum() / (yh == 1).sum(), (~p & (yh == 0)).sum() / (yh == 0).sum()
    return np.array([yh.mean(), prior, *rs(t), *rs(t2)])


def auc(s, y):
    ranks = np.empty(len(s))
    order = np.argsort(s, kind="mergesort")
    ranks[order] = np.arange(1, len(s) + 1)
    for value in np.unique(s[np.diff(np.sort(s), prepend=np.nan) == 0]):
        ranks[s == value] = ranks[s == value].mean()
    n1, n0 = (y == 1).sum(), (y == 0).sum()
    return (ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def conformal_threshold(v, yv, alpha):
    """The pneumonia bound of class-conditional split conformal prediction, as a logit."""
    return -conformal_quantile(-v[yv == 1], alpha)


def load(files, mixes):
    """The merged arrays of `files`, plus one recipe per `A+B` in `mixes` (mean logit)."""
    z = {}
    for f in files:
        with np.load(f) as part:
            for k in part.files:
                if k in ("labels", "names") or k.startswith("side_"):
                    if k in z and not np.array_equal(z[k], part[k]):
                        raise SystemExit(f"{f}: {k} differs from the other files")
                z[k] = part[k]
    for mix in mixes:
        a, b = mix.split("+")
        for k in [k for k in z if k.split("|")[2:3] == [a]]:
            kind, design, _, seed = k.split("|")
            other = f"{kind}|{design}|{b}|{seed}"
            if other in z:
                z[f"{kind}|{design}|{mix}|{seed}"] = (z[k] + z[other]) / 2
    return z


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", default=["reports/shift_study/logits.npz"])
    ap.add_argument("--mix", action="append", default=[], help="A+B: mean logit of two recipes")
    ap.add_argument("--pool", action="append", default=[],
                    help="PREFIX[=A,B,...]: also the mean, per rule, over the recipes starting "
                         "with PREFIX (e.g. one model under several controlled shifts), or only "
                         "over PREFIX followed by A, B, ... (e.g. mobilenet_v2@=blur_3,gamma_2)")
    args = ap.parse_args()
    z = load(args.files, args.mix)
    y = z["labels"]
    runs = sorted({tuple(k.split("|")[1:]) for k in z if k.startswith("hold|")})
    groups = sorted({(d, r) for d, r, _ in runs})
    rules = [("youden", None)] + [(f"conformal_{a}", ("conformal", a)) for a in (0.025, 0.05, 0.1)]
    rules += [(f"sensitivity_{t}", t) for t in (0.99, 0.975, 0.95, 0.90, 0.85)]
    print("design recipe rule: recall / specificity / precision / accuracy / F1 at 62.5% (seed mean; ensemble)")
    pooled = {}
    for design, recipe in groups:
        side = z[f"side_{design}"]
        yv, yh = y[side == "val"], y[side == "hold"]
        seeds = [s for d, r, s in runs if (d, r) == (design, recipe)]
        vals = [z[f"val|{design}|{recipe}|{s}"] for s in seeds]
        holds = [z[f"hold|{design}|{recipe}|{s}"] for s in seeds]
        ensemble = (np.mean(vals, 0), np.mean(holds, 0))
        aucs = [auc(h, yh) for h in holds]
        print(f"{design} {recipe} held-out AUC: seeds {' / '.join(f'{a:.4f}' for a in aucs)}; "
              f"ensemble of {len(seeds)} {auc(ensemble[1], yh):.4f}")
        for name, target in rules:
            def rule(v):
                if target is None:
                    return youden(v, yv)
                if isinstance(target, tuple):
                    return conformal_threshold(v, yv, target[1])
                return target_sensitivity(v, yv, target)
            per_seed = np.mean([at(h, yh, rule(v)) for v, h in zip(vals, holds)], 0)
            ens = at(ensemble[1], yh, rule(ensemble[0]))
            for pool in args.pool:
                prefix, _, members = pool.partition("=")
                if (recipe in [prefix + m for m in members.split(",")] if members
                        else recipe.startswith(prefix)):
                    pooled.setdefault((design, pool, name), []).append(per_seed)
            print(f"{design} {recipe} {name}: " + " / ".join(f"{x:.3f}" for x in per_seed)
                  + " ; " + " / ".join(f"{x:.3f}" for x in ens))
        for alpha in (0.01, 0.025, 0.05):
            m = np.mean([band(v, yv, h, yh, alpha) for v, h in zip(vals, holds)], 0)
            print(f"{design} {recipe} conformal alpha {alpha}: coverage {m[0]:.3f}, accuracy called "
                  f"{m[1]:.4f}, normals referred {m[2]:.3f}, pneumonias referred {m[3]:.3f}")
        m = np.mean([adapted(v, yv, h, yh) for v, h in zip(vals, holds)], 0)
        print(f"{design} {recipe} EM prior shift: held-out prevalence {m[0]:.3f}, estimated "
              f"{m[1]:.3f}; conformal 0.025 recall/specificity {m[2]:.3f}/{m[3]:.3f}, adapted "
              f"{m[4]:.3f}/{m[5]:.3f}")

    for (design, prefix, name), rows in pooled.items():
        m, worst = np.mean(rows, 0), np.min(rows, 0)
        print(f"{design} pool {prefix} ({len(rows)} recipes) {name}: "
              + " / ".join(f"{x:.3f}" for x in m) + f" ; worst accuracy {worst[3]:.3f}")


if __name__ == "__main__":
    main()
