"""One labelled case of a dataset, read and validated for preprocessing.

:func:`read_case` gives the CT scan (the verdict of :mod:`liverctl.io.ct`, as ``predict`` gives
it) and its label map on the same grid; :func:`source_stat` identifies the source files (size
and modification time), so that a rerun knows what changed since.
"""

from __future__ import annotations

from pathlib import Path

from liverctl.errors import DatasetError, LiverctlError
from liverctl.io import Image, check_same_grid, read_label
from liverctl.io.ct import NO_BODY, has_body, read_ct
from liverctl.io.datasets import Case

__all__ = ["read_case", "source_stat"]


def source_stat(case: Case) -> dict[str, int]:
    """Size and modification time (ns) of the case's image and label files that exist."""
    out: dict[str, int] = {}
    for key, path in (("image", case.image_path), ("label", case.label_path)):
        if path is not None and Path(path).is_file():
            st = Path(path).stat()
            out[f"{key}_bytes"], out[f"{key}_mtime_ns"] = int(st.st_size), int(st.st_mtime_ns)
    return out


def read_case(case: Case) -> tuple[Image, Image]:
    """Read and validate a labelled case: a CT scan in HU (:mod:`liverctl.io.ct`, the verdict
    ``predict`` gives) with a body, and a label map on the same grid."""
    if case.label_path is None:
        raise DatasetError(f"case {case.name} has no label map")
    try:
        image, _ = read_ct(case.image_path)
        if not has_body(image):
            raise DatasetError(f"image {Path(case.image_path).name} holds {NO_BODY}; remove it from the dataset")
        label = read_label(case.label_path)
        check_same_grid(image, label, f"image {Path(case.image_path).name}", f"label {Path(case.label_path).name}")
    except LiverctlError as exc:
        raise type(exc)(f"case {case.name}: {exc}") from None
    return image, label
