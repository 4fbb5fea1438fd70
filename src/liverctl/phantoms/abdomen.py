"""The abdominal organs of a phantom but the liver: bowel, pneumoperitoneum, kidneys, aorta and
vena cava, pancreas, spleen, stomach.

Methods of :class:`~liverctl.phantoms.builder._Builder` (a mixin: they use its ``an``, ``scene``,
``hu``, ``rng``, ``spine`` and ``ivc``).
"""

from __future__ import annotations

import math

import numpy as np

from liverctl.phantoms.shapes import (
    SDF,
    _capsule,
    _capsule_box,
    _column,
    _deformed,
    _ell_box,
    _ellipsoid,
    _Noise,
    _Shape,
)


class _Abdomen:
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
