"""liverctl.predict: geometry, reports, batches and the CLI, on the real scans.

Most tests use a *pointwise* network (each voxel's logits depend on its own intensity only),
so that sliding windows, padding and blending cannot change its output: whatever differs
between two runs then comes from the geometry pipeline (reorientation, resampling, mapping
back), which is what these tests check. One test runs the whole CLI against the Hub test
server with a real (randomly initialised) SegResNet.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from band import BandNet  # tests/support
from hypothesis import given, settings
from hypothesis import strategies as st

from liverctl import weights as lw
from liverctl.errors import ConfigError, ImageFormatError, InputError
from liverctl.io import Geometry, Image, read_image, read_label, write_image
from liverctl.io.manifest import MANIFEST_NAME
from liverctl.predict import (
    LiverModel,
    PredictOptions,
    check_ct,
    expand_inputs,
    output_paths,
    parse_shard,
    predict,
)
from liverctl.preprocessing.intensity import normalise
from liverctl.spatial import orientation_of, reorient, resample, resample_to_reference


def entry(**changes) -> lw.ModelEntry:
    base = {
        "name": "band",
        "repo_id": "local/band",
        "filename": "band.pt",
        "revision": "main",
        "sha256": "",
        "architecture": "band",
        "kwargs": {},
        "spacing": (3.0, 3.0, 3.0),
        "orientation": "RAS",
        "interpolation": "linear",
        "intensity": lw.IntensityRecipe("window-zscore", window=(-1024.0, 3000.0), mean=0.0, std=1.0),
        "n_classes": 2,
        "liver_channel": 1,
        "decision": "argmax",
        "labels": {"liver": 1},
        "sliding_window": lw.WindowRecipe(roi=(64, 64, 64)),
    }
    base.update(changes)
    return lw.ModelEntry(**base)


LIVER_HU = 150


@pytest.fixture(scope="module")
def marked(ct_path: Path, liver_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real scan with its reference liver set to 150 HU and other tissue kept out of 110..190 HU,
    so the pointwise band network below segments exactly the real liver."""
    ct, liver = read_image(ct_path), read_label(liver_path)
    array = ct.array.copy()
    array[(array > 110) & (array < 190)] = 60
    array[liver.array > 0] = LIVER_HU
    path = tmp_path_factory.mktemp("marked") / "marked.nii.gz"
    write_image(Image(array, ct.geometry), path)
    return path


@pytest.fixture(scope="module")
def band() -> LiverModel:
    net = BandNet(LIVER_HU, 40.0)
    resolved = lw.ResolvedWeights(entry(), Path("band.pt"), "0" * 64, "local")
    return LiverModel([resolved], [net], torch.device("cpu"))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


# --------------------------------------------------------------------------- one scan


def test_mask_is_on_the_input_grid_and_report_is_consistent(band: LiverModel, marked: Path, liver_path: Path):
    ct = read_image(marked)
    seg = band.segment(ct)
    assert seg.mask.shape == ct.shape and seg.mask.array.dtype == np.uint8
    assert seg.mask.geometry.mismatch(ct.geometry) is None
    r = seg.report
    count = int(seg.mask.array.sum())
    assert r["voxel_count"] == count > 0
    assert r["liver_volume_ml"] == pytest.approx(count * 27.0 / 1000.0, abs=1e-3)
    assert r["hu_mean"] == pytest.approx(float(ct.array[seg.mask.array > 0].mean()), abs=0.01)
    assert r["hu_std"] == pytest.approx(float(ct.array[seg.mask.array > 0].std()), abs=0.01)
    assert r["components_before_cleanup"] >= 1
    # post-processing: one 26-connected component
    import cc3d

    assert cc3d.connected_components(seg.mask.array, connectivity=26).max() == 1
    # the mask is the reference liver (its largest component, holes filled)
    assert dice(seg.mask.array, read_label(liver_path).array) > 0.99
    # the liver of this scan is cut by its first and last slices: the QC says so
    assert {"touches_superior", "touches_inferior"} <= set(r["qc"]["flags"])
    assert r["qc"]["volume_is_lower_bound"] is True
    bbox = r["bounding_box_mm"]
    assert all(hi > lo for lo, hi in zip(bbox["min_mm"], bbox["max_mm"], strict=True))


