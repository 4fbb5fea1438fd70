"""Shards of a cohort in one output folder (issue 22): Slurm's array variables, per-shard summaries,
`gather`, resume of a failed shard, and the one-line refusals (outside Slurm, the same shard twice)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from liverctl import weights as lw
from liverctl.errors import ConfigError, InputError
from liverctl.io import write_image
from liverctl.io.manifest import Manifest
from liverctl.phantoms import make_phantom
from liverctl.predict import LiverModel
from liverctl.predict.cohort import PLAN_NAME, gather, predict_cohort
from liverctl.predict.shards import SharedManifest, claim_shard, parse_shard, slurm_shard


class Threshold(torch.nn.Module):
    """Pointwise two-class 'network': liver where the normalised value is above 0 (fast, deterministic)."""

    min_input_multiple = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), x], dim=1)


@pytest.fixture(scope="module")
def model() -> LiverModel:
    entry = lw.ModelEntry(
        name="threshold", repo_id="", filename="t.pt", revision="", sha256="", architecture="threshold", kwargs={},
        spacing=(8.0, 8.0, 8.0), orientation="RAS", interpolation="linear",
        intensity=lw.IntensityRecipe("window-zscore", window=(-1024.0, 3000.0), mean=100.0, std=50.0),
        n_classes=2, liver_channel=1, decision="argmax", labels={"liver": 1},
        sliding_window=lw.WindowRecipe(roi=(32, 32, 32)),
    )  # fmt: skip
    return LiverModel([lw.ResolvedWeights(entry, Path("t.pt"), "0" * 64, "local")], [Threshold()], torch.device("cpu"))


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cohort")
    for case in range(3):
        ct, _ = make_phantom(seed=22, case=case, shape=(24, 32, 32), spacing=(10.0, 10.0, 10.0))
        write_image(ct, folder / f"case{case}.nii.gz")
    return folder


ARRAY = {"SLURM_ARRAY_JOB_ID": "7", "SLURM_JOB_ID": "8"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "3"}, (2, 4)),
        ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "8"}, (4, 8)),
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "10"}, (3, 10)),
        (
            {
                "SLURM_ARRAY_TASK_ID": "4",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_MAX": "8",
                "SLURM_ARRAY_TASK_STEP": "2",
            },
            (2, 5),
        ),
    ],
)
def test_shard_from_the_array_variables(env: dict[str, str], expected: tuple[int, int]):
    assert slurm_shard({**ARRAY, **env}) == expected
    assert parse_shard("slurm", {**ARRAY, **env}) == expected
    assert parse_shard("1/3", {}) == (1, 3)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SLURM_ARRAY_TASK_ID is not set (outside a Slurm job)"),
        ({"SLURM_JOB_ID": "3"}, "inside a Slurm job but not an array job"),
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}, "is not a number"),
        (
            {
                "SLURM_ARRAY_TASK_ID": "7",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_MAX": "7",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            "not one range",
        ),
    ],
)
def test_shard_slurm_refusals_are_one_line(env: dict[str, str], message: str):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        slurm_shard(env)
    assert "\n" not in str(info.value)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_shards_share_a_folder_then_gather_and_resume(model: LiverModel, scans: Path, tmp_path: Path):
    out = tmp_path / "masks"
    first = predict_cohort([scans], out, shard=(0, 2), loaded=model)
    assert [Path(c.input).name for c in first.cases] == ["case0.nii.gz", "case2.nii.gz"] and not first.failures
    partial = gather(out)  # shard 1 has not run yet
    assert [Path(s).name for s in partial.missing] == ["case1.nii.gz"] and partial.shards_without_summary == [1]
    assert not partial.complete
    second = predict_cohort([scans], out, shard=(1, 2), loaded=model)
    assert [Path(c.input).name for c in second.cases] == ["case1.nii.gz"]
    assert (out / "summary.shard-0-of-2.csv").is_file() and (out / "summary.shard-1-of-2.csv").is_file()
    assert not (out / "summary.csv").exists() or Manifest(out).owns(out / "summary.csv")
    owned = {p.name for p in Manifest(out).owned_files()}  # neither shard dropped the other's records
    assert {"case0.nii.gz", "case1.nii.gz", "case2.nii.gz", "summary.shard-1-of-2.csv"} <= owned

    done = gather(out)
    assert done.complete and [Path(s).name for s in done.finished] == ["case0.nii.gz", "case2.nii.gz", "case1.nii.gz"]
    rows = _rows(out / "summary.csv")
    assert [r["status"] for r in rows] == ["ok"] * 3 and all(r["voxel_count"] for r in rows)

    # shard 0 "killed" before its second scan: the mask and report are gone; a rerun computes only that one
    (out / "case2.nii.gz").unlink()
    (out / "case2.json").unlink()
    kept_before = (out / "case0.nii.gz").stat().st_mtime_ns
    again = predict_cohort([scans], out, shard=(0, 2), loaded=model, resume=True)
    assert [c.skipped for c in again.cases] == [True, False] and (out / "case2.nii.gz").is_file()
    assert (out / "case0.nii.gz").stat().st_mtime_ns == kept_before


def test_gather_never_replaces_a_users_summary_and_needs_a_plan(model: LiverModel, scans: Path, tmp_path: Path):
    with pytest.raises(InputError, match="holds no sharded run"):
        gather(tmp_path)
    out = tmp_path / "masks"
    predict_cohort([scans], out, shard=(0, 3), loaded=model)
    (out / "summary.csv").write_text("mine\n")
    with pytest.raises(InputError, match="liverctl did not write it"):
        gather(out)
    assert (out / "summary.csv").read_text() == "mine\n"
    with pytest.raises(InputError, match="another split"):  # the folder's plan has 3 shards
        predict_cohort([scans], out, shard=(0, 2), loaded=model)


def test_the_same_shard_twice_at_once_is_refused(model: LiverModel, scans: Path, tmp_path: Path):
    out = tmp_path / "masks"
    with claim_shard(out, (0, 2)):
        with pytest.raises(InputError, match=r"shard 0/2 is already running"):
            predict_cohort([scans], out, shard=(0, 2), loaded=model)
        with pytest.raises(InputError, match=r"--shard 0/2 is writing into"):
            predict_cohort([scans], out, shard=(1, 4), loaded=model)
        predict_cohort([scans], out, shard=(1, 2), loaded=model)  # another shard of the same split runs
    assert not list(out.glob("case0*")) and not (out / "summary.shard-0-of-2.csv").exists()
    assert [p.name for p in out.glob("summary*")] == ["summary.shard-1-of-2.csv"]


def test_shared_manifest_merges_what_other_processes_recorded(tmp_path: Path):
    (tmp_path / PLAN_NAME).write_text("{}")  # a sharded folder
    a, b = SharedManifest(tmp_path), SharedManifest(tmp_path)  # both loaded before either wrote
    for name, manifest in (("a.nii.gz", a), ("b.nii.gz", b)):
        (tmp_path / name).write_bytes(b"x")
        manifest.claim([tmp_path / name], "predict")
        manifest.record([tmp_path / name])
    assert {p.name for p in Manifest(tmp_path).owned_files()} == {"a.nii.gz", "b.nii.gz"}


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "liverctl", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_shard_slurm_outside_slurm_and_the_same_shard_twice(scans: Path, tmp_path: Path, cli_env: dict[str, str]):
    env = {k: v for k, v in cli_env.items() if not k.startswith("SLURM_")}
    out = tmp_path / "masks"
    proc = _cli(["predict", str(scans), "-o", str(out), "--shard", "slurm", "--weights", "none.pt"], env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("liverctl: error:")]
    assert len(errors) == 1 and "--shard slurm: SLURM_ARRAY_TASK_ID is not set" in errors[0]
    assert not out.exists()
    with claim_shard(out, (0, 2)):
        proc = _cli(["predict", str(scans), "-o", str(out), "--shard", "0/2", "--weights", "none.pt"], env)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("liverctl: error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "shard 0/2 is already running" in errors[0]
    assert not (out / PLAN_NAME).exists() and not list(out.glob("*.nii.gz"))


def test_a_rerun_of_one_array_task_keeps_its_shard_of_the_first_array(
    model: LiverModel, scans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out = tmp_path / "masks"
    array = {
        "SLURM_JOB_ID": "9",
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_MAX": "1",
        "SLURM_ARRAY_TASK_COUNT": "2",
    }
    for key, value in {**array, "SLURM_ARRAY_TASK_ID": "0"}.items():
        monkeypatch.setenv(key, value)
    first = predict_cohort([scans], out, shard="slurm", loaded=model)
    assert [Path(c.input).name for c in first.cases] == ["case0.nii.gz", "case2.nii.gz"]
    # `sbatch --array=1` later: an array of one task, id 1 -> shard 1 of the folder's 2, not 0 of 1
    for key, value in {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "1")
    rerun = predict_cohort([scans], out, shard="slurm", loaded=model)
    assert [Path(c.input).name for c in rerun.cases] == ["case1.nii.gz"]
    assert (out / "summary.shard-1-of-2.csv").is_file() and not (out / "summary.shard-0-of-1.csv").exists()


def test_tasks_that_see_the_scans_under_other_paths_still_share_one_plan(
    model: LiverModel, scans: Path, tmp_path: Path
):
    """A zipped series is extracted under each task's own $TMPDIR: the plan and gather go by the
    scans' names (their masks'), not their paths."""
    import shutil

    elsewhere = Path(shutil.copytree(scans, tmp_path / "copy"))
    out = tmp_path / "masks"
    predict_cohort([scans], out, shard=(0, 2), loaded=model)
    predict_cohort([elsewhere], out, shard=(1, 2), loaded=model)
    result = gather(out)
    assert result.complete and len(result.finished) == 3
    assert [r["status"] for r in _rows(out / "summary.csv")] == ["ok"] * 3
