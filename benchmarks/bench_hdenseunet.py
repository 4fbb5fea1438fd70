"""H-DenseUNet at the paper's sizes: parameter counts of the parts and CPU forward times.

Usage::

    python benchmarks/bench_hdenseunet.py [--threads N] [--slices Z] [--size S]

Prints the parameter counts of the paper-size network (2D DenseUNet with its DenseNet-161
encoder, 3D DenseUNet, HFF) and of the coarse liver-ROI network, checks the encoder count
against DenseNet's formula (torchvision's densenet161 ``features``: 26,472,000), then times one
eval-mode forward of the whole network on a Z x S x S stack (default 12 x 64 x 64: the paper's
12 slices at a size a CPU manages; ``--size 224`` is the paper's).
"""

from __future__ import annotations

import argparse
import time

import torch

from liverctl.models.denseunet import densenet_feature_parameters
from liverctl.models.hdenseunet import PAPER_KWARGS, HDenseUNet, parameter_counts
from liverctl.models.hdenseunet_cascade import CoarseLiverNet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = HDenseUNet(**PAPER_KWARGS).eval()
    counts = parameter_counts(net)
    formula = densenet_feature_parameters((6, 12, 36, 24), 48, 96)
    coarse = sum(p.numel() for p in CoarseLiverNet().parameters())
    for name in ("2d", "2d_encoder", "3d", "hff", "total"):
        print(f"{name:>11}: {counts[name]:>12,} ({counts[name] / 1e6:.2f} M)")
    print(f"{'coarse':>11}: {coarse:>12,} ({coarse / 1e6:.2f} M)")
    print(
        f"DenseNet-161 features by formula: {formula:,} (encoder {'matches' if formula == counts['2d_encoder'] else 'DIFFERS'})"
    )
    x = torch.randn(1, 1, args.slices, args.size, args.size)
    with torch.no_grad():
        t0 = time.perf_counter()
        out = net(x)
        seconds = time.perf_counter() - t0
    print(f"forward {tuple(x.shape)} -> {tuple(out.shape)}: {seconds:.2f} s on {args.threads} CPU thread(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