def test_bounding_box_in_mm_matches_hand_computation(band: LiverModel, marked: Path):
    ct = read_image(marked)
    seg = band.segment(ct)
    idx = np.argwhere(seg.mask.array > 0)
    # direction diag(-1, -1, 1), spacing 3: x_mm = origin_x - 3 i, y_mm = origin_y - 3 j, z_mm = origin_z + 3 k
    ox, oy, oz = ct.geometry.origin
    xs = ox - 3.0 * (idx[:, 2] + np.array([[-0.5], [0.5]]))
    ys = oy - 3.0 * (idx[:, 1] + np.array([[-0.5], [0.5]]))
    zs = oz + 3.0 * (idx[:, 0] + np.array([[-0.5], [0.5]]))
    bbox = seg.report["bounding_box_mm"]
    assert bbox["min_mm"][0] == pytest.approx(xs.min(), abs=0.01)
    assert bbox["max_mm"][1] == pytest.approx(ys.max(), abs=0.01)
    assert bbox["max_mm"][2] == pytest.approx(zs.max(), abs=0.01)
    assert bbox["size_mm"][1] == pytest.approx(3.0 * (np.ptp(idx[:, 1]) + 1), abs=0.01)


@pytest.mark.parametrize("orientation", ["LPS", "RAI", "PIR", "SLA"])
def test_same_anatomy_whatever_the_orientation(band: LiverModel, marked: Path, orientation: str):
    ct = read_image(marked)
    reference = band.segment(ct).mask
    turned = reorient(ct, orientation)
    assert turned.array.shape != ct.array.shape or orientation in ("LPS", "RAI")
    mask = band.segment(turned).mask
    assert mask.geometry.mismatch(turned.geometry) is None
    back = reorient(mask, orientation_of(ct))
    assert back.geometry.mismatch(ct.geometry) is None
    np.testing.assert_array_equal(back.array, reference.array)


def test_same_anatomy_on_an_anisotropically_resampled_copy(band: LiverModel, marked: Path, liver_path: Path):
    ct = read_image(marked)
    reference = band.segment(ct).mask
    copy = resample(ct, (2.0, 2.5, 4.0), interpolator="linear")
    copy = Image(np.round(copy.array).astype(np.int16), copy.geometry)
    mask = band.segment(copy).mask
    assert mask.geometry.mismatch(copy.geometry) is None
    back = resample_to_reference(mask, ct, interpolator="nearest")
    assert dice(back.array, reference.array) > 0.95
    assert dice(back.array, read_label(liver_path).array) > 0.95


def test_dicom_series_gives_the_same_mask_as_its_nifti_copy(band: LiverModel, dicom_dir: Path, tmp_path: Path):
    dcm = read_image(dicom_dir)
    nii = tmp_path / "series.nii.gz"
    write_image(dcm, nii)
    a = band.segment(dcm).mask
    b = band.segment(read_image(nii)).mask
    assert a.shape == dcm.shape and a.geometry.mismatch(dcm.geometry) is None
    np.testing.assert_array_equal(a.array, b.array)


class TwoBandNet(torch.nn.Module):
    """Three-class pointwise network: liver around 150 HU, tumour around 230 HU."""

    min_input_multiple = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        liver = 4.0 * (1.0 - ((x - LIVER_HU) / 40.0) ** 2)
        tumour = 4.0 * (1.0 - ((x - 230.0) / 30.0) ** 2)
        return torch.cat([torch.zeros_like(x), liver, tumour], dim=1)


def test_tumour_channels_count_as_liver(marked: Path, liver_path: Path):
    ct = read_image(marked)
    reference = read_label(liver_path).array > 0
    array = ct.array.copy()
    array[(array > 200) & ~reference] = 60  # nothing outside the liver in the tumour band
    cz, cy, cx = np.argwhere(reference).mean(axis=0).astype(int)
    tumour = np.zeros_like(reference)
    tumour[cz - 4 : cz + 4, cy - 6 : cy + 6, cx:] = True
    tumour &= reference  # a lesion inside the liver, reaching its surface
    assert tumour.sum() > 500
    array[tumour] = 230
    e = entry(n_classes=3, labels={"liver": 1, "tumour": 2})
    model = LiverModel([lw.ResolvedWeights(e, Path("t.pt"), "0" * 64, "local")], [TwoBandNet()], torch.device("cpu"))
    assert model.liver_channels == [1, 2]
    seg = model.segment(Image(array, ct.geometry), PredictOptions(save_probabilities=True))
    assert np.all(seg.mask.array[tumour])
    assert dice(seg.mask.array, reference) > 0.99
    assert seg.probabilities.array[tumour].min() > 0.9  # liver + tumour probability


