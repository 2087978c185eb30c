"""Frozen VGG19 feature extractor for the perceptual and contextual losses of stage 2.

The layers are torchvision's `vgg19` `features` (configuration "E"), so torchvision's released
`vgg19-dcbb9e9d.pth` loads unchanged. Weights are read from a local file only: gcpcolor never
downloads at run time.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models import vgg as torchvision_vgg

from gcpcolor.errors import MissingWeightsError

VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILENAME}"
VGG19_ENV_VAR = "GCPCOLOR_VGG19"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_LAYERS = ("relu3_2", "relu4_2", "relu5_2")


def vgg_layer_names(features: nn.Sequential) -> dict[str, int]:
    """Name every conv and ReLU of a VGG `features` stack ("conv3_2", "relu3_2", ...) by index.

    Blocks are separated by max-pooling; within a block convs are counted from 1, and each
    ReLU takes the name of the conv it follows.
    """
    names: dict[str, int] = {}
    block, conv = 1, 0
    for index, module in enumerate(features):
        if isinstance(module, nn.Conv2d):
            conv += 1
            names[f"conv{block}_{conv}"] = index
        elif isinstance(module, nn.ReLU):
            names[f"relu{block}_{conv}"] = index
        elif isinstance(module, nn.MaxPool2d):
            block, conv = block + 1, 0
    return names


def vgg19_weight_candidates(weights_path: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where the VGG19 weights are looked for, in order.

    An explicit `weights_path` is the only candidate; otherwise the environment variable
    GCPCOLOR_VGG19 (a file), $GCPCOLOR_HOME, ~/.cache/gcpcolor, then torch hub's checkpoint cache
    (so a file torchvision downloaded earlier is reused).
    """
    if weights_path is not None:
        return [Path(weights_path).expanduser()]
    candidates = []
    if env_file := os.environ.get(VGG19_ENV_VAR):
        candidates.append(Path(env_file).expanduser())
    if gcpcolor_home := os.environ.get("GCPCOLOR_HOME"):
        candidates.append(Path(gcpcolor_home).expanduser() / VGG19_FILENAME)
    candidates.append(Path.home() / ".cache" / "gcpcolor" / VGG19_FILENAME)
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME)
    return candidates


def find_vgg19_weights(weights_path: str | os.PathLike[str] | None = None) -> Path:
    """The first existing candidate file, else `MissingWeightsError` naming every place looked."""
    candidates = vgg19_weight_candidates(weights_path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(candidate) for candidate in candidates)
    raise MissingWeightsError(
        f"VGG19 weights {VGG19_FILENAME} not found (looked in: {looked}); download {VGG19_URL} "
        f"and put it in one of those places or set {VGG19_ENV_VAR} to its path"
    )


class VGG19Features(nn.Module):
    """Frozen VGG19 that maps RGB in [0, 1], (N, 3, H, W), to a dict of named ReLU activations.

    ImageNet mean/std normalisation is applied inside. Only the `features` layers up to the
    deepest requested one are kept. With `allow_random=True` a missing weight file is a warning
    and the layers keep their random initialisation (tests, smoke runs); the features are then
    meaningless as a perceptual metric.
    """

    def __init__(
        self,
        weights_path: str | os.PathLike[str] | None = None,
        layers: Sequence[str] = DEFAULT_LAYERS,
        allow_random: bool = False,
    ) -> None:
        super().__init__()
        full_features = torchvision_vgg.make_layers(torchvision_vgg.cfgs["E"])
        all_names = vgg_layer_names(full_features)
        unknown = [name for name in layers if name not in all_names]
        if unknown or not layers:
            raise ValueError(
                f"VGG19Features: unknown layer(s) {unknown or '(none given)'}; "
                f"choose from {', '.join(all_names)}"
            )
        self.layers = tuple(layers)
        self.layer_indices = {name: all_names[name] for name in self.layers}
        deepest = max(self.layer_indices.values())
        self.features = full_features[: deepest + 1]
        for module in self.features:
            if isinstance(module, nn.ReLU):
                # An in-place ReLU would overwrite a returned conv output ("conv3_2").
                module.inplace = False

        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        try:
            self.weights_file: Path | None = find_vgg19_weights(weights_path)
        except MissingWeightsError as error:
            if not allow_random:
                raise
            warnings.warn(f"{error}; using randomly initialised VGG19 layers", stacklevel=2)
            self.weights_file = None
        if self.weights_file is not None:
            self._load_features(self.weights_file)

        self.requires_grad_(False)
        self.eval()

    def _load_features(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected torchvision's VGG19 state_dict, got {type(state).__name__}")
        prefix = "features."
        kept = {
            key[len(prefix) :]: value
            for key, value in state.items()
            if key.startswith(prefix) and int(key[len(prefix) :].split(".")[0]) < len(self.features)
        }
        missing = sorted(set(self.features.state_dict()) - set(kept))
        if missing:
            shown = ", ".join(prefix + key for key in missing[:4])
            raise ValueError(f"{path}: not torchvision's VGG19 state_dict (missing {shown}, ...)")
        self.features.load_state_dict(kept, strict=True)

    def train(self, mode: bool = True) -> "VGG19Features":
        # Frozen: a parent's .train() must not switch this module out of eval mode.
        return super().train(False)

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"VGG19Features: expected RGB of shape (N, 3, H, W), got {tuple(rgb.shape)}")
        wanted = {index: name for name, index in self.layer_indices.items()}
        outputs: dict[str, torch.Tensor] = {}
        x = (rgb - self.mean) / self.std
        for index, module in enumerate(self.features):
            x = module(x)
            if index in wanted:
                outputs[wanted[index]] = x
        return outputs
