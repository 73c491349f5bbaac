"""Issue 17: what a bundle's decisions (the conformal refer band and the out-of-distribution score
together) do under controlled shifts, reweighted to the official test's prevalence.

    python tools/refer_under_shift.py --alpha 0.05 runs/shift/mnv2_s42 [runs/shift/mnv2_s43 ...]

Each folder is an output of ``tools/evaluate_shifts.sh``: one sub-folder per condition with
``validation/predictions.csv`` (unshifted) and ``test/predictions.csv``. The band is refitted at
``--alpha`` on the validation probabilities of ``none`` with ``shift_rules.conformal_bounds`` (as
``ConformalBounds::fit`` does); a film is referred when it is out of distribution (the bundle's
own flag) or its prediction set is not one class, and otherwise called that class. Per
condition, mean over the folders given (e.g. seeds): the share referred, accuracy on the films
called, normals and pneumonias referred, and the share called wrongly, each class weighted to
62.5% pneumonia. NumPy only.
"""
import argparse
import csv
import os

import numpy as np

from shift_rules import conformal_bounds

PREVALENCE = 0.625


def read(path):
    with open(path) as f:
        return [(r["label"], float(r["probability"]), r["out_of_distribution"] == "true")
                for r in csv.DictReader(f)]


def band(validation, alpha):
    """(normal_upper, pneumonia_lower) fitted on one folder's validation films."""
    p = np.array([p for _, p, _ in validation])
    y = np.array([label == "PNEUMONIA" for label, _, _ in validation], dtype=int)
    return conformal_bounds(p, y, alpha)


def rates(films, bounds):
    normal_upper, pneumonia_lower = bounds
    counts = {c: [0, 0, 0] for c in ("NORMAL", "PNEUMONIA")}
    for label, p, ood in films:
        c = counts[label]
        c[0] += 1
        is_normal, is_pneumonia = p <= normal_upper, p >= pneumonia_lower
        if ood or is_normal == is_pneumonia:
            c[1] += 1
        elif ("PNEUMONIA" if is_pneumonia else "NORMAL") != label:
            c[2] += 1
    (n0, r0, w0), (n1, r1, w1) = counts["NORMAL"], counts["PNEUMONIA"]
    referred = (1 - PREVALENCE) * r0 / n0 + PREVALENCE * r1 / n1
    wrong = (1 - PREVALENCE) * w0 / n0 + PREVALENCE * w1 / n1
    accuracy = 1 - wrong / (1 - referred) if referred < 1 else float("nan")
    return [referred, accuracy, r0 / n0, r1 / n1, wrong]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alpha", type=float, default=0.025)
    ap.add_argument("folders", nargs="+")
    args = ap.parse_args()
    conditions = sorted(os.listdir(args.folders[0]), key=lambda c: (c != "none", c))
    print(f"alpha {args.alpha}; condition: referred / accuracy on films called / normals referred"
          f" / pneumonias referred / called wrongly, at 62.5% pneumonia (mean of {len(args.folders)})")
    bands = [band(read(os.path.join(f, "none", "validation", "predictions.csv")), args.alpha)
             for f in args.folders]
    for condition in conditions:
        rows = [rates(read(os.path.join(f, condition, "test", "predictions.csv")), bounds)
                for f, bounds in zip(args.folders, bands)]
        mean = [sum(r[i] for r in rows) / len(rows) for i in range(5)]
        print(f"{condition}: " + " / ".join(f"{x:.3f}" for x in mean))


if __name__ == "__main__":
    main()
