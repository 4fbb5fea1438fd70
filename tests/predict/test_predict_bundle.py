"""`predict` against the MONAI bundle's own pipeline, on the grids real scans come in.

The bundle (configs/inference.json of wholeBody_ct_segmentation): Orientationd("RAS"),
Spacingd(pixdim, bilinear), NormalizeIntensityd(nonzero=True), ScaleIntensityd(-1, 1),
SlidingWindowInferer(roi, 0.25, gaussian, replicate), softmax, argmax, Invertd (nearest for the
label map). Here it runs with MONAI itself on a small SegResNet of the bundle's layout with
random weights: 4 near-equal logits per voxel, so the smallest input difference flips the
argmax. Exact mode (``PredictOptions(shortcuts=False)``, ``--no-shortcuts``) must give MONAI's
probabilities to 1e-3 and the same masks (Dice >= 0.9999); the defaults, followed by the same
clean-up as MONAI's KeepLargestConnectedComponent + FillHoles, Dice >= 0.995.

Inputs: a phantom abdomen (liverctl.phantoms) at 3 mm, resampled to each grid, so the anatomy
is the same; the real scans of ../shared/data (NIfTI and the DICOM series) where present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

monai = pytest.importorskip("monai")
pytest.importorskip("nibabel", reason="MONAI's Orientationd needs nibabel")
import torch  # noqa: E402
from monai_bundle import monai_bundle as reference_bundle  # noqa: E402  (tests/support)

from liverctl.io import Geometry, Image, read_image, write_image  # noqa: E402
from liverctl.predict import LiverModel, PredictOptions  # noqa: E402
from liverctl.predict.monai_grid import ras_affine  # noqa: E402

N_CLASSES, LIVER, ROI = 4, 2, (32, 32, 32)


@pytest.fixture(autouse=True)
def _compiled_models_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """With liverctl[cpu] installed the defaults compile their networks: into a temporary
    LIVERCTL_HOME, never the user's cache."""
    monkeypatch.setenv("LIVERCTL_HOME", str(tmp_path_factory.getbasetemp() / "liverctl_home"))


def _entry(**changes):
    from liverctl.weights import IntensityRecipe, ModelEntry, WindowRecipe

    base = {
        "name": "bundle-like",
        "repo_id": "local/bundle-like",
        "filename": "w.pt",
        "revision": "main",
        "sha256": "",
        "architecture": "segresnet",
        "kwargs": {"spatial_dims": 3, "in_channels": 1, "out_channels": N_CLASSES, "init_filters": 8},
        "spacing": (3.0, 3.0, 3.0),
        "orientation": "RAS",
        "interpolation": "linear",
        "intensity": IntensityRecipe("nonzero-zscore-minmax", range=(-1.0, 1.0)),
        "n_classes": N_CLASSES,
        "liver_channel": LIVER,
        "decision": "argmax",
        "labels": {"liver": LIVER},
        "sliding_window": WindowRecipe(roi=ROI, overlap=0.25, mode="gaussian", padding_mode="replicate"),
        "network_axes": "xyz",
        "grid": "monai",
    }
    base.update(changes)
    return ModelEntry(**base)


def _network():
    from monai.networks.nets import SegResNet

    torch.manual_seed(3)
    net = SegResNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, init_filters=8)
    return net.eval()


@pytest.fixture(scope="module")
def network():
    """Random weights: near-equal logits, the worst case for exactness."""
    return _network()


