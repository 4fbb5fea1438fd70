"""liverctl.metrics.surface_dice: NSD equal to DeepMind's surface-distance package (a test-only dependency).

DeepMind's package works on arrays with the spacing per array axis and knows no
direction matrix, so the comparisons are on the voxel grid, which is where NSD is defined.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from liverctl.errors import ConfigError, GeometryError
from liverctl.evaluation import EvaluateOptions, evaluate, evaluate_images
from liverctl.io import Geometry, Image, read_label, write_mask
from liverctl.metrics.surface_dice import (
    nsd_name,
    parse_tolerances,
    surface_dice,
    surface_dice_at,
    surfel_area_table,
    surfels,
)

sd = pytest.importorskip("surface_distance", reason="DeepMind's surface-distance (test extra) is not installed")

TOL = 1e-6


def _deepmind(pred: np.ndarray, ref: np.ndarray, spacing, tolerances) -> list[float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy.ndimage.filters / morphology namespaces are deprecated
        dists = sd.compute_surface_distances(ref.astype(bool), pred.astype(bool), tuple(float(s) for s in spacing))
        return [float(sd.compute_surface_dice_at_tolerance(dists, t)) for t in tolerances]


def _blobs(shape, seed: int, sigma: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), sigma) > 0.5


def test_surfel_areas_equal_deepmind_table() -> None:
    from surface_distance import lookup_tables

    for spacing in [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8), (0.7, 1.9, 3.1), (5.0, 0.3, 1.0)]:
        ours = surfel_area_table(spacing)
        theirs = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
        assert np.max(np.abs(ours - theirs)) < 1e-12, spacing
    # a unit cube voxel: its surface is 8 corner surfels adding up to less than 6 mm² (cut corners)
    cube = np.zeros((3, 3, 3), bool)
    cube[1, 1, 1] = True
    s = surfels(cube, (1, 1, 1))
    assert len(s.corners) == 8 and s.origin == (1, 1, 1)
    assert s.area == pytest.approx(8 * np.sqrt(3) / 8)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8), (0.6, 1.7, 3.3)])
def test_random_masks_anisotropic_equal_deepmind(spacing) -> None:
    worst = 0.0
    for seed in range(6):
        ref = _blobs((14, 22, 19), seed)
        pred = np.roll(ref, 1, axis=seed % 3) if seed % 2 else _blobs((14, 22, 19), seed + 100)
        tols = [0.0, 0.5, 1.0, spacing[0], 2 * spacing[1], 4.0]  # voxel multiples hit the <= boundary exactly
        ours = surface_dice_at(pred, ref, spacing, tols)
        theirs = _deepmind(pred, ref, spacing, tols)
        worst = max(worst, *(abs(ours[float(t)] - v) for t, v in zip(tols, theirs, strict=True)))
    assert worst < TOL


def test_masks_touching_the_volume_edge() -> None:
    ref = np.zeros((6, 9, 9), bool)
    ref[:, :5, 2:] = True  # touches 4 faces of the volume
    pred = np.zeros_like(ref)
    pred[1:, :6, 3:] = True
    for spacing in [(1, 1, 1), (3.0, 0.7, 1.1)]:
        assert surface_dice(pred, ref, spacing, 1.0) == pytest.approx(_deepmind(pred, ref, spacing, [1.0])[0], abs=TOL)


def test_real_liver_shifted_and_eroded(liver_path: Path) -> None:
    liver = read_label(liver_path)
    ref = liver.array == 1
    sp = liver.spacing_zyx
    shifted = np.roll(ref, 2, axis=1)
    eroded = ndi.binary_erosion(ref, iterations=1)
    tols = [1.0, 3.0, 4.5]  # 3 mm = one voxel of this scan: the <= boundary
    for pred in (shifted, eroded):
        ours = surface_dice_at(pred, ref, sp, tols)
        theirs = _deepmind(pred, ref, sp, tols)
        assert max(abs(ours[t] - v) for t, v in zip(tols, theirs, strict=True)) < TOL
    assert 0.0 < surface_dice(shifted, ref, sp, 1.0) < surface_dice(shifted, ref, sp, 6.0) <= 1.0


def test_real_multiorgan_liver_5_via_pred_regions(liver_path: Path, multiorgan_path: Path) -> None:
    result = evaluate(
        multiorgan_path, liver_path, EvaluateOptions(regions="liver=1", pred_regions="liver=5", nsd="1,3")
    )
    row = result.rows[0]
    assert (row.region, row.pred_labels, row.ref_labels) == ("liver", (5,), (1,))
    multi, liver = read_label(multiorgan_path), read_label(liver_path)
    theirs = _deepmind(multi.array == 5, liver.array == 1, liver.spacing_zyx, [1.0, 3.0])
    assert abs(row.extra["nsd_1mm"] - theirs[0]) < TOL and abs(row.extra["nsd_3mm"] - theirs[1]) < TOL


def test_oblique_grid_is_scored_on_the_voxel_grid() -> None:
    angle = np.deg2rad(30)
    c, s = np.cos(angle), np.sin(angle)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    geo = Geometry((0.8, 1.3, 2.5), (10.0, -4.0, 7.0), direction)
    ref = _blobs((12, 20, 18), 7).astype(np.uint8)
    pred = np.roll(ref, 1, axis=2)
    result = evaluate_images(Image(pred, geo), Image(ref, geo), EvaluateOptions(nsd=[1.0, 2.0]))
    theirs = _deepmind(pred, ref, geo.spacing_zyx, [1.0, 2.0])
    assert abs(result.rows[0].extra["nsd_1mm"] - theirs[0]) < TOL
    assert abs(result.rows[0].extra["nsd_2mm"] - theirs[1]) < TOL


def test_empty_masks_and_bad_input() -> None:
    empty = np.zeros((4, 5, 6), bool)
    full = empty.copy()
    full[1:3, 1:4, 2:5] = True
    assert surface_dice(empty, empty) == 1.0  # DeepMind: NaN
    assert surface_dice(full, empty) == 0.0 and surface_dice(empty, full) == 0.0
    assert surface_dice(full, full, (3, 1, 1), 0.0) == 1.0
    assert parse_tolerances("2, 1,1") == [1.0, 2.0] and parse_tolerances(1) == [1.0]
    assert nsd_name(1.0) == "nsd_1mm" and nsd_name(1.5) == "nsd_1.5mm"
    for bad in ("", "x", "-1", "inf"):
        with pytest.raises(ConfigError):
            parse_tolerances(bad)
    with pytest.raises(GeometryError):
        surface_dice(full[0], full[0])
    with pytest.raises(GeometryError):
        surface_dice(full, full[:, :, :-1])


def test_nsd_written_beside_the_other_metrics(tmp_path: Path) -> None:
    geo = Geometry((0.8, 0.8, 2.0))
    ref = _blobs((10, 24, 24), 3).astype(np.uint8)
    write_mask(ref, geo, tmp_path / "ref.nii.gz")
    write_mask(np.roll(ref, 2, axis=1), geo, tmp_path / "pred.nii.gz")
    result = evaluate(tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", EvaluateOptions(nsd="1,2"))
    assert result.metric_names(1)[-2:] == ["nsd_1mm", "nsd_2mm"]
    assert result.summary()[1]["mean"]["nsd_2mm"] >= result.summary()[1]["mean"]["nsd_1mm"]
    assert "nsd" in result.conventions() and '"nsd_1mm"' in result.to_json()
    assert "nsd_2mm" in result.to_csv().splitlines()[0]
