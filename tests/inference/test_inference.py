"""Sliding-window engine: agreement with MONAI, shortcuts, TTA, ensembles, body crop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from liverctl.errors import ConfigError, InputError
from liverctl.inference import (
    SlidingWindow,
    crop_to_body,
    importance_map,
    plan_axis,
    predict_volume,
    sliding_window_inference,
    uncrop,
    window_starts,
)

monai_inferers = pytest.importorskip("monai.inferers")
monai_data_utils = pytest.importorskip("monai.data.utils")
monai_nets = pytest.importorskip("monai.networks.nets")


def small_net(out_channels: int = 3, seed: int = 0, norm: bool = True) -> torch.nn.Module:
    """A tiny conv net; with GroupNorm its output depends on the whole window, like SegResNet's."""
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = [torch.nn.Conv3d(1, 4, 3, padding=1)]
    if norm:
        layers.append(torch.nn.GroupNorm(2, 4))
    layers += [torch.nn.ReLU(), torch.nn.Conv3d(4, out_channels, 3, padding=1)]
    return torch.nn.Sequential(*layers).eval()


def monai_logits(volume: torch.Tensor, net, roi, overlap=0.25, mode="gaussian", sigma_scale=0.125) -> np.ndarray:
    with torch.inference_mode():
        out = monai_inferers.sliding_window_inference(
            volume[None], roi, 1, net, overlap=overlap, mode=mode, sigma_scale=sigma_scale
        )
    return out[0].numpy()


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


# --------------------------------------------------------------------------- MONAI equivalence


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "mode", "sigma"),
    [
        ((13, 41, 37), (16, 24, 20), 0.25, "gaussian", 0.125),  # smaller than roi in z, larger in y, x
        ((45, 19, 30), (16, 24, 20), 0.5, "gaussian", 0.25),  # several z rows (several slabs), y padded
        ((33, 29, 23), (16, 16, 16), 0.25, "constant", 0.125),
        ((16, 24, 20), (16, 24, 20), 0.25, "gaussian", 0.125),  # exactly one window
    ],
)
def test_shortcuts_off_equals_monai(shape, roi, overlap, mode, sigma) -> None:
    net = small_net()
    vol = torch.randn(1, *shape, generator=torch.Generator().manual_seed(1))
    ref = monai_logits(vol, net, roi, overlap, mode, sigma)
    cfg = SlidingWindow.monai(roi=roi, overlap=overlap, mode=mode, sigma_scale=sigma, batch_size=3, output="logits")
    res = sliding_window_inference(vol, net, cfg, "cpu")
    assert res.logits is not None and res.probabilities is None
    np.testing.assert_allclose(res.logits, ref, atol=1e-5, rtol=0)
    prob = sliding_window_inference(
        vol.numpy(),
        net,
        SlidingWindow.monai(roi=roi, overlap=overlap, mode=mode, sigma_scale=sigma, argmax=True),
        "cpu",
    )
    np.testing.assert_allclose(prob.probabilities, softmax(ref), atol=1e-5, rtol=0)
    assert np.array_equal(prob.labels, softmax(ref).argmax(0))


def test_shortcuts_off_equals_monai_segresnet() -> None:
    torch.manual_seed(3)
    net = monai_nets.SegResNet(
        spatial_dims=3, in_channels=1, out_channels=6, init_filters=8, blocks_down=(1, 2), blocks_up=(1,)
    ).eval()
    vol = torch.randn(1, 11, 30, 21, generator=torch.Generator().manual_seed(2))
    ref = softmax(monai_logits(vol, net, (16, 16, 16)))
    res = sliding_window_inference(vol, net, SlidingWindow.monai(roi=(16, 16, 16), channels=(5,)), "cpu")
    assert res.channels == (5,) and res.probabilities.shape == (1, 11, 30, 21)
    np.testing.assert_allclose(res.channel(5), ref[5], atol=1e-5, rtol=0)


@pytest.mark.parametrize("padding_mode", ["replicate", "reflect"])
def test_padding_modes_equal_monai(padding_mode: str) -> None:
    net = small_net()
    vol = torch.randn(1, 9, 41, 30, generator=torch.Generator().manual_seed(4))  # z and x smaller than the roi
    with torch.inference_mode():
        ref = monai_inferers.sliding_window_inference(
            vol[None], (16, 24, 32), 1, net, overlap=0.25, mode="gaussian", padding_mode=padding_mode
        )[0].numpy()
    cfg = SlidingWindow.monai(roi=(16, 24, 32), padding_mode=padding_mode, output="logits")
    res = sliding_window_inference(vol, net, cfg, "cpu")
    np.testing.assert_allclose(res.logits, ref, atol=1e-5, rtol=0)
    constant = sliding_window_inference(vol, net, SlidingWindow.monai(roi=(16, 24, 32), output="logits"), "cpu")
    assert np.abs(constant.logits - ref).max() > 1e-3  # the padding mode matters here


