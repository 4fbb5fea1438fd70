"""The liver of a phantom: its shape (human two-lobed or porcine five-lobed), the gallbladder,
portal and hepatic veins, and the tumours of the ``tumour`` domain.

Methods of :class:`~liverctl.phantoms.builder._Builder` (a mixin).
"""

from __future__ import annotations

import numpy as np

from liverctl.phantoms.config import LABELS
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
    _smin,
)


class _Liver:
    def liver_shape(self, cavity: SDF) -> tuple[SDF, tuple, tuple]:
        an, rng = self.an, self.rng
        su, sv = an.organ_shift
        s = an.liver_scale
        noise = _Noise(rng, rng.uniform(5, 9), (70.0, 160.0), terms=5)
        base, lo, hi = self._porcine_lobes() if an.porcine else self._human_lobes()

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

    def _porcine_lobes(self) -> tuple[SDF, tuple, tuple]:
        """Five lobes across the midline with fat-filled fissures: ``(sdf, lo, hi)`` before noise and clipping."""
        an, rng = self.an, self.rng
        su, sv = an.organ_shift
        s = an.liver_scale
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
        return base, lo, hi

    def _human_lobes(self) -> tuple[SDF, tuple, tuple]:
        """A right and a tapering left lobe, smoothly joined: ``(sdf, lo, hi)`` before noise and clipping."""
        an, rng = self.an, self.rng
        su, sv = an.organ_shift
        s = an.liver_scale
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
        return base, lo, hi

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
