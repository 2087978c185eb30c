"""The composed GCP-Colorization network: encoder → BigGAN → correspondence → colorization.

One forward implementation serves inference (`Colorizer`) and stage-2 training, so both see
exactly the same data flow (docs/architecture.md, "Data flow").
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .color import AB_SCALE
from .config import ColorizerConfig
from .errors import MissingWeightsError
from .models.biggan_discriminator import BigGANDiscriminator
from .models.biggan_encoder import BigGANEncoder
from .models.biggan_generator import BigGANGenerator
from .models.colorization_net import REFERENCE_RESOLUTIONS, ColorizationNet
from .models.correspondence import CorrespondenceNet, warp
from .models.deformator import LatentDeformator
from .models.efficientnet_lite import HEAD_CHANNELS
from .models.lightness_centroids import LightnessCentroidClassifier
from .models.semantic_class_probe import SemanticClassProbe
from .models.semantic_colorization_net import SemanticColorizationNet, gray_input_to_rgb
from .serialization import load_state_dict_strict, read_safetensors, write_safetensors
from .weights import CONFIG_NAME, WEIGHTS_NAME, write_atomically

#: Feature maps of the ImageNet backbone keyed by stride (4, 8, 16, 32).
BackboneFeatures = dict[int, torch.Tensor]

#: Thumbnail side of the pseudo-class descriptor (`pseudo_classes.THUMBNAIL_SIZE`).
PSEUDO_CLASS_THUMBNAIL = 6

def resample_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) to size², antialiased when shrinking; identity at size."""
    if images.shape[-2:] == (size, size):
        return images
    shrinking = images.shape[-1] > size
    if shrinking and torch.onnx.is_in_onnx_export():
        # ONNX's Resize has no antialiasing: the same filter as two products with its weights.
        weights = torch.from_numpy(antialiased_shrink_weights(int(images.shape[-1]), size)).to(images)
        return weights @ images @ weights.T
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)


@functools.lru_cache(maxsize=None)
def antialiased_shrink_weights(length: int, size: int) -> np.ndarray:
    """(size, length) weights of the antialiased bilinear shrink of one axis, as
    `F.interpolate(..., mode="bilinear", align_corners=False, antialias=True)` applies them:
    a triangle filter stretched by the scale, centred on each output pixel's centre, cut to the
    input and normalised to sum to one. Plain numpy, so an ONNX trace records a constant."""
    scale = length / size
    weights = np.zeros((size, length), dtype=np.float64)
    for out in range(size):
        centre = (out + 0.5) * scale
        first, last = max(int(centre - scale + 0.5), 0), min(int(centre + scale + 0.5), length)
        taps = np.arange(first, last)
        triangle = np.clip(1.0 - np.abs((taps - centre + 0.5) / scale), 0.0, None)
        weights[out, first:last] = triangle / triangle.sum()
    return weights.astype(np.float32)


class Guidance(str, enum.Enum):
    """How the colorization network is conditioned (the paper's Table 2 ablations)."""

    FEATURES = "features"  # full method: warped BigGAN features F64/F128/F256
    IMAGE = "image"  # "image guidance only": the warped exemplar RGB stands in for the features
    UNALIGNED = "unaligned"  # "w/o alignment": BigGAN features used without warping
    NONE = "none"  # "w/o prior": no exemplar at all (zero conditioning)


@dataclass
class ForwardOutput:
    ab: torch.Tensor  # (B, 2, S, S) in Lab units
    exemplar: torch.Tensor  # BigGAN inversion x_inv, RGB in [-1, 1]
    warped_exemplar: torch.Tensor  # x_inv warped onto the photo, RGB in [-1, 1]
    z: torch.Tensor  # (B, dim_z)
    class_ids: torch.Tensor  # (B,)
    gray_embedding: torch.Tensor | None = None  # correspondence embedding of the gray input
    ab_logits: torch.Tensor | None = None  # (B, Q, s, s) ab-bin logits of a "semantic" network


