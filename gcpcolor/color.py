"""Differentiable, batched sRGB <-> CIELAB (D65, 2° observer) in torch.

The formulas and constants are those of `skimage.color.rgb2lab` / `lab2rgb`, so results agree
with scikit-image; tensors are NCHW with RGB in [0, 1] and Lab in the usual units
(L 0..100, a/b roughly -110..110).
"""

from __future__ import annotations

import torch

_RGB_TO_XYZ = torch.tensor(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=torch.float64,
)
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ)
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)

_LAB_EPSILON = 0.008856
_LAB_KAPPA_SLOPE = 7.787
_LAB_OFFSET = 16.0 / 116.0

#: Network input is L/50 - 1 (in [-1, 1]); the output head is tanh * AB_SCALE.
L_SCALE = 50.0
AB_SCALE = 110.0


def _apply_matrix(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", matrix.to(image), image)


def _srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    rgb = rgb.clamp(0.0, 1.0)
    curved = ((rgb + 0.055) / 1.055).clamp_min(1e-12) ** 2.4
    return torch.where(rgb > 0.04045, curved, rgb / 12.92)


def _linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    curved = 1.055 * linear.clamp_min(1e-12) ** (1.0 / 2.4) - 0.055
    return torch.where(linear > 0.0031308, curved, linear * 12.92)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape (N, 3, H, W) -> CIELAB (N, 3, H, W)."""
    _check_nchw3(rgb, "rgb_to_lab")
    xyz = _apply_matrix(_RGB_TO_XYZ, _srgb_to_linear(rgb))
    xyz = xyz / _D65_WHITE.to(xyz).view(1, 3, 1, 1)
    cube_root = xyz.clamp_min(1e-12) ** (1.0 / 3.0)
    f = torch.where(xyz > _LAB_EPSILON, cube_root, _LAB_KAPPA_SLOPE * xyz + _LAB_OFFSET)
    fx, fy, fz = f[:, 0:1], f[:, 1:2], f[:, 2:3]
    lightness = 116.0 * fy - 16.0
    return torch.cat([lightness, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB (N, 3, H, W) -> sRGB clipped to [0, 1]."""
    return _linear_to_srgb(lab_to_linear_rgb(lab)).clamp(0.0, 1.0)


def lab_to_linear_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB (N, 3, H, W) -> linear-light RGB, unclipped: outside [0, 1] means out of gamut."""
    _check_nchw3(lab, "lab_to_linear_rgb")
    lightness, a, b = lab[:, 0:1], lab[:, 1:2], lab[:, 2:3]
    fy = (lightness + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = (fy - b / 200.0).clamp_min(0.0)  # skimage clips negative z the same way
    f = torch.cat([fx, fy, fz], dim=1)
    cubed = f**3
    xyz = torch.where(cubed > _LAB_EPSILON, cubed, (f - _LAB_OFFSET) / _LAB_KAPPA_SLOPE)
    xyz = xyz * _D65_WHITE.to(xyz).view(1, 3, 1, 1)
    return _apply_matrix(_XYZ_TO_RGB, xyz)


def rgb_to_l(rgb: torch.Tensor) -> torch.Tensor:
    """Lightness channel (N, 1, H, W) of an sRGB image."""
    return rgb_to_lab(rgb)[:, 0:1]


def l_to_network(lightness: torch.Tensor) -> torch.Tensor:
    """L in 0..100 -> network input in [-1, 1]."""
    return lightness / L_SCALE - 1.0


def network_to_l(l_input: torch.Tensor) -> torch.Tensor:
    return (l_input + 1.0) * L_SCALE


def gray_to_rgb(lightness: torch.Tensor) -> torch.Tensor:
    """An sRGB rendering of L alone (a = b = 0), the colour-free version of a photo."""
    zeros = torch.zeros_like(lightness)
    return lab_to_rgb(torch.cat([lightness, zeros, zeros], dim=1))


def _check_nchw3(tensor: torch.Tensor, name: str) -> None:
    if tensor.dim() != 4 or tensor.shape[1] != 3:
        raise ValueError(f"{name}: expected a (N, 3, H, W) tensor, got shape {tuple(tensor.shape)}")