def test_importance_map_matches_monai() -> None:
    for size, mode, sigma in [
        ((96, 96, 96), "gaussian", 0.125),
        ((32, 64, 48), "gaussian", 0.125),
        ((7, 10, 5), "gaussian", 0.3),
        ((4, 5, 6), "constant", 0.125),
    ]:
        ref = monai_data_utils.compute_importance_map(size, mode=mode, sigma_scale=sigma, device="cpu")
        ours = importance_map(size, mode, sigma)
        assert ours.dtype == torch.float32 and ours.shape == size
        torch.testing.assert_close(ours, ref, atol=0, rtol=0)
    assert importance_map((96, 96, 96)).min().item() == pytest.approx(1e-3)  # corners clamped


@settings(max_examples=80, deadline=None)
@given(size=st.integers(1, 300), window=st.integers(1, 120), overlap=st.sampled_from([0.0, 0.25, 0.5, 0.7]))
def test_window_starts_match_monai(size: int, window: int, overlap: float) -> None:
    padded = max(size, window)
    slices = monai_data_utils.dense_patch_slices(
        (padded,), (window,), monai_inferers.utils._get_scan_interval((padded,), (window,), 1, (overlap,))
    )
    assert window_starts(padded, window, overlap) == [s[0].start for s in slices]


# --------------------------------------------------------------------------- shortcuts


def test_plan_axis_by_hand() -> None:
    # 30 slices, multiple 8: one window of 32 (MONAI pads to 96)
    assert plan_axis(30, 96, 0.25, 8) == (32, 32)
    assert plan_axis(30, 96, 0.25, 8, adaptive=False) == (96, 96)
    # 122: two windows of 72 (starts 0, 50: 144 voxels) beat two of 96 (192)
    assert plan_axis(122, 96, 0.25, 8) == (72, 122)
    assert window_starts(122, 72, 0.25) == [0, 50]
    # 101: two windows of 64 (starts 0, 37)
    assert plan_axis(101, 96, 0.25, 8) == (64, 101)
    # 300: four windows of 96 (384) beat five of 80 (400)
    assert plan_axis(300, 96, 0.25, 8) == (96, 300)
    assert plan_axis(96, 96, 0.25, 16) == (96, 96)


def test_adaptive_windows_compute_less_and_agree() -> None:
    net = small_net(norm=False)  # purely local: window size changes only the window borders
    vol = torch.randn(1, 20, 70, 52, generator=torch.Generator().manual_seed(4))
    exact = sliding_window_inference(vol, net, SlidingWindow.monai(roi=(48, 48, 48), argmax=True), "cpu")
    fast = sliding_window_inference(
        vol, net, SlidingWindow.fast(roi=(48, 48, 48), min_input_multiple=8, argmax=True), "cpu"
    )
    s_exact, s_fast = exact.stats, fast.stats
    assert s_exact.window == (48, 48, 48) and s_exact.windows == 4  # z padded to 48; y, x: 2 starts each
    assert s_fast.window == (24, 40, 32)
    assert s_fast.evaluated_voxels == s_fast.windows * 24 * 40 * 32
    assert s_fast.compute_amplification == pytest.approx(s_fast.evaluated_voxels / (20 * 70 * 52))
    assert s_fast.compute_amplification < s_exact.compute_amplification / 3
    assert np.abs(fast.probabilities - exact.probabilities).mean() < 2e-3
    assert (fast.labels == exact.labels).mean() > 0.98


def test_batch_size_does_not_change_results() -> None:
    net = small_net()
    vol = torch.randn(1, 40, 33, 29, generator=torch.Generator().manual_seed(5))
    results = [
        sliding_window_inference(vol, net, SlidingWindow(roi=(16, 16, 16), batch_size=b, min_input_multiple=4), "cpu")
        for b in (1, 4, 7)
    ]
    assert results[0].stats.forward_passes == results[0].stats.windows
    for other in results[1:]:
        np.testing.assert_allclose(other.probabilities, results[0].probabilities, atol=1e-6, rtol=0)


