"""Issue 17: what a bundle's decisions (the conformal refer band and the out-of-distribution score
together) do under controlled shifts, reweighted to the official test's prevalence.

    python tools/refer_under_shift.py --alpha 0.05 runs/shift/mnv2_s42 [runs/shift/mnv2_s43 ...]

Each folder is an output of ``tools/evaluate_shifts.sh``: one sub-folder per condition with
``validation/predictions.csv`` (unshifted) and ``test/predictions.csv``. The band is refitted at
``--alpha`` on the validation probabilities as ``ConformalBounds::fit`` does (per class the
ceil((n + 1)(1 - alpha))-th smallest nonconformity: p for normals, 1 - p for pneumonias); a film
is referred when it is out of distribution (the bundle's own flag) or its prediction set is not
one class, and otherwise called that class. Per condition, mean over the folders given (e.g.
seeds): the share referred, accuracy on the films called, normals and pneumonias referred, and
the share called wrongly, each class weighted to 62.5% pneumonia. Standard library only.
"""
import argparse
import csv
import math
import os

PREVALENCE = 0.625


def read(path):
    with open(path) as f:
        return [(r["label"], float(r["probability"]), r["out_of_distribution"] == "true")
                for r in csv.DictReader(f)]


def quantile(scores, alpha):
    rank = math.ceil((len(scores) + 1) * (1 - alpha))
    return math.inf if rank > len(scores) else sorted(scores)[rank - 1]


def band(validation, alpha):
    """(normal_upper, pneumonia_lower) of class-conditional split conformal prediction."""
    normal = [p for label, p, _ in validation if label == "NORMAL"]
    pneumonia = [1 - p for label, p, _ in validation if label == "PNEUMONIA"]
    return quantile(normal, alpha), 1 - quantile(pneumonia, alpha)


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
    for condition in conditions:
        rows = []
        for folder in args.folders:
            bounds = band(read(os.path.join(folder, "none", "validation", "predictions.csv")), args.alpha)
            rows.append(rates(read(os.path.join(folder, condition, "test", "predictions.csv")), bounds))
        mean = [sum(r[i] for r in rows) / len(rows) for i in range(5)]
        print(f"{condition}: " + " / ".join(f"{x:.3f}" for x in mean))


if __name__ == "__main__":
    main()
