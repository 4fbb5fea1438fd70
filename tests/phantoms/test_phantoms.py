"""Synthetic CT phantoms: determinism, anatomy in physical units, domain differences, MSD files, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from liverctl.errors import ConfigError, InputError
from liverctl.io import read_image, read_label
from liverctl.phantoms import DOMAINS, LABELS, ORGAN_LABELS, PhantomConfig, make_phantom, phantom

# A coarse grid over the same 384 x 384 x 320 mm field of view as the default: fast, same anatomy.
SMALL = {"shape": (32, 48, 48), "spacing": (8.0, 8.0, 10.0)}


def _cached():
    cache: dict[tuple, tuple] = {}

    def get(domain: str, seed: int, **kw):
        key = (domain, seed, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = make_phantom(domain=domain, seed=seed, **kw)
        return cache[key]

    return get


phantom_of = _cached()


def _liver_core_hu(ct, lab) -> float:
    """Median HU of the liver two voxels away from its surface."""
    core = ndimage.binary_erosion(lab.array == 1, iterations=2)
    return float(np.median(ct.array[core]))


def _centroid_mm(image, mask: np.ndarray) -> np.ndarray:
    """Centroid of ``mask`` in physical (x, y, z) mm."""
    return image.geometry.index_to_physical(np.argwhere(mask).mean(axis=0))


# --------------------------------------------------------------------------- basics


def test_default_phantom_types_geometry_and_labels():
    ct, lab = phantom_of("contrast", 0)
    assert ct.shape == lab.shape == (64, 96, 96)
    assert ct.array.dtype == np.int16 and lab.array.dtype == np.uint8
    assert ct.geometry.spacing == (4.0, 4.0, 5.0)
    assert ct.geometry.mismatch(lab.geometry) is None
    assert ct.geometry.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert set(np.unique(lab.array)) == {0, 1}  # no tumours outside the tumour domain
    # air in the corners, a body in the middle
    assert ct.array[:, :4, :4].mean() < -950
    assert ct.array[32, 40:56, 40:56].mean() > -200


@pytest.mark.parametrize("domain", DOMAINS)
def test_same_seed_is_bit_identical_and_other_seed_differs(domain):
    a_ct, a_lab = make_phantom(domain=domain, seed=11, **SMALL)
    b_ct, b_lab = make_phantom(domain=domain, seed=11, **SMALL)
    c_ct, c_lab = make_phantom(domain=domain, seed=12, **SMALL)
    assert np.array_equal(a_ct.array, b_ct.array) and np.array_equal(a_lab.array, b_lab.array)
    assert a_ct.geometry == b_ct.geometry
    assert not np.array_equal(a_lab.array, c_lab.array)
    assert not np.array_equal(a_ct.array, c_ct.array)


def test_case_index_changes_the_phantom_and_domains_are_independent_draws():
    a, _ = make_phantom(domain="contrast", seed=1, case=0, **SMALL)
    b, _ = make_phantom(domain="contrast", seed=1, case=1, **SMALL)
    c, _ = make_phantom(domain="plain", seed=1, case=0, **SMALL)
    assert not np.array_equal(a.array, b.array)
    assert not np.array_equal(a.array, c.array)


@pytest.mark.parametrize("domain", DOMAINS)
def test_liver_volume_is_plausible_and_whole(domain):
    """Adult human (and 40-60 kg pig) livers are about 1-2.5 L; the default field of view holds all of it."""
    ct, lab = phantom_of(domain, 1)
    liver = (lab.array == 1) | (lab.array == 2)
    volume_ml = liver.sum() * ct.voxel_volume_ml
    assert 900 < volume_ml < 2600, volume_ml
    assert not liver[0].any() and not liver[-1].any()
    # one organ: the largest connected component holds nearly all of it
    components, _ = ndimage.label(liver)
    sizes = np.bincount(components.ravel())[1:]
    assert sizes.max() > 0.97 * liver.sum()


def test_physical_anatomy_does_not_depend_on_spacing():
    """The same seed on a finer or coarser anisotropic grid: same liver volume (mL) and position (mm)."""
    volumes, centres = [], []
    for shape, spacing in [((64, 96, 96), (4.0, 4.0, 5.0)), ((80, 128, 128), (3.0, 3.0, 4.0)), SMALL.values()]:
        ct, lab = make_phantom(domain="tumour", seed=3, shape=shape, spacing=spacing)
        volumes.append([(lab.array == k).sum() * ct.voxel_volume_ml for k in (1, 2)])
        centres.append(_centroid_mm(ct, lab.array == 1) - np.array(ct.geometry.origin))
        centres[-1] -= (np.array(ct.shape[::-1]) - 1) / 2 * np.array(ct.geometry.spacing)  # relative to grid centre
    volumes = np.array(volumes)
    assert np.all(np.abs(volumes[:, 0] / volumes[0, 0] - 1) < 0.10), volumes
    assert np.all(np.abs(volumes[:, 1] / volumes[0, 1] - 1) < 0.25), volumes  # tumours are smaller: coarser
    assert np.all(np.abs(np.array(centres) - centres[0]) < 4.0), centres


def test_noise_level_is_exact_and_leaves_anatomy_alone():
    clean, lab0 = make_phantom(domain="plain", seed=5, noise_hu=0, **SMALL)
    noisy, lab1 = make_phantom(domain="plain", seed=5, noise_hu=20, **SMALL)
    assert np.array_equal(lab0.array, lab1.array)
    body = clean.array > -500  # away from air, where clipping at -1024 would cut the noise
    diff = noisy.array.astype(float) - clean.array
    assert abs(diff[body].std() - 20.0) < 1.0
    assert abs(diff[body].mean()) < 1.0
    # the noise is spatially correlated in-plane (CT noise texture), not white
    r = np.corrcoef(diff[:, :, 1:][body[:, :, 1:]], diff[:, :, :-1][body[:, :, 1:]])[0, 1]
    assert 0.4 < r < 0.9


def test_partial_volume_at_the_liver_surface():
    """Without noise, surface voxels hold values between the liver and its surroundings."""
    ct, lab = make_phantom(domain="contrast", seed=2, noise_hu=0)
    liver = lab.array == 1
    core_hu = _liver_core_hu(ct, lab)
    outer_ring = ndimage.binary_dilation(liver) & ~liver
    ring_hu = ct.array[outer_ring].astype(float)
    # many ring voxels are mixtures: neither fat (< -50) nor as bright as the liver core
    mixed = (ring_hu > -60) & (ring_hu < core_hu - 15)
    assert mixed.mean() > 0.2
    assert np.median(ring_hu) < core_hu - 20


# --------------------------------------------------------------------------- domains


def test_plain_and_contrast_differ_in_liver_hu_and_plain_liver_is_close_to_spleen():
    plain_hu, contrast_hu = [], []
    for seed in range(3):
        ct, lab = phantom_of("plain", seed, include_organs=True)
        plain_hu.append(_liver_core_hu(ct, lab))
        spleen = ndimage.binary_erosion(lab.array == ORGAN_LABELS["spleen"])
        muscle_like = np.median(ct.array[spleen])
        assert 35 < plain_hu[-1] < 75 and abs(plain_hu[-1] - muscle_like) < 30
        ct, lab = phantom_of("contrast", seed, include_organs=True)
        contrast_hu.append(_liver_core_hu(ct, lab))
        assert 85 < contrast_hu[-1] < 140
        aorta = ndimage.binary_erosion(lab.array == ORGAN_LABELS["aorta"])
        assert np.median(ct.array[aorta]) > contrast_hu[-1] + 20  # bright vessels
    assert np.mean(contrast_hu) - np.mean(plain_hu) > 30


def test_organ_labels_and_bone():
    ct, lab = phantom_of("contrast", 0, include_organs=True)
    values = set(np.unique(lab.array)) - {0}
    assert values <= set(LABELS.values()) | set(ORGAN_LABELS.values())
    assert {1, ORGAN_LABELS["spleen"], ORGAN_LABELS["kidney_right"], ORGAN_LABELS["kidney_left"]} <= values
    vertebrae = lab.array == ORGAN_LABELS["vertebrae"]
    assert np.percentile(ct.array[vertebrae], 90) > 300
    # organ codes never eat into the liver: the liver label is the same with and without them
    _, plain_lab = phantom_of("contrast", 0)
    assert np.array_equal(plain_lab.array == 1, lab.array == 1)


def test_tumour_domain_has_large_lesions_inside_the_liver():
    fractions = []
    for seed in range(3):
        ct, lab = phantom_of("tumour", seed)
        tumour = lab.array == 2
        liver = lab.array == 1
        assert tumour.any()
        fractions.append(tumour.sum() / (tumour | liver).sum())
        # every tumour voxel lies inside the filled liver outline
        filled = ndimage.binary_fill_holes(ndimage.binary_closing(tumour | liver, iterations=2))
        assert filled[tumour].all()
        # lesions are clearly brighter or darker than the parenchyma
        core = ndimage.binary_erosion(tumour)
        if core.sum() > 20:
            assert abs(np.median(ct.array[core]) - _liver_core_hu(ct, lab)) > 25
    assert max(fractions) > 0.05 and min(fractions) > 0.01


def test_pneumoperitoneum_puts_gas_against_the_liver():
    def anterior_gas(domain, seed):
        """Fraction of the liver's anterior surface (one point per (z, x) column) with gas in front of it."""
        ct, lab = phantom_of(domain, seed)
        liver = lab.array == 1
        z, x = np.nonzero(liver.any(axis=1))
        front = np.argmax(liver, axis=1)[z, x]  # first liver voxel counted from anterior (y = 0)
        gas = np.zeros(z.size, dtype=bool)
        for k in (1, 2, 3):  # within 3 voxels (12 mm) in front of the liver
            gas |= ct.array[z, np.clip(front - k, 0, None), x] < -900
        return gas.mean()

    for seed in range(2):
        assert anterior_gas("pneumoperitoneum", seed) > 0.2
        assert anterior_gas("contrast", seed) < 0.05