def _body_phantom(pad: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, tuple[slice, ...]]:
    rng = np.random.default_rng(6)
    body = rng.normal(40, 60, size=(18, 30, 26)).astype(np.float32)  # soft tissue, all > -500 HU
    hu = np.pad(body, [(p, p) for p in pad], constant_values=-1000.0)
    inner = tuple(slice(p, p + n) for p, n in zip(pad, body.shape, strict=True))
    return body, hu, inner


def test_body_crop_box_by_hand() -> None:
    _, hu, inner = _body_phantom((3, 7, 5))
    assert crop_to_body(hu, -500, margin=0) == inner
    grown = crop_to_body(hu, -500, margin=2)
    assert grown == tuple(slice(s.start - 2, s.stop + 2) for s in inner)
    assert crop_to_body(hu, -500, margin=50) == tuple(slice(0, n) for n in hu.shape)
    speck = hu.copy()
    speck[0, 0:2, 0:2] = 500.0  # 4 bright voxels in the air: smoothed away
    assert crop_to_body(speck, -500, margin=0) == inner
    assert crop_to_body(np.full((5, 6, 7), -1000.0), -500) is None


def test_body_crop_gives_the_same_probabilities_inside() -> None:
    body, hu, inner = _body_phantom((3, 7, 5))
    net = small_net()
    cfg = SlidingWindow.fast(roi=(16, 16, 16), body_margin=0, min_input_multiple=4, argmax=True)
    ref = sliding_window_inference(body / 100.0, net, cfg, "cpu", hu=body)
    res = sliding_window_inference(hu / 100.0, net, cfg, "cpu", hu=hu)
    assert res.stats.body_box == tuple((s.start, s.stop) for s in inner)
    assert res.stats.cropped_shape == body.shape
    assert res.stats.evaluated_voxels == ref.stats.evaluated_voxels
    np.testing.assert_allclose(res.probabilities[(slice(None), *inner)], ref.probabilities, atol=1e-6, rtol=0)
    outside = np.ones(hu.shape, bool)
    outside[inner] = False
    assert np.all(res.probabilities[0][outside] == 1.0) and np.all(res.probabilities[1:][:, outside] == 0.0)
    assert np.all(res.labels[outside] == 0)
    # a given box wins over the HU image; no HU and no box: no crop
    boxed = sliding_window_inference(hu / 100.0, net, cfg, "cpu", body_box=inner)
    np.testing.assert_array_equal(boxed.probabilities, res.probabilities)
    assert sliding_window_inference(hu / 100.0, net, cfg, "cpu").stats.body_box is None


def test_uncrop_round_trip() -> None:
    values = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    box = (slice(1, 4), slice(2, 6), slice(0, 5))
    full = uncrop(values, box, (6, 7, 5), fill=[1.0, 0.0])
    assert full.shape == (2, 6, 7, 5)
    np.testing.assert_array_equal(full[(slice(None), *box)], values)
    assert full[0, 0].min() == 1.0 and full[1, 5].max() == 0.0
    assert full[0].sum() == values[0].sum() + (6 * 7 * 5 - 3 * 4 * 5)
    single = uncrop(values[0], box, (6, 7, 5), fill=-1.0)
    assert single.shape == (6, 7, 5) and (single == -1).sum() == 6 * 7 * 5 - 60


def test_body_crop_on_real_ct_contains_the_liver(ct_path, liver_path) -> None:
    from liverctl.io import read_image, read_label

    ct = read_image(ct_path).array
    liver = read_label(liver_path).array > 0
    box = crop_to_body(ct, -500, margin=0)
    assert box is not None
    inside = np.zeros_like(liver)
    inside[box] = True
    assert liver[~inside].sum() == 0 and liver.sum() == 39350
    assert np.prod([s.stop - s.start for s in box]) < ct.size  # some air was cut


# --------------------------------------------------------------------------- air windows, layouts, bf16


def _air_padded_body() -> np.ndarray:
    """Soft tissue (all > -500 HU) in the far corner of a large air volume."""
    rng = np.random.default_rng(12)
    hu = np.full((30, 60, 70), -1000.0, np.float32)
    inner = (slice(14, 30), slice(38, 60), slice(45, 70))
    hu[inner] = rng.normal(40, 60, size=(16, 22, 25))
    return hu


