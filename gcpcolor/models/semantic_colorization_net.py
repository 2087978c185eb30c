"""The semantic colorization network of the default model: an ImageNet backbone + the GAN prior.

A frozen EfficientNet-Lite0 reads the gray photo (the semantics our small training set cannot
teach: what is sky, skin, foliage), a U-Net decoder climbs back from its stride-32 map to
stride 4 (64² at the 256² working size), where it meets the warped features of the GAN prior's
exemplar. The head predicts a distribution over the in-gamut ab bins of CIELAB (a grid of
spacing 10, Zhang et al. 2016) rather than one ab value: a regression to the mean of plausible
colours gives sepia, the distribution keeps vivid modes. It is decoded by the annealed mean
(softmax(logits / T) · bin centres): T → 0 takes the mode, T = 1 the mean.

The ab map is predicted at 64² and upsampled bilinearly, which avoids the checkerboard of
transposed convolutions; chroma needs far less resolution than lightness, and the pipeline
joins it with the photo's full-resolution L.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..color import gray_to_rgb, lab_to_linear_rgb, network_to_l
from ..config import ColorizationConfig
from .efficientnet_lite import FEATURE_CHANNELS, EfficientNetLite0

#: Spacing and extent of the ab grid (Lab units).
AB_BIN_SPACING = 10.0
AB_BIN_EXTENT = 110.0


@lru_cache(maxsize=None)
def in_gamut_ab_bins() -> np.ndarray:
    """(Q, 2) centres of the ab grid cells that hold a displayable sRGB colour at some L.

    A cell counts when any of its 5x5 sub-samples, at any of 101 lightness levels, converts to
    RGB inside [0, 1]. Computed from the colour formulas alone, so the bin set (and Q) is the
    same on every machine and needs no data.
    """
    steps = np.arange(-AB_BIN_EXTENT, AB_BIN_EXTENT + 1e-6, AB_BIN_SPACING)
    offsets = np.linspace(-AB_BIN_SPACING / 2, AB_BIN_SPACING / 2, 5)
    lightness = torch.linspace(0, 100, 101, dtype=torch.float64)
    keep = []
    for a in steps:
        for b in steps:
            sub_a, sub_b = np.meshgrid(a + offsets, b + offsets, indexing="ij")
            ab = torch.tensor(np.stack([sub_a.ravel(), sub_b.ravel()]), dtype=torch.float64)  # (2, 25)
            lab = torch.cat(
                [lightness[:, None, None].expand(-1, 1, ab.shape[1]), ab[None].expand(len(lightness), -1, -1)], dim=1
            )  # (101, 3, 25) as (B, C, W) with H=1
            rgb = lab_to_linear_rgb(lab[:, :, None, :])
            inside = ((rgb >= 0) & (rgb <= 1)).all(dim=1)
            if bool(inside.any()):
                keep.append((a, b))
    return np.asarray(keep, dtype=np.float32)


def _conv_block(in_channels: int, out_channels: int, groups: int = 8) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.GroupNorm(min(groups, out_channels), out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.GroupNorm(min(groups, out_channels), out_channels),
        nn.ReLU(inplace=True),
    )


class SemanticColorizationNet(nn.Module):
    """C(L, warped prior features) -> ab / 110 through ab-bin logits at stride 4.

    `reference_channels` is the same mapping the SPADE network takes ({64, 128, 256} →
    channels of the warped prior features); all three are brought to the stride-4 grid and
    concatenated. With guidance "none" they are zeros and the network is the prior-free
    ablation.
    """

    predicts_distribution = True

    def __init__(self, config: ColorizationConfig, reference_channels: Mapping[int, int]) -> None:
        super().__init__()
        self.config = config
        width = config.base_channels
        self.backbone = EfficientNetLite0()
        self.backbone.requires_grad_(False)
        bins = torch.from_numpy(in_gamut_ab_bins())
        self.register_buffer("bin_centers", bins, persistent=False)
        reference = sum(reference_channels[r] for r in sorted(reference_channels))
        self.reference_projection = nn.Sequential(
            nn.Conv2d(reference + 1, width, 1), nn.GroupNorm(8, width), nn.ReLU(inplace=True)
        )
        self.lateral32 = nn.Conv2d(FEATURE_CHANNELS[32], 4 * width, 1)
        self.up16 = _conv_block(4 * width + FEATURE_CHANNELS[16], 3 * width)
        self.up8 = _conv_block(3 * width + FEATURE_CHANNELS[8], 2 * width)
        self.up4 = _conv_block(2 * width + FEATURE_CHANNELS[4] + width, 2 * width)
        self.head = nn.Conv2d(2 * width, len(bins), 1)

    @property
    def num_bins(self) -> int:
        return int(self.bin_centers.shape[0])

    def train(self, mode: bool = True) -> "SemanticColorizationNet":
        super().train(mode)
        self.backbone.eval()  # frozen: its BatchNorm statistics are ImageNet's, always
        return self

    def logits(
        self,
        l_input: torch.Tensor,
        warped: Mapping[int, torch.Tensor],
        backbone_features: Mapping[int, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, Q, H/4, W/4) ab-bin logits; l_input = L/50 - 1 of shape (B, 1, H, W).

        `backbone_features`: `backbone.features` of the gray photo when the caller has them
        (the class probe reads the same maps), else computed here."""
        if l_input.ndim != 4 or l_input.shape[1] != 1:
            raise ValueError(f"l_input must be (B, 1, H, W), got {tuple(l_input.shape)}")
        features = backbone_features
        if features is None:
            with torch.no_grad():
                features = self.backbone.features(gray_input_to_rgb(l_input))
        grid = tuple(int(side) for side in features[4].shape[-2:])  # constants in an ONNX trace
        reference = [F.interpolate(warped[r], size=grid, mode="bilinear", align_corners=False) for r in sorted(warped)]
        lightness = F.interpolate(l_input, size=grid, mode="area")
        prior = self.reference_projection(torch.cat([*reference, lightness], dim=1))

        x = self.lateral32(features[32])
        x = self.up16(torch.cat([_upsample_to(x, features[16]), features[16]], dim=1))
        x = self.up8(torch.cat([_upsample_to(x, features[8]), features[8]], dim=1))
        x = self.up4(torch.cat([_upsample_to(x, features[4]), features[4], prior], dim=1))
        return self.head(x)

    def decode(self, logits: torch.Tensor, temperature: float | None = None, a_tilt: float | None = None) -> torch.Tensor:
        """Annealed mean of the bin distribution tilted along a*: (B, 2, h, w) ab in Lab units.
        `temperature` and `a_tilt` default to the configuration's."""
        temperature = self.config.temperature if temperature is None else temperature
        a_tilt = self.config.a_tilt if a_tilt is None else a_tilt
        centers = self.bin_centers.float()
        logits = logits.float()
        if a_tilt:
            logits = logits + a_tilt * centers[:, 0].view(1, -1, 1, 1)
        weights = torch.softmax(logits / temperature, dim=1)
        return torch.einsum("bqhw,qc->bchw", weights, centers)

    def forward(self, l_input: torch.Tensor, warped: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """ab / 110 at the input's size (the same contract as the SPADE network)."""
        ab = self.decode(self.logits(l_input, warped))
        ab = F.interpolate(ab, size=l_input.shape[-2:], mode="bilinear", align_corners=False)
        return ab / AB_BIN_EXTENT


def gray_input_to_rgb(l_input: torch.Tensor) -> torch.Tensor:
    """Network input L/50 - 1 as the gray sRGB photo in [0, 1], three equal channels."""
    return gray_to_rgb(network_to_l(l_input))


def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
