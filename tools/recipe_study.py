"""Issue 6's recipe and validation-design study, run on a lent GPU with PyTorch.

Our Rust trainer fine-tunes MobileNetV2 at about 18 images/s on the project's 2-core machine
(5 minutes an epoch), too slow to compare dozens of recipes under several validation designs.
This script mirrors the Rust recipe (same weights and input scaling, torchvision padding,
pretrained BatchNorm statistics frozen, one-logit head, AdamW with a one-epoch warm-up and cosine
decay, batch 32, class weights n / (2 n_class), the same augmentation ranges, Youden's J on
validation) and varies one thing at a time. The winner is then trained by the documented Rust
command; nothing here produces a shipped bundle.

Only the training folder is read (``--data``, laid out as ``train/{NORMAL,PNEUMONIA}`` with
``manifest.csv``). Validation designs, each a patient-level split into train / validation /
held-out:

- ``random``: the shipped bundles' own seed-42 split, patient lists read from ``--split-config``.
- ``low_id``: held out are the lowest-numbered 20% of patients of each file-name family
  (``IM-``, ``NORMAL2-IM-``, ``person``); numbers follow acquisition order, so this holds out
  an earlier acquisition period.
- ``high_id``: the same with the highest-numbered 20%.
- ``family``: held out are all ``NORMAL2-IM`` normals and 40% of pneumonia patients; training
  sees only ``IM-`` normals, a different acquisition series.

Writes one JSON line per run to ``$OUT/study.jsonl`` (and stdout) and a summary at the end.
Usage: ``python tools/recipe_study.py --data DIR --weights FILE --split-config CONFIG.json``
(``--smoke`` for a seconds-long CPU check).
"""
import argparse
import csv
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from designs import design_sides

# --- MobileNetV2 with torchvision's tensor names -------------------------------------------------


