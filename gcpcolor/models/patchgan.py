"""Multi-scale PatchGAN discriminator of stage 2 (pix2pixHD layout, spectral norm, LSGAN).

It judges Lab images: `lab_to_discriminator_input` brings L and ab to roughly [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gcpcolor.color import AB_SCALE, l_to_network

#: pix2pixHD caps the width of its PatchGAN layers at 512 channels.
MAX_CHANNELS = 512
KERNEL_SIZE = 4
# pix2pixHD pads 4x4 convs by ceil((4 - 1) / 2) = 2.
PADDING = 2


@dataclass(frozen=True)
class PatchGANConfig:
    """The stage-2 adversarial discriminator: `num_scales` PatchGANs of `n_layers` stride-2 convs."""

    in_channels: int = 3
    base_channels: int = 64
    n_layers: int = 3
    num_scales: int = 3


def lab_to_discriminator_input(lab: torch.Tensor) -> torch.Tensor:
    """Lab (N, 3, H, W) in natural units -> (L/50 - 1, a/110, b/110), roughly [-1, 1]."""
    return torch.cat([l_to_network(lab[:, 0:1]), lab[:, 1:] / AB_SCALE], dim=1)


def _sn_conv(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    conv = nn.Conv2d(in_channels, out_channels, KERNEL_SIZE, stride=stride, padding=PADDING)
    return spectral_norm(conv)


class PatchGAN(nn.Module):
    """One scale: `n_layers` stride-2 4x4 convs, one stride-1 conv, then a 1-channel score map.

    No sigmoid: the scores are regressed to 0/1 by the least-squares GAN loss.
    """

    def __init__(self, in_channels: int, base_channels: int, n_layers: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_sn_conv(in_channels, base_channels, stride=2), nn.LeakyReLU(0.2)]
        channels = base_channels
        for _ in range(1, n_layers):
            next_channels = min(channels * 2, MAX_CHANNELS)
            layers += [_sn_conv(channels, next_channels, stride=2), nn.LeakyReLU(0.2)]
            channels = next_channels
        next_channels = min(channels * 2, MAX_CHANNELS)
        layers += [_sn_conv(channels, next_channels, stride=1), nn.LeakyReLU(0.2)]
        layers.append(_sn_conv(next_channels, 1, stride=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MultiScalePatchGAN(nn.Module):
    """`num_scales` independent PatchGANs; scale s sees the input average-pooled s times.

    forward returns one (N, 1, h_s, w_s) score map per scale, full resolution first.
    """

    def __init__(self, config: PatchGANConfig | None = None) -> None:
        super().__init__()
        self.config = config or PatchGANConfig()
        if self.config.num_scales < 1 or self.config.n_layers < 1:
            raise ValueError(f"MultiScalePatchGAN: num_scales and n_layers must be >= 1, got {self.config}")
        self.scales = nn.ModuleList(
            PatchGAN(self.config.in_channels, self.config.base_channels, self.config.n_layers)
            for _ in range(self.config.num_scales)
        )
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        scores = []
        for index, discriminator in enumerate(self.scales):
            if index > 0:
                x = self.downsample(x)
            scores.append(discriminator(x))
        return scores
