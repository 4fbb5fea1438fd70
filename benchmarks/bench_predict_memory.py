"""Peak memory of `predict` on a 512x512x600 CT scan with the 3 mm whole-body SegResNet.

Issue 3 asks that such a scan runs within 4 GB of RAM on the CPU. This script writes a
synthetic 512x512x600 int16 scan (0.8 x 0.8 x 1.5 mm) and a randomly initialised SegResNet
with the MONAI whole-body architecture (105 classes, init_filters 32: the same memory as the
real weights), then runs `liverctl.predict.predict` in a fresh process that samples its own
RSS every 50 ms and prints the peak of each pipeline phase and the overall peak
(``ru_maxrss``). Usage::

    python benchmarks/bench_predict_memory.py [--workdir DIR] [--slices 600]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

SETUP = textwrap.dedent(
    """
    import sys
    import numpy as np, torch
    from liverctl.io import Geometry, Image, write_image
    from liverctl.models import build_model

    n = int(sys.argv[1])
    shape = (n, 512, 512)
    z, y, x = np.ogrid[:n, :512, :512]
    ct = np.full(shape, -1000, np.int16)
    ct[np.broadcast_to(((y - 256) / 200.0) ** 2 + ((x - 256) / 230.0) ** 2 < 1, shape)] = 40
    ct[((z - n / 2) / (n / 5)) ** 2 + ((y - 230) / 90.0) ** 2 + ((x - 180) / 80.0) ** 2 < 1] = 110
    ct += np.random.default_rng(0).normal(0, 15, shape).astype(np.int16)
    write_image(Image(ct, Geometry((0.8, 0.8, 1.5))), "scan.nii.gz")
    torch.manual_seed(0)
    net = build_model("segresnet", spatial_dims=3, in_channels=1, out_channels=105, init_filters=32,
                      blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), dropout_prob=0.2)
    torch.save(net.state_dict(), "w.pt")
    """
)

RUN = textwrap.dedent(
    """
    import resource, threading, time
    import liverctl.inference as INF
    import liverctl.predict as P
    import liverctl.predict.batch as B
    import liverctl.predict.model as M

    phase, peaks = ["start"], {}

    def rss_mb():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) // 1024
        return 0

    def sample():
        while True:
            peaks[phase[0]] = max(peaks.get(phase[0], 0), rss_mb())
            time.sleep(0.05)

    def watch(module, name, label):
        func = getattr(module, name)
        def wrapper(*args, **kwargs):
            before, phase[0] = phase[0], label
            try:
                return func(*args, **kwargs)
            finally:
                phase[0] = "between steps"
        setattr(module, name, wrapper)

    for module, name, label in [
        (B, "read_ct", "read"),
        (M, "reorient", "reorient"),
        (M, "resample", "resample to 3 mm"),
        (INF, "predict_volume", "network (sliding window)"),
        (M, "resample_to_reference", "back to the scan grid"),
        (M, "_clean", "post-processing"),
        (B, "write_mask", "write"),
    ]:
        watch(module, name, label)
    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    result = P.predict("scan.nii.gz", "mask.nii.gz", weights="w.pt")
    wall = time.perf_counter() - t0
    case = result.cases[0]
    assert case.ok, case.error
    for label, mb in peaks.items():
        print(f"  {label:28s} {mb:6d} MB")
    inf = case.report["inference"]
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB; wall {wall:.1f} s; "
          f"network {inf['network_seconds']:.1f} s ({100 * inf['network_seconds'] / wall:.0f}%); "
          f"{inf['windows']} windows of {inf['window_zyx']}; compute amplification {inf['compute_amplification']}")
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the scan (default: a temp dir)")
    parser.add_argument("--slices", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", SETUP, str(args.slices)], cwd=work, check=True)
        print(f"predict on a 512x512x{args.slices} int16 scan at 0.8x0.8x1.5 mm, 105-class SegResNet at 3 mm, CPU")
        subprocess.run([sys.executable, "-c", RUN], cwd=work, check=True)


if __name__ == "__main__":
    main()
