"""Turns `evaluate` runs of Rust bundles into the logits file layout of `tools/recipe_study.py`,
so that `tools/shift_rules.py` studies them beside (and mixed with) the study's models.

    python tools/import_predictions.py --data ../shared/data/kermany224 --design family \
        --runs scratch_cnn/42=runs/eval_s42 scratch_cnn/43=runs/eval_s43 --out scratch.npz

Each run folder holds `validation/predictions.csv` and `test/predictions.csv`, written by
`evaluate --holdout validation` and `--holdout test` of a bundle trained on the design's patient
lists (`--split-file`). Films are matched by file name; the probabilities (6 decimals) become
logits, clipped at 1e-6 from 0 and 1. NumPy only.
"""
import argparse
import csv
import os

import numpy as np

from designs import design_sides, read_manifest


def read_probabilities(path):
    with open(path) as f:
        return {os.path.basename(r["path"]): float(r["probability"]) for r in csv.DictReader(f)}


def logits_of(probabilities, names):
    p = np.clip([probabilities[n] for n in names], 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--design", required=True)
    ap.add_argument("--runs", nargs="+", required=True,
                    help="RECIPE/SEED=FOLDER: the run's evaluate folder, filed under that recipe")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    labels, patients, names = read_manifest(args.data)
    side = np.array(design_sides(args.design, patients, labels, names))
    names = np.array(names)
    arrays = {"labels": labels, "names": names, f"side_{args.design}": side}
    for pair in args.runs:
        run, folder = pair.split("=", 1)
        recipe, seed = run.rsplit("/", 1)
        for key, holdout, side_name in (("val", "validation", "val"), ("hold", "test", "hold")):
            found = read_probabilities(os.path.join(folder, holdout, "predictions.csv"))
            wanted = names[side == side_name]
            missing = [n for n in wanted if n not in found]
            if missing or len(found) != len(wanted):
                raise SystemExit(f"{folder}/{holdout}: {len(found)} films, the design has "
                                 f"{len(wanted)} ({len(missing)} missing, e.g. {missing[:1]})")
            arrays[f"{key}|{args.design}|{recipe}|{seed}"] = logits_of(found, wanted)
    np.savez_compressed(args.out, **arrays)
    print(f"{args.out}: {len(args.runs)} run(s) on the {args.design} design")


if __name__ == "__main__":
    main()
