"""Benchmark: liverctl's sliding-window engine against MONAI's, on the whole-body SegResNet.

Network: SegResNet with MONAI's whole-body CT configuration (105 output channels,
init_filters 32, blocks_down (1, 2, 2, 4), blocks_up (1, 1, 1)), RANDOM weights from a
fixed seed (no trained weights are available offline). Both engines run the same module on
the same normalised input (HU clipped to [-1024, 1024] and scaled to [-1, 1]).

Methods, each timed in a fresh subprocess (so peak RSS is its own):
  monai     monai.inferers.SlidingWindowInferer(96^3, sw_batch_size 1, overlap 0.25,
            gaussian), then softmax and argmax over the 105 channels
  exact     liverctl with the shortcuts off: SlidingWindow.monai() (the same windows)
  liverctl  liverctl defaults: body crop + adaptive windows

Cases:
  ct-example  the shared real scan, 30x101x122 (z, y, x) at 3 mm
  abdomen     a 112x101x122 abdomen-like volume: the real scan mirrored along z
  memory      300x137x137: the 3 mm grid of a 512x512x600 scan at 0.8x0.8x1.5 mm, built from
              the real scan (air around it in-plane, mirrored along z); liverctl only,
              unless --monai-memory-case

With random weights the argmax masks are not anatomy, and a random network has tiny
decision margins, so mask agreement under changed windows says little about a trained
network; agreement with the shortcuts off (``exact``) is the check of the engine itself.
``--proxy`` therefore adds a second network with real decision margins: a small SegResNet
(init_filters 8, same 105 channels and depth) overfitted for ``--proxy-steps`` steps to the
multi-organ labels of the shared scan (labels above 104 merged into background). It is a
stand-in for trained weights, not a model of any use: compare masks with it.

Usage: python benchmarks/bench_inference.py [--cases ct-example abdomen memory] [--threads N]
       [--proxy [--proxy-steps 150]]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CT = Path(os.environ.get("LIVERCTL_TEST_DATA", REPO.parent / "shared" / "data")) / "ct-example" / "ct.nii.gz"
LIVER = 5


def build_net(init_filters: int = 32):
    import torch
    from monai.networks.nets import SegResNet

    torch.manual_seed(0)
    net = SegResNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=105,
        init_filters=init_filters,
        blocks_down=(1, 2, 2, 4),
        blocks_up=(1, 1, 1),
    )
    net.min_input_multiple = 8  # three downsamplings
    proxy = os.environ.get("BENCH_PROXY_WEIGHTS")
    if proxy and init_filters == 32:
        net = build_net(init_filters=8)
        net.load_state_dict(torch.load(proxy, weights_only=True))
    return net.eval()


def train_proxy(path: str, steps: int) -> float:
    """Overfit a small SegResNet to the shared scan's multi-organ labels; returns seconds taken."""
    import torch

    from liverctl.io import read_label

    t0 = time.perf_counter()
    net = build_net(init_filters=8).train()
    x = torch.from_numpy(normalise(make_case("ct-example")))
    y = read_label(CT.parent / "multiorgan.nii.gz").array.astype(np.int64)
    y[y > 104] = 0
    y = torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = np.random.default_rng(0)
    for _ in range(steps):
        zs, ys, xs = gen.integers(0, 30 - 24 + 1), gen.integers(0, 101 - 64 + 1), gen.integers(0, 122 - 64 + 1)
        crop = (slice(zs, zs + 24), slice(ys, ys + 64), slice(xs, xs + 64))
        loss = torch.nn.functional.cross_entropy(net(x[crop][None, None]), y[crop][None])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(net.state_dict(), path)
    return time.perf_counter() - t0


def make_case(name: str) -> np.ndarray:
    """Raw HU volume (z, y, x) of a case."""
    from liverctl.io import read_image

    hu = read_image(CT).array.astype(np.float32)  # (30, 101, 122)
    if name == "ct-example":
        return hu
    if name == "abdomen":
        return np.pad(hu, [(41, 41), (0, 0), (0, 0)], mode="reflect")  # 112 slices
    if name == "memory":
        body = np.pad(hu, [(0, 0), (18, 18), (7, 8)], constant_values=-1024.0)  # 137 x 137 in-plane
        reps = int(np.ceil(300 / 58))
        stack = np.concatenate([body, body[::-1][1:-1]] * reps, axis=0)[:300]
        return np.ascontiguousarray(stack)
    raise SystemExit(f"unknown case {name}")


def normalise(hu: np.ndarray) -> np.ndarray:
    return (np.clip(hu, -1024, 1024) / 1024.0).astype(np.float32)


