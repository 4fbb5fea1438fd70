"""One 96^3 window of the bundle-layout SegResNet (105 classes, random weights) through each CPU
backend: torch eager, channels_last_3d, torch.compile, ONNX Runtime and OpenVINO (f32).

    python benchmarks/bench_backends.py [--window 96] [--repeat 3]

Prints best-of-N seconds per window, the speed-up over torch eager, the largest difference of
the softmax probabilities from torch fp32 on a noise window, on the generic test windows (noise
and nearly flat windows: a bare network's test) and on the test ``predict`` runs for the default
registry entry (noise and two windows of a phantom abdomen through the entry's own recipe;
``--backend auto`` uses a candidate only within 1e-4 there). The backends that are not installed
are left out.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from liverctl.inference.exactness import GENERIC, TOLERANCE, probability_difference
from liverctl.models import build_model


def _model_test(net: torch.nn.Module, window: int):
    """The exactness test ``predict`` runs for the default registry entry (its recipe) on ``net``."""
    from liverctl import weights as lw
    from liverctl.predict import LiverModel

    entry = lw.get_entry()
    model = LiverModel([lw.ResolvedWeights(entry, Path("bench.pt"), "0" * 64, "local")], [net], torch.device("cpu"))
    return model.exactness_test((window,) * 3), entry.name


def _segresnet() -> torch.nn.Module:
    return build_model(
        "segresnet", in_channels=1, out_channels=105, init_filters=32, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1)
    ).eval()


def _candidates(
    net: torch.nn.Module, shape: tuple[int, ...], tmp: Path
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Each backend as a function of one window (installed runtimes only)."""
    from liverctl.inference.backends import available_backends, runtime_network

    cl = _segresnet()
    cl.load_state_dict(net.state_dict())
    cl = cl.to(memory_format=torch.channels_last_3d)
    compiled = torch.compile(net)
    found: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "torch eager": net,
        "channels_last_3d": lambda v: cl(v.to(memory_format=torch.channels_last_3d)),
        "torch.compile": compiled,
    }
    for name in ("onnxruntime", "openvino"):
        if name in available_backends():
            found[name] = runtime_network(net, name, shape, tmp / name)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--window", type=int, default=96)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    net = _segresnet()
    shape = (1, 1, *(args.window,) * 3)
    x = torch.randn(shape)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        runs = _candidates(net, shape, Path(tmp))
        ref = torch.softmax(net(x).float(), 1)
        diff = {name: float((torch.softmax(fn(x).float(), 1) - ref).abs().max()) for name, fn in runs.items()}
        generic = {name: probability_difference(net, fn, shape, GENERIC) for name, fn in runs.items()}
        test, entry = _model_test(net, args.window)
        windows = test.windows(shape)  # built once for all candidates
        gate = {name: probability_difference(net, fn, shape, windows) for name, fn in runs.items()}
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(args.repeat):  # interleaved rounds: a busy moment of a shared CPU hits all alike
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn(x)
                best[name] = min(best[name], time.perf_counter() - t0)
    base = best["torch eager"]
    print(
        f"one {args.window}^3 window, SegResNet 105 classes, {torch.get_num_threads()} threads, best of {args.repeat}"
    )
    print(
        f"{'backend':<18}{'s/window':>10}{'x eager':>9}{'max |dp|':>11}{'generic':>10}{'test':>10}"
        f"  (generic: noise + nearly flat windows; test: noise + phantom through {entry}'s recipe)"
    )
    for name, t in best.items():
        verdict = "pass" if gate[name] <= TOLERANCE else "fail"
        print(
            f"{name:<18}{t:>10.2f}{base / t:>9.2f}{diff[name]:>11.1e}{generic[name]:>10.1e}{gate[name]:>10.1e}  {verdict}"
        )


if __name__ == "__main__":
    main()