def test_skipping_air_windows_is_exact_on_every_voxel_a_kept_window_covers() -> None:
    hu = _air_padded_body()
    net = small_net()  # GroupNorm: a window's output depends on all it holds
    vol = hu / 100.0
    every = sliding_window_inference(vol, net, SlidingWindow.monai(roi=(16, 16, 16), argmax=True), "cpu", hu=hu)
    skip = sliding_window_inference(
        vol, net, SlidingWindow.monai(roi=(16, 16, 16), argmax=True, skip_empty=True), "cpu", hu=hu
    )
    assert every.stats.skipped_windows == 0
    assert skip.stats.skipped_windows > 0
    assert skip.stats.windows + skip.stats.skipped_windows == every.stats.windows
    assert skip.stats.evaluated_voxels < every.stats.evaluated_voxels
    # a body voxel is never covered by a skipped window: same windows, same weights, same result
    body = hu > -500
    np.testing.assert_allclose(skip.probabilities[:, body], every.probabilities[:, body], atol=1e-6, rtol=0)
    assert np.array_equal(skip.labels[body], every.labels[body])
    # voxels no kept window covers are background; the rest are valid probabilities
    assert np.isfinite(skip.probabilities).all()
    np.testing.assert_allclose(skip.probabilities.sum(0), 1.0, atol=1e-5)
    uncovered = skip.probabilities[0] == 1.0
    assert uncovered.sum() > 0 and np.all(skip.labels[uncovered] == 0)
    # without the HU image nothing is skipped
    assert sliding_window_inference(vol, net, SlidingWindow(roi=(16, 16, 16)), "cpu").stats.skipped_windows == 0


def test_an_all_air_volume_costs_one_window() -> None:
    hu = np.full((20, 40, 40), -1000.0, np.float32)
    res = sliding_window_inference(hu / 1000.0, small_net(), SlidingWindow(roi=(16, 16, 16), argmax=True), "cpu", hu=hu)
    assert res.stats.windows == 1 and res.stats.skipped_windows > 0
    assert np.isfinite(res.probabilities).all() and res.probabilities.shape == (3, 20, 40, 40)


def test_channels_last_logits_accumulate_like_contiguous_ones() -> None:
    net = small_net(out_channels=5)
    vol = torch.randn(1, 23, 30, 27, generator=torch.Generator().manual_seed(13))

    def channels_last(x: torch.Tensor) -> torch.Tensor:
        out = net(x).contiguous(memory_format=torch.channels_last_3d)
        assert not out.is_contiguous()
        return out

    for cfg in (
        SlidingWindow(roi=(16, 16, 16), argmax=True, channels=(4, 1)),
        SlidingWindow(roi=(16, 16, 16), output="logits"),
    ):
        plain = sliding_window_inference(vol, net, cfg, "cpu")
        last = sliding_window_inference(vol, channels_last, cfg, "cpu")
        values = (
            (plain.probabilities, last.probabilities) if cfg.output == "probabilities" else (plain.logits, last.logits)
        )
        np.testing.assert_allclose(values[1], values[0], atol=1e-5, rtol=0)
        if cfg.argmax:
            assert np.array_equal(last.labels, plain.labels)


def test_bf16_on_the_cpu_is_close_to_fp32_and_leaves_the_weights_as_they_were() -> None:
    net = small_net(out_channels=3, norm=True)
    before = [p.detach().clone() for p in net.parameters()]
    vol = torch.randn(1, 20, 24, 28, generator=torch.Generator().manual_seed(14))
    fp32 = sliding_window_inference(vol, net, SlidingWindow(roi=(16, 16, 16), precision="fp32"), "cpu")
    bf16 = sliding_window_inference(vol, net, SlidingWindow(roi=(16, 16, 16), precision="bf16"), "cpu")
    assert fp32.stats.precision == "fp32" and bf16.stats.precision == "bf16"
    assert np.abs(bf16.probabilities - fp32.probabilities).max() < 0.05
    assert not np.array_equal(bf16.probabilities, fp32.probabilities)  # bf16 really ran
    for p, q in zip(net.parameters(), before, strict=True):
        assert p.is_contiguous() and torch.equal(p, q)


def _segresnet(seed: int, out_channels: int = 6):
    from liverctl.models import build_model

    torch.manual_seed(seed)
    return build_model(
        "segresnet", init_filters=8, out_channels=out_channels, blocks_down=(1, 2, 2), blocks_up=(1, 1)
    ).eval()