def _body_axis_angle(ct) -> float:
    """Angle (degrees, 0 = left-right) of the main axis of the body cross-section at mid-liver."""
    body = ct.array > -400
    labels, _ = ndimage.label(body)
    body = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1  # drop the table
    area = body.sum(axis=(1, 2))
    z = int(np.argmax(area))
    yy, xx = np.nonzero(body[z])
    cov = np.cov(np.stack([xx * ct.geometry.spacing[0], yy * ct.geometry.spacing[1]]))
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, np.argmax(evals)]
    return float(np.degrees(np.arctan2(abs(major[1]), abs(major[0]))))


def test_recumbent_rolls_the_body():
    supine = [_body_axis_angle(phantom_of("contrast", s)[0]) for s in range(3)]
    rolled = [_body_axis_angle(phantom_of("recumbent", s)[0]) for s in range(3)]
    assert max(supine) < 10, supine
    assert min(rolled) > 15, rolled


def test_porcine_liver_sits_across_the_midline():
    """Human livers lie mostly right of the spine; the pig liver spreads across both sides."""

    def offset_mm(domain, seed):
        ct, lab = phantom_of(domain, seed, include_organs=True)
        spine_x = _centroid_mm(ct, lab.array == ORGAN_LABELS["vertebrae"])[0]
        return _centroid_mm(ct, lab.array == 1)[0] - spine_x  # LPS: negative = patient's right

    for seed in range(2):
        assert offset_mm("contrast", seed) < -30
        assert abs(offset_mm("porcine", seed)) < 25


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    domain=st.sampled_from(DOMAINS),
    seed=st.integers(0, 2**31 - 1),
    spacing=st.tuples(st.floats(6.0, 10.0), st.floats(6.0, 10.0), st.floats(6.0, 12.0)),
)
def test_property_any_seed_gives_a_valid_phantom(domain, seed, spacing):
    shape = (int(320 / spacing[2]), int(384 / spacing[1]), int(384 / spacing[0]))
    ct, lab = make_phantom(domain=domain, seed=seed, shape=shape, spacing=spacing)
    values = set(np.unique(lab.array))
    assert values <= ({0, 1, 2} if domain == "tumour" else {0, 1})
    assert 1 in values
    assert ct.array.min() >= -1024 and ct.array.max() <= 3071
    assert 700 < (lab.array > 0).sum() * ct.voxel_volume_ml < 3000


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown phantom domain"):
        PhantomConfig(domain="martian")
    with pytest.raises(ConfigError, match="shape"):
        PhantomConfig(shape=(4, 96, 96))
    with pytest.raises(ConfigError, match="spacing"):
        PhantomConfig(spacing=(0.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="noise"):
        PhantomConfig(noise_hu=-1)
    cfg = PhantomConfig(domain="plain", shape=[32, 48, 48], spacing=[8, 8, 10], seed=4)
    assert cfg.shape == (32, 48, 48) and cfg.spacing == (8.0, 8.0, 10.0)
    a, _ = make_phantom(cfg)
    b, _ = make_phantom(domain="plain", seed=4, shape=(32, 48, 48), spacing=(8, 8, 10))
    assert np.array_equal(a.array, b.array)


# --------------------------------------------------------------------------- files


def test_msd_dataset_files_round_trip(tmp_path):
    calls = []
    out = phantom(tmp_path / "ds", domain="tumour", n=2, seed=9, progress=lambda *a: calls.append(a), **SMALL)
    assert out == tmp_path / "ds"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "liver": 1, "tumour": 2}
    assert meta["channel_names"] == {"0": "CT"} and meta["file_ending"] == ".nii.gz" and meta["numTraining"] == 2
    assert meta["liverctl"]["domain"] == "tumour" and meta["liverctl"]["seed"] == 9
    assert meta["liverctl"]["config"]["shape"] == [32, 48, 48]
    assert calls[0] == ("writing 2 tumour phantoms", 0, 2) and calls[-1][1:] == (2, 2)
    for i in range(2):
        name = f"phantom_tumour_{i:03d}"
        ct = read_image(out / "imagesTr" / f"{name}_0000.nii.gz")
        lab = read_label(out / "labelsTr" / f"{name}.nii.gz")
        ref_ct, ref_lab = make_phantom(domain="tumour", seed=9, case=i, **SMALL)
        assert np.array_equal(ct.array, ref_ct.array) and ct.array.dtype == np.int16
        assert np.array_equal(lab.array, ref_lab.array) and lab.array.dtype == np.uint8
        assert ct.geometry.mismatch(ref_ct.geometry) is None and lab.geometry.mismatch(ct.geometry) is None
    # same arguments -> byte-identical files
    again = phantom(tmp_path / "ds2", domain="tumour", n=2, seed=9, **SMALL)
    for rel in ["imagesTr/phantom_tumour_001_0000.nii.gz", "labelsTr/phantom_tumour_001.nii.gz"]:
        assert (out / rel).read_bytes() == (again / rel).read_bytes()
    hidden = sorted(p.name for p in out.rglob("*") if p.name.startswith("."))
    assert hidden == [".liverctl-manifest.json"]  # the record of what liverctl wrote; no temp files left


