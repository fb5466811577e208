"""Sliding-window and test-time-augmented inference: exact where they must be exact."""

from __future__ import annotations

import pytest
import torch

from seglab.errors import InputError
from seglab.inference import Inferer, slide
from seglab.models.unet import UNet


@pytest.fixture(scope="module")
def unet() -> UNet:
    torch.manual_seed(0)
    net = UNet(5, depth=2, base_channels=8).eval()
    for m in net.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    return net


@torch.no_grad()
def test_slide_equals_whole_when_the_window_covers_the_image(unet):
    x = torch.randn(2, 3, 37, 50)
    whole = unet(x)
    for window in [(37, 50), 64, (40, 200)]:
        for blend in ("mean", "gaussian"):
            got = slide(unet, x, window, overlap=0.5, blend=blend)
            assert torch.allclose(got, whole, rtol=0, atol=1e-5)


@torch.no_grad()
def test_overlapping_windows_of_a_pointwise_net_equal_the_whole_image():
    """A 1x1-conv net sees only its pixel, so every window agrees: blending must give back
    exactly the whole-image logits, for any window, overlap and blend."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    x = torch.randn(1, 3, 45, 70)
    for window, overlap, blend in [(16, 0.5, "mean"), ((20, 33), 0.25, "gaussian"), (7, 0, "mean")]:
        assert torch.allclose(slide(net, x, window, overlap, blend), net(x), atol=1e-6)


@torch.no_grad()
def test_windows_cover_every_pixel_with_the_right_weights():
    """Counting windows: a net returning ones gives 1 everywhere after normalisation, and
    the windows' union is the whole image (a net returning its window's origin shows it)."""
    calls = []

    def ones(t: torch.Tensor) -> torch.Tensor:
        calls.append(t.shape[-2:])
        return torch.ones(t.shape[0], 2, *t.shape[-2:])

    out = slide(ones, torch.zeros(1, 3, 100, 130), window=48, overlap=1 / 3)
    assert torch.equal(out, torch.ones(1, 2, 100, 130))
    # Stride 32: rows start at 0, 32, 52 (flush), columns at 0, 32, 64, 82 (flush).
    assert len(calls) == 3 * 4 and all(tuple(c) == (48, 48) for c in calls)


@torch.no_grad()
def test_flip_tta_of_a_symmetric_input_is_symmetric(unet):
    half = torch.randn(1, 3, 40, 24)
    x = torch.cat([half, half.flip(-1)], dim=-1)  # mirror-symmetric image
    assert not torch.allclose(unet(x), unet(x).flip(-1), atol=1e-3)  # the net alone is not
    out = Inferer(flip=True)(unet, x)
    assert torch.allclose(out, out.flip(-1), atol=1e-5)
    # Multi-scale + flip + sliding: logits at the input's size; scales=[1] is the plain net.
    out = Inferer(mode="slide", window=32, scales=[0.5, 1.0, 1.5], flip=True)(unet, x)
    assert out.shape == (1, 5, 40, 48)
    assert torch.allclose(Inferer()(unet, x), unet(x))


def test_bad_inference_settings_are_named():
    """Bad input (exit status 2), and still a ValueError for callers that catch that."""
    with pytest.raises(InputError, match="inference.mode must be 'whole' or 'slide'"):
        Inferer(mode="tile")
    with pytest.raises(InputError, match="inference.scales"):
        Inferer(scales=[0])
    with pytest.raises(InputError, match="inference.overlap"):
        slide(torch.nn.Identity(), torch.zeros(1, 1, 8, 8), 4, overlap=1.0)
    with pytest.raises(InputError, match="inference.blend must be 'mean' or 'gaussian'"):
        Inferer(mode="slide", blend="max")
    assert issubclass(InputError, ValueError)
