"""Tumour outputs of liver + tumour models (H-DenseUNet): the label map (liver 1, tumour 2,
tumour only inside the liver), tumour volume and burden in the report and summary.csv, and
``evaluate`` scoring the tumour; liver-only models keep their 0/1 masks.

A pointwise 3-class 'network' (each voxel's logits depend on its own HU value only) on a
synthetic scan makes the expected label map known exactly."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from liverctl import weights as lw
from liverctl.evaluation import evaluate_images
from liverctl.io import Geometry, Image
from liverctl.postprocessing import tumour_in_liver
from liverctl.predict import LiverModel
from liverctl.predict.report import write_summary
from liverctl.predict.results import CaseResult

LIVER_HU, TUMOUR_HU = 150.0, 60.0


class TumourBandNet(torch.nn.Module):
    """Background / liver / tumour where the HU value lies near 150 / near 60."""

    min_input_multiple = 1

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        liver = 4.0 * (1.0 - ((x - LIVER_HU) / 30.0) ** 2)
        tumour = 4.0 * (1.0 - ((x - TUMOUR_HU) / 20.0) ** 2)
        return torch.cat([torch.zeros_like(x), liver, tumour][: self.classes], dim=1)


def model(labels: dict[str, int]) -> LiverModel:
    entry = lw.ModelEntry(
        name="bands",
        repo_id="local/bands",
        filename="bands.pt",
        revision="main",
        sha256="",
        architecture="bands",
        kwargs={},
        spacing=(2.0, 2.0, 2.0),
        orientation="LPS",
        interpolation="linear",
        intensity=lw.IntensityRecipe("window-zscore", window=(-1024.0, 3000.0), mean=0.0, std=1.0),
        n_classes=len(labels) + 1,
        liver_channel=1,
        decision="argmax",
        labels=labels,
        sliding_window=lw.WindowRecipe(roi=(32, 32, 32)),
    )
    net = TumourBandNet(len(labels) + 1)
    return LiverModel([lw.ResolvedWeights(entry, Path("bands.pt"), "0" * 64, "local")], [net], torch.device("cpu"))


def scan() -> tuple[Image, np.ndarray]:
    """-100 HU body, a 150 HU liver ball with a 60 HU tumour inside, and a 60 HU blob outside
    the liver; returns the scan and its reference label map (liver 1, tumour 2)."""
    zz, yy, xx = np.meshgrid(np.arange(24), np.arange(40), np.arange(40), indexing="ij")
    hu = np.full((24, 40, 40), -100.0)
    ref = np.zeros(hu.shape, np.uint8)
    liver = (zz - 12) ** 2 + (yy - 18) ** 2 + (xx - 18) ** 2 < 10**2
    tumour = (zz - 12) ** 2 + (yy - 18) ** 2 + (xx - 21) ** 2 < 4**2
    hu[liver], ref[liver] = LIVER_HU, 1
    hu[tumour], ref[tumour] = TUMOUR_HU, 2
    hu[2:5, 34:37, 34:37] = TUMOUR_HU  # a tumour-like blob outside the liver: not a tumour
    return Image(hu.astype(np.int16), Geometry((2.0, 2.0, 2.0))), ref


def test_tumour_in_liver_known_answer() -> None:
    region = np.array([[0, 1, 1, 1, 0, 0]], bool)
    tumour = np.array([[0, 0, 1, 0, 0, 1]], bool)
    assert tumour_in_liver(region, tumour).tolist() == [[0, 1, 2, 1, 0, 0]]


def test_tumour_model_writes_label_map_reports_burden_and_evaluates(tmp_path) -> None:
    image, ref = scan()
    seg = model({"liver": 1, "tumour": 2}).segment(image)
    labels = seg.mask.array
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    assert np.array_equal(labels, ref)  # the outside blob is gone, the inner tumour kept
    voxel_ml = 8.0 / 1000
    r = seg.report
    assert r["tumour_voxel_count"] == int((ref == 2).sum())
    assert r["tumour_volume_ml"] == pytest.approx((ref == 2).sum() * voxel_ml, abs=1e-3)
    assert r["liver_volume_ml"] == pytest.approx((ref > 0).sum() * voxel_ml, abs=1e-3)  # the whole organ
    assert r["tumour_burden"] == pytest.approx((ref == 2).sum() / (ref > 0).sum(), abs=1e-6)
    # evaluate scores the tumour class (LiTS regions: liver = 1 + 2, tumour = 2)
    result = evaluate_images(seg.mask, Image(ref, image.geometry), regions="lits")
    dice = {row.region: row.values()["dice"] for row in result.rows}
    assert dice == {"liver": pytest.approx(1.0), "tumour": pytest.approx(1.0)}
    # summary.csv: tumour columns filled for this model, blank for a liver-only one
    liver_only = model({"liver": 1}).segment(image)
    assert set(np.unique(liver_only.mask.array).tolist()) <= {0, 1} and "tumour_burden" not in liver_only.report
    path = write_summary(
        [CaseResult("a", report=seg.report), CaseResult("b", report=liver_only.report)], tmp_path / "s.csv"
    )
    rows = list(csv.DictReader(path.open()))
    assert float(rows[0]["tumour_volume_ml"]) == r["tumour_volume_ml"]
    assert float(rows[0]["tumour_burden"]) == r["tumour_burden"]
    assert rows[1]["tumour_volume_ml"] == rows[1]["tumour_burden"] == ""
