"""DDP validation is shared (issue 25): each rank scores its shard of the validation cases and
the results are all-reduced, instead of rank 0 validating alone while the others wait in a
broadcast. Two gloo processes on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from liverctl.training.distributed import DistContext

SCORES = {"a": 0.9, "b": 0.7, "c": 0.4, "d": 0.8, "e": 0.1}


class FakeData:
    """What validate_dice uses of TrainingData: ``val`` per dataset, ``is_bad``."""

    def __init__(self, bad: set[str]) -> None:
        self.val = [["a", "b", "c"], ["d", "e"]]
        self.bad = bad

    def is_bad(self, d: int, name: str) -> bool:
        return name in self.bad


def mean_score(data, seen: list[str]) -> float:
    """A validate function: the mean score of the cases it is given, bad ones skipped."""
    scores = []
    for d, names in enumerate(data.val):
        for name in names:
            if not data.is_bad(d, name):
                seen.append(name)
                scores.append(SCORES[name])
    return sum(scores) / len(scores) if scores else float("nan")


def _rank(rank: int, world: int, store: str, out: str, bad: list[str]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        ctx = DistContext(rank, world, rank, True)
        seen: list[str] = []
        value = ctx.validate_shared(mean_score, FakeData(set(bad)), seen)
        Path(out, f"rank{rank}.json").write_text(json.dumps({"value": value, "seen": seen}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("bad", [["e"], ["b", "d"]])  # ["b", "d"]: rank 1 has nothing left to score
def test_two_ranks_share_the_cases_and_agree_on_the_mean(tmp_path: Path, bad: list[str]) -> None:
    mp.spawn(_rank, args=(2, str(tmp_path / "store"), str(tmp_path), bad), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    good = [n for n in SCORES if n not in bad]
    assert sorted(r0["seen"] + r1["seen"]) == good  # every case scored once, by one rank
    assert set(r0["seen"]) <= {"a", "c", "e"} and set(r1["seen"]) <= {"b", "d"}  # every other case
    expected = sum(SCORES[n] for n in good) / len(good)
    assert r0["value"] == r1["value"] and math.isclose(r0["value"], expected, rel_tol=1e-12)


def test_one_process_validates_everything() -> None:
    seen: list[str] = []
    assert DistContext().validate_shared(mean_score, FakeData(set()), seen) == pytest.approx(0.58)
    assert seen == list(SCORES)


def test_a_single_process_on_cuda_n_makes_it_current(monkeypatch: pytest.MonkeyPatch) -> None:
    from liverctl.training.distributed import init_from_env

    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(torch.device(d)))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env(torch.device("cuda", 1)) == DistContext()
    assert init_from_env("cpu") == DistContext()  # a device type alone, as before: nothing set
    assert chosen == [torch.device("cuda", 1)]
