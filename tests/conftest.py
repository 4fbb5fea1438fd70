"""Shared fixtures: the real CT scans in ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Test files live in folders that mirror the package (tests/io/, tests/predict/, tests/training/, ...);
# the helpers in tests/support/ (hub_server.py, the Hub imitation; nnunet_cases.py) are importable
# from all of them.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
SHARED_DATA = Path(os.environ.get("LIVERCTL_TEST_DATA", REPO.parent / "shared" / "data"))


def _share_the_cores() -> None:
    """Under pytest-xdist (``-n auto`` in pyproject.toml) each worker gets an equal share of the
    machine's cores: torch here, and BLAS/OpenMP in the CLI subprocesses a test starts (they
    inherit this environment), use that many threads, so two workers on two cores never run four
    spinning threads against each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers < 1:
        return
    share = str(max(1, (os.cpu_count() or 1) // workers))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = share
    import torch

    torch.set_num_threads(int(share))


_share_the_cores()


def _own_cache() -> None:
    """The suite never writes into the user's ~/.cache: compiled models, backend timings and
    anything else liverctl caches go to one temporary folder per test process (tests that need
    their own set ``LIVERCTL_HOME`` themselves)."""
    import atexit
    import shutil
    import tempfile

    cache = tempfile.mkdtemp(prefix="liverctl-test-cache-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ["XDG_CACHE_HOME"] = cache


_own_cache()


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real CT test data not found at {path} (set LIVERCTL_TEST_DATA to the shared/data folder)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def ct_path(shared_data: Path) -> Path:
    """Abdominal CT, 122x101x30 voxels at 3 mm, LPS, int16 HU."""
    return _need(shared_data / "ct-example" / "ct.nii.gz")


@pytest.fixture(scope="session")
def liver_path(shared_data: Path) -> Path:
    """Liver mask (uint8 0/1) of ct_path, 39,350 voxels."""
    return _need(shared_data / "ct-example" / "liver.nii.gz")


@pytest.fixture(scope="session")
def multiorgan_path(shared_data: Path) -> Path:
    """117-class TotalSegmentator label map of ct_path (liver = 5, spleen = 1, kidneys = 2/3)."""
    return _need(shared_data / "ct-example" / "multiorgan.nii.gz")


@pytest.fixture(scope="session")
def dicom_dir(shared_data: Path) -> Path:
    """A 20-slice CT DICOM series, 512x512, 0.977 mm in-plane, 2 mm slices (empty SeriesInstanceUID)."""
    return _need(shared_data / "ct-dicom-series")


def _no_cuda() -> bool:
    return False


_no_cuda._liverctl_cpu_pin = True  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped without a CUDA device. CUDA is asked here, once, before
    any test hides it (the driver reads CUDA_VISIBLE_DEVICES only at its first call)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def cpu_unless_gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Every test not marked ``gpu`` runs on the CPU, also on a machine with a GPU: ``device="auto"``
    would otherwise become CUDA fp16 and be compared with CPU fp32 references at rtol 1e-5.
    ``torch.cuda.is_available`` answers False in this process (a test's own monkeypatch still
    wins) and CUDA_VISIBLE_DEVICES is empty for the subprocesses it starts (CLI, torchrun)."""
    if request.node.get_closest_marker("gpu") is not None:
        yield
        return
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", _no_cuda)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    yield


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for running the CLI in a subprocess without progress bars."""
    env = dict(os.environ)
    env["LIVERCTL_NO_PROGRESS"] = "1"
    env.pop("LIVERCTL_DEBUG", None)
    return env


ONE_THREAD_FOLDERS = ("training", "crosstest", "models")


@pytest.fixture(autouse=True)
def one_thread(request: pytest.FixtureRequest):
    """torch on one CPU thread (restored after) for the tests of ONE_THREAD_FOLDERS: the same results
    everywhere, and no threads spinning against each other on shared cores (training tests ran up
    to 60x slower with two)."""
    if request.path.parent.name not in ONE_THREAD_FOLDERS:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
