"""`liverctl demo --quick` end to end: every step runs, the printed table is the evaluation
of the written masks, and the overlay shows the reference slice through the liver centre."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from liverctl.errors import ConfigError, GeometryError, InputError
from liverctl.io import Geometry, Image


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    import os

    out = tmp_path_factory.mktemp("demo") / "demo"
    env = dict(os.environ, LIVERCTL_NO_PROGRESS="1")
    env.pop("LIVERCTL_DEBUG", None)
    # a relative -o with a trailing slash, as users type it (issue 19: its manifest keys must still
    # be the folder's own, so that the next demo replaces what this one wrote)
    cmd = [sys.executable, "-m", "liverctl", "demo", "--quick", "-o", "demo/", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=out.parent)
    return out, proc


def test_quick_demo_end_to_end(quick_demo):
    from liverctl.io import read_label
    from liverctl.metrics import dice

    out, proc = quick_demo
    assert proc.returncode == 0, proc.stderr
    for name in (
        "metrics.csv",
        "metrics.json",
        "overlay.png",
        "demo.json",
        "model/model.safetensors",
        "model/weights.toml",
    ):
        assert (out / name).is_file(), name
    doc = json.loads((out / "demo.json").read_text())
    rows = doc["rows"]
    assert [r["case"] for r in rows] == ["phantom_contrast_000", "phantom_contrast_001"]
    assert set(doc["timings"]) >= {"phantoms", "preprocess", "train", "predict", "postprocess", "evaluate", "total"}
    # the table printed is the Dice of the written (post-processed) masks against the references
    heldout = out / "phantoms" / "heldout"
    for r in rows:
        pred = read_label(out / "postprocessed" / f"{r['case']}.nii.gz").array
        ref = read_label(heldout / "labels" / f"{r['case']}.nii.gz").array
        assert r["dice"] == pytest.approx(dice(pred == 1, ref == 1), abs=1e-12)
        raw = read_label(out / "predictions" / f"{r['case']}.nii.gz").array
        assert r["dice_raw"] == pytest.approx(dice(raw == 1, ref == 1), abs=1e-12)
        assert f"{r['case']:<24}{r['dice']:>8.4f}" in proc.stdout
    assert doc["mean_dice"] == pytest.approx(np.mean([r["dice"] for r in rows]))
    assert f"{doc['mean_dice']:>8.4f}" in proc.stdout
    assert "overlay:" in proc.stdout and proc.stdout.count("\n") >= 6
    picture = mpimg.imread(out / "overlay.png")
    assert picture.ndim == 3 and min(picture.shape[:2]) > 200


def test_demo_refuses_foreign_folder(tmp_path):
    from liverctl.demo import demo

    (tmp_path / "thesis.docx").write_text("mine")
    with pytest.raises(InputError, match="not from a liverctl demo"):
        demo(tmp_path, quick=True)
    assert (tmp_path / "thesis.docx").read_text() == "mine"
    with pytest.raises(ConfigError, match="threads"):
        demo(tmp_path / "new", threads=0)


def _sphere(shape=(20, 30, 40), centre=(12, 15, 20), radius=6.0) -> np.ndarray:
    z, y, x = np.indices(shape)
    return ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2).astype(np.uint8)


def test_overlay_picks_the_reference_centre_slice(tmp_path, monkeypatch):
    import liverctl.plots as plots

    geometry = Geometry((1.5, 1.5, 3.0))
    ct = Image(np.full((20, 30, 40), -100, np.int16), geometry)
    ref = Image(_sphere(), geometry)
    pred = Image(_sphere(centre=(12, 15, 22)), geometry)
    seen = {}
    original = plots._pyplot

    def spy():
        plt = original()
        real = plt.Axes.imshow

        def imshow(self, data, *a, **k):
            seen.setdefault("slice", np.asarray(data).copy())
            return real(self, data, *a, **k)

        monkeypatch.setattr(plt.Axes, "imshow", imshow)
        return plt

    monkeypatch.setattr(plots, "_pyplot", spy)
    ct.array[12] = 50  # mark the slice through the sphere centre
    path = plots.overlay(ct, ref, pred, tmp_path / "o.png")
    assert path.is_file() and (seen["slice"] == 50).all()
    with pytest.raises(GeometryError):
        plots.overlay(ct, Image(np.zeros((5, 5, 5), np.uint8), geometry), None, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    with pytest.raises(ConfigError):
        plots.overlay(ct, ref, pred, tmp_path / "bad.png", slice_index=20)


def test_heatmap_with_missing_values(tmp_path):
    from liverctl.plots import heatmap

    m = np.array([[np.nan, 0.8], [0.6, np.nan]])
    path = heatmap(m, ["a", "b"], ["a", "b"], tmp_path / "h.png", best=[1, 0], title="t")
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50
    # all-missing matrix still draws
    heatmap(np.full((2, 2), np.nan), ["a", "b"], ["a", "b"], tmp_path / "e.png", best=[None, None])
    assert (tmp_path / "e.png").is_file()


def test_demo_does_not_clear_a_folder_it_did_not_write(tmp_path):
    from liverctl.demo import demo

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.pt").write_text("precious")
    with pytest.raises(InputError, match="not from a liverctl demo"):
        demo(tmp_path, quick=True)
    assert (tmp_path / "model" / "mine.pt").read_text() == "precious"


def test_an_earlier_demo_folder_is_replaced(quick_demo, tmp_path):
    import shutil

    from liverctl.demo import _prepare_output

    out, proc = quick_demo
    assert proc.returncode == 0, proc.stderr
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    (copy / "predictions" / "my_notes.txt").write_text("mine")  # the user's file inside a demo folder
    (copy / "metrics.csv").write_text("edited by hand")  # a demo output the user changed
    _prepare_output(copy)
    assert sorted(p.name for p in copy.iterdir()) == [
        ".liverctl-demo",
        ".liverctl-manifest.json",
        "metrics.csv",
        "predictions",
    ]
    assert [p.name for p in (copy / "predictions").iterdir()] == ["my_notes.txt"]
    assert (copy / "metrics.csv").read_text() == "edited by hand"
