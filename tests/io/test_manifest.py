"""liverctl replaces and deletes only what it wrote (liverctl.io.manifest), and the commands that
write into folders keep to it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from liverctl.errors import InputError
from liverctl.io import read_image
from liverctl.io.manifest import MANIFEST_NAME, Manifest, check_new_or_owned_folder


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_owns_only_what_it_recorded_unchanged(tmp_path: Path) -> None:
    m = Manifest(tmp_path)
    (tmp_path / "a.txt").write_text("liverctl")
    (tmp_path / "b.txt").write_text("user")
    m.record([tmp_path / "a.txt"], "predict")
    m.claim([tmp_path / "sub" / "c.txt"])  # claimed, never written (a killed run)
    again = Manifest(tmp_path)  # read back from disk
    assert again.owns(tmp_path / "a.txt") and not again.owns(tmp_path / "b.txt")
    assert again.owns(tmp_path / "sub/c.txt") and again.commands == ["predict"]
    assert again.foreign([tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "nope"]) == [tmp_path / "b.txt"]
    (tmp_path / "a.txt").write_text("changed by the user, same length?")  # a changed file is the user's
    assert not Manifest(tmp_path).owns(tmp_path / "a.txt")
    with pytest.raises(InputError, match="liverctl did not write it"):
        Manifest(tmp_path).check_replaceable([tmp_path / "a.txt"])


def test_a_corrupt_manifest_owns_nothing_and_says_so(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        Manifest(tmp_path)


@settings(max_examples=25, deadline=None)
@given(
    ours=st.sets(st.sampled_from(["a", "b", "d/e", "d/f", "g/h/i"]), max_size=5),
    theirs=st.sets(st.sampled_from(["c", "d/x", "g/h/y", "z/w"]), max_size=4),
    changed=st.sets(st.sampled_from(["a", "d/e"]), max_size=2),
)
def test_remove_owned_never_touches_the_users_files(tmp_path_factory, ours, theirs, changed) -> None:
    root = tmp_path_factory.mktemp("m")
    m = Manifest(root)
    for rel in sorted(ours):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("ours")
    m.record([root / r for r in ours], "preprocess")
    for rel in sorted(theirs):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("theirs")
    for rel in changed & ours:
        (root / rel).write_text("edited")  # recorded, but changed since
        os.utime(root / rel, ns=(1, 1))
    users = {r: (root / r).read_text() for r in theirs | (changed & ours)}
    removed = Manifest(root).remove_owned()
    assert sorted(p.relative_to(root).as_posix() for p in removed) == sorted(ours - changed)
    assert {r: (root / r).read_text() for r in users} == users
    for rel in ours - changed:  # folders that only liverctl's files filled are gone
        parent = (root / rel).parent
        assert not (root / rel).exists()
        assert parent == root or parent.exists() == any((root / u).is_relative_to(parent) for u in users)


def _dataset(root: Path) -> Path:
    for name in ("a", "b"):
        rng = np.random.default_rng(len(name))
        ct = np.full((12, 16, 16), -1000, np.int16)
        ct[2:10, 3:13, 3:13] = rng.normal(60, 10, (8, 10, 10)).astype(np.int16)
        lab = np.zeros(ct.shape, np.uint8)
        lab[4:8, 5:11, 5:11] = 1
        for array, target in (
            (ct, root / "imagesTr" / f"{name}_0000.nii.gz"),
            (lab, root / "labelsTr" / f"{name}.nii.gz"),
        ):
            target.parent.mkdir(parents=True, exist_ok=True)
            img = sitk.GetImageFromArray(array)
            img.SetSpacing((2.0, 2.0, 3.0))
            sitk.WriteImage(img, str(target))
    return root


def test_preprocess_overwrite_keeps_the_users_images_and_labels(tmp_path: Path) -> None:
    """The data-loss case: -o DIR holding the user's own images/ and labels/, --overwrite."""
    from liverctl.preprocessing import preprocess

    ds = _dataset(tmp_path / "ds")
    mine = tmp_path / "mine"
    for sub in ("images", "labels"):
        (mine / sub).mkdir(parents=True)
        (mine / sub / "case_01.nii.gz").write_bytes(os.urandom(2048))
    before = _hashes(mine)
    with pytest.raises(InputError, match="not from a liverctl preprocess"):
        preprocess(ds, mine, overwrite=True, target_spacing=(2.0, 2.0, 3.0))
    assert _hashes(mine) == before and not (mine / MANIFEST_NAME).exists()

    # in a folder liverctl wrote, --overwrite replaces its own files and keeps what the user added
    out = tmp_path / "pre"
    preprocess(ds, out, target_spacing=(2.0, 2.0, 3.0))
    (out / "images" / "my_notes.txt").write_text("mine")
    result = preprocess(ds, out, overwrite=True, target_spacing=(4.0, 4.0, 3.0), window="liver")
    assert result.processed == ["a", "b"] and (out / "images" / "my_notes.txt").read_text() == "mine"
    assert json.loads((out / "plan.json").read_text())["target_spacing"] == [4.0, 4.0, 3.0]
    # a liverctl output the user edited is theirs now: --overwrite refuses before any work
    (out / "labels" / "a.npy").write_bytes(b"edited")
    kept = _hashes(out)
    with pytest.raises(InputError, match="liverctl did not write it"):
        preprocess(ds, out, overwrite=True, target_spacing=(2.0, 2.0, 3.0))
    assert _hashes(out) == kept


