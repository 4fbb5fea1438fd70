"""How ``predict`` runs a network and what it writes: :class:`PredictOptions`.

:attr:`PredictOptions.device_config` bundles the device fields as the
:class:`~liverctl.device.DeviceConfig` that :meth:`liverctl.predict.model.LiverModel.load` takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from liverctl.errors import ConfigError

if TYPE_CHECKING:
    from liverctl.device import DeviceConfig

__all__ = ["PredictOptions"]


@dataclass(frozen=True)
class PredictOptions:
    """How to run the network and what to write; options that travel together.

    Attributes:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        precision: ``"auto"``, ``"fp32"``, ``"fp16"``, ``"bf16"``. ``"auto"``: fp16 autocast on
            CUDA, fp32 on the CPU and MPS; fp32 whenever ``shortcuts`` is off (an nnU-Net folder:
            nnUNetPredictor's precision on the device, fp16 autocast on CUDA). fp32 on CUDA is
            float32 with TF32 off. Reports and the ``--resume`` key hold the resolved precision. ``"bf16"`` on a CPU
            with native bfloat16 is 2.5x faster per window but flips thin decisions (see
            :mod:`liverctl.device`).
        tta: mirror test-time augmentation along all three axes (8 passes).
        overlap: window overlap; ``None`` = the model entry's (0.25 for MONAI's bundle).
        batch_size: windows per forward pass; ``None`` = 4 on an accelerator, 1 on the CPU
            (where batching gains no speed and each window of a 105-class model holds ~0.4 GB).
        shortcuts: skip windows that hold only air, and let ``precision="auto"`` pick mixed
            precision. Every other window is MONAI's, so each voxel of the body gets the
            windows and weights MONAI's ``SlidingWindowInferer`` gives it. ``False``: every
            window, in fp32 unless ``precision`` says otherwise (MONAI's result to float
            rounding).
        fast: also crop to the body and shrink windows to what the volume needs (compute
            amplification ~1.6 instead of MONAI's 3-10). Faster, but the windows hold other
            content than MONAI's, and SegResNet's GroupNorm sees other statistics, so masks
            can differ from MONAI's (see ``docs/benchmarks.md``). Refused without ``shortcuts``.
        postprocess: keep the largest liver component and fill its holes.
        save_probabilities: also write the liver probability map (float32, scan grid).
        dataset: branch of a dataset-wise (DCM) network to use, by dataset name.
        threads: CPU threads for torch (``None`` = torch's default).
        output_format: ``"nii.gz"``, ``"nrrd"``, ``"mha"`` or ``"dicom-seg"``; ``None`` = the
            input's format, NIfTI for DICOM (see :mod:`liverctl.predict.outputs`).
        preview: also write ``<name>_preview.png`` (see :mod:`liverctl.predict.preview`).
        ensemble: how several ``--weights`` / models are combined: ``"mean"`` (the mean of
            their probabilities) or ``"vote"`` (majority vote of their decisions, PIPO-FAN's
            five folds; see :class:`liverctl.inference.SlidingWindow`).
        accumulate_on: where the weighted window sums are kept: ``"device"`` (where the network
            runs) or ``"cpu"`` (less GPU memory; what a batch retries a scan with after a CUDA
            out-of-memory error, see :mod:`liverctl.predict.retry`).
        backend: what runs the network forward on the CPU: ``"auto"`` (of torch and the
            installed compiled runtimes that pass the exactness test, the one measured fastest on
            this machine), ``"torch"``,
            ``"openvino"`` or ``"onnxruntime"`` (``pip install "liverctl[cpu]"``); exact mode
            (``shortcuts=False``) and GPUs always run torch. See :mod:`liverctl.inference.backends`.
    """

    device: str = "auto"
    precision: str = "auto"
    tta: bool = False
    overlap: float | None = None
    batch_size: int | None = None
    shortcuts: bool = True
    fast: bool = False
    postprocess: bool = True
    save_probabilities: bool = False
    dataset: str | None = None
    threads: int | None = None
    output_format: str | None = None
    preview: bool = False
    ensemble: str = "mean"
    accumulate_on: str = "device"
    backend: str = "auto"

    def __post_init__(self) -> None:
        from liverctl.device import PRECISIONS  # torch is imported only when a network runs

        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown --precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.overlap is not None and not 0 <= self.overlap < 1:
            raise ConfigError(f"--overlap must be in [0, 1), got {self.overlap:g}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be 1 or more, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be 1 or more, got {self.threads}")
        if self.fast and not self.shortcuts:
            raise ConfigError(
                "--fast and --exact (--no-shortcuts) contradict each other: --fast crops and shrinks windows, "
                "--exact takes no shortcut; give one of them"
            )
        if self.ensemble not in ("mean", "vote"):
            raise ConfigError(f"--ensemble must be mean or vote, got {self.ensemble!r}")
        if self.accumulate_on not in ("device", "cpu"):
            raise ConfigError(f"accumulate_on must be device or cpu, got {self.accumulate_on!r}")
        from liverctl.inference.backends import check_backend

        check_backend(self.backend)
        from liverctl.predict.outputs import FORMATS

        if self.output_format is not None and self.output_format not in FORMATS:
            raise ConfigError(f"unknown --output-format {self.output_format!r}: use one of {', '.join(FORMATS)}")

    @property
    def device_config(self) -> DeviceConfig:
        """Where and how the network runs (``device``, ``precision``, ``threads``), as
        :meth:`LiverModel.load <liverctl.predict.model.LiverModel.load>` takes it."""
        from liverctl.device import DeviceConfig

        return DeviceConfig(self.device, self.precision, self.threads)

    def result_key(self, runs_as: dict[str, str] | None = None) -> dict[str, Any]:
        """The options that change a mask or a report (not how fast it runs).

        ``runs_as``: the resolved ``precision`` and ``device`` (with a GPU's index and name) of
        the model that runs them (:func:`liverctl.predict.retry.runs_as`); they replace
        ``precision="auto"``, so that ``--resume`` never keeps CPU fp32 masks for a GPU fp16
        run as "the same options" (the keys ``predict`` writes and compares carry them)."""
        keep = (
            "precision",
            "tta",
            "overlap",
            "shortcuts",
            "fast",
            "postprocess",
            "save_probabilities",
            "dataset",
            "ensemble",
            "backend",  # a compiled runtime's probabilities are torch's within 1e-4, not bit for bit
        )
        key = {k: getattr(self, k) for k in keep}
        key.update(runs_as or {})
        return key
