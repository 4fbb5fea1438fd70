"""Training speed on the CPU: iterations per second of liverctl's training step.

Measures, for a 64^3 patch and batch 2 (float32, torch's default threads unless --threads):

- the network step alone (forward + Dice/CE loss + backward + Adam step) of the nnU-Net
  3D U-Net of ``../shared/docs/METHODS.md`` §1 (base 32 features, cap 320) with 6 and 5 levels, and of the small
  demo configuration (base 8, 4 levels);
- the data side alone: sampling, patch extraction with foreground oversampling and
  augmentation of one batch from synthetic phantoms (``make_batch_fn``);
- one full :func:`liverctl.training.train` epoch of the demo configuration (data + step +
  checkpoint), reported as iterations per second.

Run: ``python benchmarks/bench_train.py [--iters 5] [--warmup 2] [--threads N]``. It prints
figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def step_rate(kwargs: dict, patch: int, batch: int, warmup: int, iters: int) -> tuple[float, int]:
    from liverctl.models import build_model
    from liverctl.training.losses import DeepSupervisionLoss, DiceCELoss

    torch.manual_seed(0)
    model = build_model("unet3d", **kwargs)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=3e-5, amsgrad=True)
    loss_fn = DeepSupervisionLoss(DiceCELoss())
    x = torch.randn(batch, 1, patch, patch, patch)
    y = (torch.rand(batch, patch, patch, patch) > 0.7).long()

    def one() -> None:
        out = model(x)
        loss = loss_fn(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        opt.step()

    model.train()
    for _ in range(warmup):
        one()
    t = time.perf_counter()
    for _ in range(iters):
        one()
    return iters / (time.perf_counter() - t), n_params


def phantoms(n: int = 4):
    from liverctl.phantoms import make_phantom
    from liverctl.training import ArrayDataset

    imgs, labs = {}, {}
    for i in range(n):
        ct, lab = make_phantom(domain="contrast", seed=0, case=i)
        arr = (np.clip(ct.array.astype(np.float32), -200, 250) - 100.0) / 60.0
        imgs[f"c{i}"] = ct.with_array(arr.astype(np.float32))
        labs[f"c{i}"] = lab.with_array((lab.array > 0).astype(np.uint8))
    return ArrayDataset(imgs, labs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, patch 64^3, batch 2, float32")

    configs = [
        ("unet3d nnU-Net 6 levels (32..320)", dict(base_features=32, max_features=320, n_levels=6)),
        ("unet3d nnU-Net 5 levels (32..320)", dict(base_features=32, max_features=320, n_levels=5)),
        ("unet3d demo (base 8, 4 levels)", dict(base_features=8, n_levels=4)),
    ]
    for name, kw in configs:
        rate, n_params = step_rate(kw, 64, 2, args.warmup, args.iters)
        print(f"network step  {name:36s} {n_params / 1e6:6.2f} M params  {rate:6.3f} it/s  ({1 / rate:6.2f} s/it)")

    from liverctl.training import TrainConfig, TrainingData, train
    from liverctl.training.common import make_batch_fn

    ds = phantoms()
    cfg = TrainConfig(patch_size=(64, 64, 64), batch_size=2, device="cpu")
    batch = make_batch_fn(TrainingData([ds]), cfg)
    for g in range(args.warmup):
        batch(g)
    t = time.perf_counter()
    n = max(args.iters * 2, 10)
    for g in range(n):
        batch(1000 + g)
    print(
        f"data side     sample + patch + augmentation of one batch      {n / (time.perf_counter() - t):6.2f} batches/s"
    )

    demo = TrainConfig(
        arch_kwargs=dict(base_features=8, n_levels=4),
        patch_size=(64, 64, 64),
        epochs=1,
        iterations_per_epoch=args.iters + args.warmup,
        val_every=0,
        device="cpu",
        checkpoint_every=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        train([ds], f"{tmp}/run", demo)
        dt = time.perf_counter() - t
    print(
        f"train()       demo config, {demo.iterations_per_epoch} iterations incl. setup, checkpoint, export"
        f"  {demo.iterations_per_epoch / dt:6.3f} it/s"
    )


if __name__ == "__main__":
    main()
