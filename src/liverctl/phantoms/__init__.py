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

Domains (after ``docs/studies/he2021.md``, He et al. 2021), chosen so that a model trained on
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

Modules: :mod:`~liverctl.phantoms.config` (:class:`PhantomConfig`, domains, labels, tissue
HU), :mod:`~liverctl.phantoms.shapes` (implicit shapes), :mod:`~liverctl.phantoms.scene` (the
grid being painted), :mod:`~liverctl.phantoms.builder` (one phantom, drawn then painted by
:mod:`~liverctl.phantoms.body`, :mod:`~liverctl.phantoms.abdomen` and
:mod:`~liverctl.phantoms.liver`), :mod:`~liverctl.phantoms.dataset` (:func:`make_phantom`,
:func:`phantom`). ``liverctl.phantoms``, the former name, re-exports this API for one release.
"""

from __future__ import annotations

from liverctl.phantoms.config import DOMAINS, GENERATOR_VERSION, LABELS, ORGAN_LABELS, Domain, PhantomConfig
from liverctl.phantoms.dataset import case_name, make_phantom, phantom, write_dataset

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
