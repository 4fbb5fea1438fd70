"""Forward-pass cost of liverctl's networks (default configurations), and SegResNet vs MONAI.

Prints, per architecture: parameters, input patch and median forward time (eval mode,
no_grad) over ``--repeat`` runs after one warm-up run (memory is not measured: see the
inference benchmark). With MONAI installed it also times MONAI's SegResNet with the
same weights on the same input, so the two implementations can be compared.

    python benchmarks/bench_models.py                 # CPU, 64^3 patches (8 slices of 256^2 for 2D)
    python benchmarks/bench_models.py --size 96 --device cuda --repeat 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from liverctl.models import available_models, build_model


def _time(net: torch.nn.Module, x: torch.Tensor, repeat: int, device: torch.device) -> float:
    with torch.no_grad():
        net(x)  # warm-up
        times = []
        for _ in range(repeat):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            net(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def _time_pair(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor, repeat: int, device: torch.device):
    """Median times of two networks run alternately (A B, B A, ...) so load changes hit both alike."""
    ta: list[float] = []
    tb: list[float] = []
    with torch.no_grad():
        a(x)
        b(x)
        for i in range(repeat):
            for net, acc in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                net(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                acc.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="cubic patch edge (3D) / slice edge (2D)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--models", nargs="*", default=None, help="names (default: all)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.models or available_models()
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, repeat {args.repeat}",
        flush=True,
    )
    print(f"{'model':22s} {'params':>12s} {'input':>22s} {'forward s':>10s}", flush=True)
    s = args.size
    for name in names:
        kwargs: dict = {}
        if name == "segresnet":  # the MONAI whole-body CT bundle configuration
            kwargs = {"init_filters": 32, "out_channels": 105, "dropout_prob": 0.2}
        net = build_model(name, **kwargs).eval().to(device)
        if name == "di2in_discriminator":
            shape: tuple[int, ...] = (1, 1, s, s, s)
        elif net.spatial_dims == 2:
            shape = (8, getattr(net, "stack_channels", 1), 256, 256)
        elif name == "hdenseunet":
            shape = (1, 1, 12, s, s)
        else:
            shape = (1, 1, s, s, s)
        x = torch.randn(shape, device=device)
        n_params = sum(p.numel() for p in net.parameters())
        sec = _time(net, x, args.repeat, device)
        print(f"{name:22s} {n_params:12,d} {'x'.join(map(str, shape)):>22s} {sec:10.3f}", flush=True)
        if name == "segresnet":
            try:
                from monai.networks.nets import SegResNet as MonaiSegResNet
            except ImportError:
                continue
            ref = MonaiSegResNet(spatial_dims=3, **kwargs).eval().to(device)
            ref.load_state_dict(net.state_dict(), strict=True)
            sec, sec_ref = _time_pair(net, ref, x, max(args.repeat, 4), device)
            with torch.no_grad():
                diff = (ref(x) - net(x)).abs().max().item()
            print(
                f"  interleaved: ours {sec:.3f} s, monai {sec_ref:.3f} s (median of {max(args.repeat, 4)})", flush=True
            )
            print(f"  max |ours - monai| = {diff:.2e}", flush=True)


if __name__ == "__main__":
    main()
