"""An output folder is liverctl's only where its manifest says so, whatever the spelling of the
folder, and two processes writing into one folder lose nothing (issue 19)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from liverctl.errors import InputError
from liverctl.io.manifest import MANIFEST_NAME, Manifest, real_path

# A pointwise two-class "network" (liver where HU is near 150) and a model around it: no download.
_MODEL = """
import torch
from pathlib import Path
from liverctl import weights as lw
from liverctl.predict import LiverModel

class Band(torch.nn.Module):
    min_input_multiple = 1
    def forward(self, x):
        liver = 4.0 * (1.0 - ((x - 150.0) / 40.0) ** 2)
        return torch.cat([torch.zeros_like(liver), liver], dim=1)

entry = lw.ModelEntry(
    name="band", repo_id="local/band", filename="band.pt", revision="main", sha256="", architecture="band",
    kwargs={}, spacing=(3.0, 3.0, 3.0), orientation="RAS", interpolation="linear",
    intensity=lw.IntensityRecipe("window-zscore", window=(-1024.0, 3000.0), mean=0.0, std=1.0),
    n_classes=2, liver_channel=1, decision="argmax", labels={"liver": 1},
    sliding_window=lw.WindowRecipe(roi=(32, 32, 32)),
)
band = LiverModel([lw.ResolvedWeights(entry, Path("band.pt"), "0" * 64, "local")], [Band()], torch.device("cpu"))
"""


@pytest.fixture(scope="module")
def band():
    scope: dict = {}
    exec(_MODEL, scope)
    return scope["band"]


def _scan(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    ct = np.full((20, 24, 24), -900, np.int16)
    ct[3:17, 4:20, 4:20] = rng.normal(40, 5, (14, 16, 16)).astype(np.int16)
    ct[6:14, 6:18, 6:16] = 150
    img = sitk.GetImageFromArray(ct)
    img.SetSpacing((3.0, 3.0, 3.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- spellings


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """base/o/m01 (the folder), base/o/x (a sibling), link -> base/o (a symlink)."""
    root = tmp_path_factory.mktemp("spell")
    (root / "base" / "o" / "m01").mkdir(parents=True)
    (root / "base" / "o" / "x").mkdir()
    (root / "link").symlink_to(root / "base" / "o", target_is_directory=True)
    return root


def _spellings(root: Path) -> list[str]:
    """Ways to name base/o/m01 from the working directory base/."""
    return [
        "o/m01",
        "o/m01/",
        "./o/m01",
        "o/x/../m01",
        "../base/o/m01",
        str(root / "base" / "o" / "m01"),
        str(root / "link" / "m01"),
        "../link/m01/",
        "../link/x/../m01",
    ]


@settings(max_examples=40, deadline=None)
@given(writer=st.integers(0, 8), reader=st.integers(0, 8), name=st.sampled_from(["ct.nii.gz", "a b.json"]))
def test_every_spelling_of_a_folder_is_one_manifest_and_one_key(tree: Path, writer: int, reader: int, name: str):
    cwd = os.getcwd()
    os.chdir(tree / "base")
    try:
        spell = _spellings(tree)
        folder_w, folder_r = spell[writer], spell[reader]
        target = Path(folder_w) / name
        target.write_text("liverctl's")
        Manifest(folder_w).record([target], "predict")
        assert Manifest(folder_r).path == (tree / "base" / "o" / "m01" / MANIFEST_NAME).resolve()
        assert real_path(Path(folder_r) / name) == real_path(target)
        assert Manifest(folder_r).owns(Path(folder_r) / name)
        # the user's file in its place, any spelling: foreign, refused, kept
        (Path(folder_r) / name).write_text("the user's own, longer file")
        for other in (folder_w, folder_r):
            assert not Manifest(other).owns(Path(other) / name)
            with pytest.raises(InputError, match="liverctl did not write it"):
                Manifest(other).check_replaceable([Path(other) / name])
        assert Manifest(folder_w).remove_owned() == []
        assert (Path(folder_w) / name).read_text() == "the user's own, longer file"
    finally:
        (tree / "base" / "o" / "m01" / name).unlink(missing_ok=True)
        (tree / "base" / "o" / "m01" / MANIFEST_NAME).unlink(missing_ok=True)
        os.chdir(cwd)


def test_a_claimed_entry_never_owns_a_file_that_is_there(tmp_path: Path):
    m = Manifest(tmp_path)
    m.claim([tmp_path / "ct.nii.gz"], "predict")
    assert m.owns(tmp_path / "ct.nii.gz")  # nothing there yet: liverctl may write it
    (tmp_path / "ct.nii.gz").write_text("appeared without its size recorded")
    assert not Manifest(tmp_path).owns(tmp_path / "ct.nii.gz")
    # an old manifest with null entries (liverctl <= 0.x) owns no existing file either
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data["files"] == {"ct.nii.gz": None}
    assert Manifest(tmp_path).foreign([tmp_path / "ct.nii.gz"]) == [tmp_path / "ct.nii.gz"]


# --------------------------------------------------------------------------- predict


def test_predict_into_a_relative_folder_never_replaces_the_users_file(band, tmp_path: Path, monkeypatch):
    from liverctl.predict import predict

    monkeypatch.chdir(tmp_path)
    _scan(tmp_path / "ct.nii.gz", 0)
    first = predict("ct.nii.gz", "o/m01/", loaded=band)
    assert first.cases[0].ok and Manifest("o/m01").owns("o/m01/ct.nii.gz")
    predict("ct.nii.gz", "./o/m01", loaded=band)  # its own output, any spelling: replaced
    (tmp_path / "o" / "m01" / "ct.nii.gz").write_bytes(b"the user's mask" * 50)
    kept = _sha(tmp_path / "o" / "m01" / "ct.nii.gz")
    for out, resume in (("o/m01/", False), (str(tmp_path / "o" / "m01"), True)):
        with pytest.raises(InputError, match="liverctl did not write it"):
            predict("ct.nii.gz", out, loaded=band, resume=resume)
    assert _sha(tmp_path / "o" / "m01" / "ct.nii.gz") == kept


_WORKER = (
    _MODEL
    + """
import sys, time
from pathlib import Path
from liverctl.predict import predict
scans, out, ready, go = sys.argv[1].split(","), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
ready.write_text("ready")
while not go.exists():
    time.sleep(0.01)
result = predict(scans, out, loaded=band)
assert all(c.ok for c in result.cases), [c.error for c in result.cases]
"""
)


def test_two_processes_writing_one_folder_keep_every_entry_and_row(tmp_path: Path):
    runs = {k: [str(_scan(tmp_path / k / f"{k}{i}.nii.gz", i)) for i in range(4)] for k in ("A", "B")}
    out, go = tmp_path / "out", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, ",".join(scans), str(out), str(tmp_path / f"ready{k}"), str(go)],
            env=env,
        )
        for k, scans in runs.items()
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{k}").exists() for k in runs) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.write_text("go")  # both start writing at once
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    masks = [out / f"{k}{i}.nii.gz" for k in runs for i in range(4)]
    manifest = Manifest(out)
    assert all(manifest.owns(m) and manifest.owns(m.with_name(m.name.replace(".nii.gz", ".json"))) for m in masks)
    assert manifest.owns(out / "summary.csv")
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert sorted(Path(r["input"]).name for r in rows) == sorted(m.name for m in masks)
    assert all(r["status"] == "ok" for r in rows)
