#!/usr/bin/env python3
"""Writes the independent reference for the MobileNetV2 loading test (run once, by hand).

torchvision's mobilenet_v2 loads ../shared/weights strictly and scores two deterministic inputs;
the Rust test rebuilds the same inputs from the formula below and compares logits.

    python3 -m venv VENV && VENV/bin/pip install torch torchvision safetensors
    VENV/bin/python tools/make_imagenet_fixture.py
"""
import json, pathlib, sys

import torch, torchvision
from safetensors.torch import load_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
WEIGHTS = ROOT.parent / "shared/weights/mobilenet_v2_imagenet_keras_int8.safetensors"
OUT = ROOT / "crates/xray-models/tests/fixtures/imagenet_logits.json"
BATCH, SIZE = 2, 224


def fixture_input():
    # x[i] = ((i * 7919) mod 10007) / 10007 * 2 - 1 over the flat (2, 3, 224, 224) index: exact in
    # integers, so Rust rebuilds the same f32 values.
    n = BATCH * 3 * SIZE * SIZE
    i = torch.arange(n, dtype=torch.float64)
    x = torch.remainder(i * 7919, 10007) / 10007 * 2 - 1
    return x.to(torch.float32).reshape(BATCH, 3, SIZE, SIZE)


def main():
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(load_file(str(WEIGHTS)), strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(fixture_input()).double()
    OUT.write_text(json.dumps({
        "source": f"torchvision {torchvision.__version__} mobilenet_v2, torch {torch.__version__}, eval mode",
        "weights_sha256": "e7ef81d7517898d1edb68c9b8ee0b8ade1ffe724de13541fa7d458bb0128203b",
        "input": "x[i] = ((i * 7919) mod 10007) / 10007 * 2 - 1, flat index over (2, 3, 224, 224)",
        "logits": [[float(f"{v:.7g}") for v in row] for row in logits.tolist()],
    }) + "\n")
    print("wrote", OUT, "top-1:", logits.argmax(1).tolist(), file=sys.stderr)


if __name__ == "__main__":
    main()
