"""The bad-input catalogue: every command, the bad inputs a user really makes.

For each case: the exit code, exactly one line on stderr (``liverctl: error: ...``, or for a
batch the per-scan lines and their count), no traceback, no new file anywhere under the test
folder (no half-written output, no download), and every input unchanged (by sha256).

Commands whose checks all come before a network is loaded run in this process (Typer's
runner); the per-scan failures of ``predict`` run as a user runs them, in a subprocess that
downloads its model from the local test Hub (``tests/support/hub_server.py``).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from typer.testing import CliRunner

from liverctl.cli import app

GEOMETRY_SPACING = (2.0, 2.0, 3.0)


# --------------------------------------------------------------------------- inputs


def _write(path: Path, array: np.ndarray, spacing=GEOMETRY_SPACING) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array)
    if img.GetDimension() == 3:
        img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def ct_array(shape=(16, 24, 24)) -> np.ndarray:
    """A small CT in HU: air around a 40 HU body with a 150 HU 'liver'."""
    a = np.full(shape, -1000, np.int16)
    a[2:-2, 3:-3, 3:-3] = 40
    a[5:11, 8:16, 8:16] = 150
    return a


def label_array(shape=(16, 24, 24)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[5:11, 8:16, 8:16] = 1
    return lab


def nan_ct(path: Path) -> Path:
    a = ct_array().astype(np.float32)
    a[8, 12, 12] = np.nan
    return _write(path, a)


def picture(path: Path) -> Path:
    return _write(path, np.random.default_rng(0).integers(0, 256, (16, 24, 24)).astype(np.uint8))


def all_air(path: Path) -> Path:
    return _write(path, np.full((16, 24, 24), -1000, np.int16))


def flat(path: Path) -> Path:
    return _write(path, np.full((24, 24), -1000, np.int16))


def truncated(path: Path) -> Path:
    full = _write(
        path.with_name("full_" + path.name),
        np.random.default_rng(1).integers(-1000, 1000, (16, 24, 24)).astype(np.int16),
    )
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return path


def dataset(root: Path, image: Callable[[Path], Path] | None = None) -> Path:
    """Two cases in the MSD layout; ``image`` replaces the first case's scan."""
    for name in ("a", "b"):
        target = root / "imagesTr" / f"{name}_0000.nii.gz"
        if name == "a" and image is not None:
            image(target)
        else:
            _write(target, ct_array())
        _write(root / "labelsTr" / f"{name}.nii.gz", label_array())
    return root


def masks(folder: Path, *, spacing=GEOMETRY_SPACING, bad: Callable[[Path], Path] | None = None) -> Path:
    _write(folder / "a.nii.gz", label_array(), spacing)
    if bad is not None:
        bad(folder / "b.nii.gz")
    else:
        _write(folder / "b.nii.gz", label_array(), spacing)
    return folder


def nan_label(path: Path) -> Path:
    a = label_array().astype(np.float32)
    a[0, 0, 0] = np.nan
    return _write(path, a)


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Bad:
    """One bad invocation: ``build(tmp)`` makes its inputs and returns the CLI arguments."""

    name: str
    build: Callable[[Path], list[str]]
    message: str
    code: int = 2


def _users_folder(tmp: Path) -> list[str]:
    own = tmp / "mine"
    _write(own / "images" / "case.nii.gz", ct_array())
    _write(own / "labels" / "case.nii.gz", label_array())
    return ["preprocess", str(dataset(tmp / "ds")), "-o", str(own), "--overwrite"]


def _prep(tmp: Path) -> str:
    """A labelled preprocess output (the --like of preprocess --unlabelled)."""
    from liverctl.preprocessing import preprocess

    preprocess(dataset(tmp / "lab"), tmp / "prep", target_spacing=GEOMETRY_SPACING, normalization="image")
    return str(tmp / "prep")


def _foreign_mask(tmp: Path) -> list[str]:
    _write(tmp / "ref" / "a.nii.gz", label_array())  # the user's reference, where the mask would go
    _write(tmp / "pred" / "a.nii.gz", label_array())
    return ["postprocess", str(tmp / "pred"), "-o", str(tmp / "ref")]


def _foreign_phantom(tmp: Path) -> list[str]:
    (tmp / "ph" / "labelsTr").mkdir(parents=True)
    (tmp / "ph" / "dataset.json").write_text("{}")  # the user's own file of the same name
    return ["phantom", str(tmp / "ph"), "--count", "1", "--shape", "24,24,16", "--overwrite"]


