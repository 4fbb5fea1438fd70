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
    assert dev.resolve_device("auto") == torch.device("cuda")
    assert dev.resolve_device("cuda:1") == torch.device("cuda", 1)
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
    assert dev.inference_memory_format(cpu, "fp32") == torch.contiguous_format
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
