"""Builds one phantom: draws the anatomy of a case, then paints it part by part.

:class:`_Builder` draws every random parameter from its own generators in a fixed order (so
the same configuration gives bit-identical arrays), and paints with the methods of
:mod:`~liverctl.phantoms.body`, :mod:`~liverctl.phantoms.abdomen` and
:mod:`~liverctl.phantoms.liver`.
"""

from __future__ import annotations

import math

import numpy as np

from liverctl.phantoms.abdomen import _Abdomen
from liverctl.phantoms.body import _Trunk
from liverctl.phantoms.config import DOMAINS, ORGAN_LABELS, PhantomConfig, _Anatomy, _tissue_table
from liverctl.phantoms.liver import _Liver
from liverctl.phantoms.scene import _Scene, _smooth_inplane
from liverctl.phantoms.shapes import SDF


class _Builder(_Trunk, _Abdomen, _Liver):
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

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Slight in-plane blur (scanner PSF), correlated noise, int16 HU."""
        img = _smooth_inplane(self.scene.img, 0.2)
        noise = self.noise_rng.standard_normal(img.shape, dtype=np.float32)
        noise = _smooth_inplane(noise, 0.25)
        # each [1/4, 1/2, 1/4] pass keeps 3/8 of the variance: rescale to noise_hu exactly
        img += noise * np.float32(self.noise_hu / 0.375)
        np.clip(img, -1024, 3071, out=img)
        return np.rint(img).astype(np.int16), self.scene.lab
