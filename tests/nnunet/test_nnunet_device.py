"""nnU-Net on each device (issue 25): exact mode is nnUNetPredictor's arithmetic on the device it
runs on; where the sums live changes nothing; CUDA parity marked gpu."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nnunet_cases import FOLDER, dice, write_cases

from liverctl.io import read_image
from liverctl.nnunet import NnUNetModel
from liverctl.nnunet.predictor import exact_precision


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory):
    return write_cases(tmp_path_factory.mktemp("nnunet_device"))


def test_exact_precision_is_nnunets_on_each_device() -> None:
    assert exact_precision(torch.device("cpu")) == "fp32"
    assert exact_precision(torch.device("cuda", 0)) == "fp16"  # torch.autocast("cuda") as nnUNetPredictor
    assert exact_precision(torch.device("mps")) == "fp32"


@pytest.mark.parametrize("exact", [True, False])
def test_sums_on_the_cpu_change_nothing(scans, exact: bool) -> None:
    model = NnUNetModel.load(FOLDER, folds=(0,), device="cpu", exact=exact)
    image = read_image(scans["native"])
    here = model.predict(image, mirroring=False)
    there = model.predict(image, mirroring=False, accumulate_on="cpu")
    assert (here.stats["accumulate_on"], there.stats["accumulate_on"]) == ("device", "cpu")
    assert here.stats["device"] == "cpu" and here.stats["precision"] == "fp32" and here.stats["tf32"] is False
    assert np.array_equal(here.labels.array, there.labels.array)
    assert np.array_equal(here.liver_probability.array, there.liver_probability.array)


def _nnunet_on(device: torch.device, scans) -> dict:
    pytest.importorskip("nnunetv2")
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # nnU-Net 2.5.1 unpickles whole; our own file
    try:
        predictor = nnUNetPredictor(perform_everything_on_device=True, device=device, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(FOLDER), (0, 1), "checkpoint_final.pth")
    finally:
        mp.undo()
    out = {}
    for name, path in scans.items():
        image, props = SimpleITKIO().read_images([str(path)])
        out[name] = predictor.predict_single_npy_array(image, props, None, None, True)
    return out


@pytest.mark.gpu
@pytest.mark.slow
def test_exact_mode_on_cuda_is_nnunet_predictor_on_cuda(scans) -> None:
    device = torch.device("cuda", torch.cuda.current_device())
    reference = _nnunet_on(device, scans)
    model = NnUNetModel.load(FOLDER, folds=(0, 1), device=str(device), exact=True)
    assert model.precision == "fp16"
    for name, path in scans.items():
        result = model.predict(read_image(path), probabilities=True)
        seg, probs = reference[name]
        assert result.stats["device"].startswith(f"cuda:{device.index} (")
        # the same fp16 arithmetic; cuDNN may pick other (non-deterministic) kernels per process
        assert dice(result.labels.array > 0, seg > 0) >= 0.999
        assert float(np.abs(result.probabilities - probs).max()) <= 1e-2


@pytest.mark.gpu
@pytest.mark.slow
def test_default_mode_on_cuda_agrees_with_nnunet_predictor(scans) -> None:
    device = torch.device("cuda", torch.cuda.current_device())
    reference = _nnunet_on(device, scans)
    model = NnUNetModel.load(FOLDER, folds=(0, 1), device=str(device))
    for name, path in scans.items():
        labels, liver_p, stats = model.predict(read_image(path))
        seg, probs = reference[name]
        assert stats["precision"] == "fp16" and stats["accumulate_on"] == "device"
        assert dice(labels.array > 0, seg > 0) >= 0.995
        assert float(np.abs(liver_p.array - probs[1:].sum(0)).max()) <= 0.05
