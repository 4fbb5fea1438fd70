"""Phantoms out: one phantom as two Images (:func:`make_phantom`), a dataset of them on disk
in the Medical Segmentation Decathlon layout (:func:`phantom`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from liverctl.errors import ConfigError, InputError
from liverctl.io import Geometry, Image, write_image, write_text_atomic
from liverctl.io.manifest import Manifest
from liverctl.phantoms.builder import _Builder
from liverctl.phantoms.config import GENERATOR_VERSION, LABELS, ORGAN_LABELS, PhantomConfig
from liverctl.progress import ProgressCallback


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
    replaced (:mod:`liverctl.io.manifest`); every file is written atomically. Returns
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
    _check_targets(manifest, targets, overwrite)
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
    meta = _dataset_json(base, int(n), names)
    manifest.record([write_text_atomic(out / "dataset.json", json.dumps(meta, indent=2) + "\n")])
    return out


def _check_targets(manifest: Manifest, targets: list[Path], overwrite: bool) -> None:
    """Refuse existing files unless ``overwrite``, and even then files liverctl did not write."""
    if not overwrite:
        existing = [t for t in targets if t.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            hint = "use --overwrite to replace" if not manifest.foreign(existing) else "liverctl did not write it"
            raise InputError(f"refusing to overwrite {existing[0]}{more}; {hint}")
    manifest.check_replaceable(targets)  # --overwrite replaces only phantoms liverctl wrote


def _dataset_json(base: PhantomConfig, n: int, names: list[str]) -> dict[str, Any]:
    """The ``dataset.json`` of a phantom dataset (nnU-Net v2 keys, plus how it was generated)."""
    domain, seed, include_organs = base.domain, base.seed, base.include_organs
    labels = dict(LABELS)
    if include_organs:
        labels.update(ORGAN_LABELS)
    meta = {
        "name": f"phantom_{domain}",
        "description": f"liverctl synthetic abdominal CT phantoms, domain '{domain}' (liverctl.phantoms)",
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": int(n),
        "file_ending": ".nii.gz",
        "training": [
            {"image": f"./imagesTr/{name}_0000.nii.gz", "label": f"./labelsTr/{name}.nii.gz"} for name in names
        ],
        "liverctl": {
            "generator": "liverctl.phantoms",
            "generator_version": GENERATOR_VERSION,
            "domain": domain,
            "seed": int(seed),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(base).items() if k != "case"},
        },
    }
    return meta


#: Alias for :func:`phantom` under the name the issue uses.
write_dataset = phantom