class ShapeSpy(torch.nn.Module):
    """A pointwise two-class network that records the spatial shape of every window it sees."""

    min_input_multiple = 8

    def __init__(self) -> None:
        super().__init__()
        self.band = BandNet(LIVER_HU, 40.0)
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape[2:]))
        return self.band(x)


def test_monai_models_see_windows_in_xyz_order(marked: Path):
    """MONAI's networks were trained on (x, y, z) arrays; liverctl's arrays are (z, y, x)."""
    ct = read_image(marked)
    masks = {}
    for axes in ("zyx", "xyz"):
        spy = ShapeSpy()
        e = entry(network_axes=axes, sliding_window=lw.WindowRecipe(roi=(64, 48, 32)))  # roi along x, y, z
        model = LiverModel([lw.ResolvedWeights(e, Path("s.pt"), "0" * 64, "local")], [spy], torch.device("cpu"))
        seg = model.segment(ct, PredictOptions(shortcuts=False))
        window_zyx = tuple(seg.report["inference"]["window_zyx"])
        assert window_zyx == (32, 48, 64)
        assert set(spy.shapes) == {window_zyx if axes == "zyx" else window_zyx[::-1]}
        masks[axes] = seg.mask.array
    np.testing.assert_array_equal(masks["zyx"], masks["xyz"])  # a pointwise network does not care


def test_registry_monai_entries_use_xyz_axes():
    registry = lw.load_registry(Path(__file__).resolve().parents[2] / "weights.toml")
    assert {registry.get(n).network_axes for n in registry.names()} == {"xyz"}
    assert {registry.get(n).sliding_window.padding_mode for n in registry.names()} == {"replicate"}


def test_no_postprocess_keeps_all_components(band: LiverModel, marked: Path, liver_path: Path):
    ct = read_image(marked)
    array = ct.array.copy()
    array[2:6, 5:10, 5:10] = LIVER_HU  # a spurious 100-voxel "liver" blob far from the liver
    ct = Image(array, ct.geometry)
    raw = band.segment(ct, PredictOptions(postprocess=False))
    clean = band.segment(ct)
    reference = read_label(liver_path).array > 0
    assert raw.report["components_before_cleanup"] == clean.report["components_before_cleanup"] == 2
    np.testing.assert_array_equal(raw.mask.array > 0, reference | (array == LIVER_HU))
    assert not clean.mask.array[2:6, 5:10, 5:10].any()
    # cleanup = largest component + hole filling: a superset of the reference liver
    assert np.all(clean.mask.array[reference]) and clean.mask.array.sum() >= reference.sum()
    assert "multiple_large_components" not in clean.report["qc"]["flags"]  # 100 voxels = 2.7 mL < 10 mL


