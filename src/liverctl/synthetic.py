"""Synthetic abdominal CT phantoms with liver and tumour labels, in six domains.

The phantoms stand in for real scans where none may be shipped: the offline demo, the
training and cross-testing tests, and benchmarks. Each phantom is an int16 HU volume and
a uint8 label map on the same grid, built from smooth implicit shapes (ellipsoids and
tubes whose signed distance in millimetres is perturbed by low-frequency noise) that are
composed in **physical coordinates**: the same seed gives the same anatomy at any voxel
spacing, only sampled differently.

What is in a phantom: air around the body, a CT table, subcutaneous fat, an abdominal
muscle wall, ribs, spine (cancellous body with a cortical rim, canal, posterior elements,
discs), paraspinal and psoas muscles, lungs and heart above a two-domed diaphragm, liver
(with portal and hepatic veins, the retro-hepatic inferior vena cava carved out of it and a
gallbladder under it), spleen, kidneys (cortex, medulla, sinus fat), stomach (with a
gravity-dependent gas cap), pancreas, aorta, bowel loops with fluid and gas, visceral fat.
Partial volume: every shape is blended into the image with an occupancy that ramps
linearly from 1 to 0 over one mean voxel size around its surface; labels are the voxels
whose centre lies inside the shape (signed distance < 0). The image is then blurred
slightly (sigma 0.5 voxel) and correlated Gaussian noise is added.

Domains (after METHODS.md section 1, He et al. 2021), chosen so that a model trained on
one notices the others:

``contrast``
    Human, supine, portal venous phase: liver ~110 HU, bright vessels (~170 HU).
``plain``
    Human, supine, no contrast: liver ~55 HU, close to spleen (~45) and muscle (~50);
    intrahepatic vessels slightly darker than the liver.
``tumour``
    ``contrast`` plus one to four large hypo- or hyperdense lesions inside an enlarged
    liver (label 2).
``recumbent``
    ``contrast`` with the body rolled 20-90 degrees to either side about the
    cranio-caudal axis, lying on the table, and the mobile organs shifted by gravity.
``pneumoperitoneum``
    ``contrast`` with a gas-filled (-1000 HU) peritoneal cavity: the anterior abdominal
    wall is lifted and the liver and bowel are pushed posteriorly by the gas pocket.
``porcine``
    Pig-like anatomy, portal venous phase: a rounder, taller trunk with thick
    subcutaneous fat, a five-lobed liver across the midline with fissures and a long left
    lateral lobe, a tongue-shaped spleen, symmetric caudal kidneys, a larger stomach.

Label values: by default only :data:`LABELS` ``background`` 0, ``liver`` 1 and
``tumour`` 2 are written, so that every dataset agrees; with ``include_organs=True`` the
other organs get the codes of :data:`ORGAN_LABELS`. Intrahepatic vessels count as liver;
the gallbladder and the inferior vena cava do not.

Coordinates: arrays are (z, y, x); the geometry is LPS with identity direction (x to the
patient's left, y posterior, z superior), so an axial slice shown with ``imshow`` is in
radiological convention (patient's right on the left, anterior at the top).

Determinism: everything random is drawn from ``numpy.random.default_rng`` seeded with
``SeedSequence([seed, case, domain index])`` in a fixed order that does not depend on the
grid, so the same configuration gives bit-identical arrays and files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from liverctl.errors import ConfigError, InputError
from liverctl.io import Geometry, Image, write_image, write_text_atomic
from liverctl.manifest import Manifest
from liverctl.progress import ProgressCallback

__all__ = [
    "DOMAINS",
    "GENERATOR_VERSION",
    "LABELS",
    "ORGAN_LABELS",
    "Domain",
    "PhantomConfig",
    "case_name",
    "make_phantom",
    "phantom",
    "write_dataset",
]

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
            raise ConfigError(f"phantom shape must be 3 sizes (z, y, x) between 8 and 1024, got {self.shape}")
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


# --------------------------------------------------------------------------- shapes
# A shape is a signed-distance-like function sd(u, v, w) in mm (negative inside) over
# broadcastable arrays, plus an axis-aligned bounding box in anatomical coordinates.
# u: to the patient's left, v: posterior, w: superior (mm, body-centred).

SDF = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _Shape:
    sdf: SDF
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]


def _ellipsoid(c: tuple[float, float, float], r: tuple[float, float, float]) -> SDF:
    """Approximate signed distance to an ellipsoid (Quilez's k0*(k0-1)/k1 bound)."""
    cu, cv, cw = c
    a, b, cc = r

    def sdf(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        du, dv, dw = u - cu, v - cv, w - cw
        k0 = np.sqrt((du / a) ** 2 + (dv / b) ** 2 + (dw / cc) ** 2)
        k1 = np.sqrt((du / a**2) ** 2 + (dv / b**2) ** 2 + (dw / cc**2) ** 2) + np.float32(1e-6)
        return k0 * (k0 - 1.0) / k1

    return sdf


def _capsule(p0: tuple[float, float, float], p1: tuple[float, float, float], radius: float) -> SDF:
    """Signed distance to a tube of ``radius`` around the segment p0-p1."""
    bu, bv, bw = (p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2])
    bb = bu * bu + bv * bv + bw * bw or 1.0

    def sdf(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        pu, pv, pw = u - p0[0], v - p0[1], w - p0[2]
        h = np.clip((pu * bu + pv * bv + pw * bw) / bb, 0.0, 1.0)
        return np.sqrt((pu - bu * h) ** 2 + (pv - bv * h) ** 2 + (pw - bw * h) ** 2) - radius

    return sdf


def _column(cu: float, cv: float, ru: float, rv: float) -> SDF:
    """An elliptic cylinder along w (infinite)."""

    def sdf(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        k = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
        return (k - 1.0) * min(ru, rv) + 0.0 * w

    return sdf


def _capsule_box(p0, p1, r: float) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    lo = tuple(min(a, b) - r for a, b in zip(p0, p1, strict=True))
    hi = tuple(max(a, b) + r for a, b in zip(p0, p1, strict=True))
    return lo, hi  # type: ignore[return-value]


def _ell_box(c, r, grow: float = 1.0) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    lo = tuple(ci - ri * grow for ci, ri in zip(c, r, strict=True))
    hi = tuple(ci + ri * grow for ci, ri in zip(c, r, strict=True))
    return lo, hi  # type: ignore[return-value]


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth minimum (polynomial), blending two shapes over ``k`` mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


class _Noise:
    """A smooth random field: a sum of plane waves with random directions.

    ``cos(a(u, v) + b(w)) = cos(a) cos(b) - sin(a) sin(b)`` keeps every term a product of
    an in-plane and a cranio-caudal factor, which broadcast cheaply over the grid.
    """

    def __init__(self, rng: np.random.Generator, amplitude: float, wavelength: tuple[float, float], terms: int = 4):
        lam = rng.uniform(wavelength[0], wavelength[1], size=terms)
        direction = rng.normal(size=(terms, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        self.k = (direction * (2 * np.pi / lam)[:, None]).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=terms).astype(np.float32)
        self.amp = (amplitude * rng.uniform(0.6, 1.0, size=terms) * math.sqrt(2.0 / terms)).astype(np.float32)

    def __call__(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        out = None
        for (ku, kv, kw), p, a in zip(self.k, self.phase, self.amp, strict=True):
            inplane = ku * u + kv * v + p
            axial = kw * w
            term = (a * np.cos(inplane)) * np.cos(axial) - (a * np.sin(inplane)) * np.sin(axial)
            out = term if out is None else out + term
        return out  # type: ignore[return-value]


def _deformed(sdf: SDF, noise: _Noise) -> SDF:
    return lambda u, v, w: sdf(u, v, w) + noise(u, v, w)


# --------------------------------------------------------------------------- scene


class _Scene:
    """The voxel grid in world and anatomical coordinates, and the image being painted."""

    def __init__(self, config: PhantomConfig, roll_deg: float, centre_xyz: tuple[float, float, float]):
        nz, ny, nx = config.shape
        sx, sy, sz = config.spacing
        self.x = ((np.arange(nx) - (nx - 1) / 2) * sx).astype(np.float32)
        self.y = ((np.arange(ny) - (ny - 1) / 2) * sy).astype(np.float32)
        self.z = ((np.arange(nz) - (nz - 1) / 2) * sz).astype(np.float32)
        X, Y = np.meshgrid(self.x - centre_xyz[0], self.y - centre_xyz[1])
        t = math.radians(roll_deg)
        # world -> anatomical: rotate in-plane by the roll angle (about the z axis)
        self.u2 = (math.cos(t) * X + math.sin(t) * Y).astype(np.float32)
        self.v2 = (-math.sin(t) * X + math.cos(t) * Y).astype(np.float32)
        self.yw2 = np.broadcast_to(self.y[:, None], (ny, nx))  # world y (gravity), mm from grid centre
        self.xw2 = np.broadcast_to(self.x[None, :], (ny, nx))
        self.w1 = (self.z - centre_xyz[2]).astype(np.float32)
        self.inv_h = np.float32(1.0 / float(np.mean(config.spacing)))
        self.img = np.full(config.shape, -1000.0, dtype=np.float32)
        self.lab = np.zeros(config.shape, dtype=np.uint8)

    def box(self, shape: _Shape, margin: float = 6.0) -> tuple[slice, slice, slice] | None:
        (ulo, vlo, wlo), (uhi, vhi, whi) = shape.lo, shape.hi
        inplane = (self.u2 >= ulo - margin) & (self.u2 <= uhi + margin)
        inplane &= (self.v2 >= vlo - margin) & (self.v2 <= vhi + margin)
        rows = np.flatnonzero(inplane.any(axis=1))
        cols = np.flatnonzero(inplane.any(axis=0))
        zs = np.flatnonzero((self.w1 >= wlo - margin) & (self.w1 <= whi + margin))
        if rows.size == 0 or cols.size == 0 or zs.size == 0:
            return None
        return slice(zs[0], zs[-1] + 1), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        zs, ys, xs = box
        coords = (self.u2[None, ys, xs], self.v2[None, ys, xs], self.w1[zs, None, None])
        self.last = (box, coords)
        return coords

    def cached(self, sdf: SDF, field: np.ndarray) -> SDF:
        """``sdf``, answered from ``field`` (its values on the whole grid) when called on a box's coordinates."""

        def lookup(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
            last = getattr(self, "last", None)
            if last is not None and u is last[1][0] and v is last[1][1] and w is last[1][2]:
                return field[last[0]]
            return sdf(u, v, w)

        return lookup

    def world_y(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        return self.yw2[None, box[1], box[2]]

    def paint(
        self,
        shape: _Shape,
        hu: float | np.ndarray | Callable[[tuple[slice, slice, slice]], np.ndarray],
        label: int | None = None,
    ) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
        """Blend ``hu`` into the image where ``shape`` is; set ``label`` where its centre is inside."""
        box = self.box(shape)
        if box is None:
            return None
        sd = shape.sdf(*self.coords(box))
        sd = np.broadcast_to(sd, self.img[box].shape)
        occ = np.clip(0.5 - sd * self.inv_h, 0.0, 1.0)
        value = hu(box) if callable(hu) else hu
        sub = self.img[box]
        sub += occ * (value - sub)
        if label is not None:
            self.lab[box][sd < 0] = label
        return box, sd


# --------------------------------------------------------------------------- anatomy


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


class _Builder:
    def __init__(self, config: PhantomConfig):
        self.config = config
        domain_index = DOMAINS.index(config.domain)
        anatomy_seed, noise_seed = np.random.SeedSequence([config.seed, config.case, domain_index]).spawn(2)
        # anatomy draws never depend on the grid; voxel noise (grid-sized draws) has its own stream
        self.rng = np.random.default_rng(anatomy_seed)
        self.noise_rng = np.random.default_rng(noise_seed)
        rng = self.rng
        self.domain = config.domain
        self.hu = _tissue_table(rng, config.domain)
        porcine = config.domain == "porcine"
        if porcine:
            an = _Anatomy(
                porcine=True,
                body_a=rng.uniform(118, 135),
                body_b_ant=rng.uniform(125, 145),
                body_b_post=rng.uniform(110, 125),
                fat=rng.uniform(16, 30),
                muscle=rng.uniform(8, 12),
                dome_right=rng.uniform(95, 110),
            )
        else:
            an = _Anatomy(
                porcine=False,
                body_a=rng.uniform(145, 172),
                body_b_ant=rng.uniform(105, 128),
                body_b_post=rng.uniform(100, 118),
                fat=rng.uniform(8, 26),
                muscle=rng.uniform(9, 14),
                dome_right=rng.uniform(92, 108),
            )
        roll = float(rng.uniform(-6, 6))
        gravity = float(rng.uniform(8, 18))
        if config.domain == "recumbent":
            roll = float(rng.choice([-1.0, 1.0]) * rng.uniform(20, 90))
            t = math.radians(roll)
            # world +y (down) expressed in anatomical coordinates, minus the supine sag
            an.organ_shift = (gravity * math.sin(t), gravity * (math.cos(t) - 1.0))
        if config.domain == "tumour":
            an.liver_scale = float(rng.uniform(1.05, 1.2))
        if config.domain == "pneumoperitoneum":
            an.pneumo_gas = float(rng.uniform(30, 60))
            an.organ_shift = (0.0, 0.45 * an.pneumo_gas)
        self.an = an
        self.roll = roll
        # the body rests on the table: lowest world point of the rolled outline
        t = math.radians(roll)
        phi = np.linspace(0, np.pi, 181)
        ou, ov = an.body_a * np.cos(phi), np.minimum(an.body_b_post * np.sin(phi), an.body_b_post * 0.93)
        reach = float(np.max(math.sin(t) * ou + math.cos(t) * ov))
        table_y = 118.0 + rng.uniform(-8, 8)
        centre = (float(rng.uniform(-12, 12)), table_y - reach - 3.0, float(rng.uniform(-20, 20)))
        self.table_y = table_y
        self.scene = _Scene(config, roll, centre)
        self.scene_centre = centre
        drawn_noise = float(rng.uniform(10, 18))  # always drawn, so that noise_hu leaves the anatomy alone
        self.noise_hu = float(config.noise_hu) if config.noise_hu is not None else drawn_noise
        self.organs = config.include_organs
        self.origin_jitter = rng.uniform(-30, 30, size=3)

    def olabel(self, name: str) -> int | None:
        return ORGAN_LABELS[name] if self.organs else None

    # ---- body -----------------------------------------------------------------
    def body_axes(self, w: np.ndarray, inset: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        an = self.an
        a = an.body_a * (1.0 + 0.04 * np.cos(w / 90.0)) - inset
        b_ant = an.body_b_ant * (1.0 + 0.03 * np.sin(w / 70.0)) - inset
        if an.pneumo_gas > 0:
            b_ant = b_ant + an.pneumo_gas * 1.1 * np.exp(-(((w + 10.0) / 130.0) ** 2))
        b_post = an.body_b_post - inset + 0.0 * w
        return a.astype(np.float32), b_ant.astype(np.float32), b_post.astype(np.float32)

    def body_sdf(self, inset: float) -> SDF:
        an = self.an
        flat = an.body_b_post * 0.93 - inset

        def sdf(u, v, w):
            a, b_ant, b_post = self.body_axes(w, inset)
            b = np.where(v < 0, b_ant, b_post)
            k = np.sqrt((u / a) ** 2 + (v / b) ** 2)
            sd = (k - 1.0) * np.minimum(a, b)
            return np.maximum(sd, v - flat)

        return sdf

    def body_shape(self, inset: float) -> _Shape:
        an = self.an
        a = an.body_a * 1.05 + 4
        return _Shape(
            self.body_sdf(inset), (-a, -an.body_b_ant - an.pneumo_gas * 1.2 - 5, -1e4), (a, an.body_b_post, 1e4)
        )

    def diaphragm(self, u, v):
        """Height (w, mm) of the diaphragm surface over (u, v): two domes, deeper posteriorly."""
        zr = self.an.dome_right
        rd = 220.0
        right = zr - ((u + 60.0) ** 2 + (v + 5.0) ** 2) / rd
        left = (zr - 15.0) - ((u - 60.0) ** 2 + (v + 5.0) ** 2) / rd
        centre = zr - 28.0 - (v / 12.0) ** 2
        h = np.maximum(np.maximum(right, left), centre)
        return h - 0.25 * np.maximum(v, 0.0)

    # ---- build --------------------------------------------------------------------
    def build(self) -> tuple[np.ndarray, np.ndarray]:
        hu, an, sc = self.hu, self.an, self.scene
        # table (world coordinates): a thin curved carbon plate under the body
        ty = self.table_y - self.scene_centre[1]
        xw = sc.xw2 - self.scene_centre[0]
        yw = sc.yw2 - self.scene_centre[1]
        plate = np.abs(yw - (ty + 5.0 - 0.0006 * xw**2)) - 3.0
        plate = np.maximum(plate, np.abs(xw) - 210.0)
        occ = np.clip(0.5 - plate * sc.inv_h, 0, 1)
        sc.img += occ[None] * (hu["table"] - sc.img)

        # body layers: subcutaneous fat, muscle wall, cavity
        sc.paint(self.body_shape(0.0), hu["fat"])
        sc.paint(self.body_shape(an.fat), hu["muscle"])
        cavity_inset = an.fat + an.muscle
        res = sc.paint(self.body_shape(cavity_inset), hu["visceral_fat"])
        # the cavity clips most organs: evaluate it once on the whole grid
        field = np.full(sc.img.shape, 1e4, dtype=np.float32)
        if res is not None:
            field[res[0]] = res[1]
        cavity = sc.cached(self.body_sdf(cavity_inset), field)

        self.paint_ribs(cavity_inset)
        self.paint_spine()
        # the liver's shape is drawn early: the pneumoperitoneum gas is placed against it
        self.kidneys: list[tuple[SDF, tuple]] = []
        liver = self.liver_shape(cavity)
        self.paint_thorax(cavity)
        self.paint_bowel(cavity)
        if an.pneumo_gas > 0:
            self.paint_pneumo(cavity)
        self.kidneys = self.paint_kidneys(cavity)
        self.paint_vessels()
        self.paint_pancreas()
        self.paint_spleen(cavity)
        self.paint_stomach(cavity)
        self.paint_liver(liver)
        return self.finish()

    # ---- parts ----------------------------------------------------------------------
    def paint_ribs(self, cavity_inset: float) -> None:
        an, sc, hu, rng = self.an, self.scene, self.hu, self.rng
        outer = self.body_sdf(an.fat + 1.0)
        inner = self.body_sdf(an.fat + 9.0)
        period = rng.uniform(26, 34)
        offset = rng.uniform(0, period)
        bottom = an.dome_right - (150.0 if not an.porcine else 170.0)

        def sdf(u, v, w):
            shell = np.maximum(outer(u, v, w), -inner(u, v, w))
            ang = np.arctan2(v, np.abs(u))  # -pi/2 anterior .. +pi/2 posterior
            # distance (mm, along w) to the nearest rib centre line; ribs are 10 mm high
            along = np.mod(w + 45.0 * ang + offset, period) - period / 2
            band_sd = np.abs(along) - 5.0
            low = bottom - w - 40.0 * np.maximum(ang, 0.0)  # ribs go lower posteriorly
            anterior = -0.75 - ang  # no bony ribs near the anterior midline
            return np.maximum(np.maximum(np.maximum(shell, band_sd), low), anterior * 60.0)

        a = an.body_a * 1.05
        sc.paint(
            _Shape(sdf, (-a, -an.body_b_ant - 20, bottom - 80), (a, an.body_b_post, 1e4)), hu["bone_cortical"] * 0.7
        )

    def paint_spine(self) -> None:
        an, sc, hu, rng = self.an, self.scene, self.hu, self.rng
        bp = an.body_b_post
        vb = bp * 0.93 - 0.5 * an.fat - (50.0 if not an.porcine else 56.0)  # vertebral body centre
        r = rng.uniform(19, 24)
        body = _column(0.0, vb, r * 1.1, r * 0.9)
        lo, hi = (-r * 1.2, vb - r, -1e4), (r * 1.2, vb + r, 1e4)
        sc.paint(_Shape(body, lo, hi), hu["bone_cortical"], self.olabel("vertebrae"))
        inner = _column(0.0, vb, r * 1.1 - 3.0, r * 0.9 - 3.0)
        sc.paint(_Shape(inner, lo, hi), hu["bone_cancellous"])
        period = rng.uniform(30, 36)
        ph = rng.uniform(0, period)

        def disc(u, v, w):
            dist = np.abs(np.mod(w + ph, period) - period / 2)  # period/2 at the disc centres
            return np.maximum(body(u, v, w) + 1.5, (period / 2 - 4.0) - dist)

        sc.paint(_Shape(disc, lo, hi), hu["disc"])
        # posterior elements: lamina ring, spinous process, canal
        cv = vb + r * 0.9 + 9.0
        ring = _column(0.0, cv, 14.0, 12.0)
        lo2, hi2 = (-24.0, cv - 16, -1e4), (24.0, cv + 16, 1e4)
        sc.paint(_Shape(ring, lo2, hi2), hu["bone_cortical"] * 0.8)
        sc.paint(_Shape(_column(0.0, cv, 8.0, 7.0), lo2, hi2), hu["csf"])
        inside = self.body_sdf(an.fat * 0.7)
        spin_c = _column(0.0, cv + 22.0, 4.5, 12.0)

        def spin(u, v, w):
            return np.maximum(spin_c(u, v, w), inside(u, v, w))

        sc.paint(_Shape(spin, (-8, cv + 8, -1e4), (8, cv + 36, 1e4)), hu["bone_cortical"] * 0.7)
        # paraspinal muscles beside the spinous process
        for side in (-1.0, 1.0):
            c = (side * 36.0, cv + 8.0)
            pm_c = _column(c[0], c[1], 25.0, 19.0)
            pm = lambda u, v, w, f=pm_c: np.maximum(f(u, v, w), inside(u, v, w))  # noqa: E731
            sc.paint(_Shape(pm, (c[0] - 28, c[1] - 22, -1e4), (c[0] + 28, c[1] + 22, 1e4)), hu["muscle"] - 5)
            # psoas: grows caudally from the level of the kidneys
            pu = side * 42.0

            def psoas(u, v, w, pu=pu):
                rad = np.clip(6.0 + 0.18 * (-40.0 - w), 0.0, 28.0)
                return np.sqrt((u - pu) ** 2 + (v - vb + 4.0) ** 2) - rad

            sc.paint(_Shape(psoas, (pu - 30, vb - 34, -1e4), (pu + 30, vb + 26, -40.0)), hu["muscle"])
        self.spine = (vb, r)
        self.ivc = (-24.0 + an.organ_shift[0] * 0.3, vb - r - 18.0)  # inferior vena cava centre (u, v)

    def paint_thorax(self, cavity: SDF) -> None:
        an, sc, hu = self.an, self.scene, self.hu
        top = an.dome_right + 400.0

        def lung(u, v, w):
            sd = np.maximum(cavity(u, v, w) + 2.0, self.diaphragm(u, v) - w)
            # mediastinum between the lungs, in front of the spine
            med = np.maximum(np.abs(u) - 28.0, v - (self.spine[0] + 10.0))
            spine = np.maximum(np.abs(u) - 32.0, self.spine[0] - self.spine[1] - 4.0 - v)
            back = np.maximum(np.abs(u) - 65.0, self.spine[0] + 18.0 - v)
            return np.maximum(sd, -np.minimum(np.minimum(med, spine), back))

        a = an.body_a
        shape = _Shape(lung, (-a, -an.body_b_ant, an.dome_right - 120), (a, an.body_b_post, top))
        res = sc.paint(shape, hu["lung"])
        if res is not None:  # lung texture: a little noise of its own
            box, sd = res
            sub = sc.img[box]
            sub += (sd < -3) * self.noise_rng.normal(0, 25, size=sub.shape).astype(np.float32)

        # diaphragm muscle: a 6 mm sheet under the lungs
        def dia(u, v, w):
            h = self.diaphragm(u, v)
            return np.maximum(cavity(u, v, w), np.abs(w - (h - 3.0)) - 3.0)

        sc.paint(
            _Shape(dia, (-a, -an.body_b_ant, an.dome_right - 130), (a, an.body_b_post, an.dome_right + 5)), hu["muscle"]
        )
        # heart above the left dome
        c = (15.0, -20.0, an.dome_right + 55.0)
        r = (62.0, 52.0, 58.0)
        heart = _ellipsoid(c, r)
        sc.paint(
            _Shape(lambda u, v, w: np.maximum(heart(u, v, w), self.diaphragm(u, v) - w), *_ell_box(c, r)),
            hu["myocardium"],
        )
        c2 = (c[0] - 6, c[1] + 4, c[2] + 6)
        r2 = (r[0] - 14, r[1] - 14, r[2] - 14)
        ch = _ellipsoid(c2, r2)
        sc.paint(
            _Shape(lambda u, v, w: np.maximum(ch(u, v, w), self.diaphragm(u, v) + 8 - w), *_ell_box(c2, r2)),
            hu["blood"],
        )

    def paint_bowel(self, cavity: SDF) -> None:
        an, sc, hu, rng = self.an, self.scene, self.hu, self.rng
        loops = _Noise(rng, 1.0, (50.0, 90.0), terms=8)
        gas = _Noise(rng, 1.0, (40.0, 80.0), terms=5)
        su, sv = an.organ_shift
        top = -25.0 if not an.porcine else -40.0

        def region(u, v, w):
            # below the liver/stomach, in the cavity, in front of the spine
            roof = w - (top - 0.25 * (u - su) - 0.15 * (v - sv))
            return np.maximum(np.maximum(cavity(u, v, w) + 3.0, roof), (v - sv) - (self.spine[0] - 25.0))

        def wall(u, v, w):
            return np.maximum(region(u, v, w), (0.15 - loops(u - su, v - sv, w)) * 30.0)

        def lumen(u, v, w):
            return wall(u, v, w) + 3.0

        def gas_sd(u, v, w):
            return np.maximum(lumen(u, v, w), (0.55 - gas(u - su, v - sv, w)) * 30.0)

        a = an.body_a
        lo, hi = (-a, -an.body_b_ant - an.pneumo_gas * 1.2, -1e4), (a, an.body_b_post, top + 60)
        sc.paint(_Shape(wall, lo, hi), hu["bowel_wall"])
        sc.paint(_Shape(lumen, lo, hi), hu["fluid"] + 8.0)
        sc.paint(_Shape(gas_sd, lo, hi), hu["air"])

    def paint_pneumo(self, cavity: SDF) -> None:
        an, sc, hu = self.an, self.scene, self.hu
        g = an.pneumo_gas
        b = an.body_b_ant

        depth = self.rng.uniform(12.0, 24.0)

        def sdf(u, v, w):
            # the cavity in front of a curved surface that reaches 12-24 mm into the
            # (posteriorly shifted) liver, which it then flattens
            front = v - (self.liver_front_v + depth + 0.0015 * u**2)
            reach = np.exp(-(((w + 10.0) / 150.0) ** 2))
            gas = np.maximum(cavity(u, v, w) + 0.5, front + (1.0 - reach) * g * 2.0)
            return np.maximum(gas, w - self.diaphragm(u, v) + 6.0)

        lo, hi = (-an.body_a, -b - g * 1.3, -250.0), (an.body_a, self.liver_front_v + 30.0, an.dome_right + 5.0)
        sc.paint(_Shape(sdf, lo, hi), hu["air"])
        self.pneumo_front = sdf

    def paint_kidneys(self, cavity: SDF) -> list[tuple[SDF, tuple]]:
        an, sc, hu, rng = self.an, self.scene, self.hu, self.rng
        out = []
        vb, _ = self.spine
        su, sv = an.organ_shift
        for side, name in ((-1.0, "kidney_right"), (1.0, "kidney_left")):
            if an.porcine:
                c = (side * 48.0 + su * 0.5, vb - 5.0 + sv * 0.5, -95.0 + rng.uniform(-8, 8))
                r = (rng.uniform(18, 22), rng.uniform(26, 32), rng.uniform(48, 58))
            else:
                c = (side * 68.0 + su * 0.5, vb - 8.0 + sv * 0.5, (-70.0 if side < 0 else -55.0) + rng.uniform(-10, 10))
                r = (rng.uniform(22, 28), rng.uniform(26, 32), rng.uniform(48, 60))
            noise = _Noise(rng, 2.5, (50.0, 90.0), terms=3)
            outer = _deformed(_ellipsoid(c, r), noise)
            box = _ell_box(c, r, 1.15)
            sc.paint(_Shape(outer, *box), hu["kidney_cortex"], self.olabel(name))
            med = _deformed(_ellipsoid(c, (r[0] - 8, r[1] - 8, r[2] - 10)), noise)
            sc.paint(_Shape(med, *box), hu["kidney_medulla"])
            hc = (c[0] - side * r[0] * 0.8, c[1] - 4.0, c[2])
            hr = (r[0] * 0.55, r[1] * 0.4, r[2] * 0.45)
            sinus = _ellipsoid(hc, hr)
            sc.paint(
                _Shape(lambda u, v, w, o=outer, s=sinus: np.maximum(s(u, v, w), o(u, v, w) + 2), *box),
                hu["visceral_fat"] + 20,
            )
            out.append((outer, box))
        return out

    def paint_vessels(self) -> None:
        an, sc, hu = self.an, self.scene, self.hu
        vb, r = self.spine
        av = vb - r - 14.0
        aorta = _column(12.0, av, 11.0, 11.0)
        sc.paint(
            _Shape(aorta, (0, av - 12, -1e4), (24, av + 12, an.dome_right + 60)), hu["blood"] + 5, self.olabel("aorta")
        )
        iu, iv = self.ivc
        ivc = _column(iu, iv, 14.0, 10.0)
        sc.paint(
            _Shape(ivc, (iu - 15, iv - 11, -1e4), (iu + 15, iv + 11, an.dome_right + 20)),
            hu["blood"] - 20 * (self.domain != "plain"),
            self.olabel("inferior_vena_cava"),
        )

    def paint_pancreas(self) -> None:
        an, sc, hu = self.an, self.scene, self.hu
        su, sv = an.organ_shift
        vb, r = self.spine
        p0 = (-15.0 + su, vb - r - 40.0 + sv, -30.0)
        p1 = (75.0 + su, vb - r - 20.0 + sv, -8.0)
        pan = _deformed(_capsule(p0, p1, 11.0), _Noise(self.rng, 3.0, (30.0, 60.0), terms=3))
        sc.paint(_Shape(pan, *_capsule_box(p0, p1, 16.0)), hu["pancreas"], self.olabel("pancreas"))

    def paint_spleen(self, cavity: SDF) -> None:
        an, sc, hu, rng = self.an, self.scene, self.hu, self.rng
        su, sv = an.organ_shift
        noise = _Noise(rng, 4.0, (50.0, 100.0), terms=3)
        if an.porcine:
            p0 = (an.body_a - 45.0 + su, -30.0 + sv, 40.0)
            p1 = (an.body_a - 55.0 + su, 30.0 + sv, -110.0)
            core = _capsule(p0, p1, rng.uniform(11, 15))
            sdf = _deformed(lambda u, v, w: core(u, v, w), noise)
            box = _capsule_box(p0, p1, 25.0)
        else:
            c = (an.body_a - 65.0 + su, 35.0 + sv, an.dome_right - 65.0 + rng.uniform(-10, 5))
            r = (rng.uniform(24, 32), rng.uniform(45, 60), rng.uniform(45, 62))
            outer = _ellipsoid(c, r)
            bite = _ellipsoid((c[0] - r[0] * 1.3, c[1] - 5.0, c[2]), (r[0] * 1.1, r[1] * 0.8, r[2] * 1.1))
            sdf = _deformed(lambda u, v, w: np.maximum(outer(u, v, w), -bite(u, v, w)), noise)
            box = _ell_box(c, r, 1.2)

        def clipped(u, v, w):
            return np.maximum(np.maximum(sdf(u, v, w), cavity(u, v, w) + 1.0), w - self.diaphragm(u, v) + 6.0)

        sc.paint(_Shape(clipped, *box), hu["spleen"], self.olabel("spleen"))

    def paint_stomach(self, cavity: SDF) -> None:
        an, sc, hu, rng = self.an, self.scene, self.hu, self.rng
        su, sv = an.organ_shift
        if an.porcine:
            c = (40.0 + su, -10.0 + sv, an.dome_right - 75.0)
            r = (rng.uniform(50, 60), rng.uniform(45, 55), rng.uniform(45, 55))
        else:
            c = (55.0 + su, -20.0 + sv, an.dome_right - 55.0)
            r = (rng.uniform(35, 48), rng.uniform(32, 42), rng.uniform(40, 55))
        noise = _Noise(rng, 4.0, (50.0, 100.0), terms=3)
        base = _deformed(_ellipsoid(c, r), noise)

        def outer(u, v, w):
            return np.maximum(np.maximum(base(u, v, w), cavity(u, v, w) + 1.0), w - self.diaphragm(u, v) + 6.0)

        box = _ell_box(c, r, 1.2)
        sc.paint(_Shape(outer, *box), hu["bowel_wall"] + 5, self.olabel("stomach"))
        sc.paint(_Shape(lambda u, v, w: outer(u, v, w) + 4.0, *box), hu["fluid"] + 15)
        # gas cap: the non-dependent part of the lumen (world y, i.e. gravity)
        level = rng.uniform(-0.6, 0.0) * r[1]
        sh = _Shape(lambda u, v, w: outer(u, v, w) + 4.0, *box)
        b = sc.box(sh)
        if b is not None:
            cy = c[1] * math.cos(math.radians(self.roll)) + c[0] * math.sin(math.radians(self.roll))
            yw = sc.world_y(b) - self.scene_centre[1]
            sd = np.maximum(sh.sdf(*sc.coords(b)), yw - (cy + level))
            occ = np.clip(0.5 - sd * sc.inv_h, 0, 1)
            sub = sc.img[b]
            sub += occ * (hu["air"] - sub)

    def liver_shape(self, cavity: SDF) -> tuple[SDF, tuple, tuple]:
        an, rng = self.an, self.rng
        su, sv = an.organ_shift
        s = an.liver_scale
        noise = _Noise(rng, rng.uniform(5, 9), (70.0, 160.0), terms=5)
        if an.porcine:
            lobes = [
                ((-58.0, 0.0, 10.0), (42.0, 55.0, 75.0)),  # right lateral
                ((-22.0, -38.0, 15.0), (34.0, 34.0, 70.0)),  # right medial
                ((18.0, -40.0, 15.0), (34.0, 32.0, 70.0)),  # left medial
                ((58.0, -12.0, -5.0), (44.0, 52.0, 95.0)),  # left lateral, long
                ((-12.0, 18.0, 30.0), (42.0, 32.0, 45.0)),  # caudate / hilum bridge
            ]
            lobes = [
                (
                    (c[0] * s + su + rng.uniform(-5, 5), c[1] + sv + rng.uniform(-5, 5), c[2] + an.dome_right - 95.0),
                    tuple(ri * s * rng.uniform(0.9, 1.1) for ri in r),
                )
                for c, r in lobes
            ]
            fissures = [
                (-40.0 * s + su, rng.uniform(-0.3, 0.3)),
                (0.0 + su, rng.uniform(-0.3, 0.3)),
                (38.0 * s + su, rng.uniform(-0.3, 0.3)),
            ]
            sdfs = [_ellipsoid(c, r) for c, r in lobes]

            def base(u, v, w):
                d = sdfs[0](u, v, w)
                for f in sdfs[1:]:
                    d = np.minimum(d, f(u, v, w))
                for fu, tilt in fissures:  # thin fat-filled clefts between the lobes, anteriorly
                    cleft = np.maximum(np.abs(u - fu - tilt * (w - 20.0)) - 2.5, (v - sv) + 5.0)
                    d = np.maximum(d, -cleft)
                return d

            lo = tuple(min(c[i] - r[i] for c, r in lobes) - 12 for i in range(3))
            hi = tuple(max(c[i] + r[i] for c, r in lobes) + 12 for i in range(3))
        else:
            cr = (
                -62.0 + su + rng.uniform(-6, 6),
                8.0 + sv + rng.uniform(-5, 5),
                an.dome_right - 80.0 + rng.uniform(-8, 8),
            )
            rr = (rng.uniform(62, 76) * s, rng.uniform(72, 88) * s, rng.uniform(72, 90) * s)
            cl = (22.0 + su + rng.uniform(-8, 8), -40.0 + sv + rng.uniform(-5, 5), an.dome_right - 55.0)
            rl = (rng.uniform(65, 90) * s, rng.uniform(32, 42) * s, rng.uniform(38, 48) * s)
            right = _ellipsoid(cr, rr)
            left_e = _ellipsoid(cl, rl)
            taper = rng.uniform(0.25, 0.45)

            def left(u, v, w):
                # thinner towards the patient's left
                t = np.clip((u - cl[0]) / rl[0], -1.0, 1.0)
                return left_e(u, v, w) + taper * 25.0 * (t + 1.0)

            def base(u, v, w):
                return _smin(right(u, v, w), left(u, v, w), 18.0)

            lo = (min(cr[0] - rr[0], cl[0] - rl[0]) - 12, min(cr[1] - rr[1], cl[1] - rl[1]) - 12, cr[2] - rr[2] - 12)
            hi = (max(cr[0] + rr[0], cl[0] + rl[0]) + 12, max(cr[1] + rr[1], cl[1] + rl[1]) + 12, an.dome_right + 5)

        self.liver_front_v = lo[1] + 12.0  # most anterior point of the undeformed lobes
        gb_c = (-30.0 * s + su, -25.0 + sv, lo[2] + 55.0) if not an.porcine else (-10.0 + su, -10.0 + sv, lo[2] + 60)
        gb_r = (rng.uniform(14, 20), rng.uniform(14, 20), rng.uniform(30, 42))
        gb = _ellipsoid(gb_c, gb_r)
        iu, iv = self.ivc
        ivc = _column(iu, iv, 16.0, 12.0)
        vb, vr = self.spine
        spine_keepout = _column(0.0, vb, vr + 14.0, vr + 14.0)

        def liver(u, v, w):
            d = base(u, v, w) + noise(u, v, w)
            d = np.maximum(d, cavity(u, v, w) + 1.5)
            d = np.maximum(d, w - (self.diaphragm(u, v) - 6.0))
            d = np.maximum(d, -(gb(u, v, w) - 2.0))
            d = np.maximum(d, -ivc(u, v, w))
            d = np.maximum(d, -spine_keepout(u, v, w))
            for k, _ in self.kidneys:
                d = np.maximum(d, -(k(u, v, w) - 3.0))
            if an.pneumo_gas > 0:
                d = np.maximum(d, -self.pneumo_front(u, v, w))
            return d

        return liver, (lo, hi), (gb, gb_c, gb_r)

    def paint_liver(self, shape: tuple[SDF, tuple, tuple]) -> None:
        an, sc, hu, rng = self.an, self.scene, self.hu, self.rng
        liver, (lo, hi), (gb, gb_c, gb_r) = shape
        shape = _Shape(liver, lo, hi)
        # parenchymal texture: a few HU of low-frequency variation
        tex = _Noise(rng, 4.0, (20.0, 50.0), terms=3)
        res = sc.paint(shape, lambda b: hu["liver"] + tex(*sc.coords(b)), LABELS["liver"])
        # gallbladder in its fossa
        sc.paint(
            _Shape(lambda u, v, w: gb(u, v, w), *_ell_box(gb_c, gb_r)), hu["gallbladder"], self.olabel("gallbladder")
        )
        if res is None:
            return
        # vessels: portal vein from the hilum, hepatic veins towards the IVC (HU only, stay liver)
        sv = an.organ_shift[1]
        iu, iv = self.ivc
        top = an.dome_right - 20.0
        hilum = ((lo[0] + hi[0]) / 2 - 25.0, iv - 20.0, lo[2] + 70.0)
        portal = [
            ((hilum[0] + 30.0, iv - 5.0, hilum[2] - 45.0), hilum, 7.0),
            (hilum, (lo[0] + 35.0, hilum[1] - 5.0, hilum[2] + 15.0), 5.0),
            (hilum, (hi[0] - 50.0, -45.0 + sv, hilum[2] + 25.0), 4.5),
        ]
        hepatic = [
            ((iu, iv, top), (lo[0] + 30.0, -10.0 + sv, top - 25.0), 5.0),
            ((iu, iv, top), (iu - 15.0, -55.0 + sv, top - 20.0), 4.5),
            ((iu, iv, top), (iu + 50.0, -45.0 + sv, top - 15.0), 4.0),
        ]
        for p0, p1, r in portal + hepatic:
            p1 = (p1[0] + rng.uniform(-8, 8), p1[1] + rng.uniform(-8, 8), p1[2] + rng.uniform(-8, 8))
            tube = _capsule(p0, p1, r * rng.uniform(0.85, 1.15))
            inside = lambda u, v, w, t=tube: np.maximum(t(u, v, w), liver(u, v, w) + 1.0)  # noqa: E731
            vessel_hu = hu["blood"] if self.domain != "plain" else hu["liver"] - rng.uniform(10, 18)
            sc.paint(_Shape(inside, *_capsule_box(p0, p1, r + 2.0)), vessel_hu)
        if self.domain == "tumour":
            self.paint_tumours(liver, lo, hi)

    def paint_tumours(self, liver: SDF, lo, hi) -> None:
        sc, hu, rng = self.scene, self.hu, self.rng
        n = int(rng.integers(1, 5))
        bright = bool(rng.random() < 0.4)
        for i in range(n):
            radius = float(rng.uniform(22, 45)) if i == 0 else float(rng.uniform(10, 30))
            # rejection-sample a centre deep enough inside the liver (grid independent)
            pts = rng.uniform(lo, hi, size=(400, 3)).astype(np.float32)
            d = liver(pts[:, 0], pts[:, 1], pts[:, 2])
            ok = np.flatnonzero(d < -0.6 * radius)
            if ok.size == 0:
                ok = np.flatnonzero(d < 0)
                if ok.size == 0:
                    continue
                radius = min(radius, float(-d[ok].min()) + 5.0)
            c = tuple(float(x) for x in pts[ok[0]])
            r = tuple(radius * rng.uniform(0.8, 1.2) for _ in range(3))
            noise = _Noise(rng, radius * 0.15, (radius * 1.5, radius * 4.0), terms=3)
            ell = _deformed(_ellipsoid(c, r), noise)
            inside = lambda u, v, w, e=ell: np.maximum(e(u, v, w), liver(u, v, w))  # noqa: E731
            delta = rng.uniform(45, 85) * (1.0 if bright else -1.0)
            box = _ell_box(c, r, 1.3)
            sc.paint(_Shape(inside, *box), hu["liver"] + delta, LABELS["tumour"])
            if not bright and radius > 20 and rng.random() < 0.6:  # necrotic core
                core = lambda u, v, w, e=ell, rad=radius: e(u, v, w) + rad * 0.45  # noqa: E731
                sc.paint(_Shape(core, *box), hu["fluid"] + 10.0)
            elif bright and rng.random() < 0.5:  # hypodense centre in a hypervascular lesion
                core = lambda u, v, w, e=ell, rad=radius: e(u, v, w) + rad * 0.55  # noqa: E731
                sc.paint(_Shape(core, *box), hu["liver"] - 15.0)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Slight in-plane blur (scanner PSF), correlated noise, int16 HU."""
        img = _smooth_inplane(self.scene.img, 0.2)
        noise = self.noise_rng.standard_normal(img.shape, dtype=np.float32)
        noise = _smooth_inplane(noise, 0.25)
        # each [1/4, 1/2, 1/4] pass keeps 3/8 of the variance: rescale to noise_hu exactly
        img += noise * np.float32(self.noise_hu / 0.375)
        np.clip(img, -1024, 3071, out=img)
        return np.rint(img).astype(np.int16), self.scene.lab


def _smooth_inplane(a: np.ndarray, side: float) -> np.ndarray:
    """Separable 3-tap filter ``[side, 1 - 2 side, side]`` along y and x (edges replicated)."""
    for axis in (1, 2):
        out = a * np.float32(1.0 - 2.0 * side)
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        out[hi] += np.float32(side) * a[lo]
        out[lo] += np.float32(side) * a[hi]
        first = [slice(None)] * 3
        last = [slice(None)] * 3
        first[axis], last[axis] = slice(0, 1), slice(-1, None)
        out[tuple(first)] += np.float32(side) * a[tuple(first)]
        out[tuple(last)] += np.float32(side) * a[tuple(last)]
        a = out
    return a


# --------------------------------------------------------------------------- public API


def make_phantom(
    config: PhantomConfig | None = None,
    *,
    domain: str = "contrast",
    seed: int = 0,
    case: int = 0,
    shape: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
    noise_hu: float | None = None,
    include_organs: bool = False,
) -> tuple[Image, Image]:
    """Build one phantom: ``(ct, labels)`` on the same grid.

    Pass a :class:`PhantomConfig`, or its fields as keywords (ignored when ``config`` is
    given). ``ct`` holds int16 HU, ``labels`` uint8 codes (:data:`LABELS`, plus
    :data:`ORGAN_LABELS` with ``include_organs``). The geometry is LPS with identity
    direction and an origin that centres the grid near the body.

    >>> ct, lab = make_phantom(domain="plain", seed=3)
    >>> ct.array.dtype.name, lab.array.dtype.name, sorted(int(v) for v in np.unique(lab.array))
    ('int16', 'uint8', [0, 1])
    """
    if config is None:
        config = PhantomConfig(domain=domain, seed=seed, case=case, noise_hu=noise_hu, include_organs=include_organs)
        if shape is not None:
            config = replace(config, shape=tuple(shape))
        if spacing is not None:
            config = replace(config, spacing=tuple(spacing))
    builder = _Builder(config)
    hu, lab = builder.build()
    nz, ny, nx = config.shape
    sx, sy, sz = config.spacing
    # origin: the grid centre sits at a scanner position that varies a little per case
    jitter = builder.origin_jitter
    origin = (
        -(nx - 1) / 2 * sx + float(jitter[0]),
        -(ny - 1) / 2 * sy + float(jitter[1]),
        -(nz - 1) / 2 * sz + float(jitter[2]) * 10.0,
    )
    geometry = Geometry(config.spacing, tuple(round(o, 3) for o in origin))
    return Image(hu, geometry), Image(lab, geometry)


def case_name(domain: str, index: int) -> str:
    """File stem of case ``index`` of a ``domain`` dataset: ``phantom_<domain>_<NNN>``."""
    return f"phantom_{domain}_{index:03d}"


def phantom(
    outdir: str | os.PathLike[str],
    domain: str = "contrast",
    n: int = 10,
    seed: int = 0,
    *,
    shape: tuple[int, int, int] = PhantomConfig.shape,
    spacing: tuple[float, float, float] = PhantomConfig.spacing,
    noise_hu: float | None = None,
    include_organs: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """Write ``n`` phantoms of ``domain`` to ``outdir`` in the Medical Segmentation Decathlon layout.

    Layout (nnU-Net v2 naming)::

        outdir/imagesTr/phantom_<domain>_<NNN>_0000.nii.gz   int16 HU
        outdir/labelsTr/phantom_<domain>_<NNN>.nii.gz        uint8 labels
        outdir/dataset.json

    Case ``i`` is :func:`make_phantom` with ``seed=seed, case=i``, so a dataset is
    bit-identical for the same arguments and case ``i`` does not depend on ``n``. Existing
    files are an error unless ``overwrite``, and even then a file liverctl did not write is never
    replaced (:mod:`liverctl.manifest`); every file is written atomically. Returns
    ``outdir``. This is what ``liverctl phantom`` runs.
    """
    if int(n) < 1:
        raise ConfigError(f"the number of phantoms must be at least 1, got {n}")
    base = PhantomConfig(
        domain=domain, shape=shape, spacing=spacing, seed=seed, noise_hu=noise_hu, include_organs=include_organs
    )
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output exists and is not a folder: {out}")
    names = [case_name(domain, i) for i in range(int(n))]
    targets = [out / "dataset.json"]
    for name in names:
        targets += [out / "imagesTr" / f"{name}_0000.nii.gz", out / "labelsTr" / f"{name}.nii.gz"]
    manifest = Manifest(out)
    if not overwrite:
        existing = [t for t in targets if t.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            hint = "use --overwrite to replace" if not manifest.foreign(existing) else "liverctl did not write it"
            raise InputError(f"refusing to overwrite {existing[0]}{more}; {hint}")
    manifest.check_replaceable(targets)  # --overwrite replaces only phantoms liverctl wrote
    manifest.claim(targets, "phantom")
    description = f"writing {n} {domain} phantoms"
    if progress is not None:
        progress(description, 0, int(n))
    for i, name in enumerate(names):
        ct, lab = make_phantom(replace(base, case=i))
        written = [write_image(ct, out / "imagesTr" / f"{name}_0000.nii.gz")]
        written.append(write_image(lab, out / "labelsTr" / f"{name}.nii.gz"))
        manifest.record(written)
        if progress is not None:
            progress(description, i + 1, int(n))
    labels = dict(LABELS)
    if include_organs:
        labels.update(ORGAN_LABELS)
    meta = {
        "name": f"phantom_{domain}",
        "description": f"liverctl synthetic abdominal CT phantoms, domain '{domain}' (liverctl.synthetic)",
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": int(n),
        "file_ending": ".nii.gz",
        "training": [
            {"image": f"./imagesTr/{name}_0000.nii.gz", "label": f"./labelsTr/{name}.nii.gz"} for name in names
        ],
        "liverctl": {
            "generator": "liverctl.synthetic",
            "generator_version": GENERATOR_VERSION,
            "domain": domain,
            "seed": int(seed),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(base).items() if k != "case"},
        },
    }
    manifest.record([write_text_atomic(out / "dataset.json", json.dumps(meta, indent=2) + "\n")])
    return out


#: Alias for :func:`phantom` under the name the issue uses.
write_dataset = phantom
