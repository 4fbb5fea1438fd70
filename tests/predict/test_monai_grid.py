"""liverctl.predict.monai_grid against MONAI itself: Orientationd + Spacingd (bilinear, border) and
Invertd (nearest), on the grids real scans come in. The values must be MONAI's bit for bit,
nearest-neighbour ties included (1.5 mm -> 3 mm puts every other voxel centre on a tie)."""

from __future__ import annotations

import numpy as np
import pytest

from liverctl.io import Geometry, Image
from liverctl.predict.monai_grid import BundleGrid, geometry_of, ras_affine, spacing_grid
from liverctl.spatial import orientation_of, reorient

monai = pytest.importorskip("monai")
pytest.importorskip("nibabel", reason="MONAI's Orientationd needs nibabel")
torch = pytest.importorskip("torch")


def rotation(a_deg: float, b_deg: float) -> np.ndarray:
    a, b = np.radians(a_deg), np.radians(b_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return rx @ ry


GRIDS = {
    "native-3mm": ((10, 12, 14), (3.0, 3.0, 3.0), np.eye(3), 3.0),
    "0.8x0.8x2.0": ((20, 40, 38), (0.8, 0.8, 2.0), np.eye(3), 3.0),
    "0.7x0.7x5.0": ((8, 44, 40), (0.7, 0.7, 5.0), np.eye(3), 3.0),
    "1.5mm-ties": ((11, 13, 12), (1.5, 1.5, 1.5), np.eye(3), 3.0),
    "oblique-12-8deg": ((16, 30, 28), (1.5, 1.5, 1.5), rotation(12, 8), 3.0),
    "RAS-stored": ((12, 20, 22), (0.9, 0.9, 2.5), np.diag([-1.0, -1.0, 1.0]), 3.0),
    "permuted-axes": ((20, 12, 22), (0.9, 2.5, 0.9), np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]), 3.0),
    "0.75-to-1.5mm": ((16, 20, 20), (0.75, 0.75, 1.5), np.eye(3), 1.5),
}


def _monai(image: Image, pixdim: float):
    from monai.data import MetaTensor
    from monai.transforms import Compose, Orientationd, Spacingd

    tensor = MetaTensor(
        torch.as_tensor(image.array.transpose(2, 1, 0)[None].copy()), affine=torch.as_tensor(ras_affine(image.geometry))
    )
    pre = Compose([Orientationd("image", "RAS"), Spacingd("image", pixdim=(pixdim,) * 3, mode="bilinear")])
    return pre, pre({"image": tensor})


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", list(GRIDS))
def test_spacing_and_its_inverse_are_monais_bit_for_bit(name: str) -> None:
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    shape, spacing, direction, pixdim = GRIDS[name]
    rng = np.random.default_rng(len(name))
    image = Image(
        rng.normal(0, 100, shape).astype(np.float32), Geometry(spacing, (5.0, -3.0, 7.0), tuple(direction.ravel()))
    )
    pre, data = _monai(image, pixdim)
    model = data["image"]
    oriented = reorient(image, "RAS")
    grid = BundleGrid.of(image, oriented, (pixdim,) * 3)
    assert grid.model_shape == tuple(model.shape[1:])[::-1]
    assert np.array_equal(grid.model_affine, model.affine.numpy())
    ours = grid.to_model(oriented.array)
    assert np.array_equal(ours, model[0].numpy().transpose(2, 1, 0))  # bilinear, border padding: equal

    labels = (model > 0).to(torch.float32)
    data["pred"] = MetaTensor(labels, affine=model.affine, meta=model.meta)
    data["pred"].applied_operations = model.applied_operations
    theirs = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)(data)["pred"][0].numpy()
    back = grid.to_oriented((ours > 0).astype(np.uint8))
    back = reorient(Image(back, oriented.geometry), orientation_of(image)).array
    assert np.array_equal(back, theirs.transpose(2, 1, 0))


def test_the_grid_keeps_the_first_voxel_and_rounds_the_extent() -> None:
    """Spacingd's grid is not a centred one: first voxel centre kept, size round((n-1) s/s' + 1)."""
    g = Geometry((0.7, 0.7, 5.0), (10.0, 20.0, 30.0))
    out, shape = spacing_grid(g, (8, 44, 40), (3.0, 3.0, 3.0))
    assert np.allclose(out.origin, g.origin) and np.allclose(out.spacing, (3.0, 3.0, 3.0))
    assert shape == (round(7 * 5 / 3 + 1), round(43 * 0.7 / 3 + 1), round(39 * 0.7 / 3 + 1))
    assert geometry_of(ras_affine(g)).mismatch(g) is None


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", list(GRIDS))
def test_the_default_resampling_is_monais_on_every_grid(name: str) -> None:
    """The defaults resample with SimpleITK (float32), not MONAI's float64 ``grid_sample``; the
    values must still be MONAI's, faces included: where a model voxel lies beyond the scan along
    one axis, ``padding_mode="border"`` clamps that axis and interpolates along the others (ITK's
    nearest extrapolation alone rounded them all: 85 HU off on the RAS-stored phantom)."""
    from types import SimpleNamespace

    from liverctl.predict.space import ModelSpace
    from liverctl.weights import IntensityRecipe

    shape, spacing, direction, pixdim = GRIDS[name]
    rng = np.random.default_rng(len(name))
    image = Image(
        rng.normal(0, 100, shape).astype(np.float32), Geometry(spacing, (5.0, -3.0, 7.0), tuple(direction.ravel()))
    )
    _, data = _monai(image, pixdim)
    entry = SimpleNamespace(
        orientation="RAS", grid="monai", spacing=(pixdim,) * 3, intensity=IntensityRecipe("nonzero-zscore-minmax")
    )
    fast = ModelSpace.of(image, entry, exact=False).hu.array
    theirs = data["image"][0].numpy().transpose(2, 1, 0)
    assert fast.shape == theirs.shape
    assert np.abs(fast - theirs).max() < 1e-3