def test_shortcuts_do_not_change_a_pointwise_result(band: LiverModel, marked: Path):
    ct = read_image(marked)
    fast = band.segment(ct, PredictOptions(fast=True, save_probabilities=True))
    exact = band.segment(ct, PredictOptions(shortcuts=False, save_probabilities=True))
    np.testing.assert_array_equal(fast.mask.array, exact.mask.array)
    assert fast.report["inference"]["compute_amplification"] < exact.report["inference"]["compute_amplification"]
    # outside the body box the fast path says "background" outright (probability 0); the band
    # network gives the scanner table a tiny liver probability there
    diff = np.abs(fast.probabilities.array - exact.probabilities.array)
    assert diff.max() < 0.01
    inside = fast.probabilities.array > 0
    assert diff[inside].max() < 1e-5
    # the defaults: MONAI's windows, air windows skipped (none in this scan), same mask
    default = band.segment(ct, PredictOptions(precision="fp32", save_probabilities=True))
    np.testing.assert_array_equal(default.mask.array, exact.mask.array)
    assert default.report["inference"]["skipped_windows"] == 0 == exact.report["inference"]["skipped_windows"]
    assert default.report["inference"]["precision"] == "fp32"
    np.testing.assert_allclose(default.probabilities.array, exact.probabilities.array, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- intensities


def test_normalise_matches_monai_transforms(ct_path: Path):
    from monai.transforms import NormalizeIntensity, ScaleIntensity

    x = read_image(ct_path).array.astype(np.float32)
    expected = ScaleIntensity(minv=-1.0, maxv=1.0)(NormalizeIntensity(nonzero=True)(torch.from_numpy(x.copy())))
    got = normalise(x, lw.IntensityRecipe("nonzero-zscore-minmax", range=(-1.0, 1.0)))
    np.testing.assert_allclose(got, np.asarray(expected), atol=1e-5)


def test_check_ct_refuses_pictures_and_uncalibrated_values():
    g = Geometry((1.0, 1.0, 1.0))
    rng = np.random.default_rng(0)
    with pytest.raises(ImageFormatError, match="does not look like CT"):
        check_ct(Image(rng.integers(0, 256, (4, 5, 6)).astype(np.uint8), g))
    with pytest.raises(ImageFormatError, match="rescale"):
        check_ct(Image(rng.integers(0, 4000, (4, 5, 6)).astype(np.int16), g))
    nan = np.zeros((4, 5, 6), np.float32) - 1000
    nan[1, 1, 1] = np.nan
    with pytest.raises(ImageFormatError, match="NaN"):
        check_ct(Image(nan, g))
    ok = np.full((4, 5, 6), -1000, np.int16)
    ok[1:3] = 40
    assert check_ct(Image(ok, g)) == []
    assert check_ct(Image(ok + 800, g))  # no air: a note, not an error


# --------------------------------------------------------------------------- batches and files


def test_batch_goes_on_past_a_bad_file_and_writes_a_summary(band: LiverModel, marked: Path, tmp_path: Path):
    scans = tmp_path / "scans"
    scans.mkdir()
    ct = read_image(marked)
    write_image(ct, scans / "a.nii.gz")
    write_image(reorient(ct, "RAS"), scans / "b.nrrd")
    (scans / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated")
    out = tmp_path / "out"
    result = predict(scans, out, loaded=band)
    assert [Path(c.input).name for c in result.cases] == ["a.nii.gz", "b.nrrd", "broken.nii.gz"]
    assert [c.ok for c in result.cases] == [True, True, False]
    assert "broken.nii.gz" in result.failures[0].error
    written = ["a.json", "a.nii.gz", "b.json", "b.nrrd", "summary.csv"]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, *written]
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert float(rows[0]["liver_volume_ml"]) == pytest.approx(float(rows[1]["liver_volume_ml"]))
    report = json.loads((out / "a.json").read_text())
    assert report["mask"] == str(out / "a.nii.gz") and report["model"]["name"] == "band"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [MANIFEST_NAME]  # no temp files left


def test_probabilities_are_written_on_the_scan_grid(band: LiverModel, marked: Path, tmp_path: Path):
    result = predict(marked, tmp_path / "m.nii.gz", loaded=band, options=PredictOptions(save_probabilities=True))
    prob = read_image(result.cases[0].probabilities)
    mask = read_image(tmp_path / "m.nii.gz")
    assert prob.array.dtype == np.float32 and prob.geometry.mismatch(mask.geometry) is None
    assert prob.array.min() >= 0.0 and prob.array.max() <= 1.0
    assert result.summary_csv is None


def test_outputs_never_overwrite_inputs_and_names_are_unique(ct_path: Path, tmp_path: Path):
    with pytest.raises(Exception, match="overwrite an input"):
        output_paths([ct_path], ct_path)
    with pytest.raises(ConfigError, match="is a file"):
        output_paths([ct_path, ct_path.with_name("liver.nii.gz")], tmp_path / "one.nii.gz")
    with pytest.raises(ConfigError, match="same file"):
        output_paths([ct_path, Path("/elsewhere/ct.nii.gz")], tmp_path)
    assert output_paths([ct_path], tmp_path) == [tmp_path / "ct.nii.gz"]


def test_shards_partition_the_inputs():
    scans = [Path(f"s{i}.nii.gz") for i in range(7)]
    from liverctl.predict.batch import _shard

    parts = [_shard(scans, (i, 3)) for i in range(3)]
    assert sorted(p for part in parts for p in part) == sorted(scans)
    assert all(len(p) in (2, 3) for p in parts)
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def test_expand_inputs_reads_folders_and_dicom(ct_path: Path, dicom_dir: Path, tmp_path: Path):
    assert expand_inputs([dicom_dir]) == [dicom_dir]
    assert expand_inputs([ct_path.parent])[0].name == "ct.nii.gz"
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no images and no DICOM"):
        expand_inputs([tmp_path / "empty"])


# --------------------------------------------------------------------------- the CLI, end to end


def run_cli(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "liverctl", *args], env=env, input=stdin, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def hub_env(tmp_path_factory: pytest.TempPathFactory):
    from hub_server import HubServer, client_env, registry_entry, write_registry

    from liverctl.models import build_model

    tmp = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    net = build_model("segresnet", spatial_dims=3, in_channels=1, out_channels=2)
    torch.save(net.state_dict(), tmp / "w.pt")
    with HubServer() as server:
        server.add("test/seg", "models/w.pt", (tmp / "w.pt").read_bytes())
        reg = write_registry(tmp / "weights.toml", [registry_entry("seg", "test/seg", "models/w.pt")], "seg")
        yield client_env(server.url, tmp, reg), tmp


@pytest.mark.slow
def test_cli_predict_end_to_end_from_the_hub(hub_env, ct_path: Path, tmp_path: Path):
    env, _ = hub_env
    out = tmp_path / "mask.nii.gz"
    proc = run_cli(["predict", str(ct_path), "-o", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert "Traceback" not in proc.stderr
    mask, ct = read_image(out), read_image(ct_path)
    assert mask.array.dtype == np.uint8 and mask.geometry.mismatch(ct.geometry) is None
    report = json.loads(out.with_name("mask.json").read_text())
    assert report["model"]["source"] == "hub" and len(report["model"]["sha256"]) == 64
    # the same model through --weights with paths on stdin, offline: the cached file is used
    env2 = dict(env, HF_HUB_OFFLINE="1")
    proc = run_cli(["predict", "-", "-o", str(tmp_path / "folder"), "--json"], env2, stdin=f"{ct_path}\n")
    assert proc.returncode == 0, proc.stderr
    reports = json.loads(proc.stdout)
    assert reports[0]["voxel_count"] == report["voxel_count"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.nii.gz", "no such file"),
        (lambda d: _write(d / "flat.nii.gz", np.zeros((1, 20, 20), np.int16) - 1000), "single slice"),
        (lambda d: _write(d / "picture.nii.gz", np.full((8, 20, 20), 200, np.uint8)), "does not look like CT"),
        (lambda d: _truncated(d / "cut.nii.gz"), "cannot read"),
    ],
)
def test_cli_predict_bad_input_one_line_error(hub_env, tmp_path: Path, make, message: str):
    env, _ = hub_env
    scan = make(tmp_path)
    out = tmp_path / "out"
    proc = run_cli(["predict", str(scan), "-o", str(out)], env)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert not out.exists() or not any(p.suffix == ".gz" for p in out.iterdir())


def test_cli_predict_unknown_model_and_unfit_weights(hub_env, ct_path: Path, tmp_path: Path):
    env, _ = hub_env
    proc = run_cli(["predict", str(ct_path), "--model", "nope", "-o", str(tmp_path / "x.nii.gz")], env)
    assert proc.returncode == 2 and "unknown model 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    proc = run_cli(
        ["predict", str(ct_path), "--weights", str(tmp_path / "other.pt"), "-o", str(tmp_path / "y.nii.gz")], env
    )
    assert proc.returncode == 2 and "do not fit" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.nii.gz").exists() and not (tmp_path / "y.nii.gz").exists()


def _write(path: Path, array: np.ndarray) -> Path:
    img = sitk.GetImageFromArray(array)
    sitk.WriteImage(img, str(path))
    return path


def _truncated(path: Path) -> Path:
    full = path.with_name("full.nii.gz")
    noise = np.random.default_rng(0).integers(-1000, 1000, (8, 30, 30)).astype(np.int16)
    _write(full, noise)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), density=st.floats(0.05, 0.6))
