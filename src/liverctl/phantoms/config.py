"""What determines a phantom: :class:`PhantomConfig`, the domains, label codes and tissue HU.

See :mod:`liverctl.phantoms` for what the domains are and how a phantom is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from liverctl.errors import ConfigError

Domain = Literal["contrast", "plain", "tumour", "recumbent", "pneumoperitoneum", "porcine"]
DOMAINS: tuple[str, ...] = ("contrast", "plain", "tumour", "recumbent", "pneumoperitoneum", "porcine")

#: Bumped whenever the same seed would produce different voxels.
GENERATOR_VERSION = "1"

#: Label codes always written.
LABELS: dict[str, int] = {"background": 0, "liver": 1, "tumour": 2}

#: Extra label codes written with ``include_organs=True``.
ORGAN_LABELS: dict[str, int] = {
    "spleen": 3,
    "kidney_right": 4,
    "kidney_left": 5,
    "stomach": 6,
    "gallbladder": 7,
    "pancreas": 8,
    "aorta": 9,
    "inferior_vena_cava": 10,
    "vertebrae": 11,
}

# Mean HU per tissue, unenhanced and portal venous. Per case each value is jittered and
# the enhancement (contrast - plain) scaled by a random factor.
_HU_PLAIN: dict[str, float] = {
    "air": -1000.0,
    "fat": -100.0,
    "visceral_fat": -95.0,
    "muscle": 50.0,
    "liver": 55.0,
    "spleen": 45.0,
    "kidney_cortex": 32.0,
    "kidney_medulla": 28.0,
    "blood": 42.0,
    "myocardium": 50.0,
    "bone_cancellous": 230.0,
    "bone_cortical": 750.0,
    "disc": 80.0,
    "csf": 10.0,
    "lung": -850.0,
    "fluid": 12.0,
    "bowel_wall": 40.0,
    "gallbladder": 8.0,
    "pancreas": 42.0,
    "table": 150.0,
}
_HU_PORTAL: dict[str, float] = {
    **_HU_PLAIN,
    "muscle": 62.0,
    "liver": 110.0,
    "spleen": 120.0,
    "kidney_cortex": 185.0,
    "kidney_medulla": 140.0,
    "blood": 170.0,
    "myocardium": 105.0,
    "bowel_wall": 90.0,
    "pancreas": 100.0,
}
_JITTER: dict[str, float] = {"liver": 6.0, "spleen": 6.0, "muscle": 5.0, "blood": 12.0, "fat": 8.0}


@dataclass(frozen=True)
class PhantomConfig:
    """Everything that determines one phantom.

    Attributes:
        domain: one of :data:`DOMAINS`.
        shape: array shape (z, y, x). The default, 64 slices of 5 mm and 96x96 pixels of
            4 mm, covers 384 x 384 x 320 mm: lower chest to lower abdomen.
        spacing: voxel spacing (x, y, z) in mm (ITK order).
        seed: dataset seed.
        case: case index within the dataset (mixed into the seed).
        noise_hu: standard deviation of the image noise in HU; ``None`` draws 10-18 HU.
        include_organs: also label the other organs (:data:`ORGAN_LABELS`).
    """

    domain: str = "contrast"
    shape: tuple[int, int, int] = (64, 96, 96)
    spacing: tuple[float, float, float] = (4.0, 4.0, 5.0)
    seed: int = 0
    case: int = 0
    noise_hu: float | None = None
    include_organs: bool = False

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ConfigError(f"unknown phantom domain {self.domain!r}; choose one of {', '.join(DOMAINS)}")
        shape = tuple(int(s) for s in self.shape)
        spacing = tuple(float(s) for s in self.spacing)
        if len(shape) != 3 or min(shape) < 8 or max(shape) > 1024:
            given = ",".join(str(v) for v in tuple(self.shape)[::-1])  # as the user gives it: X,Y,Z
            raise ConfigError(f"phantom shape must be 3 sizes X,Y,Z between 8 and 1024, got {given}")
        if len(spacing) != 3 or not all(math.isfinite(s) and 0.1 <= s <= 20 for s in spacing):
            raise ConfigError(
                f"phantom spacing must be 3 values (x, y, z) in mm between 0.1 and 20, got {self.spacing}"
            )
        if self.noise_hu is not None and not (math.isfinite(self.noise_hu) and 0 <= self.noise_hu <= 200):
            raise ConfigError(f"noise must be between 0 and 200 HU, got {self.noise_hu}")
        if int(self.seed) < 0 or int(self.case) < 0:
            raise ConfigError("seed and case must be 0 or positive")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "case", int(self.case))


@dataclass
class _Anatomy:
    """Per-case anatomical parameters (mm, anatomical coordinates)."""

    porcine: bool
    body_a: float
    body_b_ant: float
    body_b_post: float
    fat: float
    muscle: float
    dome_right: float
    organ_shift: tuple[float, float] = (0.0, 0.0)
    liver_scale: float = 1.0
    pneumo_gas: float = 0.0  # thickness of the anterior gas pocket (mm)


def _tissue_table(rng: np.random.Generator, domain: str) -> dict[str, float]:
    enhanced = domain != "plain"
    base = _HU_PORTAL if enhanced else _HU_PLAIN
    gain = rng.uniform(0.8, 1.15)
    table = {}
    for name, plain in _HU_PLAIN.items():
        value = plain + (base[name] - plain) * gain
        sigma = _JITTER.get(name, 4.0)
        value += float(np.clip(rng.normal(0.0, sigma), -2 * sigma, 2 * sigma))
        table[name] = float(value)
    if domain == "porcine":
        table["liver"] -= 8.0
        table["fat"] -= 10.0
    return table
