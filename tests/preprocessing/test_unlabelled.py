"""Unlabelled scans for SD-Net (``preprocess --unlabelled DIR --like PREP``) and the labelled : unlabelled
split made before any label is read (``preprocess --labelled-fraction F``), on tiny hand-made CT scans."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from liverctl import preprocessing as pp
from liverctl.errors import ConfigError, DatasetError, LiverctlWarning
from liverctl.io import Geometry, Image, read_image
from liverctl.preprocessing.crop import crop_box

SHAPE = (12, 32, 32)  # z, y, x
SPACING = (4.0, 4.0, 5.0)  # x, y, z
BODY_RADIUS = 9  # voxels, a cylinder along z centred in y-x: rows/columns 7..24 hold tissue


def scan_and_label(seed: int, liver_hu: int) -> tuple[Image, Image]:
    """Air (-1000 HU) around a 0 HU body cylinder holding a 'liver' block of ``liver_hu`` (label 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(SHAPE[1]), np.arange(SHAPE[2]), indexing="ij")
    body = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 <= BODY_RADIUS**2
    hu = np.where(body[None], rng.normal(0, 10, SHAPE), -1000.0)
    label = np.zeros(SHAPE, np.uint8)
    label[3:9, 12:20, 10:18] = 1
    hu[label == 1] = liver_hu + rng.normal(0, 8, int(label.sum()))
    g = Geometry(SPACING, (1.0, 2.0, 3.0))
    return Image(np.round(hu).astype(np.int16), g), Image(label, g)


