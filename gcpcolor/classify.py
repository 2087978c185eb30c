"""ImageNet classifiers that pick the BigGAN class of a gray photo.

For a prior with the 1000 ImageNet classes (the authors' BigGAN) the default is EfficientNet-Lite0
with the ImageNet weights of its pinned package (`ImageNetClassifier`): on gray ImageNet photos
it is right three times in four. Users who want another classifier give a torchvision (or, if
installed, timm) architecture name and a local weights file (`ExternalClassifier`); nothing is
downloaded. Without either, the BigGAN discriminator's class projection is the fallback.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .classes import NUM_IMAGENET_CLASSES
from .config import ColorizerConfig
from .errors import MissingWeightsError, WeightsFormatError

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASSIFIER_INPUT = 224


def build_architecture(name: str) -> nn.Module:
    import torchvision

    if name in torchvision.models.list_models(module=torchvision.models):
        return torchvision.models.get_model(name, weights=None, num_classes=1000)
    try:
        import timm
    except ImportError:
        raise WeightsFormatError(
            f"unknown classifier architecture {name!r}: not a torchvision classification model "
            "(and timm is not installed)"
        ) from None
    if not timm.is_model(name):
        raise WeightsFormatError(f"unknown classifier architecture {name!r} (torchvision and timm)")
    return timm.create_model(name, pretrained=False, num_classes=1000)


class ExternalClassifier(nn.Module):
    """Maps the network input L/50 - 1 (B, 1, S, S) to ImageNet logits (B, 1000)."""

    def __init__(self, architecture: str, weights_path: str | os.PathLike):
        super().__init__()
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"classifier weights {path} not found (give a local .pth file)")
        self.network = build_architecture(architecture)
        from .serialization import load_state_dict_strict, read_checkpoint

        state = read_checkpoint(path)
        state = state.get("state_dict", state) if isinstance(state.get("state_dict"), dict) else state
        load_state_dict_strict(self.network, state, path)
        self.network.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, l_input: torch.Tensor) -> torch.Tensor:
        # The gray photo as an sRGB image: with a = b = 0, R = G = B is the sRGB value of L.
        from .color import gray_to_rgb, network_to_l

        rgb = gray_to_rgb(network_to_l(l_input))
        rgb = F.interpolate(rgb, size=(CLASSIFIER_INPUT, CLASSIFIER_INPUT), mode="bilinear", antialias=True,
                            align_corners=False)
        return self.network((rgb - self.mean) / self.std)


class ImageNetClassifier(nn.Module):
    """EfficientNet-Lite0 on the gray photo: network input L/50 - 1 (B, 1, S, S) -> logits (B, 1000).

    The photo is rendered as gray sRGB and cut like the weights were validated (short side 256,
    centre crop 224)."""

    def __init__(self, network: nn.Module | None = None) -> None:
        super().__init__()
        from .models.efficientnet_lite import ImageNetPreprocess, load_efficientnet_lite0

        self.network = network if network is not None else load_efficientnet_lite0()
        self.preprocess = ImageNetPreprocess()

    def forward(self, l_input: torch.Tensor) -> torch.Tensor:
        from .color import gray_to_rgb, network_to_l

        return self.network(self.preprocess(gray_to_rgb(network_to_l(l_input))))


def default_imagenet_classifier(config: ColorizerConfig) -> "ImageNetClassifier | None":
    """EfficientNet-Lite0 for priors with the ImageNet classes that pick them with the
    discriminator's projection; None (with a warning) when its weights package is missing."""
    if config.biggan.n_classes != NUM_IMAGENET_CLASSES or config.class_predictor != "discriminator":
        return None
    try:
        return ImageNetClassifier()
    except MissingWeightsError as exc:
        logger.warning("automatic classes fall back to the BigGAN discriminator's projection: %s", exc)
        return None
