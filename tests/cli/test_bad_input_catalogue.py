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
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from bad_geometry import SHEAR, SINGULAR, dicom_series, metaimage, nifti_claiming, nifti_pixdim, truncate
from typer.testing import CliRunner

from liverctl.cli import app
from liverctl.io.manifest import MANIFEST_NAME

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
    stdin: str | None = None


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


# ---- issue 19: the manifest holds for every spelling of a folder (paths relative to the test's cwd)


def _manifest(folder: Path, files: dict[str, Any], command: str) -> None:
    """A manifest as an earlier liverctl left it (``None``: claimed, no size or time recorded)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"liverctl_manifest": 1, "commands": [command], "files": files}
    (folder / MANIFEST_NAME).write_text(json.dumps(data))


def _predict_relative_null(t: Path) -> list[str]:
    """`predict ct.nii.gz -o o/m01/`, the user's file where the mask goes, an entry without size."""
    _write(t / "ct.nii.gz", ct_array())
    _write(t / "o" / "m01" / "ct.nii.gz", label_array())
    _manifest(t / "o" / "m01", {"ct.nii.gz": None, "o/m01/ct.nii.gz": None}, "predict")
    return ["predict", "ct.nii.gz", "-o", "o/m01/"]


def _predict_resume_replaced(t: Path) -> list[str]:
    """`--resume` after the user replaced an earlier mask: neither kept as ours nor replaced."""
    _write(t / "a.nii.gz", ct_array())
    _write(t / "o" / "k2" / "a.nii.gz", label_array())
    _manifest(t / "o" / "k2", {"a.nii.gz": {"bytes": 1, "mtime_ns": 1}, "a.json": None}, "predict")
    return ["predict", "a.nii.gz", "-o", "./o/k2", "--resume"]


def _postprocess_relative_null(t: Path) -> list[str]:
    _write(t / "pred.nii.gz", label_array())
    _write(t / "o" / "x" / "a.nii.gz", label_array())
    _manifest(t / "o" / "x", {"a.nii.gz": None, "o/x/a.nii.gz": None}, "postprocess")
    return ["postprocess", "pred.nii.gz", "-o", "o/x/a.nii.gz"]


def _phantom_other_spelling(t: Path) -> list[str]:
    """liverctl wrote ph/ (absolute path); the user edited its dataset.json; --overwrite, relative."""
    from liverctl.phantoms import phantom

    phantom(t / "ph", n=1, shape=(24, 24, 16))
    (t / "ph" / "dataset.json").write_text('{"mine": true}')
    return ["phantom", "./ph/../ph", "--count", "1", "--shape", "16,24,24", "--overwrite"]


def _preprocess_other_spelling(t: Path) -> list[str]:
    """liverctl wrote o/r14 (relative); the user edited a label array; --overwrite, absolute."""
    from liverctl.preprocessing import preprocess

    preprocess(dataset(t / "ds"), t / "o" / "r14", target_spacing=GEOMETRY_SPACING, normalization="image")
    (t / "o" / "r14" / "labels" / "a.npy").write_bytes(b"edited")
    return [
        "preprocess",
        "ds",
        "-o",
        str(t / "o" / "r14"),
        "--window",
        "liver",
        "--overwrite",
        "--normalization",
        "image",
    ]


# ---- issue 19: one geometry verdict, whatever the format and the command


def _geometry_dataset(t: Path, make: Callable[[Path], Path]) -> str:
    return str(dataset(t / "ds", make))


def _huge_spacing(t: Path) -> list[str]:
    """A dataset whose scans and labels say 1000 mm: resampled to 1.5 mm, terabytes."""
    for name in ("a", "b"):
        _write(t / "ds" / "imagesTr" / f"{name}_0000.nii.gz", ct_array(), (1000.0, 1000.0, 1000.0))
        _write(t / "ds" / "labelsTr" / f"{name}.nii.gz", label_array(), (1000.0, 1000.0, 1000.0))
    return ["preprocess", str(t / "ds"), "-o", str(t / "out"), "--spacing", "1.5,1.5,1.5", "--normalization", "image"]


