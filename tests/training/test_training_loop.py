"""Training runs end to end on small synthetic phantoms: learning, resume after SIGKILL,
DCM branches, export, fine-tuning, SGD + poly and bad input."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch

from liverctl.errors import ConfigError, DatasetError, LiverctlWarning
from liverctl.io import Image
from liverctl.training import ArrayDataset, TrainConfig, train
from liverctl.training.common import build_training_model

# Builds the same in-memory datasets in this process and in subprocesses.
DATA_CODE = textwrap.dedent(
    """
    import numpy as np
    from liverctl.phantoms import make_phantom
    from liverctl.training import ArrayDataset

    def make_dataset(domain="contrast", n=4, name=None, labels=None):
        imgs, labs = {}, {}
        for i in range(n):
            ct, lab = make_phantom(domain=domain, seed=0, case=i, shape=(32, 40, 40), spacing=(9.0, 9.0, 10.0))
            arr = (np.clip(ct.array.astype(np.float32), -200, 250) - 100.0) / 60.0
            imgs[f"{domain}_{i}"] = ct.with_array(arr.astype(np.float32))
            labs[f"{domain}_{i}"] = lab.with_array((lab.array > 0).astype(np.uint8))
        plan = {"labels": labels or {"background": 0, "liver": 1}, "target_spacing": [9.0, 9.0, 10.0],
                "window": [-200.0, 250.0], "mean": 100.0, "std": 60.0}
        return ArrayDataset(imgs, labs, plan, name=name or domain)
    """
)
_ns: dict = {}
exec(DATA_CODE, _ns)
make_dataset = _ns["make_dataset"]

TINY = {"base_features": 4, "n_levels": 3, "dropout": 0.0}  # he2021 defaults to dropout 0.5: off for tiny runs


def tiny_config(**kw) -> TrainConfig:
    base = dict(
        arch_kwargs=dict(TINY),
        patch_size=(32, 32, 32),
        epochs=2,
        iterations_per_epoch=3,
        val_every=0,
        device="cpu",
        seed=3,
        checkpoint_every=0,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def contrast():
    return make_dataset("contrast")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_training_learns_logs_and_exports(tmp_path, contrast):
    cfg = tiny_config(epochs=4, iterations_per_epoch=3, folds=2, fold=1, val_every=2, lr=3e-3)
    progress_calls = []
    result = train([contrast], tmp_path / "run", cfg, progress=lambda d, c, t: progress_calls.append((d, c, t)))
    assert result.epochs == 4 and result.iterations == 12
    assert result.train_losses[-1] < result.train_losses[0]
    assert ("training", 12, 12) in progress_calls and any(d == "validation" for d, _, _ in progress_calls)
    rows = result.log_path.read_text().splitlines()
    assert rows[0] == "epoch,iteration,train_loss,val_dice,lr,seconds,skipped" and len(rows) == 5
    assert rows[2].split(",")[3] != "" and rows[1].split(",")[3] == ""  # validation every 2 epochs
    # the held-out fold is only monitored: the final weights are exported, no selected.pt
    assert result.model_selection == "final" and result.selection_dice is None and result.selected_checkpoint is None
    assert 0.0 <= result.val_dice <= 1.0 and result.selected_epoch == 4
    assert result.curve_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # export: toml fragment + safetensors with its sha256; loads into a freshly built model
    entry = tomllib.loads(result.toml_path.read_text())
    name = entry["default"]
    model = entry["models"][name]
    import hashlib

    assert model["sha256"] == hashlib.sha256(result.model_path.read_bytes()).hexdigest()
    assert model["architecture"] == "unet3d" and model["liver_channel"] == 1 and model["n_classes"] == 2
    assert model["intensity"] == {"method": "window-zscore", "window": [-200.0, 250.0], "mean": 100.0, "std": 60.0}
    assert model["spacing"] == [9.0, 9.0, 10.0] and model["sliding_window"]["roi"] == [32, 32, 32]
    from safetensors.torch import load_file

    from liverctl.models import build_model, load_state_dict_checked

    net = load_state_dict_checked(build_model("unet3d", **model["kwargs"]), load_file(str(result.model_path)))
    final = torch.load(result.last_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(v, final[k]) for k, v in net.state_dict().items())
    # the last checkpoint is a plain dict readable with weights_only=True
    state = torch.load(result.last_checkpoint, weights_only=True)
    assert state["epoch"] == 4 and state["global_iteration"] == 12 and state["finished"]


def test_same_seed_same_weights_and_existing_run_refused(tmp_path, contrast):
    a = train([contrast], tmp_path / "a", tiny_config(epochs=1))
    b = train([contrast], tmp_path / "b", tiny_config(epochs=1))
    wa, wb = _weights(a.last_checkpoint), _weights(b.last_checkpoint)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train([contrast], tmp_path / "c", tiny_config(epochs=1, seed=4))
    assert not all(torch.equal(wa[k], _weights(c.last_checkpoint)[k]) for k in wa)
    with pytest.raises(ConfigError, match="already holds a training run"):
        train([contrast], tmp_path / "a", tiny_config(epochs=1))


KILL_SCRIPT = """
import os, signal, sys, numpy as np, torch
torch.set_num_threads(1)
from liverctl.io import Geometry, Image
from liverctl.training import ArrayDataset, TrainConfig, train
arrays = np.load(sys.argv[2])
geometry = Geometry.from_dict({geometry!r})
names = sorted(k[4:] for k in arrays.files if k.startswith("img_"))
ds = ArrayDataset({{n: Image(arrays["img_" + n], geometry) for n in names}},
                  {{n: Image(arrays["lab_" + n], geometry) for n in names}}, {plan!r}, name="contrast")
