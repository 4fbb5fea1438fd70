"""DistributedDataParallel training: two CPU processes with gloo under torchrun stay in step."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("torch.distributed")

SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    torch.set_num_threads(1)
    import numpy as np
    from liverctl.phantoms import make_phantom
    from liverctl.training import ArrayDataset, TrainConfig, train
    from liverctl.training.common import make_batch_fn
    from liverctl.training.data import TrainingData

    imgs, labs = {}, {}
    for i in range(3):
        ct, lab = make_phantom(domain="contrast", seed=0, case=i, shape=(32, 40, 40), spacing=(9.0, 9.0, 10.0))
        imgs[f"c{i}"] = ct.with_array(((np.clip(ct.array, -200, 250) - 100.0) / 60.0).astype(np.float32))
        labs[f"c{i}"] = lab.with_array((lab.array > 0).astype(np.uint8))
    ds = ArrayDataset(imgs, labs)
    cfg = TrainConfig(arch_kwargs={"base_features": 4, "n_levels": 3}, patch_size=(32, 32, 32), epochs=2,
                      iterations_per_epoch=2, val_every=0, device="cpu", seed=5, checkpoint_every=0)
    out = sys.argv[1]
    result = train([ds], out, cfg)
    rank = int(os.environ["RANK"])
    x, _, _ = make_batch_fn(TrainingData([ds]), cfg, rank)(0)
    torch.save({"model": result.model.state_dict(), "losses": torch.tensor(result.train_losses),
                "batch0": x}, f"{out}/rank{rank}.pt")
    """
)


@pytest.mark.slow
def test_two_gloo_processes_stay_in_step(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(tmp_path / "run"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "run" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "run" / "rank1.pt", weights_only=True)
    # each rank trained on its own batches ...
    assert not torch.equal(r0["batch0"], r1["batch0"])
    # ... yet the parameters and buffers are identical on both ranks and equal the checkpoint
    assert r0["model"].keys() == r1["model"].keys()
    assert all(torch.equal(r0["model"][k], r1["model"][k]) for k in r0["model"])
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(last[k], r0["model"][k]) for k in last)
    init = torch.load(tmp_path / "run" / "last.pt", weights_only=True)  # training moved the weights
    assert init["global_iteration"] == 4
    # the logged loss is the mean over ranks, so both ranks report the same numbers
    assert torch.equal(r0["losses"], r1["losses"]) and len(r0["losses"]) == 2
    # only rank 0 wrote the run files
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert len((tmp_path / "run" / "train_log.csv").read_text().splitlines()) == 3
