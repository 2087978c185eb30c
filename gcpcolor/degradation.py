"""Old-photo damage for the gray input of training crops.

The photos we learn colour from are clean modern colour photos; the photos users bring are old
prints and negatives: faded (raised blacks, dulled whites, shifted gamma), soft, grainy,
scratched and spotted with dust. A network that has only seen clean gray input reads scratches
and grain as texture and paints them (blue-green blotches along the cracks of a torn portrait).
Degrading the *input* of some training crops while the colour *target* stays clean teaches it
to look through the damage, as DeOldify's "crappified" inputs do.

Everything acts on CIELAB lightness L in [0, 100] of one crop, shape (1, H, W), and draws its
randomness from the crop's own generator, so a crop and its damage are a function of the
crop's seed (exact resume holds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _draw_marks(lightness: torch.Tensor, count: int, generator: torch.Generator, mark) -> torch.Tensor:
    """Paint `count` marks at random centres: `mark(dx, dy, size, generator)` gives the coverage
    in [0, 1] of each pixel from its offsets (dx, dy) to the centre, and the mark's L value."""
    height, width = lightness.shape[-2:]
    rows, columns = (torch.arange(n, dtype=lightness.dtype) for n in (height, width))
    yy, xx = torch.meshgrid(rows, columns, indexing="ij")
    out = lightness
    for _ in range(count):
        x0, y0 = _uniform(generator, 0, width), _uniform(generator, 0, height)
        coverage, value = mark(xx - x0, yy - y0, max(height, width), generator)
        out = out * (1 - coverage) + value * coverage
    return out


def fade(lightness: torch.Tensor, black: float, white: float, gamma: float) -> torch.Tensor:
    """Tone curve of a faded print: 0..1 → black..white through a power `gamma`."""
    x = (lightness / 100.0).clamp(0.0, 1.0) ** gamma
    return (black + (white - black) * x) * 100.0


def gaussian_blur(lightness: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders (the softness of an old lens or a copy)."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=lightness.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = F.pad(lightness[None], (radius, radius, radius, radius), mode="reflect")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1))[0]


def film_grain(lightness: torch.Tensor, strength: float, grain_px: int, generator: torch.Generator) -> torch.Tensor:
    """Add zero-mean noise of standard deviation `strength` (L units) in clumps of `grain_px`."""
    height, width = lightness.shape[-2:]
    coarse = torch.randn(1, 1, math.ceil(height / grain_px), math.ceil(width / grain_px), generator=generator)
    noise = F.interpolate(coarse, scale_factor=grain_px, mode="bilinear", align_corners=False)
    noise = noise[0, :, :height, :width]
    return lightness + strength * noise / noise.std().clamp_min(1e-6)


def _scratch(dx: torch.Tensor, dy: torch.Tensor, size: int, generator: torch.Generator):
    angle = _uniform(generator, 0, math.pi)
    length = _uniform(generator, 0.2, 1.0) * size
    half_width = _uniform(generator, 0.4, 1.2)
    value = 100.0 * (torch.rand((), generator=generator) < 0.7).float()  # mostly white (emulsion lost)
    along = dx * math.cos(angle) + dy * math.sin(angle)
    across = -dx * math.sin(angle) + dy * math.cos(angle)
    return torch.exp(-((across / half_width) ** 2)) * (along.abs() <= length / 2), value


def _speck(dx: torch.Tensor, dy: torch.Tensor, size: int, generator: torch.Generator):
    radius = _uniform(generator, 0.5, 2.5)
    value = 100.0 * (torch.rand((), generator=generator) < 0.5).float()
    return (dx**2 + dy**2 <= radius**2).to(dx.dtype), value


def scratches(lightness: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Thin bright or dark line segments of random direction, length and width."""
    return _draw_marks(lightness, count, generator, _scratch)


def dust(lightness: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Small round specks, bright or dark, of radius 0.5 to 2.5 px."""
    return _draw_marks(lightness, count, generator, _speck)


@dataclass(frozen=True)
class OldPhotoDegradation:
    """With `probability`, damage a crop's lightness; each kind of damage then has its own chance.

    The ranges are those of a worn print seen at the network's 256² working size: blacks
    raised to at most L 18 and whites dulled to at least L 82, gamma within ×/÷ 1.3, blur up
    to σ 1.5 px, grain up to 5 L units, up to 4 scratches and 12 specks.
    """

    probability: float = 0.5
    fade_chance: float = 0.7
    blur_chance: float = 0.5
    grain_chance: float = 0.6
    scratch_chance: float = 0.3
    dust_chance: float = 0.3

    def __call__(self, lightness: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        draws = torch.rand(6, generator=generator).tolist()
        if draws[0] >= self.probability:
            return lightness
        out = lightness
        if draws[1] < self.fade_chance:
            black, white = _uniform(generator, 0.0, 0.18), _uniform(generator, 0.82, 1.0)
            out = fade(out, black, white, math.exp(_uniform(generator, -0.26, 0.26)))
        if draws[2] < self.blur_chance:
            out = gaussian_blur(out, _uniform(generator, 0.4, 1.5))
        if draws[3] < self.grain_chance:
            grain_px = int(torch.randint(1, 3, (), generator=generator))
            out = film_grain(out, _uniform(generator, 1.0, 5.0), grain_px, generator)
        if draws[4] < self.scratch_chance:
            out = scratches(out, int(torch.randint(1, 5, (), generator=generator)), generator)
        if draws[5] < self.dust_chance:
            out = dust(out, int(torch.randint(1, 13, (), generator=generator)), generator)
        return out.clamp(0.0, 100.0)