def worker(case: str, method: str, out: str, threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    hu = make_case(case)
    net = build_net()
    x = normalise(hu)
    t0 = time.perf_counter()
    info: dict = {}
    if method == "monai":
        from monai.inferers import SlidingWindowInferer

        inferer = SlidingWindowInferer(roi_size=(96, 96, 96), sw_batch_size=1, overlap=0.25, mode="gaussian")
        with torch.inference_mode():
            logits = inferer(torch.from_numpy(x)[None, None], net)[0]
            prob = torch.softmax(logits, 0)
            labels = prob.argmax(0).numpy().astype(np.uint8)
            p5 = prob[LIVER].numpy().copy()
        del logits, prob
        shape = x.shape
        from monai.data.utils import dense_patch_slices
        from monai.inferers.utils import _get_scan_interval

        padded = tuple(max(s, 96) for s in shape)
        n = len(dense_patch_slices(padded, (96,) * 3, _get_scan_interval(padded, (96,) * 3, 3, (0.25,) * 3)))
        info = {"windows": n, "window": [96, 96, 96], "amplification": n * 96**3 / x.size}
    else:
        from liverctl.inference import SlidingWindow, predict_volume

        base = SlidingWindow.monai if method == "exact" else SlidingWindow
        res = predict_volume(x, [net], base(channels=(LIVER,), argmax=True), "cpu", hu=hu)
        p5, labels = res.channel(LIVER), res.labels
        s = res.stats
        info = {
            "windows": s.windows,
            "window": list(s.window),
            "amplification": s.compute_amplification,
            "network_s": s.network_seconds,
            "network_fraction": s.network_fraction,
            "body_box": s.body_box,
        }
    info["wall_s"] = time.perf_counter() - t0
    info["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    info["shape"] = list(x.shape)
    np.savez(out, p5=p5, labels=labels)
    Path(out + ".json").write_text(json.dumps(info))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float("nan") if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["ct-example", "abdomen", "memory"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--monai-memory-case", action="store_true")
    ap.add_argument("--proxy", action="store_true", help="use an overfitted small SegResNet instead of random weights")
    ap.add_argument("--proxy-steps", type=int, default=150)
    ap.add_argument("--worker", nargs=3, metavar=("CASE", "METHOD", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker, args.threads)
        return
    if not CT.exists():
        raise SystemExit(f"needs the shared scan at {CT}")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    what = "SegResNet 105 ch (init_filters 32), random weights (seed 0)"
    if args.proxy:
        proxy_path = os.path.join(tempfile.mkdtemp(), "proxy.pt")
        seconds = train_proxy(proxy_path, args.proxy_steps)
        os.environ["BENCH_PROXY_WEIGHTS"] = proxy_path
        what = f"PROXY SegResNet 105 ch (init_filters 8) overfitted to the shared scan ({args.proxy_steps} steps, {seconds:.0f} s)"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu; {what}", flush=True)
    header = f"{'case':11s} {'method':9s} {'wall s':>7s} {'net s':>7s} {'net %':>6s} {'windows':>7s} {'window':>12s} {'ampl.':>6s} {'RSS GB':>7s} {'max|dp5|':>9s} {'Dice5':>6s} {'labels=':>7s}"
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            methods = (
                ["liverctl"] if case == "memory" and not args.monai_memory_case else ["monai", "exact", "liverctl"]
            )
            if case == "memory" and args.monai_memory_case:
                methods = ["monai", "liverctl"]
            results = {}
            for method in methods:
                out = os.path.join(tmp, f"{case}-{method}")
                cmd = [sys.executable, __file__, "--worker", case, method, out]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                subprocess.run(cmd, check=True)
                info = json.loads(Path(out + ".json").read_text())
                data = np.load(out + ".npz")
                results[method] = (info, data["p5"], data["labels"])
            print(f"\n{case}: volume {results[methods[0]][0]['shape']} (z, y, x)")
            print(header)
            ref = results.get("monai")
            for method, (info, p5, labels) in results.items():
                if ref is not None:
                    dp = f"{np.abs(p5 - ref[1]).max():9.2e}"
                    d5 = f"{dice(labels == LIVER, ref[2] == LIVER):6.3f}"
                    agree = f"{(labels == ref[2]).mean():7.3f}"
                else:
                    dp, d5, agree = f"{'-':>9s}", f"{'-':>6s}", f"{'-':>7s}"
                net_s = info.get("network_s")
                frac = info.get("network_fraction")
                print(
                    f"{case:11s} {method:9s} {info['wall_s']:7.1f} "
                    f"{(f'{net_s:7.1f}' if net_s is not None else '      -')} "
                    f"{(f'{100 * frac:5.1f}%' if frac is not None else '     -')} "
                    f"{info['windows']:7d} {'x'.join(map(str, info['window'])):>12s} {info['amplification']:6.2f} "
                    f"{info['peak_rss_gb']:7.2f} {dp} {d5} {agree}"
                )
            if ref is not None and "liverctl" in results:
                print(
                    f"speed-up liverctl vs monai: {ref[0]['wall_s'] / results['liverctl'][0]['wall_s']:.2f}x"
                    f" (windows {ref[0]['windows']} -> {results['liverctl'][0]['windows']},"
                    f" amplification {ref[0]['amplification']:.2f} -> {results['liverctl'][0]['amplification']:.2f});"
                    f" liver voxels monai {(ref[2] == LIVER).sum()}, liverctl {(results['liverctl'][2] == LIVER).sum()}"
                )


if __name__ == "__main__":
    main()
