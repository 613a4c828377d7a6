"""The streaming sliding window: MONAI's result, band by band, with mirror TTA and 2D networks."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from medseg.errors import ConfigError, ModelError
from medseg.inference.window import SlidingWindow, plan_windows

CPU = torch.device("cpu")



def small_network(dimensions: int = 3, channels: int = 2, classes: int = 4, seed: int = 0) -> torch.nn.Module:
    """A random two-layer convolution: not symmetric under flips, so mirroring changes its output."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d if dimensions == 3 else torch.nn.Conv2d
    return torch.nn.Sequential(
        conv(channels, 6, 3, padding=1), torch.nn.Tanh(), conv(6, classes, 3, padding=1)
    ).eval()


def monai_reference(network, image: torch.Tensor, roi, overlap: float, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return sliding_window_inference(image[None], roi, batch_size, network, overlap=overlap, mode="gaussian")[0]


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "batch_size"),
    [
        ((37, 29, 19), (16, 12, 8), 0.5, 3),  # several windows on every axis, last ones shifted back
        ((41, 13, 11), (16, 12, 8), 0.25, 2),
        ((10, 29, 19), (16, 12, 8), 0.5, 1),  # smaller than the window along i: padded
        ((37, 9, 5), (16, 12, 8), 0.6, 4),  # padded along j and k
        ((23, 17, 9), (16, 12, 8), 0.0, 1),
    ],
)
def test_stream_equals_monai_sliding_window(shape, roi, overlap, batch_size):
    network = small_network()
    image = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    expected = monai_reference(network, image, roi, overlap, batch_size)
    window = SlidingWindow(network, roi=roi, overlap=overlap, batch_size=batch_size, device=CPU)
    bands = list(window.stream(image.numpy()))
    # Consecutive bands along i cover every row once.
    assert bands[0].start == 0 and bands[-1].stop == shape[0]
    assert all(a.stop == b.start for a, b in zip(bands, bands[1:]))
    result = np.concatenate([band.scores for band in bands], axis=1)
    assert result.shape == tuple(expected.shape) and result.dtype == np.float32
    np.testing.assert_allclose(result, expected.numpy(), atol=1e-4, rtol=0)


def test_rows_are_handed_out_before_all_windows_ran():
    network = small_network()
    image = torch.randn(2, 60, 14, 10)
    seen = []
    window = SlidingWindow(network, roi=(16, 12, 8), overlap=0.5, batch_size=1, device=CPU)
    done = []
    for band in window.stream(image.numpy(), progress=lambda d, total: done.append((d, total))):
        seen.append((band.start, band.stop, done[-1][0] if done else 0))
    total = done[-1][1]
    first_start, first_stop, windows_run = seen[0]
    assert (first_start, first_stop) == (0, 8) and windows_run < total / 2
    # The band kept is one window deep, not the volume.
    assert window.band_bytes((60, 14, 10), 4) == 4 * 5 * 16 * 14 * 10


def test_mirror_tta_averages_the_flipped_outputs():
    network = small_network()
    image = torch.randn(2, 29, 21, 13, generator=torch.Generator().manual_seed(2))
    roi, axes = (16, 12, 8), (0, 2)

    def mirrored(batch: torch.Tensor) -> torch.Tensor:
        flips = [()] + [tuple(a + 2 for a in c) for n in (1, 2) for c in itertools.combinations(axes, n)]
        outputs = [torch.flip(network(torch.flip(batch, d)), d) if d else network(batch) for d in flips]
        return torch.stack(outputs).mean(0)

    expected = monai_reference(mirrored, image, roi, 0.5, 2)
    plain = monai_reference(network, image, roi, 0.5, 2)
    window = SlidingWindow(network, roi=roi, overlap=0.5, batch_size=2, device=CPU, mirror_axes=axes)
    result = window.logits(image.numpy())
    np.testing.assert_allclose(result.numpy(), expected.numpy(), atol=1e-4, rtol=0)
    assert (result - plain).abs().max() > 1e-2  # the network is not flip-equivariant: mirroring did something


def test_2d_network_runs_slice_by_slice():
    network = small_network(dimensions=2)
    image = torch.randn(2, 37, 25, 7, generator=torch.Generator().manual_seed(3))
    expected = torch.stack(
        [monai_reference(network, image[..., k], (16, 12), 0.5, 1) for k in range(image.shape[-1])], dim=-1
    )
    window = SlidingWindow(network, roi=(16, 12), overlap=0.5, batch_size=1, device=CPU)
    bands = list(window.stream(image.numpy()))
    assert [b.axis for b in bands] == [2] * 7 and [b.start for b in bands] == list(range(7))  # one slice per band
    result = np.concatenate([b.scores for b in bands], axis=3)
    np.testing.assert_allclose(result, expected.numpy(), atol=1e-4, rtol=0)


def test_window_plan_is_monais():
    plan = plan_windows((37, 29, 19), (16, 12, 8), 0.5)
    # MONAI: interval int(16 * 0.5) = 8 along i: 0, 8, 16, then 21 (shifted back to fit).
    assert sorted(set(plan.starts[:, 0].tolist())) == [0, 8, 16, 21]
    assert plan.count == 4 * 4 * 4 and np.all(np.diff(plan.starts[:, 0]) >= 0)
    assert plan_windows((10, 29, 19), (16, 12, 8), 0.5).pad_before == (3, 0, 0)


def test_bad_settings_and_outputs_are_refused():
    network = small_network()
    with pytest.raises(ConfigError, match="overlap"):
        SlidingWindow(network, roi=(16, 12, 8), overlap=1.0, batch_size=1, device=CPU)
    with pytest.raises(ConfigError, match="mirror axes"):
        SlidingWindow(network, roi=(16, 12), overlap=0.5, batch_size=1, device=CPU, mirror_axes=(2,))
    with pytest.raises(ConfigError, match="batch size"):
        SlidingWindow(network, roi=(16, 12, 8), overlap=0.5, batch_size=0, device=CPU)
    shrinking = torch.nn.Conv3d(2, 3, 3).eval()  # no padding: the output is smaller than the window
    window = SlidingWindow(shrinking, roi=(16, 12, 8), overlap=0.5, batch_size=1, device=CPU)
    with pytest.raises(ModelError, match="returned shape"):
        list(window.stream(np.zeros((2, 20, 12, 8), dtype=np.float32)))


def test_a_read_only_memory_mapped_image_is_read_without_copy_or_warning(tmp_path):
    image = np.random.default_rng(4).standard_normal((2, 20, 14, 9)).astype(np.float32)
    np.save(tmp_path / "case.npy", image)
    mapped = np.load(tmp_path / "case.npy", mmap_mode="r")  # as the training cache hands cases out
    window = SlidingWindow(small_network(), roi=(16, 12, 8), overlap=0.5, batch_size=2, device=CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = window.logits(mapped)
    np.testing.assert_array_equal(result.numpy(), window.logits(image).numpy())