@pytest.mark.parametrize("tta", [False, True])
def test_blending_features_before_the_pointwise_head_gives_the_same_result(tta: bool) -> None:
    a, b = _segresnet(1), _segresnet(2)
    vol = torch.randn(1, 20, 37, 29, generator=torch.Generator().manual_seed(15))
    for models in ([a], [a, b]):
        for output in ("probabilities", "logits"):
            cfg = SlidingWindow(roi=(16, 24, 16), tta=tta, argmax=True, output=output, precision="fp32")
            blended = predict_volume(vol, models, cfg, "cpu")
            plain = predict_volume(vol, models, SlidingWindow(**{**cfg.__dict__, "pointwise_head": False}), "cpu")
            got = blended.probabilities if output == "probabilities" else blended.logits
            want = plain.probabilities if output == "probabilities" else plain.logits
            np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
            assert np.array_equal(blended.labels, plain.labels)


def test_pointwise_head_matches_monai_and_bf16_stays_close() -> None:
    net = _segresnet(3)
    vol = torch.randn(1, 30, 40, 36, generator=torch.Generator().manual_seed(16))
    cfg = SlidingWindow(roi=(16, 24, 16), channels=(1, 4), argmax=True)
    ref = softmax(monai_logits(vol, net, (16, 24, 16)))
    fp32 = predict_volume(vol, [net], SlidingWindow(**{**cfg.__dict__, "precision": "fp32"}), "cpu")
    np.testing.assert_allclose(fp32.probabilities, ref[[1, 4]], atol=1e-5, rtol=0)
    assert np.array_equal(fp32.labels, ref.argmax(0))
    bf16 = predict_volume(vol, [net], SlidingWindow(**{**cfg.__dict__, "precision": "bf16"}), "cpu")
    assert bf16.stats.precision == "bf16"
    assert np.abs(bf16.probabilities - ref[[1, 4]]).max() < 0.1
    assert (bf16.labels == ref.argmax(0)).mean() > 0.95


# --------------------------------------------------------------------------- TTA, ensembles, outputs


def test_tta_with_flip_equivariant_model_equals_no_tta() -> None:
    torch.manual_seed(7)
    conv = torch.nn.Conv3d(1, 3, 3, padding=1)
    with torch.no_grad():  # a kernel symmetric in z, y and x makes the conv flip-equivariant
        w = conv.weight
        conv.weight.copy_(
            sum(torch.flip(w, [d + 2 for d in ax]) for r in range(4) for ax in itertools.combinations(range(3), r)) / 8
        )
    vol = torch.randn(1, 21, 30, 26, generator=torch.Generator().manual_seed(8))
    plain = sliding_window_inference(vol, conv, SlidingWindow(roi=(16, 16, 16)), "cpu")
    tta = sliding_window_inference(vol, conv, SlidingWindow(roi=(16, 16, 16), tta=True), "cpu")
    assert tta.stats.forward_passes == 8 * plain.stats.forward_passes
    assert tta.stats.compute_amplification == pytest.approx(8 * plain.stats.compute_amplification)
    np.testing.assert_allclose(tta.probabilities, plain.probabilities, atol=1e-6, rtol=0)


def test_tta_averages_mirrored_logits() -> None:
    net = small_net()
    vol = torch.randn(1, 8, 12, 16, generator=torch.Generator().manual_seed(9))
    cfg = SlidingWindow(roi=(8, 12, 16), tta=(1, 2), output="logits", min_input_multiple=4, precision="fp32")
    res = sliding_window_inference(vol, net, cfg, "cpu")
    with torch.no_grad():
        x = vol[None]
        expected = sum(torch.flip(net(torch.flip(x, d)), d) for d in ([], [3], [4], [3, 4])) / 4
    np.testing.assert_allclose(res.logits, expected[0].numpy(), atol=1e-5, rtol=0)


def test_ensemble_is_the_mean_of_probabilities() -> None:
    a, b = small_net(seed=1), small_net(seed=2)
    vol = torch.randn(1, 20, 25, 18, generator=torch.Generator().manual_seed(10))
    cfg = SlidingWindow(roi=(16, 16, 16), argmax=True)
    pa = sliding_window_inference(vol, a, cfg, "cpu").probabilities
    pb = sliding_window_inference(vol, b, cfg, "cpu").probabilities
    both = predict_volume(vol, [a, b], cfg, "cpu")
    np.testing.assert_allclose(both.probabilities, (pa + pb) / 2, atol=1e-6, rtol=0)
    assert np.array_equal(both.labels, ((pa + pb) / 2).argmax(0))
    assert both.stats.forward_passes == 2 * both.stats.windows
    assert abs(both.probabilities.sum(0) - 1).max() < 1e-5