def test_a_folder_of_another_command_is_not_reused(tmp_path: Path) -> None:
    m = Manifest(tmp_path)
    (tmp_path / "x.nii.gz").write_text("mask")
    m.record([tmp_path / "x.nii.gz"], "predict")
    assert check_new_or_owned_folder(tmp_path, "predict").owns(tmp_path / "x.nii.gz")
    with pytest.raises(InputError, match="not from a liverctl preprocess"):
        check_new_or_owned_folder(tmp_path, "preprocess")


def test_nii_gz_beside_a_nii_of_the_same_name_is_read_itself(tmp_path: Path) -> None:
    """ITK reads case.nii when asked for case.nii.gz if both exist; liverctl reads the file named."""
    for value, suffix in ((7, ".nii"), (3, ".nii.gz")):
        sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 5, 6), value, np.int16)), str(tmp_path / f"case{suffix}"))
    assert read_image(tmp_path / "case.nii.gz").array.max() == 3
    assert read_image(tmp_path / "case.nii").array.max() == 7


def test_preprocess_overwrite_reprocesses_a_relative_folder_with_a_folder_in_it(tmp_path: Path, monkeypatch) -> None:
    """Issue 19: `-o o/r14`, then `-o o/r14 --window liver --overwrite` really reprocesses (and
    the absolute spelling of the same folder is the same folder)."""
    from liverctl.preprocessing import preprocess

    _dataset(tmp_path / "ds")
    monkeypatch.chdir(tmp_path)
    first = preprocess("ds", "o/r14", target_spacing=(2.0, 2.0, 3.0))
    assert first.processed == ["a", "b"]
    before = np.load(tmp_path / "o" / "r14" / "images" / "a.npy")
    again = preprocess(
        "ds", str(tmp_path / "o" / "r14"), overwrite=True, target_spacing=(2.0, 2.0, 3.0), window="liver"
    )
    assert again.processed == ["a", "b"] and again.skipped == []
    assert not np.array_equal(np.load(tmp_path / "o" / "r14" / "images" / "a.npy"), before)
    manifest = json.loads((tmp_path / "o" / "r14" / MANIFEST_NAME).read_text())
    assert "images/a.npy" in manifest["files"] and all(v is not None for v in manifest["files"].values())


def test_liverctls_own_folder_is_its_own_under_every_spelling(tmp_path: Path, monkeypatch) -> None:
    """Issue 19: the same folder given once absolute and once relative was foreign, --overwrite or not."""
    from liverctl.phantoms import phantom

    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    phantom(tmp_path / "ph", n=1, shape=(16, 24, 24))
    for spelling in ("ph", "./ph/", "ph/../ph", "link/ph", str(tmp_path / "link" / "ph")):
        phantom(spelling, n=1, shape=(16, 24, 24), overwrite=True)
    assert Manifest("link/ph").owns("ph/dataset.json") and sorted(p.name for p in (tmp_path / "ph").iterdir()) == [
        MANIFEST_NAME,
        "dataset.json",
        "imagesTr",
        "labelsTr",
    ]
