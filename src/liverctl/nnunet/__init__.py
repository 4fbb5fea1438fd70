"""nnU-Net v2 results folders as liverctl models.

* :mod:`~liverctl.nnunet.plans`: ``plans.json`` / ``dataset.json`` read and validated.
* :mod:`~liverctl.nnunet.checkpoint`: ``checkpoint_final.pth`` loaded safely (sha256 first,
  ``torch.load(weights_only=True)`` with a minimal allowlist).
* :mod:`~liverctl.nnunet.network`: the network built by ``dynamic-network-architectures``.
* :mod:`~liverctl.nnunet.preprocess`, :mod:`~liverctl.nnunet.resampling`: nnU-Net's array
  order, crop, normalisation and resampling.
* :mod:`~liverctl.nnunet.predictor`: sliding window, mirroring, fold mean, export.
* :mod:`~liverctl.nnunet.model`: :class:`NnUNetModel`, the one public entry point.
"""

from liverctl.nnunet.model import NnUNetModel, NnUNetPrediction, available_folds

__all__ = ["NnUNetModel", "NnUNetPrediction", "available_folds"]