cfg = TrainConfig(**{cfg!r})
def progress(desc, done, total):
    if desc == "training" and done == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
train([ds], sys.argv[1], cfg, progress=progress)
"""


def test_resume_after_sigkill_mid_epoch_is_exact(tmp_path, contrast):
    cfg = tiny_config(epochs=2, iterations_per_epoch=4, checkpoint_every=2, arch_kwargs={**TINY, "dropout": 0.1})
    reference = train([contrast], tmp_path / "ref", cfg)
    # the same run in a subprocess, killed with SIGKILL during iteration 7 (epoch 2): the last
    # checkpoint is the mid-epoch one after iteration 6
    # (the subprocess reads the very same arrays from a file)
    arrays = {f"img_{n}": im.array for n, im in contrast.images.items()}
    arrays.update({f"lab_{n}": lab.array for n, lab in contrast.labels.items()})
    np.savez(tmp_path / "data.npz", **arrays)
    geometry = next(iter(contrast.images.values())).geometry.to_dict()
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(geometry=geometry, plan=contrast.plan, cfg=cfg.to_dict(), kill_at=7))
    cmd = [sys.executable, str(script), str(tmp_path / "run"), str(tmp_path / "data.npz")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["iteration_in_epoch"], saved["global_iteration"]) == (1, 2, 6)
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert len((tmp_path / "run" / "train_log.csv").read_text().splitlines()) == 2  # epoch 1 kept
    resumed = train([contrast], tmp_path / "run", None, resume=True)
    assert resumed.iterations == 8 and resumed.epochs == 2
    ref_w, res_w = _weights(reference.last_checkpoint), _weights(resumed.last_checkpoint)
    assert ref_w.keys() == res_w.keys()
    assert all(torch.equal(ref_w[k], res_w[k]) for k in ref_w)
    assert resumed.train_losses == reference.train_losses
    ref_opt = torch.load(reference.last_checkpoint, weights_only=True)["optimizer"]["state"]
    res_opt = torch.load(resumed.last_checkpoint, weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(ref_opt[k]["exp_avg"], res_opt[k]["exp_avg"]) for k in ref_opt)


def test_dcm_updates_only_the_batch_dataset_branch(tmp_path):
    a, b = make_dataset("contrast", n=2), make_dataset("plain", n=2)
    cfg = tiny_config(epochs=1, iterations_per_epoch=1, dcm_from_level=1, sampler="dos")
    init = build_training_model(cfg, 2, 2).state_dict()
    result = train([a, b], tmp_path / "dcm", cfg)
    after = _weights(result.last_checkpoint)
    # DOS: iteration 0 draws from dataset 0, so only branch 0 of the dataset-wise levels moves
    b0 = [k for k in after if ".branches.0." in k and k.endswith("weight")]
    b1 = [k for k in after if ".branches.1." in k and k.endswith("weight")]
    assert b0 and b1
    assert all(not torch.equal(after[k], init[k]) for k in b0)
    assert all(torch.equal(after[k], init[k]) for k in b1)
    shared = "encoder.0.0.0.weight"
    assert not torch.equal(after[shared], init[shared])
    entry = tomllib.loads(result.toml_path.read_text())
    model = entry["models"][entry["default"]]
    assert model["datasets"] == ["contrast", "plain"]
    assert model["kwargs"]["dcm_from_level"] == 1 and model["kwargs"]["n_datasets"] == 2
    # predict --dataset NAME picks the branch of the exported model
    from liverctl.io import read_image, write_image
    from liverctl.predict import PredictOptions, predict

    scan = tmp_path / "scan.nii.gz"
    write_image(
        _ns["make_phantom"](domain="plain", seed=0, case=5, shape=(32, 40, 40), spacing=(9.0, 9.0, 10.0))[0], scan
    )
    probs = {}
    for name in ("contrast", "plain"):
        opts = PredictOptions(device="cpu", dataset=name, save_probabilities=True, postprocess=False)
        predict(scan, tmp_path / name / "mask.nii.gz", weights=result.model_path, options=opts)
        probs[name] = read_image(next((tmp_path / name).glob("*probabilities*"))).array
    assert probs["plain"].shape == (32, 40, 40) and not np.array_equal(probs["plain"], probs["contrast"])
    with pytest.raises(ConfigError, match="unknown dataset"):
        predict(
            scan, tmp_path / "x.nii.gz", weights=result.model_path, options=PredictOptions(device="cpu", dataset="pig")
        )


def test_finetune_from_exported_weights_and_sgd_poly(tmp_path, contrast):
    pre = train([contrast], tmp_path / "pre", tiny_config(epochs=1))
    cfg = tiny_config(
        epochs=3, optimizer="sgd", scheduler="poly", init_checkpoint=str(pre.model_path), finetune_lr=1e-6
    )
    fine = train([contrast], tmp_path / "fine", cfg)
    lrs = [float(r.split(",")[4]) for r in fine.log_path.read_text().splitlines()[1:]]
    assert lrs == pytest.approx([1e-6 * (1 - e / 3) ** 0.9 for e in range(3)], rel=1e-2)
    # a tiny lr barely moves the pre-trained weights
    w0, w1 = _weights(pre.last_checkpoint), _weights(fine.last_checkpoint)
    k = "encoder.0.0.0.weight"
    assert (w1[k] - w0[k]).abs().max().item() < 1e-3


def test_different_label_sets_are_refused_unless_tal(tmp_path):
    a = make_dataset("contrast", n=2)
    b = make_dataset("plain", n=2, labels={"background": 0, "liver": 1, "spleen": 2})
    with pytest.raises(ConfigError, match="different label sets"):
        train([a, b], tmp_path / "x", tiny_config())
    result = train([a, b], tmp_path / "tal", tiny_config(epochs=1, iterations_per_epoch=2, loss="tal"))
    entry = tomllib.loads(result.toml_path.read_text())
    assert entry["models"][entry["default"]]["labels"] == {"liver": 1, "spleen": 2}


def test_too_few_scans_for_folds(tmp_path):
    with pytest.raises(ConfigError, match="too few for 5-fold"):
        train([make_dataset("contrast", n=3)], tmp_path / "x", tiny_config(folds=5, fold=0))


class _Corrupt(ArrayDataset):
    def load(self, name, mmap=True):
        if name.endswith("_1"):
            raise ValueError("cannot read images/contrast_1.npy: file is truncated")
        return super().load(name, mmap)


def test_corrupt_and_empty_cases_are_skipped_with_warnings(tmp_path, contrast):
    ds = _Corrupt(dict(contrast.images), dict(contrast.labels), contrast.plan, name="bad")
    empty = contrast.labels["contrast_2"]
    ds.labels["contrast_2"] = Image(np.zeros_like(empty.array), empty.geometry)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train([ds], tmp_path / "bad", tiny_config(epochs=1))
    messages = [str(w.message) for w in caught if issubclass(w.category, LiverctlWarning)]
    assert any("skipping case contrast_1" in m and "truncated" in m for m in messages)
    assert any("contrast_2" in m and "no foreground" in m for m in messages)
    assert result.skipped == [("bad", "contrast_1", "cannot read images/contrast_1.npy: file is truncated")]
    assert "bad/contrast_1" in result.log_path.read_text()
    assert result.model_path.exists()


def test_all_cases_unreadable_is_a_dataset_error(tmp_path):
    ds = _Corrupt(
        *[{k: v for k, v in d.items() if k.endswith("_1")} for d in (make_dataset("contrast", 2).images,)] * 1,
        {k: v for k, v in make_dataset("contrast", 2).labels.items() if k.endswith("_1")},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DatasetError, match="no readable training case"):
            train([ds], tmp_path / "x", tiny_config())


def test_corrupt_file_appearing_mid_training_keeps_earlier_epochs(tmp_path, contrast):
    class Flaky(ArrayDataset):
        calls = 0

        def load(self, name, mmap=True):
            Flaky.calls += 1
            if Flaky.calls > 12 and name.endswith("_0"):
                raise OSError(f"I/O error reading {name}")
            return super().load(name, mmap)

    ds = Flaky(dict(contrast.images), dict(contrast.labels), contrast.plan, name="flaky")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        result = train([ds], tmp_path / "flaky", tiny_config(epochs=3))
    assert result.epochs == 3 and ("flaky", "contrast_0", "I/O error reading contrast_0") in result.skipped
    assert len(result.log_path.read_text().splitlines()) == 4
