"""Make the small nnU-Net v2 results folder that tests/nnunet/test_nnunet.py runs (run once, commit the output).

Everything is done by nnU-Net 2.5.1 itself, on liverctl phantoms:

1. 8 "tumour" phantoms (liver 1, tumour 2; 40x48x38 voxels of 8 x 8 x 10 mm along z, y, x, so
   nnU-Net's planner transposes the coarse x axis first) are written in nnU-Net's raw layout;
2. ``extract_fingerprints`` + ``plan_experiments`` (the default ``ExperimentPlanner``) write
   ``nnUNetPlans.json``; its ``3d_fullres`` network is then shrunk so that the checkpoints stay
   small and the tests fast (3 stages of 4/8/16 features, patch 16x32x32, batch 2) -- everything
   else (spacing, transpose, normalisation, intensity properties, resampling) is the planner's;
3. ``preprocess`` runs nnU-Net's ``DefaultPreprocessor``;
4. ``nnUNetTrainer`` (its PolyLRScheduler call patched for torch 2.13, see ``_patch_poly_lr``) trains folds 0 and 1 briefly (25 epochs of 12 iterations, seeds 0 and 1, so
   their weights differ) and writes ``checkpoint_final.pth`` with its own ``save_checkpoint``.

The results folder (plans.json, dataset.json, fold_0/1/checkpoint_final.pth) is copied to
``tests/data/nnunet/Dataset914_LiverPhantom/nnUNetTrainer__nnUNetPlans__3d_fullres``.

Run in an environment with nnunetv2==2.5.1 (``pip install -e ".[test]"``):

    python tests/data/make_nnunet_phantom.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "nnunet" / "Dataset914_LiverPhantom" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
DATASET_ID = 914
NAME = "Dataset914_LiverPhantom"
SHAPE = (40, 48, 38)  # z, y, x
SPACING = (10.0, 8.0, 8.0)  # x, y, z (ITK order)
N_CASES = 8


def write_raw(raw: Path) -> None:
    sys.path.insert(0, str(HERE.parents[1] / "src"))
    from liverctl.io import write_image
    from liverctl.phantoms import make_phantom

    folder = raw / NAME
    for i in range(N_CASES):
        ct, lab = make_phantom(domain="tumour", seed=914, case=i, shape=SHAPE, spacing=SPACING)
        write_image(ct, folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        write_image(lab, folder / "labelsTr" / f"case_{i:03d}.nii.gz")
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": N_CASES,
        "file_ending": ".nii.gz",
        "name": NAME,
        "description": "liverctl synthetic tumour phantoms (liverctl.phantoms.make_phantom, seed 914)",
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")


def shrink_plans(plans_file: Path) -> None:
    plans = json.loads(plans_file.read_text())
    config = plans["configurations"]["3d_fullres"]
    config["patch_size"] = [16, 32, 32]
    config["batch_size"] = 2
    arch = config["architecture"]["arch_kwargs"]
    arch.update(
        n_stages=3,
        features_per_stage=[4, 8, 16],
        kernel_sizes=[[3, 3, 3]] * 3,
        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        n_conv_per_stage=[2, 2, 2],
        n_conv_per_stage_decoder=[2, 2],
    )
    for other in [k for k in plans["configurations"] if k != "3d_fullres"]:
        del plans["configurations"][other]
    plans_file.write_text(json.dumps(plans, indent=4) + "\n")


def _patch_poly_lr() -> None:
    """nnU-Net 2.5.1's PolyLRScheduler passes ``verbose`` positionally to torch's LRScheduler, which
    torch 2.13 no longer takes; call it without (training only, the checkpoint format is unchanged)."""
    from nnunetv2.training.lr_scheduler import polylr
    from torch.optim.lr_scheduler import LRScheduler

    def init(self, optimizer, initial_lr, max_steps, exponent=0.9, current_step=None):
        self.optimizer, self.initial_lr, self.max_steps, self.exponent, self.ctr = (
            optimizer,
            initial_lr,
            max_steps,
            exponent,
            0,
        )
        LRScheduler.__init__(self, optimizer, current_step if current_step is not None else -1)

    polylr.PolyLRScheduler.__init__ = init


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="nnunet_fixture_"))
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[key] = str(work / key)
        (work / key).mkdir()
    write_raw(work / "nnUNet_raw")

    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    torch.set_num_threads(2)
    _patch_poly_lr()
    extract_fingerprints([DATASET_ID], num_processes=2, check_dataset_integrity=True)
    plan_experiments([DATASET_ID])
    pre = work / "nnUNet_preprocessed" / NAME
    shrink_plans(pre / "nnUNetPlans.json")
    preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(2,))
    # training augmentation in this process, no workers; set only now because the planner's VRAM
    # estimate sets torch's threads to this number
    os.environ["nnUNet_n_proc_DA"] = "0"  # noqa: SIM112 - the name nnU-Net reads
    plans = load_json(str(pre / "nnUNetPlans.json"))
    dataset_json = load_json(str(pre / "dataset.json"))
    for fold in (0, 1):
        torch.manual_seed(fold)
        trainer = nnUNetTrainer(plans, "3d_fullres", fold, dataset_json, device=torch.device("cpu"))
        trainer.num_epochs = 25
        trainer.num_iterations_per_epoch = 12
        trainer.num_val_iterations_per_epoch = 2
        trainer.run_training()
    results = work / "nnUNet_results" / NAME / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    if OUT.exists():
        shutil.rmtree(OUT)
    for rel in ("plans.json", "dataset.json", "fold_0/checkpoint_final.pth", "fold_1/checkpoint_final.pth"):
        (OUT / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(results / rel, OUT / rel)
    shutil.rmtree(work)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
