"""Where the network runs: device choice, mixed precision, pinned memory and threads.

This is the one module of liverctl that talks to ``torch.cuda`` (and ``torch.backends.mps``).
Everything else asks it: :func:`resolve_device` turns a user's ``"auto"``, ``"cpu"``,
``"cuda"``, ``"cuda:1"`` or ``"mps"`` into a :class:`torch.device` (or a one-line
:class:`~liverctl.errors.ConfigError`), :func:`autocast` opens the right mixed-precision
context, :func:`pin_memory_for` and :func:`to_device` move host tensors to an accelerator
with pinned memory and non-blocking copies, and :func:`synchronize` makes wall-clock timings
of asynchronous devices honest.

Precision policy (``precision="auto"``):

* CUDA runs the network under float16 autocast (the usual choice for segmentation
  networks, as nnU-Net does).
* The CPU runs in float32, for inference too. ``"bf16"`` (asked for explicitly) runs under
  bfloat16 autocast with channels-last weights (:func:`inference_memory_format`) on a CPU that
  computes bfloat16 in hardware (x86 AVX512-BF16 or AMX, see :func:`cpu_has_native_bf16`): 2.5x
  faster than float32 for MONAI's SegResNet on a 96^3 window, but on a network with thin margins
  its masks agreed with the MONAI bundle's at Dice 0.988 where float32's agreed at 0.9999
  (``tests/predict/test_predict_bundle.py``, ``docs/inference.md``, "Agreement with the bundle"), so it is not the default.
* **Training** stays float32 on the CPU.

``"bf16"`` is allowed on CPU and CUDA, ``"fp16"`` on CUDA and MPS, ``"fp32"`` everywhere; the
precision a run used is in every report.

**fp32 means fp32 on CUDA too**: :func:`autocast` with ``"fp32"`` turns TensorFloat-32 off
(``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32``, the latter
True by default, which would run float32 convolutions with a 10-bit mantissa on Ampere and later)
for the duration of the forward and restores both flags afterwards; :func:`tf32_during_forward`
says what a report records.

**cuda:N**: ``"cuda"`` and ``"auto"`` resolve to the current CUDA device *with its index*
(``cuda:0``), so reports and resume keys name it (:func:`device_label` adds the GPU's name);
:func:`device_guard` makes ``cuda:N`` the current device while liverctl works on it, so
pinned host memory, cuDNN/cuBLAS handles and caches live on GPU N, not GPU 0.

**Out of memory**: :data:`OutOfMemoryError` is ``torch.OutOfMemoryError`` (torch >= 2.5; it
exists in CPU builds too); :func:`empty_cache` gives cached blocks back after one.

>>> from liverctl.device import resolve_device, autocast
>>> dev = resolve_device("cpu")
>>> with autocast(dev, "fp32"):
...     pass
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from liverctl.errors import ConfigError

Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

OutOfMemoryError = torch.OutOfMemoryError
"""What a device raises when it runs out of memory (CUDA's ``torch.cuda.OutOfMemoryError`` is the same class)."""


def cuda_available() -> bool:
    """Whether torch sees at least one CUDA device."""
    return torch.cuda.is_available()


def mps_available() -> bool:
    """Whether torch can use Apple's Metal (MPS) backend."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn a device request into a :class:`torch.device`.

    Args:
        spec: ``"auto"`` (or ``None``: CUDA when available, else the CPU), ``"cpu"``,
            ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a :class:`torch.device`.

    Raises:
        ConfigError: the string is no device, or it names an accelerator this machine lacks.
    """
    if isinstance(spec, torch.device):
        text = str(spec)
    else:
        text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return _indexed(torch.device("cuda")) if cuda_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not cuda_available():
            raise ConfigError(f"device {text!r} requested but CUDA is not available (use --device cpu or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {text!r} requested but only {count} CUDA device(s) exist")
        return _indexed(device)
    if device.type == "mps":
        if not mps_available():
            raise ConfigError(f"device {text!r} requested but Apple MPS is not available (use --device cpu or auto)")
        return torch.device("mps")
    raise ConfigError(f"unsupported device {spec!r}: use auto, cpu, cuda, cuda:N or mps")


def _indexed(device: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:<current device>``: every resolved CUDA device names its index."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (x86 AVX512-BF16 or AMX tiles).

    Without it oneDNN emulates bfloat16, which is slower than float32.
    """
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # an older torch, or a platform without the probe
            continue
    return False


def resolve_precision(device: torch.device, precision: str = "auto", *, inference: bool = False) -> str:
    """The precision actually used on ``device``: ``"fp32"``, ``"fp16"`` or ``"bf16"``.

    Args:
        device: where the network runs.
        precision: ``"auto"``, ``"fp32"``, ``"fp16"`` or ``"bf16"``.
        inference: resolve ``"auto"`` for inference (the same as for training since
            bfloat16 left the CPU default; kept for callers).

    Raises:
        ConfigError: unknown precision, or one the device cannot run (fp16 on the CPU,
            bf16 on MPS).
    """
    precision = str(precision).lower()
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "fp32"  # the CPU: float32 (bf16 only on request, see the module docs)
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision fp16 is not supported on the CPU: use fp32 or bf16")
    if precision == "bf16" and device.type == "mps":
        raise ConfigError("precision bf16 is not supported on MPS: use fp32 or fp16")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str = "auto") -> Iterator[str]:
    """Mixed-precision context for running a network on ``device``.

    Yields the resolved precision (``"fp32"``, ``"fp16"`` or ``"bf16"``). ``"fp32"`` is a
    no-op context; otherwise :func:`torch.autocast` with the matching dtype is entered.
    """
    resolved = resolve_precision(device, precision)
    if resolved == "fp32":
        with tf32_off(device):
            yield resolved
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[resolved]):
        yield resolved


def tf32_flags() -> tuple[bool, bool]:
    """``(torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)`` as they are now."""
    return bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32)


@contextlib.contextmanager
def tf32_off(device: torch.device) -> Iterator[None]:
    """On CUDA, float32 matmuls and convolutions in full float32 (no TensorFloat-32) inside the
    context; both flags are restored afterwards, even after an exception. A no-op elsewhere."""
    if device.type != "cuda":
        yield
        return
    matmul, cudnn = tf32_flags()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def tf32_during_forward(device: torch.device, precision: str) -> bool:
    """Whether TensorFloat-32 could round float32 work in a forward run by :func:`autocast`
    on ``device`` in (resolved) ``precision``: never for ``"fp32"`` (turned off), never off
    CUDA; under fp16/bf16 autocast, the current flags (ops autocast keeps in float32)."""
    if device.type != "cuda" or precision == "fp32":
        return False
    return any(tf32_flags())


def inference_memory_format(
    device: torch.device, precision: str, module: torch.nn.Module | None = None, channels_last: bool = True
) -> torch.memory_format:
    """Memory layout for a network's weights at inference on ``device`` in ``precision``.

    On the CPU, ``torch.channels_last_3d``:

    * for bfloat16 always (oneDNN's fast bfloat16 convolutions work channels-last; 96^3
      SegResNet window: 1.6 s against 2.2 s contiguous);
    * for float32 when ``channels_last`` is asked for and ``module`` has no instance
      normalisation. Measured on a 2-core AVX2 CPU, one 96^3 window, best of 3: the bundle's
      SegResNet (group norm) 2.12 s against 2.75 s, a 5-stage nnU-Net U-Net with batch norm
      1.82 s against 2.35 s, but with instance norm (nnU-Net's) 2.77 s against 2.55 s, slower.
      The sums run in another order: softmax within ~1e-5 of the contiguous layout.

    Else ``torch.contiguous_format`` (CUDA is left as it is, untested here).
    """
    if device.type != "cpu":
        return torch.contiguous_format
    if precision == "bf16":
        return torch.channels_last_3d
    if precision == "fp32" and channels_last and module is not None and not _has_instance_norm(module):
        return torch.channels_last_3d
    return torch.contiguous_format


def _has_instance_norm(module: torch.nn.Module) -> bool:
    norms = (torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d)
    return any(isinstance(m, norms) for m in module.modules())


def prepare_network(
    module: torch.nn.Module, device: torch.device, precision: str, *, channels_last: bool = False
) -> list[tuple[torch.nn.Parameter, torch.memory_format]]:
    """Put ``module`` in eval mode on ``device``, its convolution weights in the layout of
    :func:`inference_memory_format` (5-D weights; the 4-D weights of 2D networks follow as
    ``torch.channels_last``). Changes ``module`` in place; returns the parameters whose
    layout changed with their former layout, for :func:`restore_layout`."""
    module.eval().to(device)
    fmt = inference_memory_format(device, precision, module, channels_last)
    changed = []
    for param in module.parameters():
        if param.dim() == 5:
            want, other = fmt, torch.channels_last_3d
        elif param.dim() == 4:
            want = torch.channels_last if fmt == torch.channels_last_3d else torch.contiguous_format
            other = torch.channels_last
        else:
            continue
        if not param.is_contiguous(memory_format=want):
            before = other if param.is_contiguous(memory_format=other) else torch.contiguous_format
            param.data = param.data.contiguous(memory_format=want)
            changed.append((param, before))
    return changed


def restore_layout(changed: list[tuple[torch.nn.Parameter, torch.memory_format]]) -> None:
    """Give parameters changed by :func:`prepare_network` their former layout back."""
    for param, layout in changed:
        param.data = param.data.contiguous(memory_format=layout)


def pin_memory_for(device: torch.device) -> bool:
    """Whether host tensors bound for ``device`` should live in pinned (page-locked) memory."""
    return device.type == "cuda"


def to_device(tensor: torch.Tensor, device: torch.device, non_blocking: bool | None = None) -> torch.Tensor:
    """Move ``tensor`` to ``device``; host-to-CUDA copies go through pinned memory, non-blocking.

    Args:
        tensor: any tensor.
        device: target device.
        non_blocking: ``None`` = non-blocking exactly when the copy is host -> CUDA.
    """
    if tensor.device == device:
        return tensor
    if non_blocking is None:
        non_blocking = pin_memory_for(device) and tensor.device.type == "cpu"
    with device_guard(device):  # pinned memory is allocated for the current device
        if non_blocking and tensor.device.type == "cpu" and pin_memory_for(device) and not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(device, non_blocking=non_blocking)


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU); use before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def empty_cache(device: torch.device) -> None:
    """Give the cached blocks of ``device``'s allocator back (after an out-of-memory error)."""
    if device.type == "cuda":
        with device_guard(device):
            torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """``cuda:N`` as the current CUDA device inside the context (pinned memory, library handles
    and caches then belong to GPU N); a no-op for other devices and for ``cuda`` without index."""
    if device.type == "cuda" and device.index is not None:
        return torch.cuda.device(device.index)
    return contextlib.nullcontext()


def device_label(device: torch.device) -> str:
    """The device as reports and resume keys name it: ``"cpu"``, ``"mps"`` or
    ``"cuda:0 (NVIDIA H100 80GB HBM3)"`` (index and GPU name)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return device.type


def set_current_device(device: torch.device) -> None:
    """Make ``device`` the current CUDA device of this process (a no-op for other devices)."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def set_threads(n: int | None) -> None:
    """Set torch's intra-op CPU threads (``None`` or 0 leaves torch's default)."""
    if n is None or n == 0:
        return
    if n < 0:
        raise ConfigError(f"threads must be >= 0, got {n}")
    torch.set_num_threads(int(n))


def describe(device: torch.device) -> str:
    """A short human description, e.g. ``"cpu (2 threads)"`` or ``"cuda:0 (NVIDIA H100)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


@dataclass(frozen=True)
class DeviceConfig:
    """Where and how a network runs; options that travel together.

    Attributes:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        precision: ``"auto"``, ``"fp32"``, ``"fp16"`` or ``"bf16"`` (see the module docs).
        threads: CPU threads for torch (``None`` = torch's default).
    """

    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None

    def resolve(self) -> torch.device:
        """Validate everything, apply ``threads``, make a ``cuda:N`` the current CUDA device
        (:func:`set_current_device`) and return the :class:`torch.device`."""
        device = resolve_device(self.device)
        resolve_precision(device, self.precision)
        set_threads(self.threads)
        set_current_device(device)
        return device