def test_channel_selection_and_sigmoid() -> None:
    net = small_net(out_channels=4)
    vol = torch.randn(1, 19, 22, 17, generator=torch.Generator().manual_seed(11))
    full = sliding_window_inference(vol, net, SlidingWindow(roi=(16, 16, 16), argmax=True), "cpu")
    part = sliding_window_inference(vol, net, SlidingWindow(roi=(16, 16, 16), channels=(3, 1), argmax=True), "cpu")
    np.testing.assert_array_equal(part.probabilities, full.probabilities[[3, 1]])
    np.testing.assert_array_equal(part.labels, full.labels)
    np.testing.assert_array_equal(part.mask(3), full.probabilities.argmax(0) == 3)
    with pytest.raises(ConfigError, match="not kept"):
        part.channel(0)
    logits = sliding_window_inference(vol, net, SlidingWindow(roi=(16, 16, 16), output="logits"), "cpu").logits
    sig = sliding_window_inference(vol, net, SlidingWindow(roi=(16, 16, 16), activation="sigmoid"), "cpu")
    np.testing.assert_allclose(sig.probabilities, 1 / (1 + np.exp(-logits)), atol=1e-6)


class _Recorder(torch.nn.Module):
    """Records the autograd state it runs under."""

    spatial_dims = 3
    min_input_multiple = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 1)
        self.seen: list[tuple[bool, bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        self.seen.append((torch.is_inference_mode_enabled(), out.requires_grad, self.training))
        return out


def test_runs_in_inference_mode_and_restores_training_flag() -> None:
    net = _Recorder().train()
    progress_calls: list[tuple[str, int, int | None]] = []
    res = sliding_window_inference(
        torch.randn(1, 10, 10, 10),
        net,
        SlidingWindow.fast(roi=(8, 8, 8)),
        "cpu",
        progress=lambda *a: progress_calls.append(a),
    )
    assert net.seen and all(s == (True, False, False) for s in net.seen)
    assert net.training  # restored
    # adaptive windows: along 10 voxels, three windows of 4 (12 voxels) beat two of 8 (16)
    assert res.stats.window == (4, 4, 4) and res.stats.windows == 27
    assert progress_calls[0] == ("sliding window", 0, 27) and progress_calls[-1] == ("sliding window", 27, 27)
    assert 0 < res.stats.network_seconds <= res.stats.total_seconds


def test_2d_model_runs_slice_by_slice() -> None:
    torch.manual_seed(12)
    net2d = torch.nn.Conv2d(1, 3, 3, padding=1).eval()
    net2d.spatial_dims = 2
    vol = torch.randn(1, 6, 16, 16, generator=torch.Generator().manual_seed(13))
    res = sliding_window_inference(
        vol, net2d, SlidingWindow(roi=(6, 16, 16), min_input_multiple=8, output="logits", precision="fp32"), "cpu"
    )
    with torch.no_grad():
        expected = net2d(vol[0][:, None]).permute(1, 0, 2, 3)
    np.testing.assert_allclose(res.logits, expected.numpy(), atol=1e-5, rtol=0)


def test_bad_inputs_and_options() -> None:
    net = small_net()
    with pytest.raises(ConfigError):
        SlidingWindow(overlap=1.0)
    with pytest.raises(ConfigError):
        SlidingWindow(roi=(96, 0, 96))
    with pytest.raises(ConfigError):
        SlidingWindow(tta=(3,))
    with pytest.raises(ConfigError):
        SlidingWindow(mode="median")
    with pytest.raises(InputError):
        sliding_window_inference(np.zeros((1, 1, 4, 4, 4), np.float32), net, SlidingWindow(roi=(4, 4, 4)), "cpu")
    with pytest.raises(ConfigError, match="out of range"):
        sliding_window_inference(
            np.zeros((8, 8, 8), np.float32), net, SlidingWindow(roi=(8, 8, 8), channels=(7,)), "cpu"
        )
    with pytest.raises(ConfigError, match=r"\(B, K, z, y, x\)"):
        sliding_window_inference(
            np.zeros((8, 8, 8), np.float32), lambda x: x.mean(dim=(2, 3, 4)), SlidingWindow(roi=(8, 8, 8)), "cpu"
        )
    with pytest.raises(ConfigError, match="CUDA"):
        sliding_window_inference(np.zeros((8, 8, 8), np.float32), net, SlidingWindow(roi=(8, 8, 8)), "cuda:7")
