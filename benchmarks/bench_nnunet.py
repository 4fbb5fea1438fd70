"""nnU-Net v2 models: nnUNetPredictor vs liverctl exact vs liverctl defaults, whole processes.

The same results folder (tests/data/nnunet, folds 0 and 1, made by nnU-Net 2.5.1 itself) and
the same scans (tests/support/nnunet_cases.py: native, anisotropic, oblique; or ``--repeat N`` copies of
them) go through three separate processes, each timed from its start to its last file written,
with the peak RSS of its whole process tree (sampled every 20 ms, children included):

* ``nnUNetv2_predict_from_modelfolder -f 0 1 -device cpu --save_probabilities`` (nnU-Net's CLI,
  its default preprocessing/export workers);
* liverctl exact (``NnUNetModel.load(..., exact=True)``), writing labels and probabilities;
* liverctl defaults (``NnUNetModel.load(...)``), writing labels and the liver probability.

Then it prints one table: wall seconds, peak RSS, Dice of the liver region vs nnU-Net's label
map, label agreement, and max |dp| of the liver probability vs nnU-Net's. nnU-Net 2.5.1 cannot
load checkpoints under torch >= 2.6 without ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (its training
log holds numpy scalars); the benchmark sets it for nnU-Net's process only. Usage::

    python benchmarks/bench_nnunet.py [--repeat 1] [--threads 2]
    python benchmarks/bench_nnunet.py --folder RESULTS/Dataset.../nnUNetTrainer__nnUNetPlans__3d_fullres \
        --folds 0 1 2 3 4 --scans ct1.nii.gz ct2.nii.gz   # a clinical-size model on your own scans

With ``--folder`` and ``--scans`` the model and scans are yours (the scans' liver label is then the
model's own: Dice is against nnU-Net's map, as always).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

LIVERCTL = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    import torch
    torch.set_num_threads(int(sys.argv[4]))
    from liverctl.io import read_image, write_image
    from liverctl.nnunet import NnUNetModel

    folder, inputs, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[5]
    folds = tuple(f if f == "all" else int(f) for f in sys.argv[6].split(","))
    exact = mode == "exact"
    model = NnUNetModel.load(folder, folds=folds, device="cpu", exact=exact)
    for scan in sorted(inputs.glob("*_0000.nii.gz")):
        stem = scan.name[: -len("_0000.nii.gz")]
        image = read_image(scan)
        result = model.predict(image, probabilities=exact)
        write_image(result.labels, out / f"{stem}.nii.gz")
        np.save(out / f"{stem}_liver.npy", result.liver_probability.array)
    """
)


def _tree_rss_kb(pid: int) -> int:
    """RSS (kB) of ``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parts = fh.read().rsplit(")", 1)[1].split()
            ppid, pages = int(parts[1]), int(parts[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * (os.sysconf("SC_PAGE_SIZE") // 1024)
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak tree RSS (MB) of one command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_kb(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{err[-3000:]}")
    return wall, peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="copies of the three scans")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=None, help="an nnU-Net v2 results folder (default: the test's)")
    parser.add_argument("--folds", nargs="+", default=["0", "1"], help="folds to run (default: 0 1)")
    parser.add_argument("--scans", nargs="+", type=Path, default=None, help="scans to run (default: the three tests')")
    args = parser.parse_args()

    from nnunet_cases import FOLDER, dice, write_cases

    from liverctl.io import read_image

    folder = args.folder or FOLDER
    work = Path(tempfile.mkdtemp(prefix="bench_nnunet_"))
    if args.scans:
        missing = [str(p) for p in args.scans if not p.is_file()]
        if missing:
            raise SystemExit(f"no such scan: {', '.join(missing)}")
        scans = {p.name.split(".")[0]: p for p in args.scans}
    else:
        scans = write_cases(work / "base")
    inputs = work / "in"
    inputs.mkdir()
    for r in range(args.repeat):
        for name, path in scans.items():
            shutil.copy(path, inputs / f"{name}{r:02d}_0000.nii.gz")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[key] = str(work / key)
    outs = {k: work / k for k in ("nnunet", "exact", "default")}
    for o in outs.values():
        o.mkdir()
    script = work / "liverctl_run.py"
    script.write_text(LIVERCTL)
    nnunet_cli = str(Path(sys.executable).with_name("nnUNetv2_predict_from_modelfolder"))
    timings = {}
    nn_env = dict(env, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    cmd = [nnunet_cli, "-i", str(inputs), "-o", str(outs["nnunet"]), "-m", str(folder), "-f", *args.folds]
    timings["nnUNetPredictor (CLI)"] = run(
        [*cmd, "-device", "cpu", "--save_probabilities", "--disable_progress_bar"], nn_env
    )
    for mode in ("exact", "default"):
        folds = ",".join(args.folds)
        cmd = [sys.executable, str(script), str(folder), str(inputs), str(outs[mode]), str(args.threads), mode, folds]
        timings[f"liverctl {mode}"] = run(cmd, env)

    rows = []
    for label, (wall, rss) in timings.items():
        key = "nnunet" if label.startswith("nnU") else label.split()[1]
        dices, agree, dp = [], [], []
        for scan in sorted(inputs.glob("*_0000.nii.gz")):
            stem = scan.name[: -len("_0000.nii.gz")]
            ref = read_image(outs["nnunet"] / f"{stem}.nii.gz").array
            ref_p = np.load(outs["nnunet"] / f"{stem}.npz")["probabilities"][1:].sum(0)
            got = read_image(outs[key] / f"{stem}.nii.gz").array
            got_p = ref_p if key == "nnunet" else np.load(outs[key] / f"{stem}_liver.npy")
            dices.append(dice(got > 0, ref > 0))
            agree.append(float((got == ref).mean()) if key != "default" else float(((got > 0) == (ref > 0)).mean()))
            dp.append(float(np.abs(got_p - ref_p).max()))
        rows.append((label, wall, rss, min(dices), min(agree), max(dp)))

    n = len(list(inputs.glob("*_0000.nii.gz")))
    base = rows[0][1]
    what = ", ".join(scans) + f" x {args.repeat}"
    print(f"{n} scans ({what}) of {folder.name}, folds {'+'.join(args.folds)}, mirroring, {args.threads} threads")
    print(
        f"{'run':24} {'wall s':>8} {'speed-up':>9} {'peak RSS MB':>12} {'min Dice':>9} {'min agree':>10} {'max |dp|':>9}"
    )
    for label, wall, rss, d, a, p in rows:
        print(f"{label:24} {wall:8.2f} {base / wall:8.2f}x {rss:12.0f} {d:9.4f} {a:10.5f} {p:9.2e}")
    print("(agreement: identical labels; for the defaults, liver region vs not. |dp|: liver probability)")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