def _weakly_trained() -> torch.nn.Module:
    """Thin but real decision margins: 25 Adam steps on 24^3 crops of three phantoms."""
    from liverctl.phantoms import make_phantom
    from liverctl.preprocessing.intensity import normalise

    net = _network().train()
    rng = np.random.default_rng(0)
    cases = []
    for case in range(3):
        ct, lab = make_phantom(domain="contrast", seed=5, case=case, shape=(40, 56, 56), spacing=(3.0, 3.0, 3.0))
        x = normalise(ct.array.astype(np.float32), _entry().intensity).transpose(2, 1, 0)
        y = np.where(lab.array > 0, LIVER, 0).astype(np.int64).transpose(2, 1, 0)
        cases.append((x, y))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(25):
        x, y = cases[rng.integers(len(cases))]
        i, j, k = (rng.integers(0, s - 23) for s in x.shape)
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + 24, j : j + 24, k : k + 24]))[None, None]
        yb = torch.from_numpy(np.ascontiguousarray(y[i : i + 24, j : j + 24, k : k + 24]))[None]
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def weak_network():
    torch.manual_seed(0)
    return _weakly_trained()


def _liverctl_model(network) -> LiverModel:
    from liverctl.models import build_model
    from liverctl.weights import ResolvedWeights

    e = _entry()
    ours = build_model("segresnet", **e.kwargs)
    ours.load_state_dict(network.state_dict())
    return LiverModel([ResolvedWeights(e, Path("w.pt"), "0" * 64, "local")], [ours.eval()], torch.device("cpu"))


@pytest.fixture(scope="module")
def model(network) -> LiverModel:
    return _liverctl_model(network)


@pytest.fixture(scope="module")
def weak_model(weak_network) -> LiverModel:
    return _liverctl_model(weak_network)


