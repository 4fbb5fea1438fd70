"""The trunk of a phantom: body outline and wall, diaphragm, ribs, spine and muscles, thorax.

Methods of :class:`~liverctl.phantoms.builder._Builder` (a mixin: they use its ``an``, ``scene``,
``hu``, ``rng`` and ``noise_rng``), in the order the builder calls them.
"""

from __future__ import annotations

import numpy as np

from liverctl.phantoms.shapes import (
    SDF,
    _column,
    _ell_box,
    _ellipsoid,
    _Shape,
)


class _Trunk:
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
