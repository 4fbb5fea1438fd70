"""Time synthetic phantom generation per domain (``liverctl.phantoms.make_phantom``).

Usage: ``python benchmarks/bench_synthetic.py [--repeats N]``. Prints the median and best
wall time per phantom and the median CPU time of this process (generation is
single-threaded NumPy, so on a shared machine the CPU time is what an idle machine's wall
time would be) for each domain at the default shape (64x96x96, 4x4x5 mm) and at 96^3
(same spacing), plus the time to write one case (image + labels, .nii.gz).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from liverctl.io import write_image
from liverctl.phantoms import DOMAINS, PhantomConfig, make_phantom


def _time(fn, repeats: int) -> tuple[float, float, float]:
    """Median and best wall time, and median CPU time of this process (robust to other load)."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    make_phantom(domain="contrast", seed=0)  # warm-up (imports, allocator)
    shapes = {"default 64x96x96": PhantomConfig.shape, "96^3": (96, 96, 96)}
    print(f"{'domain':<18} {'shape':<17} {'voxels':>8} {'median ms':>10} {'best ms':>8} {'cpu ms':>7}")
    for domain in DOMAINS:
        for label, shape in shapes.items():
            seeds = iter(range(10_000))

            def one(d=domain, s=shape, seeds=seeds):
                make_phantom(domain=d, seed=next(seeds), shape=s)

            med, best, cpu = _time(one, args.repeats)
            voxels = shape[0] * shape[1] * shape[2]
            print(f"{domain:<18} {label:<17} {voxels:>8} {med * 1e3:>10.0f} {best * 1e3:>8.0f} {cpu * 1e3:>7.0f}")
    ct, lab = make_phantom(domain="contrast", seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        med, best, cpu = _time(
            lambda: (write_image(ct, Path(tmp) / "ct_0000.nii.gz"), write_image(lab, Path(tmp) / "lab.nii.gz")),
            args.repeats,
        )
    print(
        f"write one case (.nii.gz image + labels, default shape): median {med * 1e3:.0f} ms, "
        f"best {best * 1e3:.0f} ms, cpu {cpu * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
