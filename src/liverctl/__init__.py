"""liverctl: liver segmentation in CT, as a command-line toolkit and a Python library.

Importing ``liverctl`` is cheap: submodules (``liverctl.io``, ``liverctl.metrics``,
``liverctl.inference``...) are imported when used, and torch only by the ones that
need it.
"""

from __future__ import annotations

__version__ = "0.1.0"