def write_dataset(root: Path, names: list[str], *, first_seed: int = 0) -> None:
    """An MSD-layout dataset: imagesTr/<name>_0000.nii.gz + labelsTr/<name>.nii.gz, liver HU 50, 60, 70..."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir(parents=True)
    for i, name in enumerate(names):
        image, label = scan_and_label(first_seed + i, 50 + 10 * (first_seed + i))
        sitk.WriteImage(image.to_sitk(), str(root / "imagesTr" / f"{name}_0000.nii.gz"))
        sitk.WriteImage(label.to_sitk(), str(root / "labelsTr" / f"{name}.nii.gz"))


def images_of(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p) for p in sorted((folder / "images").glob("*.npy"))}


@pytest.fixture
def labelled_prep(tmp_path: Path) -> Path:
    write_dataset(tmp_path / "lab", ["a0", "a1"])
    pp.preprocess(tmp_path / "lab", tmp_path / "prep_lab", target_spacing=(8.0, 8.0, 5.0), window="sdnet")
    return tmp_path / "prep_lab"


def test_unlabelled_scans_get_a_body_crop_and_the_labelled_plan_without_any_label_read(tmp_path, labelled_prep):
    write_dataset(tmp_path / "garbage", ["u0", "u1"], first_seed=5)
    for p in (tmp_path / "garbage" / "labelsTr").iterdir():  # label files that no reader could open
        p.write_bytes(b"not an image at all")
    (tmp_path / "garbage" / "labelsTr" / "orphan.nii.gz").write_bytes(b"\x00garbage")
    shutil.copytree(tmp_path / "garbage" / "imagesTr", tmp_path / "absent" / "imagesTr")  # no labelsTr/ at all

    a = pp.preprocess_unlabelled(tmp_path / "garbage", tmp_path / "u_garbage", labelled_prep)
    pp.preprocess_unlabelled(tmp_path / "absent", tmp_path / "u_absent", labelled_prep)
    assert [c["name"] for c in a.cases] == ["u0", "u1"] and a.layout == "msd"
    got, other = images_of(tmp_path / "u_garbage"), images_of(tmp_path / "u_absent")
    assert got.keys() == other.keys() and all(np.array_equal(got[k], other[k]) for k in got)

    like = pp.load_preprocessed(labelled_prep)
    # the body box: tissue in rows/columns 7..24, all slices; widened by 4 voxels (z bounded by the volume)
    assert a.cases[0]["body_box"] == [[0, 12], [3, 29], [3, 29]]
    scan = read_image(tmp_path / "garbage" / "imagesTr" / "u0_0000.nii.gz")
    expected = pp.apply_plan(crop_box(scan, (slice(0, 12), slice(3, 29), slice(3, 29))), like.plan)
    np.testing.assert_array_equal(got["u0"], expected.array)
    # z-score with the labelled cases' liver statistics (window 0..400), not the unlabelled scans' own
    assert like.plan.mean == pytest.approx(55.0, abs=2.0)  # liver HU 50 and 60 in the two labelled cases
    raw_liver = np.clip(scan.array[3:9, 12:20, 10:18].astype(float), 0, 400).mean()  # about 100 HU
    assert raw_liver == pytest.approx(100.0, abs=3.0)

    out = pp.load_preprocessed(tmp_path / "u_garbage")
    assert not out.labelled and out.plan == like.plan
    assert out.load_image("u1").shape == tuple(out.record("u1")["shape"])
    with pytest.raises(DatasetError, match="unlabelled"):
        out.load("u1")
    assert not (tmp_path / "u_garbage" / "labels").exists()
    again = pp.preprocess_unlabelled(tmp_path / "garbage", tmp_path / "u_garbage", labelled_prep)  # rerun: resume
    assert again.processed == [] and again.skipped == ["u0", "u1"]


def test_a_flat_folder_of_scans_and_bad_input(tmp_path, labelled_prep):
    write_dataset(tmp_path / "msd", ["s0"], first_seed=3)
    (tmp_path / "flat").mkdir()
    shutil.copy(tmp_path / "msd" / "imagesTr" / "s0_0000.nii.gz", tmp_path / "flat" / "s0.nii.gz")
    layout, cases = pp.image_cases(tmp_path / "flat")
    assert layout == "flat" and [c.name for c in cases] == ["s0"] and cases[0].label_path is None
    pp.preprocess_unlabelled(tmp_path / "flat", tmp_path / "u_flat", labelled_prep)
    pp.preprocess_unlabelled(tmp_path / "msd", tmp_path / "u_msd", labelled_prep)
    assert np.array_equal(images_of(tmp_path / "u_flat")["s0"], images_of(tmp_path / "u_msd")["s0"])

    with pytest.raises(ConfigError, match="itself unlabelled"):
        pp.preprocess_unlabelled(tmp_path / "flat", tmp_path / "u2", tmp_path / "u_flat")
    with pytest.raises(DatasetError, match="not a liverctl preprocess output"):
        pp.preprocess_unlabelled(tmp_path / "flat", tmp_path / "u3", tmp_path / "flat")
    assert not (tmp_path / "u2").exists() and not (tmp_path / "u3").exists()

    # a scan without a body is refused before anything is written, alone or in a split's unlabelled share
    air, _ = scan_and_label(0, 50)
    air = Image(np.full(air.shape, -1000, np.int16), air.geometry)
    sitk.WriteImage(air.to_sitk(), str(tmp_path / "flat" / "s1.nii.gz"))
    with pytest.raises(DatasetError, match=r"scan s1 .*no body"):
        pp.preprocess_unlabelled(tmp_path / "flat", tmp_path / "u4", labelled_prep)
    write_dataset(tmp_path / "raw", ["r0", "r1", "r2"])
    sitk.WriteImage(air.to_sitk(), str(tmp_path / "raw" / "imagesTr" / "r1_0000.nii.gz"))
    assert "r1" in pp.labelled_split(["r0", "r1", "r2"], 0.34, 0)[1]  # r1 falls in the unlabelled share
    with pytest.raises(DatasetError, match=r"scan r1 .*no body"):
        pp.preprocess_split(tmp_path / "raw", tmp_path / "S", labelled_fraction=0.34, target_spacing=(8, 8, 5))
    assert not (tmp_path / "u4").exists() and not (tmp_path / "S").exists()


def blank_labels(root: Path, names: list[str]) -> None:
    """Replace the label maps of ``names`` by empty (all background) ones on the same grid."""
    for name in names:
        path = root / "labelsTr" / f"{name}.nii.gz"
        label = read_image(path)
        sitk.WriteImage(Image(np.zeros(label.shape, np.uint8), label.geometry).to_sitk(), str(path))


def test_the_split_comes_before_any_label_derived_crop_or_statistic(tmp_path):
    names = [f"c{i}" for i in range(5)]
    write_dataset(tmp_path / "raw", names)
    options = {"target_spacing": "128-median", "window": "sdnet", "crop_margin_mm": 5.0}  # crop: liver slices 2..10
    a = pp.preprocess_split(tmp_path / "raw", tmp_path / "A", labelled_fraction=0.4, split_seed=1, **options)
    lab, unl = a.split["labelled"], a.split["unlabelled"]
    assert (len(lab), len(unl)) == (2, 3) and sorted(lab + unl) == names
    assert json.loads((tmp_path / "A" / "split.json").read_text())["unlabelled"] == unl

    shutil.copytree(tmp_path / "raw", tmp_path / "raw_blank")
    blank_labels(tmp_path / "raw_blank", unl)  # the unlabelled share's labels change completely
    b = pp.preprocess_split(tmp_path / "raw_blank", tmp_path / "B", labelled_fraction=0.4, split_seed=1, **options)
    assert b.split["labelled"] == lab and b.split["unlabelled"] == unl
    plan_a, plan_b = (pp.load_preprocessed(tmp_path / x / "labelled").plan for x in "AB")
    assert (plan_a.mean, plan_a.std, plan_a.target_spacing) == (plan_b.mean, plan_b.std, plan_b.target_spacing)
    for sub in ("labelled", "unlabelled"):  # bit-identical inputs for the network
        ia, ib = images_of(tmp_path / "A" / sub), images_of(tmp_path / "B" / sub)
        assert ia.keys() == ib.keys() and all(np.array_equal(ia[k], ib[k]) for k in ia)
    ia_unl = ia
    assert sorted(images_of(tmp_path / "A" / "unlabelled")) == unl
    # exactly what preprocess --unlabelled gives for a folder holding only those scans
    (tmp_path / "alone").mkdir()
    for name in unl:
        shutil.copy(tmp_path / "raw" / "imagesTr" / f"{name}_0000.nii.gz", tmp_path / "alone")
    pp.preprocess_unlabelled(tmp_path / "alone", tmp_path / "U", tmp_path / "A" / "labelled")
    alone = images_of(tmp_path / "U")
    assert sorted(alone) == [f"{n}_0000" for n in unl]  # a flat folder keeps the file names
    assert all(np.array_equal(alone[f"{n}_0000"], ia_unl[n]) for n in unl)
    assert not (tmp_path / "A" / "unlabelled" / "labels").exists()

    # the same change reaches a whole-dataset preprocessing: what a split after it leaked
    whole = [pp.preprocess(tmp_path / "raw", tmp_path / "whole", **options).plan]
    with pytest.warns(LiverctlWarning, match="no liver voxels"):
        whole.append(pp.preprocess(tmp_path / "raw_blank", tmp_path / "whole_blank", **options).plan)
    assert whole[0].mean != whole[1].mean and whole[0].std != whole[1].std
    assert whole[0].target_spacing != whole[1].target_spacing


def test_labelled_split_ratios_and_the_100_0_split(tmp_path):
    names = [f"case{i:02d}" for i in range(10)]
    for fraction, n_lab in ((0.2, 2), (0.5, 5), (0.8, 8), (1.0, 10)):
        lab, unl = pp.labelled_split(names, fraction, seed=3)
        assert len(lab) == n_lab and sorted(lab + unl) == names
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        pp.labelled_split(names, 0.0, seed=0)
    with pytest.raises(ConfigError, match="leaves no unlabelled"):
        pp.labelled_split(names[:2], 0.8, seed=0)

    write_dataset(tmp_path / "raw", ["c0", "c1"])
    full = pp.preprocess_split(tmp_path / "raw", tmp_path / "S", labelled_fraction=1.0, target_spacing=(8, 8, 5))
    assert full.unlabelled is None and full.split["unlabelled"] == []
    assert pp.load_preprocessed(tmp_path / "S" / "labelled").names == ["c0", "c1"]
    assert not (tmp_path / "S" / "unlabelled").exists()
    with pytest.raises(ConfigError, match="another split"):
        pp.preprocess_split(tmp_path / "raw", tmp_path / "S", labelled_fraction=0.5, target_spacing=(8, 8, 5))


def test_cli_unlabelled_and_split(tmp_path, monkeypatch, labelled_prep):
    from typer.testing import CliRunner

    from liverctl.cli import app

    monkeypatch.setenv("LIVERCTL_NO_PROGRESS", "1")
    write_dataset(tmp_path / "scans", ["u0"], first_seed=4)
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "preprocess",
            "--unlabelled",
            str(tmp_path / "scans"),
            "--like",
            str(labelled_prep),
            "-o",
            str(tmp_path / "U"),
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "No label read" in ok.stdout and f"--unlabelled {tmp_path / 'U'}" in ok.stdout
    for bad, message in (
        (["--unlabelled", str(tmp_path / "scans")], "needs --like"),
        (["--unlabelled", str(tmp_path / "scans"), "--like", str(labelled_prep), "--window", "liver"], "from --like"),
        ([str(tmp_path / "scans"), "--like", str(labelled_prep)], "--like goes with --unlabelled"),
        ([str(tmp_path / "scans"), "--split-seed", "3"], "--split-seed goes with"),
        ([], "give a DATASET"),
    ):
        result = runner.invoke(app, ["preprocess", *bad, "-o", str(tmp_path / "bad")])
        assert result.exit_code == 2 and message in result.output, (bad, result.output)
    assert not (tmp_path / "bad").exists()
    split = runner.invoke(
        app, ["preprocess", str(tmp_path / "scans"), "-o", str(tmp_path / "S"), "--labelled-fraction", "1", "--json"]
    )
    assert split.exit_code == 0, split.output
    assert json.loads(split.stdout)["split"]["labelled"] == ["u0"]
    write_dataset(tmp_path / "two", ["t0", "t1"])
    half = runner.invoke(
        app, ["preprocess", str(tmp_path / "two"), "-o", str(tmp_path / "H"), "--labelled-fraction", "0.5"]
    )
    assert half.exit_code == 0, half.output
    assert "1 labelled, 1 unlabelled" in half.stdout
    assert f"--method sdnet --unlabelled {tmp_path / 'H' / 'unlabelled'}" in half.stdout
