#!/usr/bin/env python3
"""PyTorch's side of `cargo run --release --features cuda --example bench -- --cuda`, on a GPU.

The same workloads, names and JSON lines as ../shared/bench/pytorch_ref.py (which times the CPU),
but on the first CUDA device, waiting for the device at the end of every step:

    python3 tools/cuda_reference.py [--batch 32] [--only NAME,...] [--mode eager|channels_last]

`--mode channels_last` (the default) is PyTorch at its usual best for convolutions on a GPU
(cuDNN with channels-last tensors and cudnn.benchmark); `eager` keeps NCHW. Workloads:
mnv2_infer, mnv2_infer_b1, mnv2_train, mnv2_head_train, plaincnn_train, dwconv_fwd_bwd, as
pytorch_ref.py defines them.
"""
import argparse, json, statistics, time

import torch, torch.nn as nn, torchvision


class PlainCnn(nn.Module):
    """pytorch_ref.py's PlainCnn: four 3x3 blocks (32-64-128-256, no conv bias, BN, ReLU, 2x2 max-pool), 1 logit."""

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for o in (32, 64, 128, 256):
            layers += [nn.Conv2d(c, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c = o
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(256, 1)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def timed(step, warmup, runs):
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    secs = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        secs.append(time.perf_counter() - start)
    return secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--only', default='')
    ap.add_argument('--mode', choices=['channels_last', 'eager'], default='channels_last')
    ap.add_argument('--runs', type=int, default=20)
    a = ap.parse_args()
    dev = torch.device('cuda')
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = a.mode == 'channels_last'
    fmt = torch.channels_last if a.mode == 'channels_last' else torch.contiguous_format
    B, warm, runs = a.batch, 5, a.runs
    x = torch.randn(B, 3, 224, 224, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (B, 1), device=dev).float()
    want = set(filter(None, a.only.split(',')))
    run = lambda name: not want or name in want
    config = f'torch {torch.__version__}, {torch.cuda.get_device_name()}, {a.mode}'

    def report(name, unit, secs, per):
        vals = [per(s) for s in secs]
        print(json.dumps(dict(name=name, unit=unit, median=round(statistics.median(vals), 3), min=round(min(vals), 3),
                              max=round(max(vals), 3), runs=len(vals), threads=0, batch=B, config=config)),
              flush=True)

    def mnv2(head):
        m = torchvision.models.mobilenet_v2()
        if head:
            m.classifier[1] = nn.Linear(1280, 1)
        return m.to(dev).to(memory_format=fmt)

    loss = nn.BCEWithLogitsLoss()
    if run('mnv2_infer'):
        m = mnv2(False).eval()
        with torch.no_grad():
            report('mnv2_infer', 'images/s', timed(lambda: m(x), warm, runs), lambda s: B / s)
    if run('mnv2_infer_b1'):
        m = mnv2(False).eval()
        x1 = x[:1].contiguous(memory_format=fmt)
        with torch.no_grad():
            report('mnv2_infer_b1', 'ms', timed(lambda: m(x1), warm, runs * 2), lambda s: s * 1e3)
    def train_step(m):
        """One SGD-with-momentum step of the whole model `m` on the batch."""
        opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)

        def step():
            opt.zero_grad()
            loss(m(x), y).backward()
            opt.step()
        return step

    if run('mnv2_train'):
        step = train_step(mnv2(True).train())
        report('mnv2_train', 'images/s', timed(step, warm, runs), lambda s: B / s)
    if run('mnv2_head_train'):
        m = mnv2(True).eval()
        head = m.classifier[1]
        opt = torch.optim.SGD(head.parameters(), lr=1e-3)

        def step():
            with torch.no_grad():
                f = m.features(x).mean((2, 3))
            opt.zero_grad()
            loss(head(f), y).backward()
            opt.step()
        report('mnv2_head_train', 'images/s', timed(step, warm, runs), lambda s: B / s)
    if run('plaincnn_train'):
        step = train_step(PlainCnn().to(dev).to(memory_format=fmt).train())
        report('plaincnn_train', 'images/s', timed(step, warm, runs), lambda s: B / s)
    if run('dwconv_fwd_bwd'):
        C, H = 144, 56
        conv = nn.Conv2d(C, C, 3, padding=1, groups=C, bias=False).to(dev).to(memory_format=fmt)
        xi = torch.randn(B, C, H, H, device=dev).contiguous(memory_format=fmt).requires_grad_(True)

        def step():
            xi.grad = None
            conv.weight.grad = None
            conv(xi).sum().backward()
        flops = 3 * 2 * B * C * H * H * 9
        report('dwconv_fwd_bwd', 'GFLOP/s', timed(step, warm, runs * 2), lambda s: flops / s / 1e9)


if __name__ == '__main__':
    main()
