"""Differentiable, batched sRGB <-> CIELAB (D65, 2° observer) in torch.

By default the formulas and constants are those of `skimage.color.rgb2lab` / `lab2rgb`, so
results agree with scikit-image; `AUTHORS_LAB` reproduces the GCP-Colorization authors' variant
for their resize mode (docs/architecture.md). Tensors are NCHW with RGB in [0, 1] and Lab in the
usual units (L 0..100, a/b roughly -110..110).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_RGB_TO_XYZ = torch.tensor(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=torch.float64,
)

#: Network input is L/50 - 1 (in [-1, 1]); the output head is tanh * AB_SCALE.
L_SCALE = 50.0
AB_SCALE = 110.0

_LAB_OFFSET = 16.0 / 116.0


@dataclass(frozen=True, eq=False)  # compared by identity: the conventions are module constants
class LabConvention:
    """The constants and edge cases of one sRGB <-> CIELAB implementation.

    Implementations agree on the formulas but not on the rounding of their constants, on whether
    the z branch of Lab -> XYZ may go below zero, or on small offsets they add before powers; a
    colorization matches another program's to the last 8-bit level only when all of them match.
    """

    name: str
    white: tuple[float, float, float]  # D65 reference white (X, Y, Z)
    xyz_to_rgb: torch.Tensor  # (3, 3) float64, applied to (X, Y, Z) columns
    epsilon: float  # below this (in XYZ / white) the cube root becomes a straight line
    kappa_slope: float  # slope of that line
    clamp_negative_fz: bool  # clip f_z = f_y - b/200 at 0 before cubing
    power_offset: float  # added before cubes, cube roots and the sRGB gamma


#: scikit-image's constants (`rgb2lab` / `lab2rgb`): our own choice everywhere but the authors' mode.
SKIMAGE_LAB = LabConvention(
    name="skimage",
    white=(0.95047, 1.0, 1.08883),
    xyz_to_rgb=torch.linalg.inv(_RGB_TO_XYZ),
    epsilon=0.008856,
    kappa_slope=7.787,
    clamp_negative_fz=True,
    power_offset=0.0,
)

#: The GCP-Colorization authors' conversion: the same sRGB matrix, but their own rounding of its
#: inverse and of the white point, the threshold and slope written as (6/29)³ and 1/(3·(6/29)²),
#: no clipping of f_z (very blue, dark ab extrapolates along the linear branch) and 1e-6 added
#: before each power.
AUTHORS_LAB = LabConvention(
    name="authors",
    white=(0.950456, 1.0, 1.088754),
    xyz_to_rgb=torch.tensor(
        [
            [3.2404542, -1.5371385, -0.4985314],
            [-0.9692660, 1.8760108, 0.0415560],
            [0.0556434, -0.2040259, 1.0572252],
        ],
        dtype=torch.float64,
    ),
    epsilon=(6.0 / 29.0) ** 3,
    kappa_slope=1.0 / (3.0 * (6.0 / 29.0) ** 2),
    clamp_negative_fz=False,
    power_offset=1e-6,
)


def _apply_matrix(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", matrix.to(image), image)


def _srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    rgb = rgb.clamp(0.0, 1.0)
    curved = ((rgb + 0.055) / 1.055).clamp_min(1e-12) ** 2.4
    return torch.where(rgb > 0.04045, curved, rgb / 12.92)


def _linear_to_srgb(linear: torch.Tensor, convention: LabConvention = SKIMAGE_LAB) -> torch.Tensor:
    curved = 1.055 * (linear + convention.power_offset).clamp_min(1e-12) ** (1.0 / 2.4) - 0.055
    return torch.where(linear > 0.0031308, curved, linear * 12.92)


def _lab_f(normalized: torch.Tensor, convention: LabConvention) -> torch.Tensor:
    """CIELAB's f(t): cube root above epsilon, a straight line below."""
    cube_root = (normalized + convention.power_offset).clamp_min(1e-12) ** (1.0 / 3.0)
    line = convention.kappa_slope * normalized + _LAB_OFFSET
    return torch.where(normalized > convention.epsilon, cube_root, line)


def rgb_to_lab(rgb: torch.Tensor, convention: LabConvention = SKIMAGE_LAB) -> torch.Tensor:
    """sRGB in [0, 1], shape (N, 3, H, W) -> CIELAB (N, 3, H, W)."""
    _check_nchw3(rgb, "rgb_to_lab")
    xyz = _apply_matrix(_RGB_TO_XYZ, _srgb_to_linear(rgb))
    xyz = xyz / torch.tensor(convention.white, dtype=torch.float64).to(xyz).view(1, 3, 1, 1)
    f = _lab_f(xyz, convention)
    fx, fy, fz = f[:, 0:1], f[:, 1:2], f[:, 2:3]
    lightness = 116.0 * fy - 16.0
    return torch.cat([lightness, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor, convention: LabConvention = SKIMAGE_LAB) -> torch.Tensor:
    """CIELAB (N, 3, H, W) -> sRGB clipped to [0, 1]."""
    # Clipping before the gamma curve gives the same colours as clipping after it, and keeps an
    # offset added before the power from lifting a negative value onto the curve.
    linear = lab_to_linear_rgb(lab, convention).clamp(0.0, 1.0)
    return _linear_to_srgb(linear, convention).clamp(0.0, 1.0)


def lab_to_linear_rgb(lab: torch.Tensor, convention: LabConvention = SKIMAGE_LAB) -> torch.Tensor:
    """CIELAB (N, 3, H, W) -> linear-light RGB, unclipped: outside [0, 1] means out of gamut."""
    _check_nchw3(lab, "lab_to_linear_rgb")
    lightness, a, b = lab[:, 0:1], lab[:, 1:2], lab[:, 2:3]
    fy = (lightness + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = fy - b / 200.0
    if convention.clamp_negative_fz:
        fz = fz.clamp_min(0.0)  # a negative z has no physical meaning; skimage clips it too
    f = torch.cat([fx, fy, fz], dim=1)
    cubed = (f + convention.power_offset) ** 3
    # The threshold is epsilon in XYZ, i.e. its cube root in f.
    on_curve = f > convention.epsilon ** (1.0 / 3.0)
    xyz = torch.where(on_curve, cubed, (f - _LAB_OFFSET) / convention.kappa_slope)
    xyz = xyz * torch.tensor(convention.white, dtype=torch.float64).to(xyz).view(1, 3, 1, 1)
    return _apply_matrix(convention.xyz_to_rgb, xyz)


def rgb_to_l(rgb: torch.Tensor, convention: LabConvention = SKIMAGE_LAB) -> torch.Tensor:
    """Lightness channel (N, 1, H, W) of an sRGB image (the L of `rgb_to_lab`, computed alone)."""
    _check_nchw3(rgb, "rgb_to_l")
    luminance = _apply_matrix(_RGB_TO_XYZ[1:2], _srgb_to_linear(rgb)) / convention.white[1]
    return 116.0 * _lab_f(luminance, convention) - 16.0


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