CATALOGUE = [
    # predict: every check before a model is loaded
    Bad("predict-missing", lambda t: ["predict", str(t / "nope.nii.gz"), "-o", str(t / "out")], "no such file"),
    Bad(
        "predict-png-output",
        lambda t: ["predict", str(_write(t / "s.nii.gz", ct_array())), "-o", str(t / "x.png")],
        "not a mask format",
    ),
    Bad(
        "predict-output-under-a-file",
        lambda t: ["predict", str(_write(t / "s.nii.gz", ct_array())), "-o", str(t / "s.nii.gz" / "m.nii.gz")],
        "is not a folder",
    ),
    Bad(
        "predict-output-is-input",
        lambda t: ["predict", str(_write(t / "s.nii.gz", ct_array())), "-o", str(t / "s.nii.gz")],
        "input file",
    ),
    Bad(
        "predict-replaces-users-file",
        lambda t: [
            "predict",
            str(_write(t / "s.nii.gz", ct_array())),
            "-o",
            str(_write(t / "labels" / "s.nii.gz", label_array()).parent),
        ],
        "liverctl did not write it",
    ),
    Bad(
        "predict-overlap",
        lambda t: ["predict", str(_write(t / "s.nii.gz", ct_array())), "--overlap", "1.5"],
        "--overlap",
    ),
    Bad(
        "predict-device",
        lambda t: ["predict", str(_write(t / "s.nii.gz", ct_array())), "--device", "quantum"],
        "unknown device",
    ),
    Bad("predict-shard", lambda t: ["predict", str(_write(t / "s.nii.gz", ct_array())), "--shard", "x"], "--shard"),
    Bad(
        "predict-precision",
        lambda t: ["predict", str(_write(t / "s.nii.gz", ct_array())), "--precision", "fp8"],
        "precision",
    ),
    # preprocess
    Bad("preprocess-missing", lambda t: ["preprocess", str(t / "nope"), "-o", str(t / "out")], "no such"),
    Bad("preprocess-nan-nifti", lambda t: ["preprocess", str(dataset(t / "ds", nan_ct)), "-o", str(t / "out")], "NaN"),
    Bad(
        "preprocess-picture",
        lambda t: ["preprocess", str(dataset(t / "ds", picture)), "-o", str(t / "out")],
        "does not look like CT",
    ),
    Bad(
        "preprocess-all-air", lambda t: ["preprocess", str(dataset(t / "ds", all_air)), "-o", str(t / "out")], "no body"
    ),
    Bad("preprocess-2d", lambda t: ["preprocess", str(dataset(t / "ds", flat)), "-o", str(t / "out")], "2D image"),
    Bad(
        "preprocess-truncated",
        lambda t: ["preprocess", str(dataset(t / "ds", truncated)), "-o", str(t / "out")],
        "cannot read",
    ),
    Bad(
        "preprocess-into-dataset",
        lambda t: ["preprocess", str(dataset(t / "ds")), "-o", str(t / "ds")],
        "input dataset",
    ),
    Bad("preprocess-overwrite-users-folder", _users_folder, "not from a liverctl preprocess"),
    Bad(
        "preprocess-workers",
        lambda t: ["preprocess", str(dataset(t / "ds")), "-o", str(t / "out"), "--workers", "0"],
        "--workers",
    ),
    Bad(
        "preprocess-unlabelled-without-like",
        lambda t: ["preprocess", "--unlabelled", str(dataset(t / "ds")), "-o", str(t / "out")],
        "needs --like",
    ),
    Bad(
        "preprocess-unlabelled-all-air",
        lambda t: [
            "preprocess",
            "--unlabelled",
            str(dataset(t / "u", all_air)),
            "--like",
            _prep(t),
            "-o",
            str(t / "out"),
        ],
        "no body",
    ),
    Bad(
        "preprocess-split-all-air",  # whichever share the scan falls in: refused before anything is written
        lambda t: ["preprocess", str(dataset(t / "ds", all_air)), "-o", str(t / "out"), "--labelled-fraction", "0.5"],
        "no body",
    ),
    # train and crosstest
    Bad("train-missing", lambda t: ["train", str(t / "nope"), "-o", str(t / "run")], "no such"),
    Bad(
        "train-output-inside-dataset",
        lambda t: ["train", str(dataset(t / "ds")), "-o", str(t / "ds" / "run")],
        "lies inside",
    ),
    Bad(
        "train-raw-dataset-device",
        lambda t: ["train", str(dataset(t / "ds")), "-o", str(t / "run"), "--device", "quantum"],
        "device",
    ),
    Bad("crosstest-missing", lambda t: ["crosstest", str(t / "a"), str(t / "b"), "-o", str(t / "ct")], "no such"),
    # evaluate
    Bad("evaluate-missing", lambda t: ["evaluate", str(t / "p"), str(masks(t / "r"))], "no such"),
    Bad(
        "evaluate-nan-label", lambda t: ["evaluate", str(masks(t / "p", bad=nan_label)), str(masks(t / "r"))], "NaN", 2
    ),
    Bad(
        "evaluate-other-grid",
        lambda t: ["evaluate", str(masks(t / "p", spacing=(1.0, 1.0, 1.0))), str(masks(t / "r"))],
        "grid",
    ),
    # postprocess
    Bad("postprocess-missing", lambda t: ["postprocess", str(t / "nope.nii.gz"), "-o", str(t / "o.nii.gz")], "no such"),
    Bad(
        "postprocess-nan-label",
        lambda t: ["postprocess", str(nan_label(t / "m.nii.gz")), "-o", str(t / "o.nii.gz")],
        "NaN",
    ),
    Bad("postprocess-into-input", lambda t: ["postprocess", str(masks(t / "m")), "-o", str(t / "m")], "input folder"),
    Bad("postprocess-replaces-users-file", _foreign_mask, "liverctl did not write it"),
    Bad(
        "postprocess-png-output",
        lambda t: ["postprocess", str(masks(t / "m") / "a.nii.gz"), "-o", str(t / "o.png")],
        "format",
    ),
    # phantom, demo, weights
    Bad("phantom-count", lambda t: ["phantom", str(t / "ph"), "--count", "0"], "at least 1"),
    Bad("phantom-overwrite-users-file", _foreign_phantom, "liverctl did not write it"),
    Bad("demo-device", lambda t: ["demo", "-o", str(t / "demo"), "--device", "quantum"], "unknown device"),
    Bad(
        "demo-foreign-folder",
        lambda t: ["demo", "-o", str(_write(t / "d" / "thesis.nii.gz", ct_array()).parent), "--quick"],
        "not from a liverctl demo",
    ),
    Bad("weights-unknown", lambda t: ["weights", "download", "nope"], "unknown model"),
    Bad("weights-add-folds", lambda t: [*_ADD, "--folds", "0,x", "--registry", str(t / "w.toml")], "--folds must be"),
    Bad(
        "weights-add-folder",
        lambda t: [
            "weights",
            "add",
            "o/r",
            "--revision",
            "main",
            "--folder",
            "D/3d_fullres",
            "--registry",
            str(t / "w"),
        ],
        "folder: must be a <trainer>__<plans>__<configuration> path",
    ),
    Bad("weights-add-existing", lambda t: [*_ADD, "--name", "wholebody-ct-3mm", "--registry", _shipped(t)], "--force"),
]


