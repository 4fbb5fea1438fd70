"""Benchmark of ``liverctl demo``: wall and CPU time of every step, held-out liver Dice.

Usage::

    python benchmarks/bench_demo.py [--threads N] [--seed S] [--out DIR] [--quick]

Prints one line per step (wall seconds, CPU seconds of the process, all threads), the
held-out Dice of every case and their mean. The CPU time with ``--threads 1`` is the wall
time the demo needs on one idle core, so an upper bound for two idle cores; the wall time
is only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="the --quick smoke test instead")
    args = parser.parse_args()

    from liverctl.demo import demo
    from liverctl.errors import LiverctlWarning

    warnings.simplefilter("ignore", LiverctlWarning)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or os.path.join(tmp, "demo")
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = demo(out, seed=args.seed, quick=args.quick, threads=args.threads)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f}")
    print(f"settings: {result.settings}")
    print(f"threads: {args.threads}, seed {args.seed}")
    print(f"{'step':<12}{'wall s':>9}{'cpu s':>9}")
    for step, t in result.timings.items():
        print(f"{step:<12}{t['wall']:>9.1f}{t['cpu']:>9.1f}")
    print(f"{'demo()':<12}{wall:>9.1f}{cpu:>9.1f}   (including imports inside demo)")
    for r in result.rows:
        print(f"held-out {r['case']}: Dice {r['dice']:.4f} (raw {r['dice_raw']:.4f}), ASSD {r['assd']:.2f} mm")
    print(f"mean held-out liver Dice: {result.mean_dice:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