def monai_bundle(image: Image, network, path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's pipeline (tests/support/monai_bundle.py) with this file's window and classes."""
    return reference_bundle(image, network, roi=ROI, liver=LIVER, path=path)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def rotation(a_deg: float, b_deg: float) -> np.ndarray:
    a, b = np.radians(a_deg), np.radians(b_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return rx @ ry


@pytest.fixture(scope="module")
def abdomen() -> Image:
    """A phantom abdomen at 3 mm, 40 x 56 x 56 voxels."""
    from liverctl.phantoms import make_phantom

    ct, _ = make_phantom(domain="contrast", seed=2, case=0, shape=(40, 56, 56), spacing=(3.0, 3.0, 3.0))
    return ct


def on_grid(ct: Image, spacing, direction=np.eye(3)) -> Image:
    """The same anatomy stored on another grid (linear resampling of the phantom)."""
    from liverctl.spatial import resample_to_reference

    size = np.asarray(ct.shape[::-1]) * np.asarray(ct.geometry.spacing)
    shape_xyz = np.maximum(2, np.round(size / np.asarray(spacing))).astype(int)
    centre = ct.geometry.index_to_physical((np.asarray(ct.shape) - 1) / 2.0)
    origin = centre - direction @ ((shape_xyz - 1) / 2.0 * np.asarray(spacing))
    geometry = Geometry(tuple(spacing), tuple(origin), tuple(np.asarray(direction).ravel()))
    out = resample_to_reference(ct, geometry, tuple(shape_xyz[::-1]), interpolator="linear", default_value=-1000.0)
    return Image(np.round(out.array).astype(np.int16), geometry)


GRIDS = {
    "native-3mm": ((3.0, 3.0, 3.0), np.eye(3)),
    "0.8x0.8x2.0": ((0.8, 0.8, 2.0), np.eye(3)),
    "0.7x0.7x5.0": ((0.7, 0.7, 5.0), np.eye(3)),
    "oblique-12-8deg": ((1.5, 1.5, 1.5), rotation(12, 8)),
    "RAS-stored": ((0.9, 0.9, 2.5), np.diag([-1.0, -1.0, 1.0])),
    "permuted-axes": ((0.9, 2.5, 0.9), np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])),
}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("grid", list(GRIDS))
def test_exact_mode_is_the_bundle_on_every_grid(
    grid: str, abdomen: Image, model: LiverModel, network, tmp_path: Path
) -> None:
    spacing, direction = GRIDS[grid]
    scan = on_grid(abdomen, spacing, direction)
    if grid == "RAS-stored":  # through the file formats too: NRRD here, NIfTI below
        scan = read_image(write_image(scan, tmp_path / "scan.nrrd"))
    elif grid == "0.8x0.8x2.0":
        scan = read_image(write_image(scan, tmp_path / "scan.nii.gz"))
    labels, prob = monai_bundle(scan, network)
    seg = model.segment(scan, PredictOptions(shortcuts=False, postprocess=False, save_probabilities=True))
    assert seg.mask.geometry.mismatch(scan.geometry) is None
    assert np.abs(seg.probabilities.array - prob).max() < 1e-3
    assert dice(seg.mask.array, labels) >= 0.9999, grid
    assert labels.any()  # the comparison is not between two empty masks


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("grid", list(GRIDS))
def test_defaults_hold_the_bundle_after_the_same_cleanup(
    grid: str, abdomen: Image, weak_model: LiverModel, weak_network
) -> None:
    from monai.transforms import FillHoles, KeepLargestConnectedComponent

    spacing, direction = GRIDS[grid]
    scan = on_grid(abdomen, spacing, direction)
    labels, _ = monai_bundle(scan, weak_network)
    assert labels.mean() > 0.02  # the weak network finds a liver
    cleaned = KeepLargestConnectedComponent(applied_labels=[1], connectivity=3)(torch.as_tensor(labels[None]))
    cleaned = np.asarray(FillHoles(applied_labels=[1])(cleaned))[0]
    seg = weak_model.segment(scan, PredictOptions())
    assert dice(seg.mask.array, cleaned) >= 0.995, grid


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_exact_mode_on_the_real_dicom_series(dicom_dir: Path, model: LiverModel, network) -> None:
    scan = read_image(dicom_dir)
    labels, prob = monai_bundle(scan, network)
    seg = model.segment(scan, PredictOptions(shortcuts=False, postprocess=False, save_probabilities=True))
    assert np.abs(seg.probabilities.array - prob).max() < 1e-3
    assert dice(seg.mask.array, labels) >= 0.9999


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_exact_mode_on_an_oblique_nifti_read_by_monai_itself(
    abdomen: Image, model: LiverModel, network, tmp_path: Path
) -> None:
    """The 1.5 mm oblique scan as a NIfTI file, MONAI reading it with its own LoadImage
    (nibabel: the header's float32 sform) and liverctl with ITK (an orthonormalised direction,
    ~1e-7 away). At the exact 2:1 ratio to the 3 mm model grid half the scan's voxels are
    nearest-neighbour ties of Invertd, decided by those last bits: liverctl starts from the
    header's own affine (``Image.stored_affine``), so the ties fall as MONAI's. With random
    weights neighbouring model voxels have unrelated labels: every flipped tie shows."""
    import nibabel as nib

    path = write_image(on_grid(abdomen, (1.5, 1.5, 1.5), rotation(12, 8)), tmp_path / "oblique.nii.gz")
    scan = read_image(path)
    assert not np.array_equal(ras_affine(scan.geometry), nib.load(path).affine)  # the case that can fail
    labels, prob = monai_bundle(scan, network, path)
    seg = model.segment(scan, PredictOptions(shortcuts=False, postprocess=False, save_probabilities=True))
    assert np.abs(seg.probabilities.array - prob).max() < 1e-3
    assert dice(seg.mask.array, labels) >= 0.9999
    assert labels.any()
    # the defaults keep MONAI's grid and ties too; their float32 resampling moves random-weight
    # near-ties only (0.52 before the stored affine was used)
    fast = model.segment(scan, PredictOptions(postprocess=False))
    assert dice(fast.mask.array, labels) >= 0.995


ZERO_GRIDS = {"0.8x0.8x2.0": (0.8, 0.8, 2.0), "0.7x0.7x5.0": (0.7, 0.7, 5.0)}


def with_exact_zeros(ct: Image, spacing) -> Image:
    """The phantom abdomen on a fine or thick grid with voxels that are exactly 0 HU: a padded
    band of 0 along one side and a water column (a calibration insert) through the body. Where
    the model grid's voxels fall on scan voxel centres (every 4th at 0.8 -> 3 mm), MONAI's
    float64 resampling gives exactly 0 next to such voxels and a float32 one a few millionths."""
    scan = on_grid(ct, spacing)
    array = scan.array.copy()
    array[:, :, :25] = 0
    _, yy, xx = np.indices(array.shape)
    array[(yy - array.shape[1] // 2) ** 2 + (xx - array.shape[2] // 2) ** 2 < 30**2] = 0
    return Image(array, scan.geometry)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("grid", list(ZERO_GRIDS))
def test_defaults_have_monais_zero_set(grid: str, abdomen: Image) -> None:
    """NormalizeIntensity(nonzero=True) leaves exact zeros at 0 and shifts all else: the
    defaults' model-space zeros must be exactly those of MONAI's own Spacingd."""
    from monai.data import MetaTensor
    from monai.transforms import Orientationd, Spacingd

    from liverctl.predict.space import ModelSpace

    scan = with_exact_zeros(abdomen, ZERO_GRIDS[grid])
    tensor = MetaTensor(
        torch.as_tensor(scan.array.astype(np.float32).transpose(2, 1, 0)[None].copy()),
        affine=torch.as_tensor(ras_affine(scan.geometry)),
    )
    data = Orientationd("image", "RAS")({"image": tensor})
    theirs = np.asarray(Spacingd("image", pixdim=(3.0, 3.0, 3.0), mode="bilinear")(data)["image"][0]).transpose(2, 1, 0)
    ours = ModelSpace.of(scan, _entry()).hu.array
    assert ours.shape == theirs.shape
    assert (theirs == 0).sum() > 1000  # the scan does hold exact zeros in model space
    assert np.array_equal(ours == 0, theirs == 0)
    assert np.abs(ours - theirs).max() < 1e-3


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("grid", list(ZERO_GRIDS))
def test_defaults_are_the_bundle_with_exact_zeros(
    grid: str, abdomen: Image, weak_model: LiverModel, weak_network
) -> None:
    """Masks on scans with exact-zero voxels: the defaults equal MONAI's bundle + its clean-up."""
    from monai.transforms import FillHoles, KeepLargestConnectedComponent

    scan = with_exact_zeros(abdomen, ZERO_GRIDS[grid])
    labels, _ = monai_bundle(scan, weak_network)
    assert labels.mean() > 0.02
    cleaned = KeepLargestConnectedComponent(applied_labels=[1], connectivity=3)(torch.as_tensor(labels[None]))
    cleaned = np.asarray(FillHoles(applied_labels=[1])(cleaned))[0]
    seg = weak_model.segment(scan, PredictOptions())
    assert dice(seg.mask.array, cleaned) >= 0.9999, grid


def _cleaned_bundle(scan: Image, network) -> np.ndarray:
    from monai.transforms import FillHoles, KeepLargestConnectedComponent

    labels, _ = monai_bundle(scan, network)
    cleaned = KeepLargestConnectedComponent(applied_labels=[1], connectivity=3)(torch.as_tensor(labels[None]))
    return np.asarray(FillHoles(applied_labels=[1])(cleaned))[0]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("grid", ["native-3mm", "0.8x0.8x2.0"])
def test_compiled_backends_hold_the_bundle(
    grid: str, abdomen: Image, weak_model: LiverModel, weak_network, tmp_path: Path, monkeypatch
) -> None:
    """Every installed compiled runtime, and ``auto`` with each candidate made the fastest: the
    defaults' masks equal the bundle + clean-up; channels-last runs exactly when auto chose it."""
    import liverctl.inference.backend_timing as backend_timing
    from liverctl.inference.backends import CHANNELS_LAST, available_backends

    installed = available_backends()
    if not installed:
        pytest.skip('no compiled runtime installed (pip install "liverctl[cpu]")')
    monkeypatch.setenv("LIVERCTL_HOME", str(tmp_path))
    spacing, direction = GRIDS[grid]
    scan = on_grid(abdomen, spacing, direction)
    cleaned = _cleaned_bundle(scan, weak_network)
    for name in installed:
        seg = weak_model.segment(scan, PredictOptions(backend=name))
        assert seg.report["inference"]["backend"] == name
        assert dice(seg.mask.array, cleaned) >= 0.9999, (grid, name)
    for first in (CHANNELS_LAST, *installed):
        monkeypatch.setattr(backend_timing, "by_speed", lambda s, first=first: sorted(s, key=lambda b: b != first))
        model = _liverctl_model(weak_network)  # a fresh model: the choice is made once per model
        seg = model.segment(scan, PredictOptions())
        ran = seg.report["inference"]["backend"]
        assert ran in (first, "torch"), (first, ran)  # the first that passes the test, else the reference
        assert model.engine_config(PredictOptions()).channels_last == (ran == CHANNELS_LAST)
        assert dice(seg.mask.array, cleaned) >= 0.9999, (grid, first, ran)


def long_scan() -> Image:
    """A 36 cm scan: the phantom abdomen (40 slices at 3 mm) above two copies of its body
    outline filled with fat (a lower body without liver)."""
    from liverctl.phantoms import make_phantom

    ct, _ = make_phantom(domain="contrast", seed=2, case=0, shape=(40, 56, 56), spacing=(3.0, 3.0, 3.0))
    lower = np.where(ct.array > -500, np.int16(-100), ct.array).astype(ct.array.dtype)
    return Image(np.concatenate([lower, lower, ct.array], axis=0), ct.geometry)  # the abdomen on top


class _BrightIsLiver(torch.nn.Module):
    """The weak network with its liver logit raised where the input is brighter than ``level``
    and lowered where it is darker: liver only in the abdomen's soft tissue, and probabilities
    that still depend on every window's content (GroupNorm)."""

    def __init__(self, net: torch.nn.Module, level: float) -> None:
        super().__init__()
        self.net, self.level = net, level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x).clone()
        out[:, LIVER] += 40.0 * (x[:, 0] - self.level)
        return out


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_first_pass_keeps_the_liver_probabilities_of_the_full_run(weak_network) -> None:
    """Windows only where the liver can be: fewer windows, and inside the first pass's box every
    body voxel's liver probability is the full grid's; the mask is still the bundle's."""
    scan = long_scan()
    space = _liverctl_model(weak_network).to_model_space(scan)
    hu, x = space.hu.array, space.net_input
    level = 0.5 * (float(np.median(x[(hu > -150) & (hu < -50)])) + float(np.median(x[(hu > 20) & (hu < 200)])))
    from liverctl.weights import ResolvedWeights

    wrapped = _BrightIsLiver(weak_network, level).eval()
    model = LiverModel([ResolvedWeights(_entry(), Path("w.pt"), "1" * 64, "local")], [wrapped], torch.device("cpu"))
    options = PredictOptions(save_probabilities=True)
    full = model.infer(space.net_input, space.hu, options, None)
    part, region, info = model._infer_in_region(space, options, None)
    assert region is not None and info["windows"] >= 1
    assert part.stats.windows < full.stats.windows  # windows were skipped
    body = np.zeros(hu.shape, bool)
    body[region] = hu[region] > -500
    assert body.any() and body.sum() < (hu > -500).sum()  # the box is not the whole body
    np.testing.assert_allclose(part.channel(LIVER)[body], full.channel(LIVER)[body], rtol=0, atol=1e-6)
    # the raw masks (the toy network's "liver" is all soft tissue, where the two clean-ups'
    # hole filling differs): the bundle's
    seg = model.segment(scan, PredictOptions(postprocess=False))
    assert seg.report["inference"]["first_pass"]["box_zyx"] == [[s.start, s.stop] for s in region]
    assert seg.report["inference"]["skipped_windows"] > 0
    assert dice(seg.mask.array, monai_bundle(scan, wrapped)[0]) >= 0.9999
