"""Images and files: reading and writing scans and masks with their geometry, DICOM series and
DICOM-SEG objects, the inputs a command is given, the datasets ``preprocess`` reads, and the
manifest of the files liverctl wrote.

=========================  =====================================================================
module                     concept
=========================  =====================================================================
:mod:`~.image`             :class:`Image` (array (z, y, x)) and its :class:`Geometry` (x, y, z)
:mod:`~.files`             image suffixes, folder listings, output-path checks, atomic writes
:mod:`~.checks`            what every reader checks, ITK's errors on one line
:mod:`~.images`            :func:`read_image`, :func:`read_label`, :func:`write_image`, :func:`write_mask`
:mod:`~.nifti`             NIfTI header checks ITK skips (truncation, hidden NaN, stored affine)
:mod:`~.dicom`             DICOM series folders
:mod:`~.dicom_seg`         DICOM Segmentation objects (highdicom)
:mod:`~.inputs`            what a command was given: files, folders, series, zips
:mod:`~.ct`                is this image a CT scan in HU
:mod:`~.datasets`          labelled dataset folders (images + labels)
:mod:`~.manifest`          which files in an output folder liverctl wrote
=========================  =====================================================================

The names below are this package's public API; modules inside the package import from the
module that defines a name, never from here.
"""

from __future__ import annotations

from liverctl.io.files import (
    IMAGE_SUFFIXES,
    atomic_path,
    check_not_input,
    check_not_input_folder,
    check_output_suffix,
    check_writable,
    image_stem,
    image_suffix,
    is_image_file,
    list_images,
    write_bytes_atomic,
    write_text_atomic,
)
from liverctl.io.image import DIRECTION_ATOL, ORIGIN_ATOL_MM, SPACING_RTOL, Geometry, Image, check_same_grid
from liverctl.io.images import as_label_array, read_image, read_label, write_image, write_mask

__all__ = [
    "DIRECTION_ATOL",
    "IMAGE_SUFFIXES",
    "ORIGIN_ATOL_MM",
    "SPACING_RTOL",
    "Geometry",
    "Image",
    "as_label_array",
    "atomic_path",
    "check_not_input",
    "check_not_input_folder",
    "check_output_suffix",
    "check_same_grid",
    "check_writable",
    "image_stem",
    "image_suffix",
    "is_image_file",
    "list_images",
    "read_image",
    "read_label",
    "write_bytes_atomic",
    "write_image",
    "write_mask",
    "write_text_atomic",
]