_ADD = ["weights", "add", "o/r", "--revision", "main", "--folder", "D/nnUNetTrainer__nnUNetPlans__3d_fullres"]


def _shipped(t: Path) -> str:
    """A copy of the shipped registry (``weights add`` must refuse a taken name before any download)."""
    path = t / "weights.toml"
    path.write_text((Path(__file__).resolve().parents[2] / "weights.toml").read_text())
    return str(path)


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def _check(before: dict[str, str], after: dict[str, str], stderr: str, stdout: str) -> None:
    assert "Traceback" not in stderr + stdout and "internal error" not in stderr
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"


@pytest.mark.parametrize("bad", CATALOGUE, ids=[b.name for b in CATALOGUE])
def test_bad_input_is_one_line_and_changes_nothing(bad: Bad, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    args = bad.build(work)
    before = _snapshot(work)
    monkeypatch.chdir(work)  # predict's default output folder is the current one
    monkeypatch.setenv("LIVERCTL_NO_PROGRESS", "1")
    monkeypatch.setenv("LIVERCTL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LIVERCTL_DEBUG", raising=False)
    result = CliRunner().invoke(app, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == bad.code, (result.exit_code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("liverctl: error: "), result.stderr
    assert bad.message in lines[0], lines[0]
    _check(before, _snapshot(work), result.stderr, result.stdout)
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*.safetensors"))


def test_catalogue_covers_every_command() -> None:
    named = {b.name.split("-")[0] for b in CATALOGUE}
    assert named == {
        "predict",
        "preprocess",
        "train",
        "crosstest",
        "evaluate",
        "postprocess",
        "phantom",
        "demo",
        "weights",
    }


# --------------------------------------------------------------------------- per-scan failures of predict


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    from hub_server import HubServer, client_env, registry_entry, write_registry

    from liverctl.models import build_model

    tmp = tmp_path_factory.mktemp("catalogue-hub")
    torch.manual_seed(0)
    net = build_model("segresnet", spatial_dims=3, in_channels=1, out_channels=2, init_filters=8)
    torch.save(net.state_dict(), tmp / "w.pt")
    with HubServer() as server:
        server.add("test/seg", "models/w.pt", (tmp / "w.pt").read_bytes())
        sha = hashlib.sha256((tmp / "w.pt").read_bytes()).hexdigest()
        reg = write_registry(
            tmp / "weights.toml", [registry_entry("seg", "test/seg", "models/w.pt", sha256=sha)], "seg"
        )
        yield client_env(server.url, tmp, reg)


SCAN_FAULTS = {
    "nan-nifti": (nan_ct, "NaN or infinite"),
    "picture": (picture, "does not look like CT"),
    "single-slice": (flat, "2D image"),
    "truncated": (truncated, "cannot read"),
}


@pytest.mark.slow
def test_predict_per_scan_faults(hub: dict[str, str], tmp_path: Path) -> None:
    """Each fault alone: one line, exit 1, nothing written. All together in one batch with a good
    scan: the good mask is written, each fault is named once, and the count closes the output."""
    env = dict(hub, OMP_NUM_THREADS="1")
    for name, (make, message) in SCAN_FAULTS.items():
        work = tmp_path / name
        scan = make(work / f"{name}.nii.gz")
        before = _snapshot(work)
        proc = subprocess.run(
            [sys.executable, "-m", "liverctl", "predict", str(scan), "-o", str(work / "out")],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("liverctl: error: ") and message in lines[0], proc.stderr
        after = {k: v for k, v in _snapshot(work).items() if not k.startswith("out")}
        _check(before, after, proc.stderr, proc.stdout)
        assert not (work / "out").exists() or not any((work / "out").glob("*.nii.gz"))
    batch = tmp_path / "batch"
    for name, (make, _) in SCAN_FAULTS.items():
        make(batch / f"{name}.nii.gz")
    _write(batch / "good.nii.gz", ct_array())
    proc = subprocess.run(
        [sys.executable, "-m", "liverctl", "predict", str(batch), "-o", str(tmp_path / "masks")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "masks" / "good.nii.gz")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("liverctl: error: ")]
    assert len(errors) == len(SCAN_FAULTS) and proc.stderr.strip().splitlines()[-1] == "liverctl: 4 of 5 scan(s) failed"
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.nii.gz")) == ["good.nii.gz"]
    summary = (tmp_path / "masks" / "summary.csv").read_text().splitlines()
    assert len(summary) == 6 and sum(",failed," in row for row in summary) == 4


def test_same_scan_same_verdict_in_every_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One CT check for every reader: predict's library path and preprocess refuse the same
    files with the same words (NIfTI NaN too, which ITK reads as 0)."""
    from liverctl.errors import LiverctlError
    from liverctl.io.ct import read_ct
    from liverctl.preprocessing import preprocess

    for name, (make, message) in {
        **SCAN_FAULTS,
        "nan-nrrd": (lambda p: nan_ct(p.with_suffix("").with_suffix(".nrrd")), "NaN"),
    }.items():
        scan = make(tmp_path / name / "a_0000.nii.gz")
        with pytest.raises(LiverctlError, match=message.split()[0]) as by_predict:
            read_ct(scan)
        with pytest.raises(LiverctlError, match=message.split()[0]) as by_preprocess:
            root = dataset(tmp_path / f"ds-{name}")
            (root / "imagesTr" / "a_0000.nii.gz").unlink()
            target = root / "imagesTr" / ("a_0000" + "".join(scan.suffixes))
            target.write_bytes(scan.read_bytes())
            preprocess(root, tmp_path / f"out-{name}")
        verdict = str(by_predict.value).replace(str(scan), "")
        assert verdict in str(by_preprocess.value).replace(str(target), ""), name
