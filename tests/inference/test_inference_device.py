"""The engine's device handling (issue 25): one z-slab of input sent to the device at a time,
the resolved device and precision in its stats, TF32 off in fp32; CUDA checks marked gpu."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from liverctl import device as dev
from liverctl.inference import SlidingWindow, sliding_window_inference
from liverctl.inference import engine as eng


class Recorder(torch.nn.Module):
    """A small 3D network that records the TF32 flags and autocast state of each forward."""

    min_input_multiple = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(1, 3, 3, padding=1)
        self.seen: list[tuple[tuple[bool, bool], bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((dev.tf32_flags(), torch.is_autocast_enabled(x.device.type)))
        return self.conv(x)


def test_slab_input_sends_one_z_slab_per_row_of_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    padded = torch.arange(2 * 20 * 9 * 7, dtype=torch.float32).reshape(2, 20, 9, 7)
    sent: list[tuple[int, ...]] = []

    def fake_copy(t: torch.Tensor, device: torch.device) -> torch.Tensor:
        sent.append(tuple(t.shape))
        return t.clone()  # stands in for the device copy

    monkeypatch.setattr(eng, "to_device", fake_copy)
    slabs = eng._SlabInput(padded, (8, 5, 4), torch.device("meta"))  # any device but the input's
    starts = [(z, y, x) for z in (0, 6, 12) for y in (0, 4) for x in (0, 3)]  # z-major, as the engine
    for z, y, x in starts:
        assert torch.equal(slabs.at(z, y, x), padded[:, z : z + 8, y : y + 5, x : x + 4])
    assert sent == [(2, 8, 9, 7)] * 3  # one slab per z start, never the whole padded volume


def test_slab_input_on_the_cpu_is_views_of_the_volume() -> None:
    padded = torch.zeros(1, 10, 6, 6)
    window = eng._SlabInput(padded, (4, 4, 4), torch.device("cpu")).at(2, 1, 0)
    assert window.untyped_storage().data_ptr() == padded.untyped_storage().data_ptr()


def test_stats_name_the_resolved_device_and_precision() -> None:
    vol = np.random.default_rng(0).normal(size=(20, 24, 28)).astype(np.float32)
    net = Recorder()
    on_device = sliding_window_inference(vol, net, SlidingWindow(roi=(16, 16, 16), argmax=True), "cpu")
    stats = on_device.stats
    assert (stats.device, stats.precision, stats.tf32, stats.accumulate_on) == ("cpu", "fp32", False, "device")
    on_cpu = sliding_window_inference(
        vol, net, SlidingWindow(roi=(16, 16, 16), argmax=True, accumulate_on="cpu"), "cpu"
    )
    assert on_cpu.stats.accumulate_on == "cpu"
    assert np.array_equal(on_cpu.probabilities, on_device.probabilities)


@pytest.mark.gpu
def test_cuda_fp32_is_float32_and_matches_the_cpu() -> None:
    vol = np.random.default_rng(1).normal(size=(40, 48, 56)).astype(np.float32)
    cfg = SlidingWindow(roi=(32, 32, 32), precision="fp32", argmax=True)
    cpu = sliding_window_inference(vol, Recorder(), cfg, "cpu")
    net = Recorder()
    before = dev.tf32_flags()
    gpu = sliding_window_inference(vol, net, cfg, "cuda")
    assert all(flags == (False, False) and not amp for flags, amp in net.seen)  # TF32 off in every forward
    assert dev.tf32_flags() == before  # and restored after
    assert gpu.stats.device.startswith("cuda:") and "(" in gpu.stats.device and gpu.stats.tf32 is False
    np.testing.assert_allclose(gpu.probabilities, cpu.probabilities, rtol=0, atol=1e-5)
    assert np.array_equal(gpu.labels, cpu.labels)


@pytest.mark.gpu
def test_cuda_auto_is_fp16_autocast_and_close_to_the_cpu() -> None:
    vol = np.random.default_rng(2).normal(size=(40, 48, 56)).astype(np.float32)
    cpu = sliding_window_inference(vol, Recorder(), SlidingWindow(roi=(32, 32, 32)), "cpu")
    net = Recorder()
    gpu = sliding_window_inference(vol, net, SlidingWindow(roi=(32, 32, 32)), "cuda")
    assert gpu.stats.precision == "fp16" and all(amp for _, amp in net.seen)
    np.testing.assert_allclose(gpu.probabilities, cpu.probabilities, rtol=0, atol=5e-3)
