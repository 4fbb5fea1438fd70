"""nnU-Net works in the array's own frame: it transposes axes and never resamples along the
direction matrix. The defaults must do the same on oblique scans (issue 24)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunet_cases import FOLDER, _rotation, dice

from liverctl.errors import ConfigError
from liverctl.io import Geometry, Image, read_image, write_image
from liverctl.nnunet import NnUNetModel
from liverctl.nnunet.plans import read_plans
from liverctl.nnunet.preprocess import preprocess
from liverctl.phantoms import make_phantom


def oblique_scan(degrees: tuple[float, float] = (20.0, 12.0)) -> Image:
    """The oblique case of the parity tests, rotated 20 and 12 degrees, with a zero border."""
    ct, _ = make_phantom(domain="tumour", seed=915, case=2, shape=(36, 52, 42), spacing=(9.0, 7.5, 7.5))
    array = ct.array.copy()
    array[:, :, :3] = 0
    array[:, -2:, :] = 0
    return Image(array, Geometry(ct.geometry.spacing, ct.geometry.origin, _rotation(*degrees)))


def test_preprocessing_ignores_the_direction() -> None:
    """The same array and spacing, axial or oblique: the same network input, bit for bit."""
    plans = read_plans(FOLDER, "3d_fullres")
    oblique = oblique_scan()
    axial = Image(oblique.array, Geometry(oblique.geometry.spacing, oblique.geometry.origin, tuple(np.eye(3).ravel())))
    a, b = preprocess(oblique, plans, exact=False, body=True), preprocess(axial, plans, exact=False, body=True)
    assert np.array_equal(a.data, b.data) and a.bbox == b.bbox
    assert np.array_equal(a.body, b.body)


@pytest.mark.slow
def test_defaults_equal_nnunet_predictor_on_an_oblique_scan(tmp_path: Path) -> None:
    pytest.importorskip("nnunetv2", reason="the parity tests need nnunetv2==2.5.1 (the test extra)")
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    path = write_image(oblique_scan(), tmp_path / "oblique_0000.nii.gz")
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # nnU-Net 2.5.1 unpickles whole; our own file
    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=True, device=torch.device("cpu"), allow_tqdm=False
    )
    predictor.initialize_from_trained_model_folder(str(FOLDER), (0, 1), "checkpoint_final.pth")
    array, props = SimpleITKIO().read_images([str(path)])
    seg = predictor.predict_single_npy_array(array, props, None, None, False)
    image = read_image(path)
    labels, _, stats = NnUNetModel.load(FOLDER, folds=(0, 1), device="cpu").predict(image)
    assert (seg > 0).mean() > 0.01
    assert dice(labels.array > 0, seg > 0) >= 0.9999
    # nnU-Net's window grid: the preprocessed array's own (per fold)
    assert stats["network_grid_shape"] == list(preprocess(image, read_plans(FOLDER, "3d_fullres")).data.shape[1:])


@pytest.mark.slow
def test_compiled_backends_give_the_torch_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each installed compiled runtime runs the folds' forward: the same liver as torch's defaults
    (which equal nnUNetPredictor, above and in test_nnunet.py)."""
    from liverctl.inference.backends import available_backends

    installed = available_backends()
    if not installed:
        pytest.skip('no compiled runtime installed (pip install "liverctl[cpu]")')
    monkeypatch.setenv("LIVERCTL_HOME", str(tmp_path))
    image = oblique_scan()
    model = NnUNetModel.load(FOLDER, folds=(0, 1), device="cpu")
    labels, liver_p, stats = model.predict(image)
    assert stats["backend"] == "torch" and (labels.array > 0).mean() > 0.01
    refused = []
    for name in installed:  # a runtime that passes the exactness test gives torch's liver; one that fails is refused
        try:
            other, other_p, other_stats = model.predict(image, backend=name)
        except ConfigError as exc:
            assert "from torch fp32" in str(exc)
            refused.append(name)
            continue
        assert other_stats["backend"] == name
        assert dice(other.array > 0, labels.array > 0) >= 0.9999, name
        # within 1e-3 on this phantom: its exactly flat regions are where any other order of the sums
        # differs by a few 1e-4 (see liverctl.inference.exactness.FLAT_LEVELS); CT has none
        assert float(np.abs(other_p.array - liver_p.array).max()) <= 1e-3, name
    _, auto_p, auto_stats = model.predict(image, backend="auto")  # auto never picks a refused runtime
    assert auto_stats["backend"] not in refused
    assert float(np.abs(auto_p.array - liver_p.array).max()) <= 1e-3