def conv_bn(inp, out, k, stride, groups=1, act=True):
    layers = [nn.Conv2d(inp, out, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(out)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, inp, out, stride, expand):
        super().__init__()
        hidden = inp * expand
        layers = []
        if expand != 1:
            layers.append(conv_bn(inp, hidden, 1, 1))
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, out, 1, bias=False),
                   nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == out

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]

    def __init__(self, outputs=1000):
        super().__init__()
        feats = [conv_bn(3, 32, 3, 2)]
        inp = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                feats.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        feats.append(conv_bn(inp, 1280, 1, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Identity(), nn.Linear(1280, outputs))

    def pooled(self, x):
        return self.features(x).mean((2, 3))

    def forward(self, x):
        return self.classifier(self.pooled(x))


def load_safetensors(path):
    """A minimal safetensors reader (little-endian header length, JSON header, raw tensors), so
    the script needs no package beyond PyTorch and NumPy."""
    import lzma
    raw = lzma.open(path).read() if path.endswith(".xz") else open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(body[a:b], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def pretrained(weights, device):
    model = MobileNetV2(1000)
    model.load_state_dict(load_safetensors(weights), strict=True)
    model.classifier[1] = nn.Linear(1280, 1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.classifier[1].weight.copy_(torch.randn(1, 1280, generator=g) * 0.01)
        model.classifier[1].bias.zero_()
    return model.to(device).to(memory_format=torch.channels_last)


def freeze_bn_stats(model):
    # The weights hold BatchNorm folded into the convolutions: batch statistics would undo it.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


# --- data and splits -------------------------------------------------------------------------------


def load_data(root, limit):
    rows = list(csv.DictReader(open(os.path.join(root, "manifest.csv"))))
    if limit:
        per = {"NORMAL": [], "PNEUMONIA": []}
        for r in rows:
            per[r["label"]].append(r)
        rows = per["NORMAL"][:limit] + per["PNEUMONIA"][:limit]

    try:
        from PIL import Image

        def read(r):
            return np.asarray(Image.open(os.path.join(root, r["path"])).convert("L"), dtype=np.uint8)
    except ImportError:
        import torchvision.io as tio

        def read(r):
            return tio.decode_jpeg(tio.read_file(os.path.join(root, r["path"])), mode=tio.ImageReadMode.GRAY)[0].numpy()

    with ThreadPoolExecutor(16) as pool:
        images = np.stack(list(pool.map(read, rows)))
    labels = np.array([r["label"] == "PNEUMONIA" for r in rows], dtype=np.float32)
    patients = [r["patient_id"] for r in rows]
    names = [os.path.basename(r["path"]) for r in rows]
    return images, labels, patients, names


# --- augmentation on the GPU, mirroring crates/xray-data/src/augment.rs ------------------------------


def uniform(n, lo, hi, g, device):
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def augment(x, recipe, g):
    """x: [B,1,H,W] in [0,1]."""
    n, dev = x.shape[0], x.device
    strong = recipe.get("strong", False)
    rot = uniform(n, -7.0, 7.0, g, dev).deg2rad() if not strong else uniform(n, -10.0, 10.0, g, dev).deg2rad()
    scale = uniform(n, 0.9, 1.1, g, dev) if not strong else uniform(n, 0.85, 1.25, g, dev)
    shift = 0.06 if not strong else 0.08
    tx, ty = uniform(n, -shift, shift, g, dev) * 2, uniform(n, -shift, shift, g, dev) * 2
    cos, sin = rot.cos() / scale, rot.sin() / scale
    theta = torch.stack([torch.stack([cos, sin, -(cos * tx + sin * ty)], 1),
                         torch.stack([-sin, cos, -(-sin * tx + cos * ty)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    if strong:
        gamma = torch.exp(uniform(n, math.log(0.7), math.log(1.5), g, dev)).view(n, 1, 1, 1)
        x = x.clamp(1e-6, 1.0) ** gamma
    b = recipe.get("brightness", 0.08 if not strong else 0.12)
    c = recipe.get("contrast", (0.85, 1.15) if not strong else (0.7, 1.3))
    bright = uniform(n, -b, b, g, dev).view(n, 1, 1, 1)
    contrast = uniform(n, c[0], c[1], g, dev).view(n, 1, 1, 1)
    x = ((x - 0.5) * contrast + 0.5 + bright).clamp(0, 1)
    if strong:
        sigma = uniform(n, 0.0, 1.5, g, dev) * (torch.rand(n, generator=g, device=dev) < 0.5)
        x = blur(x, sigma)
        noise = uniform(n, 0.0, 0.03, g, dev).view(n, 1, 1, 1)
        x = (x + noise * torch.randn(x.shape, generator=g, device=dev)).clamp(0, 1)
    return x


def blur(x, sigma):
    n = x.shape[0]
    r = 3
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp_min(1e-3).view(n, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = k / k.sum(1, keepdim=True)
    k = torch.where(sigma.view(n, 1) < 0.05, (t.view(1, -1) == 0).to(x.dtype), k)
    xs = x.transpose(0, 1)  # [1,B,H,W], one group per image
    xs = F.conv2d(F.pad(xs, (r, r, 0, 0), mode="replicate"), k.view(n, 1, 1, -1), groups=n)
    xs = F.conv2d(F.pad(xs, (0, 0, r, r), mode="replicate"), k.view(n, 1, -1, 1), groups=n)
    return xs.transpose(0, 1)


def views(x):
    """The Rust TTA views: identity, zoom 1.05 and 0.95, rotation +-4 degrees."""
    out = [x]
    for rot, scale in ((0.0, 1.05), (0.0, 0.95), (4.0, 1.0), (-4.0, 1.0)):
        n = x.shape[0]
        a = math.radians(rot)
        cos, sin = math.cos(a) / scale, math.sin(a) / scale
        theta = torch.tensor([[cos, sin, 0.0], [-sin, cos, 0.0]], device=x.device, dtype=x.dtype).expand(n, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        out.append(F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True))
    return out


def to_input(x):
    return (x * 2 - 1).expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)


# --- metrics ------------------------------------------------------------------------------------------


def auc(scores, labels):
    order = np.argsort(scores, kind="mergesort")
    s, y = scores[order], labels[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    pos = y == 1
    npos, nneg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def youden(scores, labels):
    best, best_t = -1, 0.0
    for t in np.unique(scores):
        pred = scores >= t
        j = (pred & (labels == 1)).sum() / (labels == 1).sum() + (~pred & (labels == 0)).sum() / (labels == 0).sum()
        if j > best:
            best, best_t = j, t
    return float(best_t)


def at_threshold(scores, labels, t):
    pred = scores >= t
    pos = labels == 1
    recall = (pred & pos).sum() / pos.sum()
    spec = (~pred & ~pos).sum() / (~pos).sum()
    # Accuracy reweighted to the official test's prevalence (62.5% pneumonia).
    return {"acc": float((pred == pos).mean()), "recall": float(recall), "spec": float(spec),
            "acc_at_625": float(0.625 * recall + 0.375 * spec)}


def summarise(val_s, val_y, hold_s, hold_y):
    t = youden(val_s, val_y)
    return {"val_auc": auc(val_s, val_y), "hold_auc": auc(hold_s, hold_y), "threshold_logit": t,
            "val": at_threshold(val_s, val_y, t), "hold": at_threshold(hold_s, hold_y, t)}


# --- training ------------------------------------------------------------------------------------------


@torch.no_grad()
def logits(model, images, idx, tta, batch=256):
    model.eval()
    out = []
    for s in range(0, len(idx), batch):
        x = images[idx[s:s + batch]].float().unsqueeze(1) / 255
        vs = views(x) if tta else [x]
        with torch.autocast("cuda", torch.bfloat16, enabled=x.is_cuda):
            z = torch.stack([model(to_input(v)).float().squeeze(1) for v in vs]).mean(0)
        out.append(z)
    return torch.cat(out).cpu().numpy()


def train_run(args, images, labels_np, side, recipe, seed, device):
    torch.manual_seed(seed)
    g = torch.Generator(device=device).manual_seed(seed)
    tr = np.flatnonzero(side == "train")
    va = np.flatnonzero(side == "val")
    ho = np.flatnonzero(side == "hold")
    y = torch.tensor(labels_np, device=device)
    model = pretrained(args.weights, device)
    epochs = recipe.get("epochs", args.epochs)
    steps_per_epoch = len(tr) // args.batch
    total = epochs * steps_per_epoch
    lr = recipe.get("lr", 3e-4)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=recipe.get("wd", 1e-3))
    warm = steps_per_epoch

    def lr_at(step):
        if step < warm:
            return lr * (step + 1) / warm
        return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    npos = labels_np[tr].sum()
    class_w = torch.tensor([len(tr) / (2 * (len(tr) - npos)), len(tr) / (2 * npos)], device=device)
    if not recipe.get("class_weights", True):
        class_w = torch.ones(2, device=device)
    ls = recipe.get("label_smoothing", 0.0)
    mix = recipe.get("mixup", 0.0)
    rng = np.random.default_rng(seed)
    history, step = [], 0
    best = None
    for epoch in range(epochs):
        model.train()
        freeze_bn_stats(model)
        perm = rng.permutation(tr)
        for s in range(steps_per_epoch):
            idx = torch.tensor(perm[s * args.batch:(s + 1) * args.batch], device=device)
            x = augment(images[idx].float().unsqueeze(1) / 255, recipe, g)
            t = y[idx]
            w = class_w[t.long()]
            if mix > 0:
                lam = float(rng.beta(mix, mix))
                j = torch.randperm(len(idx), generator=g, device=device)
                x = lam * x + (1 - lam) * x[j]
                t = lam * t + (1 - lam) * t[j]
                w = lam * w + (1 - lam) * w[j]
            t = t * (1 - ls) + 0.5 * ls
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            with torch.autocast("cuda", torch.bfloat16, enabled=x.is_cuda):
                z = model(to_input(x)).float().squeeze(1)
            loss = (F.binary_cross_entropy_with_logits(z, t, reduction="none") * w).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"non-finite loss in {recipe}")
        vs, hs = logits(model, images, va, False), logits(model, images, ho, False)
        rec = summarise(vs, labels_np[va], hs, labels_np[ho])
        rec["epoch"] = epoch + 1
        history.append(rec)
        if best is None or rec["val_auc"] > best[0]["val_auc"]:
            best = (rec, {k: v.detach().clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[1])
    vs, hs = logits(model, images, va, True), logits(model, images, ho, True)
    tta = summarise(vs, labels_np[va], hs, labels_np[ho])
    plain_v, plain_h = logits(model, images, va, False), logits(model, images, ho, False)
    return {"best_epoch": best[0]["epoch"], "selected": best[0], "last": history[-1], "tta": tta,
            "history": [{"epoch": h["epoch"], "val_auc": h["val_auc"], "hold_auc": h["hold_auc"]} for h in history]}, \
        (plain_v, plain_h)


def frozen_lr(args, images, labels_np, side, device):
    """The issue's reference: frozen ImageNet features + L2 logistic regression."""
    model = pretrained(args.weights, device).eval()
    feats = []
    with torch.no_grad():
        for s in range(0, len(images), 256):
            x = images[s:s + 256].float().unsqueeze(1) / 255
            with torch.autocast("cuda", torch.bfloat16, enabled=x.is_cuda):
                feats.append(model.pooled(to_input(x)).float())
    f = torch.cat(feats)
    tr, va, ho = (torch.tensor(np.flatnonzero(side == s), device=device) for s in ("train", "val", "hold"))
    mu, sd = f[tr].mean(0), f[tr].std(0) + 1e-6
    f = (f - mu) / sd
    y = torch.tensor(labels_np, device=device)
    best = None
    for c in (1e-3, 1e-2, 1e-1, 1.0):
        w = torch.zeros(f.shape[1], device=device, requires_grad=True)
        b = torch.zeros(1, device=device, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(f[tr] @ w + b, y[tr]) + 0.5 / (c * len(tr)) * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            vs, hs = (f[va] @ w + b).cpu().numpy(), (f[ho] @ w + b).cpu().numpy()
        r = summarise(vs, labels_np[va.cpu().numpy()], hs, labels_np[ho.cpu().numpy()])
        r["C"] = c
        if best is None or r["val_auc"] > best["val_auc"]:
            best = r
    return best


RECIPES = [
    ("base", {}),
    ("strong_aug", {"strong": True}),
    ("strong_ls0.1", {"strong": True, "label_smoothing": 0.1}),
    ("strong_mixup0.2", {"strong": True, "mixup": 0.2}),
    ("strong_no_class_weights", {"strong": True, "class_weights": False}),
    ("strong_wd0.05", {"strong": True, "wd": 0.05}),
    ("strong_lr1e-3", {"strong": True, "lr": 1e-3}),
    ("base_lr1e-4", {"lr": 1e-4}),
    # Issue 17: per-film histogram equalisation before everything else, in training and scoring.
    ("strong_ncw_equalize", {"strong": True, "class_weights": False, "equalize": True}),
]


def equalize(images_np):
    """Per-film histogram equalisation of uint8 films, as `xray_data::equalize_histogram` does:
    each grey level maps to 255 times the share of pixels at or below it, rounded."""
    out = np.empty_like(images_np)
    for i, img in enumerate(images_np):
        cdf = np.bincount(img.ravel(), minlength=256).cumsum()
        lut = np.floor(255.0 * cdf / cdf[-1] + 0.5).clip(0, 255).astype(np.uint8)
        out[i] = lut[img]
    return out


def dump_logits(out_dir, designs, labels_np, names, holdout_logits):
    """Every run's validation and held-out logits, with the films they belong to, so threshold
    rules and refer bands can be studied afterwards without training again."""
    arrays = {"labels": labels_np, "names": np.array(names)}
    for dname, side in designs.items():
        arrays[f"side_{dname}"] = side
    for (dname, rname, seed), (vs, hs) in holdout_logits.items():
        arrays[f"val|{dname}|{rname}|{seed}"] = vs
        arrays[f"hold|{dname}|{rname}|{seed}"] = hs
    np.savez_compressed(os.path.join(out_dir, "logits.npz"), **arrays)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--split-config", required=True)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--budget-s", type=float, default=420)
    ap.add_argument("--designs", default="random,low_id,family")
    ap.add_argument("--recipes", default=",".join(n for n, _ in RECIPES))
    ap.add_argument("--seeds", default="42")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    out_dir = os.environ.get("OUT", ".")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    start = time.time()
    images_np, labels_np, patients, names = load_data(args.data, 24 if args.smoke else 0)
    if args.smoke:
        args.epochs = 1
    images = torch.tensor(images_np, device=device)
    images_eq = torch.tensor(equalize(images_np), device=device) if "equalize" in args.recipes else None
    print(f"loaded {len(images_np)} films in {time.time() - start:.1f}s on {device}", flush=True)
    designs = {
        d: design_sides(d, patients, labels_np, names, args.split_config)
        for d in ("random", "low_id", "high_id", "family")
    }
    designs = {k: np.array(v) for k, v in designs.items()}
    log = open(os.path.join(out_dir, "study.jsonl"), "a")

    def emit(rec):
        line = json.dumps(rec)
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    for name, side in designs.items():
        counts = {s: [int(((side == s) & (labels_np == c)).sum()) for c in (0, 1)] for s in ("train", "val", "hold")}
        r = frozen_lr(args, images, labels_np, side, device)
        emit({"design": name, "recipe": "frozen_lr", "counts_normal_pneumonia": counts, **r})
    chosen = [(n, r) for n, r in RECIPES if n in args.recipes.split(",")]
    holdout_logits = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for rname, recipe in chosen:
            for dname in args.designs.split(","):
                if time.time() - start > args.budget_s:
                    emit({"stopped": "budget", "elapsed_s": time.time() - start})
                    return
                t0 = time.time()
                films = images_eq if recipe.get("equalize") else images
                res, (vs, hs) = train_run(args, films, labels_np, designs[dname], recipe, seed, device)
                holdout_logits[(dname, rname, seed)] = (vs, hs)
                dump_logits(out_dir, designs, labels_np, names, holdout_logits)
                emit({"design": dname, "recipe": rname, "seed": seed, "seconds": time.time() - t0, **res})
    # Seed ensembles, where several seeds ran.
    for (dname, rname, seed), _ in list(holdout_logits.items()):
        group = [v for (d, r, s), v in holdout_logits.items() if d == dname and r == rname]
        if seed == int(args.seeds.split(",")[0]) and len(group) > 1:
            side = designs[dname]
            vs = np.mean([g[0] for g in group], 0)
            hs = np.mean([g[1] for g in group], 0)
            emit({"design": dname, "recipe": rname + "_seed_ensemble", "members": len(group),
                  **summarise(vs, labels_np[side == "val"], hs, labels_np[side == "hold"])})
    emit({"done": True, "elapsed_s": time.time() - start})


if __name__ == "__main__":
    sys.exit(main())
