"""Writes tests/fixtures/heldout_predictions.csv, what tests/shipped_predictions.rs holds the
shipped bundles to, from `evaluate --holdout test` runs of them:

    python tools/make_prediction_fixture.py mobilenet_v2=runs/mnv2 scratch_cnn=runs/scratch

Each run folder holds evaluate's predictions.csv; the fixture keeps the bundle name, the film's
file name, the probability and the out-of-distribution score. Standard library only.
"""
import csv
import os
import sys


def main():
    pairs = [a.split("=", 1) for a in sys.argv[1:]]
    if not pairs:
        raise SystemExit(__doc__)
    with open("tests/fixtures/heldout_predictions.csv", "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["bundle", "film", "probability", "ood_score"])
        for bundle, folder in pairs:
            with open(os.path.join(folder, "predictions.csv")) as f:
                for row in csv.DictReader(f):
                    writer.writerow([bundle, os.path.basename(row["path"]), row["probability"],
                                     row["ood_score"]])


if __name__ == "__main__":
    main()