def test_dataset_refuses_to_overwrite(tmp_path):
    phantom(tmp_path, domain="plain", n=1, seed=0, **SMALL)
    before = (tmp_path / "labelsTr" / "phantom_plain_000.nii.gz").read_bytes()
    with pytest.raises(InputError, match="refusing to overwrite"):
        phantom(tmp_path, domain="plain", n=1, seed=1, **SMALL)
    assert (tmp_path / "labelsTr" / "phantom_plain_000.nii.gz").read_bytes() == before
    phantom(tmp_path, domain="plain", n=1, seed=1, overwrite=True, **SMALL)
    assert (tmp_path / "labelsTr" / "phantom_plain_000.nii.gz").read_bytes() != before
    with pytest.raises(ConfigError):
        phantom(tmp_path / "x", n=0)


def test_dataset_is_discovered_by_liverctl_datasets(tmp_path):
    datasets = pytest.importorskip("liverctl.io.datasets")
    phantom(tmp_path, domain="porcine", n=2, seed=0, include_organs=True, **SMALL)
    ds = datasets.discover_dataset(tmp_path)
    assert ds.layout == "msd" and len(ds) == 2 and ds.labelled
    assert [c.name for c in ds.cases] == ["phantom_porcine_000", "phantom_porcine_001"]
    assert ds.labels["liver"] == 1 and ds.labels["spleen"] == ORGAN_LABELS["spleen"]