def test_cleaning_in_the_bounding_box_equals_cleaning_everything(seed: int, density: float) -> None:
    from liverctl.postprocessing import clean_liver_mask, fill_holes, largest_components

    rng = np.random.default_rng(seed)
    raw = np.zeros((14, 16, 15), bool)
    lo = rng.integers(0, 6, size=3)
    hi = lo + rng.integers(2, 9, size=3)
    raw[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = rng.random(tuple(hi - lo)) < density
    mask, sizes = clean_liver_mask(raw, keep_largest=True)  # what every model's segment() cleans with
    kept, stats = largest_components(raw, n=1, connectivity=26)
    expected = fill_holes(kept) if stats.kept else kept
    assert np.array_equal(mask.astype(bool), expected.astype(bool))
    assert sizes == list(stats.sizes)
    raw_again, _ = clean_liver_mask(raw, keep_largest=False)
    assert np.array_equal(raw_again.astype(bool), raw)


# --------------------------------------------------------------------------- reliability (issue 8)


class AllLiver(torch.nn.Module):
    """Liver everywhere, air included."""

    min_input_multiple = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), torch.ones_like(x)], dim=1)


def test_an_all_air_scan_gets_an_empty_mask_flagged_no_body(band: LiverModel, tmp_path: Path):
    air = Image(np.full((20, 30, 30), -1000, np.int16), Geometry((1.5, 1.5, 3.0)))
    seg = band.segment(air, PredictOptions(shortcuts=False))
    assert not seg.mask.array.any() and seg.report["liver_volume_ml"] == 0
    assert seg.report["qc"]["flags"][:2] == ["no_body", "empty"]
    # even a network that calls everything liver gives no liver where there is no body
    everything = LiverModel(band.resolved, [AllLiver()], band.device)
    assert not everything.segment(air, PredictOptions(shortcuts=False)).mask.array.any()


