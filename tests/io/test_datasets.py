"""Dataset discovery: MSD/nnU-Net, LiTS and images/+labels/ layouts, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liverctl.errors import DatasetError, InputError
from liverctl.io.datasets import discover_dataset, natural_key, read_dataset_json


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_msd_with_channel_suffix_and_dataset_json(tmp_path: Path) -> None:
    for n in (10, 2, 1):
        touch(tmp_path / "imagesTr" / f"liver_{n}_0000.nii.gz")
        touch(tmp_path / "labelsTr" / f"liver_{n}.nii.gz")
    touch(tmp_path / "imagesTr" / "._liver_1_0000.nii.gz")  # macOS resource fork, ignored
    (tmp_path / "dataset.json").write_text(
        json.dumps({"name": "Task03_Liver", "labels": {"0": "background", "1": "liver", "2": "cancer"}})
    )
    ds = discover_dataset(tmp_path)
    assert ds.layout == "msd"
    assert ds.name == "Task03_Liver"
    assert [c.name for c in ds.cases] == ["liver_1", "liver_2", "liver_10"]
    assert ds.cases[0].image_path.name == "liver_1_0000.nii.gz"
    assert ds.cases[0].label_path.name == "liver_1.nii.gz"
    assert ds.labels == {"background": 0, "liver": 1, "cancer": 2}
    assert ds.labelled and len(ds) == 3


def test_msd_without_channel_suffix_and_nnunet_v2_labels(tmp_path: Path) -> None:
    # the original MSD layout: same file name in imagesTr and labelsTr, even if it ends in _NNNN
    touch(tmp_path / "imagesTr" / "case_0001.nii.gz")
    touch(tmp_path / "labelsTr" / "case_0001.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    ds = discover_dataset(tmp_path)
    assert [c.name for c in ds.cases] == ["case_0001"]
    assert ds.name == tmp_path.name
    assert ds.labels == {"background": 0, "liver": 1}


def test_msd_test_split_unlabelled(tmp_path: Path) -> None:
    touch(tmp_path / "imagesTs" / "a_0000.nii.gz")
    touch(tmp_path / "imagesTs" / "b_0000.nii.gz")
    ds = discover_dataset(tmp_path, require_labels=False, split="test")
    assert [(c.name, c.label_path) for c in ds.cases] == [("a", None), ("b", None)]
    assert not ds.labelled


def test_multi_channel_case_is_refused(tmp_path: Path) -> None:
    touch(tmp_path / "imagesTr" / "x_0000.nii.gz")
    touch(tmp_path / "imagesTr" / "x_0001.nii.gz")
    touch(tmp_path / "labelsTr" / "x.nii.gz")
    with pytest.raises(DatasetError, match="single-channel"):
        discover_dataset(tmp_path)


def test_lits_in_one_folder_and_in_batches(tmp_path: Path) -> None:
    one = tmp_path / "one"
    for n in (0, 1, 11):
        touch(one / f"volume-{n}.nii")
        touch(one / f"segmentation-{n}.nii")
    ds = discover_dataset(one)
    assert ds.layout == "lits"
    assert [c.name for c in ds.cases] == ["volume-0", "volume-1", "volume-11"]
    assert ds.cases[2].label_path.name == "segmentation-11.nii"
    assert ds.labels == {"background": 0, "liver": 1, "tumor": 2}

    batches = tmp_path / "batches"
    touch(batches / "Training Batch 1" / "volume-0.nii")
    touch(batches / "Training Batch 1" / "segmentation-0.nii")
    touch(batches / "Training Batch 2" / "volume-28.nii")
    touch(batches / "Training Batch 2" / "segmentation-28.nii")
    assert [c.name for c in discover_dataset(batches).cases] == ["volume-0", "volume-28"]


def test_pairs_matched_by_name_across_formats(tmp_path: Path) -> None:
    touch(tmp_path / "images" / "p1.nii.gz")
    touch(tmp_path / "images" / "p2.mha")
    touch(tmp_path / "labels" / "p1.nrrd")
    touch(tmp_path / "labels" / "p2.nii.gz")
    ds = discover_dataset(tmp_path)
    assert ds.layout == "pairs"
    assert [(c.name, c.label_path.name) for c in ds.cases] == [("p1", "p1.nrrd"), ("p2", "p2.nii.gz")]


def test_missing_partners_are_listed(tmp_path: Path) -> None:
    for n in range(5):
        touch(tmp_path / "images" / f"c{n}.nii.gz")
    touch(tmp_path / "labels" / "c0.nii.gz")
    with pytest.raises(DatasetError, match=r"4 image\(s\) have no label .*c1, c2, c3 and 1 more"):
        discover_dataset(tmp_path)
    # allowed when labels are not required
    assert len(discover_dataset(tmp_path, require_labels=False)) == 5

    lits = tmp_path / "lits"
    touch(lits / "volume-1.nii")
    touch(lits / "segmentation-1.nii")
    touch(lits / "segmentation-2.nii")
    with pytest.raises(DatasetError, match="segmentation-2"):
        discover_dataset(lits)


def test_label_without_image(tmp_path: Path) -> None:
    touch(tmp_path / "imagesTr" / "a_0000.nii.gz")
    touch(tmp_path / "labelsTr" / "a.nii.gz")
    touch(tmp_path / "labelsTr" / "b.nii.gz")
    with pytest.raises(DatasetError, match=r"label\(s\) .* have no image.*: b"):
        discover_dataset(tmp_path)


def test_empty_missing_and_unknown_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such dataset folder"):
        discover_dataset(tmp_path / "absent")
    with pytest.raises(DatasetError, match="is empty"):
        discover_dataset(tmp_path)
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        discover_dataset(tmp_path)
    other = tmp_path / "other"
    touch(other / "notes.txt")
    with pytest.raises(DatasetError, match="no dataset layout"):
        discover_dataset(other)
    touch(other / "scan.nii.gz")  # a flat folder of images is accepted only without labels
    with pytest.raises(DatasetError, match="no dataset layout"):
        discover_dataset(other)
    assert discover_dataset(other, require_labels=False).layout == "flat"


def test_missing_labels_folder(tmp_path: Path) -> None:
    touch(tmp_path / "imagesTr" / "a.nii.gz")
    with pytest.raises(DatasetError, match="no labelsTr"):
        discover_dataset(tmp_path)


def test_bad_dataset_json(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read"):
        read_dataset_json(tmp_path / "dataset.json")


def test_natural_key() -> None:
    assert sorted(["c10", "c2", "C1"], key=natural_key) == ["C1", "c2", "c10"]
