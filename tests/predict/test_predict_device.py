"""The GPU path's batch behaviour, tested on the CPU (issue 25): a device out-of-memory error is
retried per scan with the sums on the CPU, and ``--resume`` compares the resolved precision and
device, not ``"auto"``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from band import BandNet  # tests/support

from liverctl import weights as lw
from liverctl.io import Image, read_image, write_image
from liverctl.predict import LiverModel, PredictOptions, predict
from liverctl.predict.retry import OutOfDeviceMemory, result_key, segment_retrying


def _band(fail_on: tuple[int, ...] = ()) -> BandNet:
    """Liver where the normalised value is near 0.05; out of memory on the forwards in ``fail_on``."""
    return BandNet(0.05, 0.02, fail_on)


def _model(net: torch.nn.Module) -> LiverModel:
    entry = lw.ModelEntry(
        name="band",
        repo_id="local/band",
        filename="band.pt",
        revision="main",
        sha256="",
        architecture="band",
        kwargs={},
        spacing=(3.0, 3.0, 3.0),
        orientation="RAS",
        interpolation="linear",
        intensity=lw.IntensityRecipe("window-zscore", window=(-1024.0, 3000.0), mean=0.0, std=1.0),
        n_classes=2,
        liver_channel=1,
        decision="argmax",
        labels={"liver": 1},
        sliding_window=lw.WindowRecipe(roi=(64, 64, 64)),
    )
    resolved = lw.ResolvedWeights(entry, Path("band.pt"), "0" * 64, "local")
    return LiverModel([resolved], [net], torch.device("cpu"))


@pytest.fixture(scope="module")
def scans(ct_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three copies of the real scan (the second shifted by 40 HU, so the masks differ)."""
    folder = tmp_path_factory.mktemp("scans")
    ct = read_image(ct_path)
    for i, name in enumerate(("a", "b", "c")):
        array = ct.array.astype(np.int16) + (40 if i == 1 else 0)
        write_image(Image(array.astype(np.int16), ct.geometry), folder / f"{name}.nii.gz")
    return folder


def test_out_of_memory_is_retried_with_cpu_sums_and_recorded(scans: Path, tmp_path: Path) -> None:
    torch_only = PredictOptions(backend="torch")  # counting forwards: no runtime export or timing calls
    plain = predict(scans, tmp_path / "plain", loaded=_model(_band()), options=torch_only)
    net = _band(fail_on=(1,))  # the first forward of the batch runs out of memory
    result = predict(scans, tmp_path / "out", loaded=_model(net), options=torch_only)
    assert [c.ok for c in result.cases] == [True, True, True]
    first, second = result.cases[0].report, result.cases[1].report
    fallback = first["inference"]["out_of_memory_fallback"]
    assert fallback["retried_with"] == "accumulate_on=cpu" and "simulated" in fallback["error"]
    assert first["inference"]["accumulate_on"] == "cpu"
    assert "out_of_memory_fallback" not in second["inference"]  # the next scan runs as asked
    assert second["inference"]["accumulate_on"] == "device"
    for mine, ref in zip(result.cases, plain.cases, strict=True):  # the retry changes no voxel
        assert np.array_equal(read_image(mine.mask).array, read_image(ref.mask).array)
    saved = json.loads(Path(result.cases[0].report_path).read_text())
    assert saved["inference"]["out_of_memory_fallback"] == fallback


def test_a_second_out_of_memory_fails_that_scan_only(scans: Path, tmp_path: Path) -> None:
    net = _band(fail_on=(1, 2))  # the retry runs out of memory too
    result = predict(scans, tmp_path / "out", loaded=_model(net), options=PredictOptions(backend="torch"))
    assert [c.ok for c in result.cases] == [False, True, True]
    assert "out of device memory, also with the window sums on the CPU" in result.cases[0].error
    rows = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert ",failed," in rows[1] and all(",ok," in r for r in rows[2:])


def test_segment_retrying_does_not_retry_other_errors(ct_path: Path) -> None:
    class Broken(BandNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            raise RuntimeError("a bug, not memory")

    net = Broken(0.05, 0.02)
    torch_only = PredictOptions(backend="torch")  # counting forwards: no runtime export or timing calls
    with pytest.raises(RuntimeError, match="a bug"):
        segment_retrying(_model(net), read_image(ct_path), torch_only)
    assert net.calls == 1
    with pytest.raises(OutOfDeviceMemory):
        segment_retrying(_model(_band(fail_on=(1, 2))), read_image(ct_path), torch_only)


def test_reports_and_resume_key_carry_the_resolved_precision_and_device(
    scans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(_band())
    key = result_key(model, PredictOptions())
    assert key["precision"] == "fp32" and key["device"] == "cpu"  # never "auto"
    out = tmp_path / "out"
    # a run on a GPU in fp16 (as "auto" resolves there) ...
    gpu = {"device": "cuda:0 (NVIDIA H100 80GB HBM3)", "precision": "fp16"}
    with monkeypatch.context() as m:
        m.setattr(LiverModel, "runs_as", lambda self, options: gpu)
        first = predict(scans, out, loaded=model)
        assert first.cases[0].report["options"]["precision"] == "fp16"
        again = predict(scans, out, loaded=model, resume=True)
        assert all(c.skipped for c in again.cases)  # same device and precision: kept
    # ... is not "the same options" for a CPU fp32 run: every scan is computed again
    cpu = predict(scans, out, loaded=model, resume=True)
    assert not any(c.skipped for c in cpu.cases)
    report = json.loads(Path(cpu.cases[0].report_path).read_text())
    assert report["options"]["device"] == "cpu" and report["options"]["precision"] == "fp32"
    assert report["inference"]["device"] == "cpu" and report["inference"]["tf32"] is False
    assert all(c.skipped for c in predict(scans, out, loaded=model, resume=True).cases)
    # another backend is not "the same options" either (a runtime is torch within 1e-4, not bit for bit)
    assert report["options"]["backend"] == "auto"
    other = predict(scans, out, loaded=model, resume=True, options=PredictOptions(backend="torch"))
    assert not any(c.skipped for c in other.cases)