def test_resume_keeps_finished_scans_and_clears_stale_temporaries(band: LiverModel, marked: Path, tmp_path: Path):
    scans = tmp_path / "scans"
    ct = read_image(marked)
    for name in ("a", "b"):
        write_image(ct, scans / f"{name}.nii.gz")
    out = tmp_path / "out"
    seen: list[str] = []
    first = predict(scans, out, loaded=band, on_case=lambda c: seen.append(Path(c.mask).name))
    assert seen == ["a.nii.gz", "b.nii.gz"] and not any(c.skipped for c in first.cases)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    (out / "b.nii.gz").unlink()  # as if killed while writing b: its temp file is still there
    (out / ".b.nii.gz.k1ll3d.tmp.nii.gz").write_bytes(b"half")
    again = predict(scans, out, loaded=band, resume=True)
    assert [c.skipped for c in again.cases] == [True, False]
    assert (out / "a.nii.gz").stat().st_mtime_ns == stamps["a.nii.gz"]  # not recomputed
    assert not list(out.glob(".*.tmp*")) and (out / "b.nii.gz").is_file()
    assert again.cases[0].report == first.cases[0].report
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",ok," in r for r in rows[1:])
    # other options: every scan is computed again
    other = predict(scans, out, loaded=band, resume=True, options=PredictOptions(postprocess=False))
    assert not any(c.skipped for c in other.cases)


def test_outputs_are_checked_before_the_model_is_loaded(marked: Path, tmp_path: Path):
    """Neither `model` nor `weights` can be loaded here: the output errors must come first."""
    (tmp_path / "taken.nii.gz").write_bytes(b"the user's file")
    with pytest.raises(InputError, match="liverctl did not write it"):
        predict(marked, tmp_path / "taken.nii.gz", weights=tmp_path / "no-such-weights.pt")
    assert (tmp_path / "taken.nii.gz").read_bytes() == b"the user's file"
    with pytest.raises(ConfigError, match="not a mask format"):
        predict(marked, tmp_path / "x.png", weights=tmp_path / "no-such-weights.pt")
    with pytest.raises(ConfigError, match="--overlap"):
        PredictOptions(overlap=1.5)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("orientation", ["RAS", "SPL", "AIR", "LSP"])
def test_qc_edges_are_named_in_the_patients_frame(band: LiverModel, marked: Path, orientation: str):
    """The same anatomy stored in another axis order or orientation: the same QC (issue 10)."""
    ct = read_image(marked)
    reference = band.segment(ct, PredictOptions()).report["qc"]
    stored = reorient(ct, orientation)
    qc = band.segment(stored, PredictOptions()).report["qc"]
    assert qc["flags"] == reference["flags"] and qc["touches"] == reference["touches"]
    assert reference["touches"]["superior"] and reference["touches"]["inferior"]