class GCPColorizationModel(nn.Module):
    """All networks of the system. BigGAN G/D and the encoder are the frozen prior."""

    def __init__(self, config: ColorizerConfig, guidance: Guidance | str | None = None):
        super().__init__()
        try:
            self.guidance = Guidance(config.guidance if guidance is None else guidance)
        except ValueError:
            valid = ", ".join(g.value for g in Guidance)
            raise ValueError(f"guidance must be one of {valid}, got {guidance or config.guidance!r}") from None
        # The config travels with every checkpoint, so it records the guidance actually built.
        self.config = dataclasses.replace(config, guidance=self.guidance.value)
        self.generator = BigGANGenerator(config.biggan)
        self.discriminator = BigGANDiscriminator(config.biggan)
        self.encoder = BigGANEncoder(config.encoder)
        self.correspondence = CorrespondenceNet(
            config.correspondence, config.biggan.correspondence_channels
        )
        network = SemanticColorizationNet if config.colorization.type == "semantic" else ColorizationNet
        self.colorization_net = network(config.colorization, self.reference_channels())
        self.deformator = LatentDeformator(config.deformator) if config.deformator else None
        self.class_predictor: nn.Module | None = None
        if config.class_predictor == "lightness_centroids":
            self.class_predictor = LightnessCentroidClassifier(config.biggan.n_classes, PSEUDO_CLASS_THUMBNAIL)
        elif config.class_predictor == "imagenet_probe":
            self.class_predictor = SemanticClassProbe(config.biggan.n_classes, HEAD_CHANNELS, PSEUDO_CLASS_THUMBNAIL)

    @property
    def prior_resolution(self) -> int:
        return self.config.biggan.resolution

    @property
    def predicts_distribution(self) -> bool:
        """Whether the colorization network predicts a colour distribution ("semantic"), which is
        decoded at a temperature, rather than the colours themselves."""
        return bool(getattr(self.colorization_net, "predicts_distribution", False))

    def set_temperature(self, temperature: float) -> None:
        """Decode the colour distribution at `temperature` from now on: lower gives bolder colours
        (towards each pixel's most likely colour), higher safer, more muted ones (towards the mean).
        Only networks that predict a colour distribution ("semantic") have one; the configuration
        records it, so a saved model keeps it."""
        if not self.predicts_distribution:
            raise ValueError("this model predicts colours directly: it has no temperature to set")
        colorization = dataclasses.replace(self.config.colorization, temperature=float(temperature))
        self.config = dataclasses.replace(self.config, colorization=colorization)
        self.colorization_net.config = colorization

    def reference_channels(self) -> dict[int, int]:
        """Channels of the conditioning at each colorizer scale (keyed 64/128/256)."""
        if self.guidance is Guidance.IMAGE:
            return {size: 3 for size in REFERENCE_RESOLUTIONS}
        prior_channels = [c for _, c in sorted(self.config.biggan.feature_channels.items())]
        return dict(zip(REFERENCE_RESOLUTIONS, prior_channels))

    @property
    def takes_reference(self) -> bool:
        """Whether a colour photo can stand in for the prior's exemplar (see `forward`)."""
        return self.guidance is Guidance.IMAGE

    def to_prior_resolution(self, images: torch.Tensor) -> torch.Tensor:
        """Photos at the working size, resized to what the prior networks were trained on."""
        return resample_square(images, self.prior_resolution)

    def _warp_native(self, matrix: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Warp a prior map at its own resolution (at least the correspondence grid); a small
        prior's maps are upsampled after warping, which costs a fraction of warping them at the
        colorizer's scales. For the paper's 256² prior nothing is resampled."""
        grid = self.config.correspondence.grid
        return warp(matrix, resample_square(reference, max(reference.shape[-1], grid)), grid)

    def correspondence_features(self, images: torch.Tensor) -> torch.Tensor:
        """Discriminator features of photos or exemplars (gray L/50 - 1 or RGB in [-1, 1], any
        size) on the correspondence grid."""
        features = self.discriminator.correspondence_features(self.to_prior_resolution(images))
        return resample_square(features, self.config.correspondence.grid)

    def prior_modules(self) -> list[nn.Module]:
        """The frozen generative prior (never trained in stage 2)."""
        return [self.generator, self.discriminator, self.encoder]

    @property
    def has_backbone(self) -> bool:
        """Whether the colorization network reads the photo with a frozen ImageNet backbone."""
        return isinstance(self.colorization_net, SemanticColorizationNet)

    @torch.no_grad()
    def backbone_features(self, l_input: torch.Tensor) -> BackboneFeatures | None:
        """The frozen backbone's feature maps of gray photos (None for networks without one).

        The class probe and the colorization network both read them; computed once and passed
        to `class_logits` and `forward`, they cost one backbone pass per photo instead of two.
        """
        if not self.has_backbone:
            return None
        return self.colorization_net.backbone.features(gray_input_to_rgb(l_input))

    def semantic_embedding(self, l_input: torch.Tensor, backbone_features: BackboneFeatures | None = None) -> torch.Tensor:
        """(B, 1280) pooled ImageNet-backbone features of gray photos ("semantic" networks)."""
        if backbone_features is None:
            backbone_features = self.colorization_net.backbone.features(gray_input_to_rgb(l_input))
        return backbone_features[32].mean(dim=(2, 3))

    @torch.no_grad()
    def class_logits(self, l_input: torch.Tensor, backbone_features: BackboneFeatures | None = None) -> torch.Tensor:
        """Scores of the prior's classes for gray photos, from the configured predictor.

        `backbone_features`: `backbone_features(l_input)` when the caller has them already."""
        if self.config.class_predictor == "imagenet_probe":
            return self.class_predictor(self.semantic_embedding(l_input, backbone_features), l_input)
        if self.class_predictor is not None:
            return self.class_predictor(l_input)
        return self.discriminator.class_logits(self.to_prior_resolution(l_input))

    @torch.no_grad()
    def predict_class(self, l_input: torch.Tensor, backbone_features: BackboneFeatures | None = None) -> torch.Tensor:
        """The prior's class for gray photos (see `ColorizerConfig.class_predictor`)."""
        return self.class_logits(l_input, backbone_features).argmax(dim=1)

    def invert(self, l_input: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(self.to_prior_resolution(l_input), class_ids)

    def forward(
        self,
        l_input: torch.Tensor,
        class_ids: torch.Tensor,
        z: torch.Tensor | None = None,
        backbone_features: BackboneFeatures | None = None,
        reference: torch.Tensor | None = None,
        use_reference: torch.Tensor | None = None,
    ) -> ForwardOutput:
        """Colorize gray inputs `l_input` = L/50 - 1, shape (B, 1, S, S), S = work size.

        `backbone_features`: `backbone_features(l_input)` when the caller computed them already
        (for the class prediction); ignored by networks without a backbone.
        `reference`: colour photos (B, 3, h, w, RGB in [-1, 1]) that stand in for the prior's
        exemplar, aligned to the gray photos by the correspondence network like an exemplar;
        `use_reference` (B,) bool picks the photos that take them (default: all). Only image
        guidance can take a photo: the other guidances read the generator's own features."""
        if z is None:
            with torch.no_grad():
                z = self.invert(l_input, class_ids)
        with torch.no_grad():
            prior_exemplar, prior_features = self.generator.generate(z, class_ids)
            if reference is not None:
                prior_exemplar = self._with_reference(prior_exemplar, reference, use_reference)
            gray_features = self.correspondence_features(l_input)
            exemplar_features = self.correspondence_features(prior_exemplar)

        gray_embedding = self.correspondence.embed_gray(gray_features)
        reference_embedding = self.correspondence.embed_reference(exemplar_features)
        matrix = self.correspondence.correspondence(gray_embedding, reference_embedding)
        work_size = self.config.work_size
        warped_exemplar = resample_square(self._warp_native(matrix, prior_exemplar), work_size)
        exemplar = resample_square(prior_exemplar, work_size)

        semantic = isinstance(self.colorization_net, SemanticColorizationNet)
        # The SPADE network takes each map at its own scale; the semantic network resamples all
        # of them once to its stride-4 grid, so they go to it at the resolution they have.
        to_scale = (lambda f, size: f) if semantic else resample_square
        if self.guidance is Guidance.FEATURES:
            ordered = [self._warp_native(matrix, f) for _, f in sorted(prior_features.items())]
            conditioning = {size: to_scale(f, size) for size, f in zip(REFERENCE_RESOLUTIONS, ordered)}
        elif self.guidance is Guidance.IMAGE:
            conditioning = {size: to_scale(warped_exemplar, size) for size in REFERENCE_RESOLUTIONS}
        elif self.guidance is Guidance.UNALIGNED:
            ordered = [f for _, f in sorted(prior_features.items())]
            conditioning = {size: to_scale(f, size) for size, f in zip(REFERENCE_RESOLUTIONS, ordered)}
        else:
            ordered = [f for _, f in sorted(prior_features.items())]
            conditioning = {size: torch.zeros_like(to_scale(f, size)) for size, f in zip(REFERENCE_RESOLUTIONS, ordered)}

        logits = None
        if semantic:
            logits = self.colorization_net.logits(l_input, conditioning, backbone_features)
            ab = resample_square(self.colorization_net.decode(logits), l_input.shape[-1])
        else:
            ab = self.colorization_net(l_input, conditioning) * AB_SCALE
        return ForwardOutput(
            ab=ab,
            exemplar=exemplar,
            warped_exemplar=warped_exemplar,
            z=z,
            class_ids=class_ids,
            gray_embedding=gray_embedding,
            ab_logits=logits,
        )

    def _with_reference(
        self, prior_exemplar: torch.Tensor, reference: torch.Tensor, use_reference: torch.Tensor | None
    ) -> torch.Tensor:
        if not self.takes_reference:
            raise ValueError(
                f"a reference photo guides models with guidance 'image' only; this one has {self.guidance.value!r}"
            )
        if reference.ndim != 4 or reference.shape[1] != 3 or reference.shape[0] != prior_exemplar.shape[0]:
            raise ValueError(f"reference must be (B, 3, h, w) with B = {prior_exemplar.shape[0]}, got {tuple(reference.shape)}")
        # At the prior's resolution the reference is matched and warped exactly as an exemplar is.
        reference = resample_square(reference.to(prior_exemplar), prior_exemplar.shape[-1])
        if use_reference is None:
            return reference
        return torch.where(use_reference.to(prior_exemplar.device).view(-1, 1, 1, 1), reference, prior_exemplar)

    def shift_latent(self, z: torch.Tensor, direction: int, shifts: torch.Tensor) -> torch.Tensor:
        """z (1, dim_z) walked along deformator direction `direction`: (len(shifts), dim_z)."""
        if self.deformator is None:
            raise ValueError("this model has no latent deformator; transitions are unavailable")
        offsets = self.deformator.direction_shift(direction, shifts.to(z))
        walked = z.expand(len(shifts), -1).clone()
        walked[:, : offsets.shape[1]] += offsets
        return walked

    # ------------------------------------------------------------------ our format on disk
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "GCPColorizationModel":
        """The model of a `save_pretrained` folder (`config.json` + `model.safetensors`), loaded
        strictly, on the CPU, in float32 whatever dtype the file stores."""
        directory = Path(path).expanduser()
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for needed in (config_path, weights_path):
            if not needed.is_file():
                raise MissingWeightsError(
                    f"missing {needed.name} in {directory} (a directory written by "
                    f"Colorizer.save_pretrained or `gcpcolor convert`)"
                )
        model = cls(ColorizerConfig.load(config_path))
        load_state_dict_strict(model, read_safetensors(weights_path), weights_path)
        return model

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write `config.json` + `model.safetensors` (each atomically) into folder `path`.

        `dtype=torch.float16` halves the file; `from_pretrained` casts back to float32.
        """
        directory = Path(path).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        write_safetensors(
            directory / WEIGHTS_NAME, self.state_dict(), dtype, metadata={"format": "pt", "library": "gcpcolor"}
        )
        write_atomically(directory / CONFIG_NAME, self.config.save)
        return directory
