"""``format = "nnunetv2"`` registry entries: read and written by the registry's one schema (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from liverctl import weights
from liverctl.errors import ConfigError
from liverctl.weights.add import default_name, with_entry

COMMIT = "0123456789abcdef0123456789abcdef01234567"
FOLDER = "Dataset003_Liver/nnUNetTrainer__nnUNetPlans__3d_fullres"
SHA = {name: c * 64 for name, c in (("plans.json", "a"), ("dataset.json", "b"))}
SHA |= {"fold_0/checkpoint_final.pth": "c" * 64, "fold_1/checkpoint_final.pth": "d" * 64}

GOOD = f"""default = "liver-nnunet"

[models.liver-nnunet]
format = "nnunetv2"
repo_id = "owner/liver"
revision = "{COMMIT}"
folder = "{FOLDER}"
folds = [0, 1]
checkpoint = "checkpoint_final.pth"
description = "an nnU-Net liver model"

[models.liver-nnunet.sha256]
"plans.json" = "{SHA["plans.json"]}"
"dataset.json" = "{SHA["dataset.json"]}"
"fold_0/checkpoint_final.pth" = "{SHA["fold_0/checkpoint_final.pth"]}"
"fold_1/checkpoint_final.pth" = "{SHA["fold_1/checkpoint_final.pth"]}"
"""


def _load(tmp_path: Path, text: str) -> weights.Registry:
    path = tmp_path / "weights.toml"
    path.write_text(text, encoding="utf-8")
    return weights.load_registry(path)


def test_good_entry_parses_with_its_files(tmp_path: Path):
    entry = _load(tmp_path, GOOD).get()
    assert isinstance(entry, weights.NnUNetEntry)
    assert (entry.repo_id, entry.revision, entry.folder, entry.folds) == ("owner/liver", COMMIT, FOLDER, (0, 1))
    assert entry.relative_files == list(SHA) and entry.sha256 == SHA
    assert entry.files == [f"{FOLDER}/{rel}" for rel in SHA]
    assert entry.description == "an nnU-Net liver model" and entry.architecture == "nnunetv2"


def test_entry_round_trips_through_the_writer_beside_a_monai_entry(tmp_path: Path):
    shipped = weights.load_registry(Path(__file__).resolve().parents[2] / "weights.toml")
    mine = _load(tmp_path, GOOD).get()
    entries = [*shipped.models.values(), mine]
    again = weights.load_registry(weights.save_registry(tmp_path / "out.toml", entries, mine.name))
    assert again.default == mine.name
    assert {n: e.to_dict() for n, e in again.models.items()} == {e.name: e.to_dict() for e in entries}


def test_fold_all_and_a_quoted_name(tmp_path: Path):
    text = GOOD.replace("folds = [0, 1]", 'folds = ["all"]').replace("liver-nnunet", "my model")
    text = text.replace("[models.my model", '[models."my model"')
    text = text.replace(
        f'"fold_0/checkpoint_final.pth" = "{"c" * 64}"\n', f'"fold_all/checkpoint_final.pth" = "{"c" * 64}"\n'
    )
    text = text.replace(f'"fold_1/checkpoint_final.pth" = "{"d" * 64}"\n', "")
    entry = _load(tmp_path, text).get("my model")
    assert entry.folds == ("all",) and entry.relative_files[-1] == "fold_all/checkpoint_final.pth"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('format = "nnunetv2"', 'format = "nnunet"', r"models\.liver-nnunet\.format: must be \"nnunetv2\""),
        ('repo_id = "owner/liver"', 'repo_id = "liver"', r"models\.liver-nnunet\.repo_id: must look like 'owner/name'"),
        (f'revision = "{COMMIT}"', 'revision = "main"', r"models\.liver-nnunet\.revision: must be a 40-hex commit"),
        (f'folder = "{FOLDER}"', 'folder = "Dataset003_Liver/3d_fullres"', r"\.folder: must be a <trainer>__"),
        (f'folder = "{FOLDER}"', f'folder = "../{FOLDER}"', r"models\.liver-nnunet\.folder: must be"),
        ("folds = [0, 1]", "folds = [0, 0]", r"models\.liver-nnunet\.folds: must be a non-empty list of distinct"),
        ("folds = [0, 1]", "folds = []", r"models\.liver-nnunet\.folds: must be"),
        ("folds = [0, 1]", "folds = [-1]", r"models\.liver-nnunet\.folds: must be"),
        ("folds = [0, 1]", 'folds = "0,1"', r"models\.liver-nnunet\.folds: must be a list"),
        ('checkpoint = "checkpoint_final.pth"', 'checkpoint = "fold_0/c.pth"', r"\.checkpoint: must be a \.pth file"),
        ('checkpoint = "checkpoint_final.pth"', 'checkpoint = "c.pt"', r"\.checkpoint: must be a \.pth file"),
        (f'"plans.json" = "{"a" * 64}"', '"plans.json" = "abc"', r'\.sha256: "plans\.json" must be pinned to 64 hex'),
        (f'"dataset.json" = "{"b" * 64}"\n', "", r'\.sha256: "dataset\.json" must be pinned'),
        ("folds = [0, 1]", "folds = [0]", r'\.sha256: "fold_1/checkpoint_final\.pth" is not a file this entry uses'),
        ('description = "an nnU-Net liver model"', "description = 3", r"\.description: must be a string"),
        ('description = "an nnU-Net liver model"', "spacing = [1.0, 1.0, 1.0]", r"unknown field 'spacing'"),
        (
            "[models.liver-nnunet.sha256]",
            "[models.liver-nnunet.sha265]",
            r"models\.liver-nnunet: missing field 'sha256'",
        ),
    ],
)
def test_each_bad_field_is_one_line_naming_entry_and_field(tmp_path: Path, old: str, new: str, message: str):
    assert old in GOOD
    with pytest.raises(ConfigError, match=message) as info:
        _load(tmp_path, GOOD.replace(old, new))
    assert "\n" not in str(info.value) and str(info.value).startswith("weights.toml: models.liver-nnunet")


def test_a_monai_entry_with_another_format_is_refused(tmp_path: Path):
    shipped = (Path(__file__).resolve().parents[2] / "weights.toml").read_text()
    text = shipped.replace('repo_id = "MONAI/wholeBody_ct_segmentation"', 'format = "onnx"\nrepo_id = "MONAI/x"', 1)
    with pytest.raises(ConfigError, match=r"models\.wholebody-ct-3mm\.format: must be \"nnunetv2\".*not 'onnx'"):
        _load(tmp_path, text)


def test_with_entry_appends_or_replaces_keeping_every_other_line():
    block = '[models.b]\nformat = "nnunetv2"\n\n[models.b.sha256]\n"plans.json" = "x"\n'
    text = (
        '# my registry\ndefault = "a"\n\n# model a, by hand\n[models.a]\nrepo_id = "o/r"\n\n'
        '[models.a.kwargs]\nn = 1\n\n# model b\n[models.b]\nold = 1\n\n[models.b.sha256]\n"old" = 1\n\n'
        "# model c stays\n[models.c]\nk = 2\n"
    )
    new = with_entry(text, "b", block, replace_existing=True)
    assert new.startswith('# my registry\ndefault = "a"\n\n# model a, by hand\n[models.a]\nrepo_id = "o/r"\n')
    assert "old = 1" not in new and '"old"' not in new and "# model b\n" in new
    assert "# model c stays\n[models.c]\nk = 2\n" in new and new.endswith(block)
    assert new.count("[models.b]") == 1
    again = with_entry(new, "b", block, replace_existing=True)  # the earlier note goes with its entry
    assert again.count("added by `liverctl weights add`") == 1 and again.count("[models.b]") == 1
    added = with_entry(text, "d", block.replace("models.b", "models.d"), replace_existing=False)
    assert added.startswith(text.rstrip("\n")) and added.endswith(block.replace("models.b", "models.d"))


def test_default_name_is_dataset_and_configuration():
    assert default_name("o/r", FOLDER) == "Dataset003_Liver-3d_fullres"
    assert default_name("owner/liver-model", "nnUNetTrainer__nnUNetPlans__3d_lowres") == "liver-model-3d_lowres"


def test_a_single_file_api_refuses_an_nnunet_entry_in_one_line(tmp_path: Path):
    from liverctl.errors import WeightsError

    reg = _load(tmp_path, GOOD)
    with pytest.raises(WeightsError, match=r"'liver-nnunet' is an nnU-Net results folder, not one weights file"):
        weights.resolve_weights("liver-nnunet", registry=reg)
    info = weights.list_weights(registry=reg)[0]
    assert info.pin == "sha256" and info.cached is None and info.to_dict()["format"] == "nnunetv2"
    assert weights.verify("liver-nnunet", registry=reg).status == "not-cached"


def test_predict_refuses_an_nnunet_entry_in_an_ensemble_before_any_download(tmp_path, monkeypatch):
    from liverctl.predict import LiverModel

    shipped = (Path(__file__).resolve().parents[2] / "weights.toml").read_text()
    path = tmp_path / "both.toml"
    path.write_text(shipped + GOOD.replace('default = "liver-nnunet"\n', ""), encoding="utf-8")
    monkeypatch.setenv(weights.REGISTRY_ENV, str(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be fetched (there is no Hub here)
    with pytest.raises(ConfigError, match=r"nnU-Net model 'liver-nnunet' is one --model: its folds are the ensemble"):
        LiverModel.load(["wholebody-ct-3mm", "liver-nnunet"], device="cpu")
    with pytest.raises(ConfigError, match=r"--weights FILE with nnU-Net model 'liver-nnunet'"):
        LiverModel.load("liver-nnunet", tmp_path / "w.pt", device="cpu")