def _mixed_folder(t: Path) -> list[str]:
    folder = dicom_series(t / "mixed")
    _write(folder / "other.nii.gz", ct_array())
    return ["predict", str(folder), "-o", str(t / "out")]


def _mhd_without_raw(t: Path) -> list[str]:
    _write(t / "m.mhd", label_array())
    (t / "m.raw").unlink()
    return ["evaluate", str(t / "m.mhd"), str(_write(t / "ref.nii.gz", label_array()))]


# ---- issue 19: option conflicts and messages


def _model_and_weights(t: Path) -> list[str]:
    from hub_server import registry_entry, write_registry

    (t / "w.pt").write_bytes(b"weights")
    write_registry(t / "w.pt.toml", [registry_entry("mine", "", "w.pt")], "mine")  # the recipe beside them
    scan = _write(t / "s.nii.gz", ct_array())
    return ["predict", str(scan), "-o", str(t / "out"), "--model", "other", "--weights", str(t / "w.pt")]


CATALOGUE_19 = [
    Bad("predict-relative-folder-unrecorded-entry", _predict_relative_null, "liverctl did not write it"),
    Bad("predict-resume-replaced-by-the-user", _predict_resume_replaced, "liverctl did not write it"),
    Bad("postprocess-relative-folder-unrecorded-entry", _postprocess_relative_null, "liverctl did not write it"),
    Bad("phantom-overwrite-other-spelling", _phantom_other_spelling, "liverctl did not write it"),
    Bad("preprocess-overwrite-other-spelling", _preprocess_other_spelling, "liverctl did not write it"),
    Bad(
        "postprocess-nifti-pixdim-0",
        lambda t: ["postprocess", str(nifti_pixdim(t / "m.nii", array=label_array())), "-o", str(t / "o.nii.gz")],
        "voxel spacing (0, 0, 0) mm (x, y, z) in its NIfTI header (pixdim)",
    ),
    Bad(
        "preprocess-nifti-negative-pixdim",
        lambda t: [
            "preprocess",
            _geometry_dataset(t, lambda p: nifti_pixdim(p, (-2.0, 2.0, 3.0), xform_code=1)),
            "-o",
            str(t / "out"),
        ],
        "voxel spacing (-2, 2, 3) mm",
    ),
    Bad(
        "preprocess-nifti-pixdim-0-with-an-affine",
        lambda t: [
            "preprocess",
            _geometry_dataset(t, lambda p: nifti_pixdim(p, (0.8, 0.8, 0.0), xform_code=1)),
            "-o",
            str(t / "out"),
        ],
        "voxel spacing (0.8, 0.8, 0) mm",
    ),
    Bad(
        "postprocess-mha-negative-spacing",
        lambda t: ["postprocess", str(metaimage(t / "m.mha", ("-2", "2", "3"))), "-o", str(t / "o.nii.gz")],
        "voxel spacing (-2, 2, 3) mm (x, y, z) in its header (ElementSpacing)",
    ),
    Bad(
        "postprocess-mha-nan-spacing",
        lambda t: ["postprocess", str(metaimage(t / "m.mha", ("nan", "2", "3"))), "-o", str(t / "o.nii.gz")],
        "voxel spacing (nan, 2, 3) mm",
    ),
    Bad(
        "evaluate-mha-sheared",
        lambda t: ["evaluate", str(metaimage(t / "p.mha", matrix=SHEAR)), str(metaimage(t / "r.mha"))],
        "TransformMatrix are sheared",
    ),
    Bad(
        "evaluate-mha-singular",
        lambda t: ["evaluate", str(metaimage(t / "p.mha", matrix=SINGULAR)), str(metaimage(t / "r.mha"))],
        "TransformMatrix are singular",
    ),
    Bad("evaluate-mhd-without-its-raw", _mhd_without_raw, "its data file m.raw is missing"),
    Bad("preprocess-spacing-1000mm", _huge_spacing, "more than any CT needs"),
    Bad(
        "postprocess-header-claims-64-GB",
        lambda t: ["postprocess", str(nifti_claiming(t / "m.nii", array=label_array())), "-o", str(t / "o.nii.gz")],
        "truncated file (9568 of 64000000352 bytes)",
    ),
    Bad("predict-folder-with-a-series-and-scans", _mixed_folder, "holds both image files"),
    Bad(
        "predict-fast-exact",
        lambda t: ["predict", str(_write(t / "s.nii.gz", ct_array())), "--fast", "--exact"],
        "contradict each other",
    ),
    Bad("predict-model-and-weights-with-their-recipe", _model_and_weights, "give one of them"),
    Bad(
        "predict-nul-from-stdin",
        lambda t: ["predict", "-", "-o", str(t / "out")],
        "no such file or folder: a\\x00b",
        stdin="a\x00b\n",
    ),
    Bad(
        "evaluate-json-file-under-a-file",
        lambda t: [
            "evaluate",
            str(masks(t / "p") / "a.nii.gz"),
            str(masks(t / "r") / "a.nii.gz"),
            "--json-file",
            str(t / "r" / "a.nii.gz" / "x.json"),
        ],
        "a.nii.gz is not a folder",
    ),
    Bad(
        "postprocess-empty-folder",
        lambda t: ["postprocess", str(Path(t / "empty").mkdir() or t / "empty"), "-o", str(t / "o")],
        "(.nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd)",
    ),
    Bad(
        "phantom-shape-as-given",
        lambda t: ["phantom", str(t / "ph"), "--shape", "0,10,10"],
        "X,Y,Z between 8 and 1024, got 0,10,10",
    ),
]


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
    *CATALOGUE_19,
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
    result = CliRunner().invoke(app, args, input=bad.stdin)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == bad.code, (result.exit_code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("liverctl: error: "), result.stderr
    assert bad.message in lines[0], lines[0]
    assert all(c.isprintable() for c in lines[0]), repr(lines[0])  # no raw control character
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


# --------------------------------------------------------------------------- issue 19, as a user runs them


GEOMETRY_FAULTS = {  # one scan file each, in one batch
    "pixdim-0": (lambda p: nifti_pixdim(p), "voxel spacing (0, 0, 0) mm"),
    "sheared": (lambda p: metaimage(p.with_name("sheared.mha"), matrix=SHEAR), "are sheared"),
    "spacing-1000mm": (lambda p: _write(p, ct_array(), (1000.0, 1000.0, 1000.0)), "more than any CT needs"),
}
SERIES_FAULTS = {  # one DICOM series folder each, given beside the batch folder
    "gap": (lambda p: dicom_series(p, skip=3), "slices slice_02.dcm and slice_04.dcm are 4 mm apart"),
    "truncated": (lambda p: truncate(dicom_series(p) / "slice_03.dcm").parent, "cannot read slice slice_03.dcm"),
}


def _cited(_: Path, entry: str) -> str:
    """A registry entry with a citation (predict notes it with the first result)."""
    return entry.replace('decision = "argmax"', 'decision = "argmax"\ncitation = "Test T., 2026"')


@pytest.mark.slow
def test_predict_geometry_faults(hub: dict[str, str], tmp_path: Path) -> None:
    """Each broken geometry is refused, naming the scan (or the slice), nothing else written; a
    lone bad scan gets its error alone (no citation first); the good scan of the batch is segmented,
    once, though ``-r`` meets a symlink loop."""
    env = dict(hub, OMP_NUM_THREADS="1")
    batch, series = tmp_path / "batch", tmp_path / "series"
    for name, (make, _) in GEOMETRY_FAULTS.items():
        make(batch / f"{name}.nii.gz")
    folders = [str(make(series / name)) for name, (make, _) in SERIES_FAULTS.items()]
    _write(batch / "good.nii.gz", ct_array())
    (batch / "self").symlink_to(".", target_is_directory=True)  # -r must not walk this loop: each scan once
    before = _snapshot(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "liverctl", "predict", "-r", str(batch), *folders, "-o", str(tmp_path / "masks")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "masks" / "good.nii.gz")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("liverctl: error: ")]
    for _, message in [*GEOMETRY_FAULTS.values(), *SERIES_FAULTS.values()]:
        assert sum(message in ln for ln in errors) == 1, (message, errors)
    n = len(GEOMETRY_FAULTS) + len(SERIES_FAULTS)
    assert len(errors) == n and proc.stderr.strip().splitlines()[-1] == f"liverctl: {n} of {n + 1} scan(s) failed"
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.nii.gz")) == ["good.nii.gz"]
    _check(before, {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith("masks")}, proc.stderr, "")
    lone = subprocess.run(
        [sys.executable, "-m", "liverctl", "predict", str(batch / "pixdim-0.nii.gz"), "-o", str(tmp_path / "lone")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    lines = lone.stderr.strip().splitlines()
    assert lone.returncode == 1 and len(lines) == 1 and "voxel spacing (0, 0, 0) mm" in lines[0], lone.stderr


@pytest.mark.slow
def test_predict_weights_faults(tmp_path: Path) -> None:
    """A private registry with a wrong pin: one line naming that registry file, and the Hub's blob
    stays in the shared cache, where another registry's (right) pin still uses it. The Hub down
    with nothing cached: one line within seconds, not after ~24 s of retries."""
    from hub_server import HubServer, client_env, registry_entry, write_registry

    from liverctl.models import build_model

    torch.manual_seed(0)
    net = build_model("segresnet", spatial_dims=3, in_channels=1, out_channels=2, init_filters=8)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    scan = _write(tmp_path / "in" / "s.nii.gz", ct_array())
    wrong = write_registry(tmp_path / "private.toml", [_cited(tmp_path, registry_entry("seg", "test/seg", "models/w.pt", sha256="0" * 64))], "seg")  # fmt: skip
    right = write_registry(
        tmp_path / "team.toml", [registry_entry("seg", "test/seg", "models/w.pt", sha256=sha)], "seg"
    )
    with HubServer() as server:
        server.add("test/seg", "models/w.pt", data)
        env = dict(client_env(server.url, tmp_path, wrong), OMP_NUM_THREADS="1")
        run = lambda reg, out: subprocess.run(  # noqa: E731
            [sys.executable, "-m", "liverctl", "predict", str(scan), "-o", str(tmp_path / out)],
            capture_output=True, text=True, env=dict(env, LIVERCTL_WEIGHTS_TOML=str(reg)),
        )  # fmt: skip
        bad = run(wrong, "m1")
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode != 0 and len(lines) == 1 and "sha256 mismatch" in lines[0], bad.stderr
        assert f"{wrong.resolve()} expects {'0' * 64}" in lines[0] and "left in the shared cache" in lines[0]
        blobs = Path(env["HF_HOME"]) / "hub" / "models--test--seg" / "blobs"
        assert [p.read_bytes() == data for p in blobs.iterdir()] == [True]
        good = run(right, "m2")  # the other registry's pin: the same cached blob, no second download
        assert good.returncode == 0 and (tmp_path / "m2" / "s.nii.gz").is_file(), good.stderr
    start = time.monotonic()
    down = subprocess.run(
        [sys.executable, "-m", "liverctl", "predict", str(scan), "-o", str(tmp_path / "m3")],
        capture_output=True, text=True, env=dict(env, HF_HOME=str(tmp_path / "empty"), LIVERCTL_WEIGHTS_TOML=str(right)),
    )  # fmt: skip
    lines = down.stderr.strip().splitlines()
    assert down.returncode != 0 and len(lines) == 1 and "cannot be reached" in lines[0], down.stderr
    assert time.monotonic() - start < 15  # one subprocess with its imports, not ~24 s of retries
    assert not (tmp_path / "m3").exists() and not (tmp_path / "m1").exists()
