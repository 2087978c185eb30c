"""Differentiable augmentation for GAN training on few images (Zhao et al., DiffAugment, 2020).

The same random transform family is applied to every image the discriminator sees, real and
generated, and gradients flow through it to the generator. The discriminator then cannot
memorise the few real photos, while the generator is still pushed towards un-augmented photos
because the transforms are applied to both sides alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

#: Fraction of the image size for the largest translation and the cutout square.
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _uniform(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(images.shape[0], 1, 1, 1, generator=generator, device=images.device, dtype=images.dtype)


def random_brightness(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add one offset in [-0.5, 0.5) per image (images in [-1, 1])."""
    return images + (_uniform(images, generator) - 0.5)


def random_saturation(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each pixel's distance from its channel mean by a factor in [0, 2)."""
    mean = images.mean(dim=1, keepdim=True)
    return (images - mean) * (_uniform(images, generator) * 2) + mean


def random_contrast(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each image's distance from its overall mean by a factor in [0.5, 1.5)."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * (_uniform(images, generator) + 0.5) + mean


def random_translation(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by whole pixels, up to 1/8 of its size each way, filling with zeros."""
    batch, _, height, width = images.shape
    max_y, max_x = int(height * TRANSLATION_RATIO + 0.5), int(width * TRANSLATION_RATIO + 0.5)
    shift_y = torch.randint(-max_y, max_y + 1, (batch,), generator=generator, device=images.device)
    shift_x = torch.randint(-max_x, max_x + 1, (batch,), generator=generator, device=images.device)
    padded = F.pad(images, (max_x, max_x, max_y, max_y))
    rows = torch.arange(height, device=images.device).view(1, height, 1) + max_y - shift_y.view(-1, 1, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width) + max_x - shift_x.view(-1, 1, 1)
    batch_index = torch.arange(batch, device=images.device).view(-1, 1, 1)
    # Advanced indexing gathers per-image windows; gradients flow back to the kept pixels.
    return padded.permute(0, 2, 3, 1)[batch_index, rows, cols].permute(0, 3, 1, 2)


def random_cutout(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one square of half the image size per image, centred anywhere in the image."""
    batch, _, height, width = images.shape
    size_y, size_x = int(height * CUTOUT_RATIO + 0.5), int(width * CUTOUT_RATIO + 0.5)
    centre_y = torch.randint(0, height, (batch, 1, 1), generator=generator, device=images.device)
    centre_x = torch.randint(0, width, (batch, 1, 1), generator=generator, device=images.device)
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    inside = ((rows - centre_y).abs() * 2 < size_y) & ((cols - centre_x).abs() * 2 < size_x)
    return images * (~inside).unsqueeze(1).to(images.dtype)


POLICIES: dict[str, tuple[Callable[..., torch.Tensor], ...]] = {
    "color": (random_brightness, random_saturation, random_contrast),
    "translation": (random_translation,),
    "cutout": (random_cutout,),
}


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    """'color,translation,cutout' → ('color', 'translation', 'cutout'); '' means none."""
    names = tuple(p.strip() for p in (policy.split(",") if isinstance(policy, str) else policy) if p.strip())
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
    return names


def diff_augment(
    images: torch.Tensor, policy: str | Sequence[str], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply the transforms of `policy` in order, with fresh random parameters per image."""
    for name in parse_policy(policy):
        for transform in POLICIES[name]:
            images = transform(images, generator)
    return images.contiguous()
