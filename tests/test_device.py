"""Device handling: device strings, precision, autocast, pinned copies, threads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from liverctl import device as dev
from liverctl.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src" / "liverctl"


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: f"Fake GPU {i}")


def test_cpu_and_auto_without_cuda(no_cuda: None) -> None:
    assert dev.resolve_device("cpu") == torch.device("cpu")
    assert dev.resolve_device("auto") == torch.device("cpu")
    assert dev.resolve_device(None) == torch.device("cpu")
    assert dev.resolve_device(" CPU ") == torch.device("cpu")
    assert dev.resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_cuda_is_one_line_config_error(no_cuda: None, spec: str) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available") as info:
        dev.resolve_device(spec)
    assert "\n" not in str(info.value)


def test_auto_and_indices_with_cuda(fake_cuda: None) -> None:
    # "auto" and "cuda" name the index of the current device, so reports and resume keys do too
    assert dev.resolve_device("auto") == torch.device("cuda", 0)
    assert dev.resolve_device("cuda") == torch.device("cuda", 0)
    assert dev.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert dev.device_label(torch.device("cuda", 1)) == "cuda:1 (Fake GPU 1)"
    assert dev.device_label(torch.device("cpu")) == "cpu"
    with pytest.raises(ConfigError, match="only 2 CUDA device"):
        dev.resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu-ish", ""])
def test_unknown_device_strings(spec: str) -> None:
    with pytest.raises(ConfigError):
        dev.resolve_device(spec)


def test_mps_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "mps_available", lambda: False)
    with pytest.raises(ConfigError, match="MPS is not available"):
        dev.resolve_device("mps")


def test_precision_policy() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert dev.resolve_precision(cpu, "auto") == "fp32"
    assert dev.resolve_precision(cuda, "auto") == "fp16"
    assert dev.resolve_precision(cuda, "bf16") == "bf16"
    assert dev.resolve_precision(cpu, "BF16") == "bf16"
    with pytest.raises(ConfigError, match="fp16 is not supported on the CPU"):
        dev.resolve_precision(cpu, "fp16")
    with pytest.raises(ConfigError, match="unknown precision"):
        dev.resolve_precision(cpu, "fp8")


def test_inference_precision_is_fp32_on_the_cpu_even_with_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: True)
    # bf16 flipped bundle decisions on thin margins (issue 10): only on request
    assert dev.resolve_precision(cpu, "auto", inference=True) == "fp32"
    assert dev.resolve_precision(cpu, "bf16", inference=True) == "bf16"
    assert dev.resolve_precision(cpu, "auto") == "fp32"  # training keeps fp32
    assert dev.resolve_precision(cpu, "fp32", inference=True) == "fp32"
    assert dev.resolve_precision(cuda, "auto", inference=True) == "fp16"
    assert dev.resolve_precision(mps, "auto", inference=True) == "fp32"
    assert dev.inference_memory_format(cpu, "bf16") == torch.channels_last_3d
    assert dev.inference_memory_format(cpu, "fp32") == torch.contiguous_format  # no network: nothing to judge
    grouped = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.GroupNorm(2, 4))
    instance = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.InstanceNorm3d(4, affine=True))
    assert dev.inference_memory_format(cpu, "fp32", grouped) == torch.channels_last_3d
    assert dev.inference_memory_format(cpu, "fp32", grouped, channels_last=False) == torch.contiguous_format
    assert dev.inference_memory_format(cpu, "fp32", instance) == torch.contiguous_format  # measured slower
    assert dev.inference_memory_format(cuda, "fp32", grouped) == torch.contiguous_format
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    assert dev.resolve_precision(cpu, "auto", inference=True) == "fp32"


def test_prepare_network_lays_out_weights_and_restores_them() -> None:
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3), torch.nn.Conv2d(4, 2, 3), torch.nn.Linear(3, 3))
    net[0].weight.data = net[0].weight.data.contiguous(memory_format=torch.channels_last_3d)  # a user's layout
    cpu = torch.device("cpu")
    changed = dev.prepare_network(net, cpu, "fp32")
    assert net[0].weight.is_contiguous() and len(changed) == 1
    dev.restore_layout(changed)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    changed = dev.prepare_network(net, cpu, "bf16")
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert net[1].weight.is_contiguous(memory_format=torch.channels_last) and not net[1].weight.is_contiguous()
    dev.restore_layout(changed)
    assert net[1].weight.is_contiguous()
    changed = dev.prepare_network(net, cpu, "fp32", channels_last=True)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    dev.restore_layout(changed)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last_3d)  # the user's layout, as it was


def test_autocast_fp32_is_a_no_op_on_cpu() -> None:
    a = torch.randn(8, 8)
    with dev.autocast(torch.device("cpu"), "auto") as used:
        assert used == "fp32"
        assert not torch.is_autocast_enabled("cpu")
        out = a @ a
    assert out.dtype == torch.float32
    assert torch.equal(out, a @ a)


def test_autocast_bf16_on_cpu() -> None:
    a = torch.randn(8, 8)
    with dev.autocast(torch.device("cpu"), "bf16") as used:
        assert used == "bf16"
        out = a @ a
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), a @ a, rtol=0.05, atol=0.1)


def test_pinning_and_to_device() -> None:
    cpu = torch.device("cpu")
    assert dev.pin_memory_for(cpu) is False
    assert dev.pin_memory_for(torch.device("cuda")) is True
    t = torch.ones(3)
    assert dev.to_device(t, cpu) is t
    dev.synchronize(cpu)  # no-op, must not fail


def test_set_threads_round_trip() -> None:
    before = torch.get_num_threads()
    try:
        dev.set_threads(1)
        assert torch.get_num_threads() == 1
        dev.set_threads(None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError):
        dev.set_threads(-1)


def test_device_config(no_cuda: None) -> None:
    assert dev.DeviceConfig().resolve() == torch.device("cpu")
    with pytest.raises(ConfigError):
        dev.DeviceConfig(device="cpu", precision="fp16").resolve()
    assert dev.describe(torch.device("cpu")).startswith("cpu (")


def test_device_logic_lives_in_one_module() -> None:
    """Only liverctl/device.py may talk to torch.cuda / torch.backends.mps directly."""
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if p.name != "device.py" and ("torch.cuda" in p.read_text() or "torch.backends.mps" in p.read_text())
    ]
    assert offenders == []


@pytest.fixture
def tf32_on():
    """Both TF32 flags on (cuDNN's default; cuBLAS's is off), restored after."""
    before = dev.tf32_flags()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_fp32_on_cuda_turns_tf32_off_and_restores_it(tf32_on: None) -> None:
    cuda = torch.device("cuda", 0)  # no CUDA call is made: the flags are process-wide settings
    with dev.autocast(cuda, "fp32") as used:
        assert used == "fp32"
        assert dev.tf32_flags() == (False, False)
    assert dev.tf32_flags() == (True, True)
    with pytest.raises(RuntimeError), dev.autocast(cuda, "fp32"):
        raise RuntimeError("a failing forward")
    assert dev.tf32_flags() == (True, True)  # restored after an exception too
    assert dev.tf32_during_forward(cuda, "fp32") is False
    assert dev.tf32_during_forward(cuda, "fp16") is True  # ops autocast keeps in float32 may use it
    assert dev.tf32_during_forward(torch.device("cpu"), "fp32") is False


def test_fp32_on_the_cpu_leaves_tf32_flags_alone(tf32_on: None) -> None:
    with dev.autocast(torch.device("cpu"), "fp32"):
        assert dev.tf32_flags() == (True, True)


def test_device_guard_and_empty_cache() -> None:
    guard = dev.device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1  # not entered: no CUDA here
    with dev.device_guard(torch.device("cpu")):
        pass
    dev.empty_cache(torch.device("cpu"))  # a no-op on the CPU
    assert dev.OutOfMemoryError is torch.cuda.OutOfMemoryError


def test_device_config_makes_cuda_n_current(fake_cuda: None, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(torch.device(d)))
    assert dev.DeviceConfig(device="cuda:1").resolve() == torch.device("cuda", 1)
    assert chosen == [torch.device("cuda", 1)]


def test_tests_run_with_cuda_hidden() -> None:
    """The autouse fixture of tests/conftest.py: an unmarked test sees no CUDA, on any machine."""
    import os

    assert getattr(torch.cuda.is_available, "_liverctl_cpu_pin", False)
    assert dev.resolve_device("auto") == torch.device("cpu")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.gpu
def test_gpu_marked_tests_see_the_gpu() -> None:
    device = dev.resolve_device("auto")
    assert device.type == "cuda" and device.index is not None
    assert dev.device_label(device).startswith(f"cuda:{device.index} (")
