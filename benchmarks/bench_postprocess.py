"""Benchmark post-processing on a 512x512x300 liver-sized mask at 0.8 x 0.8 x 2.5 mm.

A liver-sized ellipsoid (semi-axes 100 x 80 x 75 mm, about 2.5 L) with a one-voxel cavity
and three spurious blobs, two of them in far corners so that the foreground's bounding box
is almost the whole volume (the worst case for the bounding-box crop). Times, best of
``--repeat`` runs (the naive ones: ``--naive-repeat``):

- liverctl's :func:`largest_components` (keep 1, 26-connectivity) and :func:`fill_holes`,
- the same with the foreground alone (no far blobs: the crop at work),
- the naive ways on the full volume: ``scipy.ndimage.label`` and ``skimage.measure.label``
  followed by ``bincount`` + ``==``, ``scipy.ndimage.binary_fill_holes``,
- the whole ``postprocess`` with the ``liver`` preset.

Everything here is single-threaded: on an idle machine wall and CPU time agree, and on a
shared one the CPU time is the fairer figure. Run: ``python benchmarks/bench_postprocess.py [--repeat 5] [--naive-repeat 1]``. Prints figures only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.ndimage as ndi
from skimage import measure

from liverctl.io import Geometry, Image
from liverctl.postprocessing import fill_holes, largest_components, postprocess

SHAPE = (300, 512, 512)
SPACING_ZYX = (2.5, 0.8, 0.8)


def liver_like(with_far_blobs: bool = True) -> np.ndarray:
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    sz, sy, sx = SPACING_ZYX
    mask = ((z - 150) * sz / 75) ** 2 + ((y - 256) * sy / 80) ** 2 + ((x - 220) * sx / 100) ** 2 <= 1
    mask[150, 256, 220] = False  # a one-voxel hole
    mask[140:150, 250:270, 380:400] = True  # a blob beside the liver
    if with_far_blobs:
        mask[2:6, 5:15, 495:505] = True
        mask[290:296, 490:500, 5:15] = True
    return mask.astype(np.uint8)


CPU_TIMES: list[float] = []


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs; the CPU time of that run goes to CPU_TIMES."""
    best, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, best_cpu = wall, cpu
    CPU_TIMES.append(best_cpu)
    return best, result


def naive_lcc(mask: np.ndarray, label_fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    labels = label_fn(mask)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == counts.argmax()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each liverctl function (best is shown)")
    parser.add_argument("--naive-repeat", type=int, default=1, help="runs of each (slow) naive method")
    args = parser.parse_args()
    r, rn = args.repeat, args.naive_repeat

    mask = liver_like()
    compact = liver_like(with_far_blobs=False)
    image = Image(mask, Geometry(SPACING_ZYX[::-1]))
    print(f"volume {SHAPE[2]}x{SHAPE[1]}x{SHAPE[0]} (x, y, z) at {SPACING_ZYX[::-1]} mm, uint8")
    print(
        f"foreground {int(mask.sum()):,} voxels = {mask.sum() * np.prod(SPACING_ZYX) / 1e6:.2f} L; "
        f"best of {r} runs (naive methods: {rn})"
    )
    print()

    rows: list[tuple[str, float]] = []
    t, (kept, stats) = best_of(lambda: largest_components(mask, n=1, connectivity=26), r)
    rows.append(("liverctl largest_components (26), far blobs", t))
    t_c, _ = best_of(lambda: largest_components(compact, n=1, connectivity=26), r)
    rows.append(("liverctl largest_components (26), compact", t_c))
    t6, _ = best_of(lambda: largest_components(mask, n=1, connectivity=6), r)
    rows.append(("liverctl largest_components (6), far blobs", t6))
    tv, _ = best_of(lambda: largest_components(image, n=None, min_volume_ml=1.0), r)
    rows.append(("liverctl largest_components min 1 mL", tv))
    t_sp, ref_sp = best_of(lambda: naive_lcc(mask, lambda m: ndi.label(m, structure=np.ones((3, 3, 3)))[0]), rn)
    rows.append(("naive scipy.ndimage.label + bincount", t_sp))
    t_sk, ref_sk = best_of(lambda: naive_lcc(mask, lambda m: measure.label(m, connectivity=3)), rn)
    rows.append(("naive skimage.measure.label + bincount", t_sk))
    t_fh, filled = best_of(lambda: fill_holes(kept), r)
    rows.append(("liverctl fill_holes (3D)", t_fh))
    t_fh2, _ = best_of(lambda: fill_holes(kept, slicewise=True), r)
    rows.append(("liverctl fill_holes (2D per slice)", t_fh2))
    t_nfh, ref_fill = best_of(lambda: ndi.binary_fill_holes(kept), rn)
    rows.append(("naive scipy.ndimage.binary_fill_holes", t_nfh))
    t_pp, _ = best_of(lambda: postprocess(image), r)
    rows.append(("liverctl postprocess, liver preset", t_pp))

    assert np.array_equal(kept, ref_sp) and np.array_equal(kept, ref_sk), "LCC disagrees with scipy/skimage"
    assert np.array_equal(filled, ref_fill), "hole filling disagrees with scipy"
    print(f"components found: {stats.components_before} (sizes {', '.join(f'{s:,}' for s in stats.sizes)})")
    print(f"holes filled: {int(filled.sum() - kept.sum())} voxel(s); results identical to scipy/skimage")
    print()
    width = max(len(name) for name, _ in rows)
    print(f"{'':<{width}}  {'wall':>8}     {'CPU':>8}")
    for (name, seconds), cpu in zip(rows, CPU_TIMES, strict=True):
        print(f"{name:<{width}}  {seconds * 1000:8.1f} ms  {cpu * 1000:8.1f} ms")
    print()
    cpu = dict(zip([name for name, _ in rows], CPU_TIMES, strict=True))
    lcc, fh = cpu["liverctl largest_components (26), far blobs"], cpu["liverctl fill_holes (3D)"]
    print(
        f"speed-up of largest_components over scipy: {t_sp / t:.1f}x wall, "
        f"{cpu['naive scipy.ndimage.label + bincount'] / lcc:.1f}x CPU; over skimage: {t_sk / t:.1f}x wall, "
        f"{cpu['naive skimage.measure.label + bincount'] / lcc:.1f}x CPU"
    )
    print(
        f"speed-up of fill_holes over scipy: {t_nfh / t_fh:.1f}x wall, "
        f"{cpu['naive scipy.ndimage.binary_fill_holes'] / fh:.1f}x CPU"
    )


if __name__ == "__main__":
    main()
