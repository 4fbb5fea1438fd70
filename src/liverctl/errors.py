"""Exceptions and warnings that liverctl raises on purpose.

Every problem a user can cause (a missing file, a 4D image, a mask whose geometry does
not match its reference...) is raised as a :class:`LiverctlError` subclass whose message
is one self-contained line. The CLI prints that line and exits non-zero; a Python user
catches the exception. Anything else that escapes is a bug.
"""

from __future__ import annotations


class LiverctlError(Exception):
    """Base class of all expected, user-facing errors. ``str(err)`` is one line."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class InputError(LiverctlError):
    """A file or folder given by the user is missing, unreadable or of the wrong kind."""


class ImageFormatError(InputError):
    """An image could be read but is not what the command needs (2D, 4D, NaNs, ...)."""


class LabelError(InputError):
    """A label map holds values a label map cannot hold (floats, negatives, ...)."""


class GeometryError(LiverctlError):
    """Two images that must share a voxel grid do not."""


class DatasetError(LiverctlError):
    """A dataset folder is empty, inconsistent or in no layout liverctl knows."""


class WeightsError(LiverctlError):
    """Model weights are unknown, unavailable, corrupt or do not fit the architecture."""


class ConfigError(LiverctlError):
    """An option value, or a combination of options, is invalid."""


class LiverctlWarning(UserWarning):
    """A condition the user should know about but that does not stop the work."""
