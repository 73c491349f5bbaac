"""Validation designs: patient-level splits of the training folder into train / validation /
held-out, for the designs a seed cannot draw (issue 6, docs/generalisation.md):

- ``random``: a bundle's own seed-42 split, patient lists read from its config.json.
- ``low_id`` / ``high_id``: the lowest- or highest-numbered 20% of patients of each file-name
  family (``IM-``, ``NORMAL2-IM-``, ``person``) held out: an earlier or later acquisition period.
- ``family``: every ``NORMAL2-IM-`` normal and 40% of pneumonia patients held out, so training
  and validation see only ``IM-`` normals and the held-out normals come from another series.

``tools/recipe_study.py`` imports these functions. Run as a program, it writes one design as the
patient lists the Rust training programs take (``--split-file``):

    python tools/designs.py --data ../shared/data/kermany224 --design family --out splits/family.json

NumPy only; the same seed (7) as the studies, so the lists are the films the studies held out.
"""
import argparse
import csv
import json
import os
import re

import numpy as np

DESIGN_SEED = 7


def family_and_number(name):
    if name.startswith("NORMAL2-IM-"):
        return "NORMAL2", int(name.split("-")[2])
    if name.startswith("IM-"):
        return "IM", int(name.split("-")[1])
    m = re.match(r"person(\d+)_", name)
    return "person", int(m.group(1))


def split_random_from_config(patients, config_path):
    split = json.load(open(config_path))["split"]
    side = {}
    for name, key in (("train", "train_patients"), ("val", "validation_patients"), ("hold", "test_patients")):
        for p in split[key]:
            side[p] = name
    return [side.get(p, "train") for p in patients]


def split_by_rule(patients, labels, names, held_patients, seed, val_fraction=0.18):
    rng = np.random.default_rng(seed)
    rest = sorted({p for p in patients if p not in held_patients})
    label_of = {p: labels[i] for i, p in enumerate(patients)}
    val = set()
    for cls in (0.0, 1.0):
        group = [p for p in rest if label_of[p] == cls]
        rng.shuffle(group)
        val.update(group[: int(round(val_fraction * len(group)))])
    return ["hold" if p in held_patients else "val" if p in val else "train" for p in patients]


def id_range_held(patients, names, low, fraction=0.2):
    by_family = {}
    for p, n in zip(patients, names):
        fam, num = family_and_number(n)
        by_family.setdefault(fam, {})[p] = num
    held = set()
    for fam, nums in by_family.items():
        order = sorted(nums, key=lambda p: nums[p], reverse=not low)
        held.update(order[: int(round(fraction * len(order)))])
    return held


def family_held(patients, names, seed):
    rng = np.random.default_rng(seed)
    held = {p for p, n in zip(patients, names) if n.startswith("NORMAL2-IM-")}
    pneu = sorted({p for p, n in zip(patients, names) if n.startswith("person")})
    rng.shuffle(pneu)
    held.update(pneu[: int(0.4 * len(pneu))])
    return held


def read_manifest(root):
    """Labels (1.0 pneumonia), patient ids and file names, in the manifest's order."""
    rows = list(csv.DictReader(open(os.path.join(root, "manifest.csv"))))
    labels = np.array([r["label"] == "PNEUMONIA" for r in rows], dtype=np.float32)
    return labels, [r["patient_id"] for r in rows], [os.path.basename(r["path"]) for r in rows]


def design_sides(design, patients, labels, names, split_config=None):
    """Each film's side ("train", "val" or "hold") under one design."""
    if design == "random":
        return split_random_from_config(patients, split_config)
    if design in ("low_id", "high_id"):
        held = id_range_held(patients, names, design == "low_id")
    elif design == "family":
        held = family_held(patients, names, DESIGN_SEED)
    else:
        raise ValueError(f"unknown design {design!r}: random, low_id, high_id or family")
    return split_by_rule(patients, labels, names, held, DESIGN_SEED)


def patient_lists(patients, sides):
    """The JSON object the Rust programs' --split-file reads."""
    key = {"train": "train_patients", "val": "validation_patients", "hold": "test_patients"}
    lists = {k: set() for k in key.values()}
    for p, side in zip(patients, sides):
        lists[key[side]].add(p)
    return {k: sorted(v) for k, v in lists.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="folder with manifest.csv (and train/)")
    ap.add_argument("--design", required=True, choices=["random", "low_id", "high_id", "family"])
    ap.add_argument("--split-config", help="bundle config.json, for the random design")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    labels, patients, names = read_manifest(args.data)
    lists = patient_lists(patients, design_sides(args.design, patients, labels, names, args.split_config))
    lists["design"] = args.design
    with open(args.out, "w") as f:
        json.dump(lists, f, indent=1)
        f.write("\n")
    sizes = {k: len(v) for k, v in lists.items() if k != "design"}
    print(f"{args.out}: {args.design} design, patients per side {sizes}")


if __name__ == "__main__":
    main()
