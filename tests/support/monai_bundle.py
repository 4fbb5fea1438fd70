"""MONAI's whole-body CT bundle pipeline, the reference liverctl's MONAI-bundle parity is judged
against: Orientationd RAS, Spacingd 3 mm (bilinear), NormalizeIntensityd(nonzero=True),
ScaleIntensityd(-1, 1), SlidingWindowInferer (overlap 0.25, gaussian blending, replicate
padding), softmax, Invertd back onto the scan's grid. Used by tests/predict/test_predict_bundle.py
and by benchmarks/gpu_check.py (on the GPU, with the bundle's ``amp``)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from liverctl.io import Image
from liverctl.predict.monai_grid import ras_affine


def monai_bundle(
    image: Image,
    network: torch.nn.Module,
    *,
    roi: Sequence[int],
    liver: int,
    path: Path | None = None,
    device: torch.device | None = None,
    sw_batch_size: int = 1,
    amp: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline on ``image`` (as LoadImaged would hand it over, or read from ``path`` by
    MONAI's own ``LoadImage``), windows of ``roi`` on ``device`` (default: the CPU), under
    ``torch.autocast`` when ``amp`` (else with TF32 off): ``(liver mask (uint8), liver
    probability)`` on the image's own grid, arrays (z, y, x); ``liver`` is the liver's class."""
    from monai.data import MetaTensor
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import Compose, Invertd, NormalizeIntensityd, Orientationd, ScaleIntensityd, Spacingd

    device = device or torch.device("cpu")
    if path is not None:
        from monai.transforms import LoadImage

        tensor = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    else:
        tensor = MetaTensor(
            torch.as_tensor(image.array.astype(np.float32).transpose(2, 1, 0)[None].copy()),
            affine=torch.as_tensor(ras_affine(image.geometry)),
        )
    pre = Compose(
        [
            Orientationd("image", "RAS"),
            Spacingd("image", pixdim=(3.0, 3.0, 3.0), mode="bilinear"),
            NormalizeIntensityd("image", nonzero=True),
            ScaleIntensityd("image", minv=-1.0, maxv=1.0),
        ]
    )
    data = pre({"image": tensor})
    inferer = SlidingWindowInferer(
        roi_size=tuple(roi),
        sw_batch_size=sw_batch_size,
        overlap=0.25,
        mode="gaussian",
        padding_mode="replicate",
        sw_device=device,
        device=device,
    )
    with torch.inference_mode(), torch.autocast(device.type) if amp else _no_tf32():
        logits = inferer(data["image"][None].to(device), network)[0]
    prob = torch.softmax(logits.float(), 0).cpu()
    model_img = data["image"]
    for key, value in (("pred", prob.argmax(0, keepdim=True).float()), ("prob", prob[liver : liver + 1])):
        data[key] = MetaTensor(value, affine=model_img.affine, meta=model_img.meta)
        data[key].applied_operations = list(model_img.applied_operations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = Invertd(keys=["pred", "prob"], transform=pre, orig_keys="image", nearest_interp=[True, False])(data)
    labels = np.asarray(out["pred"][0]).transpose(2, 1, 0)
    return (labels == liver).astype(np.uint8), np.asarray(out["prob"][0], dtype=np.float32).transpose(2, 1, 0)


@contextlib.contextmanager
def _no_tf32():
    """fp32 as MONAI's reference computes it on a GPU with TF32 off (a no-op on the CPU)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