# --------------------------------------------------------------------------- CLI


def _cli(args, env):
    return subprocess.run([sys.executable, "-m", "liverctl", *args], capture_output=True, text=True, env=env)


def test_cli_phantom(tmp_path, cli_env):
    out = tmp_path / "phantoms"
    args = ["phantom", str(out), "--domain", "recumbent", "-n", "2", "--seed", "3", "--shape", "48,48,32"]
    args += ["--spacing", "8,8,10"]
    run = _cli(args, cli_env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(out)
    assert "wrote 2 recumbent phantoms" in run.stderr
    ct = read_image(out / "imagesTr" / "phantom_recumbent_001_0000.nii.gz")
    ref, _ = make_phantom(domain="recumbent", seed=3, case=1, shape=(32, 48, 48), spacing=(8, 8, 10))
    assert np.array_equal(ct.array, ref.array)

    again = _cli(args, cli_env)
    assert again.returncode == 2
    assert again.stderr.startswith("liverctl: error: refusing to overwrite") and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    js = _cli([*args, "--overwrite", "--json"], cli_env)
    assert js.returncode == 0, js.stderr
    summary = json.loads(js.stdout)
    assert summary["n"] == 2 and summary["labels"]["tumour"] == 2 and len(summary["cases"]) == 2

    bad = _cli(["phantom", str(tmp_path / "b"), "--domain", "martian"], cli_env)
    assert bad.returncode == 2 and "unknown phantom domain" in bad.stderr
    bad = _cli(["phantom", str(tmp_path / "b"), "--spacing", "1,2"], cli_env)
    assert bad.returncode == 2 and "--spacing must be three" in bad.stderr
    assert not (tmp_path / "b").exists()
