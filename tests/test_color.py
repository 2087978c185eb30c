import numpy as np
import pytest
import torch
from skimage import color as skcolor

from gcpcolor.color import gray_to_rgb, lab_to_rgb, l_to_network, network_to_l, rgb_to_lab


def _sk_rgb2lab(batch: torch.Tensor) -> np.ndarray:
    return np.stack([skcolor.rgb2lab(img.permute(1, 2, 0).numpy()) for img in batch]).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rgb_to_lab_matches_skimage(dtype):
    rgb = torch.rand(3, 3, 21, 17, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = rgb_to_lab(rgb.to(dtype)).double().numpy()
    assert np.abs(ours - _sk_rgb2lab(rgb)).max() < 0.05


def test_lab_to_rgb_matches_skimage_including_out_of_gamut():
    g = torch.Generator().manual_seed(1)
    lab = torch.cat([torch.rand(2, 1, 13, 11, generator=g) * 100, torch.rand(2, 2, 13, 11, generator=g) * 220 - 110], 1)
    ours = lab_to_rgb(lab.double()).numpy()
    reference = np.stack([skcolor.lab2rgb(img.permute(1, 2, 0).numpy()) for img in lab.double()]).transpose(0, 3, 1, 2)
    assert np.abs(ours - reference).max() < 1e-4
    assert ours.min() >= 0 and ours.max() <= 1


def test_round_trip_within_one_level():
    rgb = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert (lab_to_rgb(rgb_to_lab(rgb)) - rgb).abs().max() < 1 / 255


def test_known_values():
    white = torch.ones(1, 3, 1, 1)
    black = torch.zeros(1, 3, 1, 1)
    assert torch.allclose(rgb_to_lab(white).flatten(), torch.tensor([100.0, 0.0, 0.0]), atol=1e-2)
    assert torch.allclose(rgb_to_lab(black).flatten(), torch.zeros(3), atol=1e-4)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(rgb_to_lab(red).flatten(), torch.tensor([53.24, 80.09, 67.20]), atol=0.05)


def test_differentiable_everywhere_including_black():
    rgb = torch.cat([torch.zeros(1, 3, 2, 2), torch.rand(1, 3, 2, 2)]).requires_grad_()
    rgb_to_lab(rgb).sum().backward()
    assert torch.isfinite(rgb.grad).all()
    lab = torch.tensor([[[[50.0]], [[20.0]], [[-30.0]]]], requires_grad=True)
    lab_to_rgb(lab).sum().backward()
    assert torch.isfinite(lab.grad).all() and lab.grad.abs().sum() > 0


def test_network_scaling_and_gray():
    lightness = torch.tensor([0.0, 50.0, 100.0]).view(1, 1, 1, 3)
    assert torch.allclose(l_to_network(lightness).flatten(), torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(network_to_l(l_to_network(lightness)), lightness)
    gray = gray_to_rgb(lightness)
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-4) and torch.allclose(gray[:, 1], gray[:, 2], atol=1e-4)
    assert torch.allclose(rgb_to_lab(gray)[:, 0], lightness[:, 0], atol=1e-2)


def test_rejects_wrong_shape():
    with pytest.raises(ValueError, match="N, 3, H, W"):
        rgb_to_lab(torch.rand(3, 8, 8))
