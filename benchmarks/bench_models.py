"""Forward-pass cost of liverctl's networks (default configurations), SegResNet vs MONAI, and the
parameter counts of the papers' networks side by side with liverctl's.

Prints, per architecture: parameters, input patch and median forward time (eval mode,
no_grad) over ``--repeat`` runs after one warm-up run (memory is not measured: see the
inference benchmark). With MONAI installed it also times MONAI's SegResNet with the
same weights on the same input, so the two implementations can be compared. Then
(:func:`paper_counts`, counted on the meta device, nothing run) the parameter counts the papers
give next to liverctl's at the papers' settings.

    python benchmarks/bench_models.py                 # CPU, 64^3 patches (8 slices of 256^2 for 2D)
    python benchmarks/bench_models.py --size 96 --device cuda --repeat 10
    python benchmarks/bench_models.py --counts-only   # the paper | liverctl table alone
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


def paper_counts() -> list[tuple[str, str, int, str]]:
    """``(network, paper's count, liverctl's count, note)`` for the papers that give a count."""
    from liverctl.models.hdenseunet import HDenseUNet, parameter_counts
    from liverctl.models.pipofan import PAPER_PARAMETERS, UNUSED_IN_AUTHORS_CODE, paper_parameter_count

    pipofan = paper_parameter_count()
    with torch.device("meta"):
        hd = parameter_counts(HDenseUNet(preset="paper"))
        hd_wide = parameter_counts(HDenseUNet(preset="paper", context_features=True))
    return [
        (
            "PIPO-FAN (2 classes, Table I)",
            f"{PAPER_PARAMETERS:,}",
            pipofan,
            f"+ {UNUSED_IN_AUTHORS_CODE:,} unused 1x1 bridges of the authors' code - 19 (fusion block) = "
            f"{pipofan + UNUSED_IN_AUTHORS_CODE - 19:,}",
        ),
        (
            "H-DenseUNet (paper preset)",
            "around 40M",
            hd["total"],
            f"2D {hd['2d']:,} (DenseNet-161 encoder {hd['2d_encoder']:,}), 3D {hd['3d']:,}, HFF {hd['hff']:,}",
        ),
        (
            "H-DenseUNet, 3D sees 2D features",
            "-",
            hd_wide["total"],
            "context_features=True, the earlier layout",
        ),
    ]


def print_paper_counts() -> None:
    print("\n| network | paper | liverctl | note |\n|---|---:|---:|---|", flush=True)
    for name, paper, ours, note in paper_counts():
        print(f"| {name} | {paper} | {ours:,} | {note} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="cubic patch edge (3D) / slice edge (2D)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--models", nargs="*", default=None, help="names (default: all)")
    ap.add_argument("--counts-only", action="store_true", help="print only the paper | liverctl parameter table")
    args = ap.parse_args()
    if args.counts_only:
        print_paper_counts()
        return
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
    print_paper_counts()


if __name__ == "__main__":
    main()
