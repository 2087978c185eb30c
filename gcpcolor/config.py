"""Typed model configurations.

Every model is built from one of these dataclasses, so the same code builds the full-size
networks of the paper and the tiny ones the tests use. A `ColorizerConfig` is written as JSON
beside every checkpoint and is all that `Colorizer.from_pretrained` needs to rebuild the models.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or value is invalid."""


def config_from_dict(cls: type[T], data: Mapping[str, Any], where: str = "", base: T | None = None) -> T:
    """Build dataclass `cls` from plain data (JSON, YAML), the one decoder of every config.

    A field not given keeps its default; a nested config given in part is laid over the
    default its field declares (so `optim: {lr: 2e-4}` keeps a stage's own betas). Unknown keys
    are an error (a typo must not be silently ignored), and values are checked against the field
    types: an int is accepted for a float, a numeric string such as YAML 1.1's `1e-4` is read as
    the float it is meant to be, lists become tuples. Keys in the class's `RETIRED_FIELDS` are
    fields that files written by earlier versions still hold; they are ignored. With `base`, the
    fields not given keep base's values instead of the defaults.
    """
    label = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping, got {type(data).__name__}")
    hints = field_types(cls)
    retired = getattr(cls, "RETIRED_FIELDS", ())
    given = {name: value for name, value in data.items() if name not in retired}
    unknown = sorted(set(given) - set(hints), key=str)
    if unknown:
        raise ConfigError(f"{label}: unknown option(s) {', '.join(map(str, unknown))}")
    specs = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    kwargs = {}
    for name, value in given.items():
        default = getattr(base, name) if base is not None else _field_default(specs[name])
        kwargs[name] = _decode(value, hints[name], default, f"{prefix}{name}")
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of dataclass `cls` (string annotations evaluated)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def dataclass_in(annotation: Any) -> type | None:
    """The dataclass an annotation such as `DataConfig | None` names, if any."""
    for option in _union_members(annotation):
        if isinstance(option, type) and dataclasses.is_dataclass(option):
            return option
    return None


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _field_default(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None


def _decode(value: Any, annotation: Any, default: Any, key: str) -> Any:
    nested = dataclass_in(annotation)
    if nested is not None and isinstance(value, Mapping):
        return config_from_dict(nested, value, key, default if isinstance(default, nested) else None)
    return _coerce(value, annotation, key)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    members = _union_members(annotation)
    if value is None:
        if type(None) in members:
            return None
        raise ConfigError(f"{key}: a value is required")
    for option in members:
        origin = typing.get_origin(option)
        if option is Any:
            return value
        if option is dict or origin is dict:
            if isinstance(value, Mapping):
                return dict(value)
        elif dataclasses.is_dataclass(option):
            if isinstance(value, option):
                return value
        elif option is bool:
            if isinstance(value, bool):
                return value
        elif option is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif option is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    continue
        elif option is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
        elif origin is tuple:
            item_types = typing.get_args(option)
            if len(item_types) == 2 and item_types[1] is Ellipsis:
                item_types = (item_types[0],) * (len(value) if isinstance(value, (list, tuple)) else 0)
            if isinstance(value, (list, tuple)) and len(value) == len(item_types):
                return tuple(_coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, item_types)))
    expected = " or ".join(_type_name(m) for m in members)
    raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if typing.get_origin(annotation) is tuple:
        return f"a list of {len(typing.get_args(annotation))} numbers"
    return getattr(annotation, "__name__", str(annotation))


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


#: BigGAN-PyTorch generator block widths (input, output) in units of g_ch, per resolution.
GENERATOR_ARCHITECTURES: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    256: ((16, 16, 8, 8, 4, 2), (16, 8, 8, 4, 2, 1)),
    128: ((16, 16, 8, 4, 2), (16, 8, 4, 2, 1)),
    64: ((16, 16, 8, 4), (16, 8, 4, 2)),
}
#: BigGAN-PyTorch discriminator block output widths in units of d_ch; all blocks but the last
#: halve the resolution. The encoder E is shaped the same way.
DISCRIMINATOR_ARCHITECTURES: dict[int, tuple[int, ...]] = {
    256: (1, 2, 4, 8, 8, 16, 16),
    128: (1, 2, 4, 8, 16, 16),
    64: (1, 2, 4, 8, 16),
}


#: The networks' working size (photos are fitted to it and the result brought back to theirs).
WORK_SIZE = 256
CLASS_PREDICTORS = ("discriminator", "lightness_centroids", "imagenet_probe")
COLORIZATION_NETWORKS = ("spade", "semantic")


def _check_resolution(owner: str, resolution: int) -> None:
    if resolution not in DISCRIMINATOR_ARCHITECTURES:
        valid = ", ".join(str(r) for r in sorted(DISCRIMINATOR_ARCHITECTURES))
        raise ConfigError(f"{owner}: resolution must be one of {valid}, got {resolution}")


@dataclass(frozen=True)
class BigGANConfig:
    """BigGAN-PyTorch generator/discriminator (the authors' `biggan_*_256.pth` by default).

    The paper's prior is the 256² ImageNet BigGAN; the 128² and 64² layouts of BigGAN-PyTorch
    are there for smaller priors trained with `gcpcolor train-prior`. Whatever the prior's
    resolution, the colorizer works at `ColorizerConfig.work_size` and the prior's features are
    resampled to its scales.
    """

    g_ch: int = 96
    d_ch: int = 96
    dim_z: int = 120  # hierarchical z: 7 slots of dim_z // 7 = 17, so 119 dims are used
    shared_dim: int = 128
    n_classes: int = 1000
    bottom_width: int = 4
    resolution: int = 256
    attention_resolution: int = 64
    bn_eps: float = 1e-5
    sn_eps: float = 1e-12

    def __post_init__(self) -> None:
        _check_resolution("BigGANConfig", self.resolution)
        blocks = len(GENERATOR_ARCHITECTURES[self.resolution][1])
        if self.bottom_width * 2**blocks != self.resolution:
            raise ConfigError(
                f"BigGANConfig: bottom_width {self.bottom_width} with {blocks} upsampling blocks "
                f"does not give resolution {self.resolution}"
            )

    @property
    def generator_widths(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(input, output) channel multipliers of the generator blocks."""
        return GENERATOR_ARCHITECTURES[self.resolution]

    @property
    def discriminator_widths(self) -> tuple[int, ...]:
        return DISCRIMINATOR_ARCHITECTURES[self.resolution]

    @property
    def generator_block_resolutions(self) -> list[int]:
        return [self.bottom_width * 2 ** (i + 1) for i in range(len(self.generator_widths[1]))]

    @property
    def num_slots(self) -> int:
        return len(self.generator_widths[1]) + 1  # one chunk per block plus the first linear layer

    @property
    def z_chunk_size(self) -> int:
        return self.dim_z // self.num_slots

    @property
    def used_z_dims(self) -> int:
        return self.z_chunk_size * self.num_slots

    @property
    def feature_channels(self) -> dict[int, int]:
        """Channels of the last three generator block outputs, keyed by their resolution
        ({64: 384, 128: 192, 256: 96} for the paper's prior); handed to the colorization net."""
        outputs = self.generator_widths[1][-3:]
        resolutions = self.generator_block_resolutions[-3:]
        return {r: m * self.g_ch for r, m in zip(resolutions, outputs)}

    @property
    def correspondence_channels(self) -> int:
        """Discriminator blocks 2 and 3 (64² and 32² at 256²): 2·d_ch + 4·d_ch."""
        widths = self.discriminator_widths
        return (widths[1] + widths[2]) * self.d_ch


@dataclass(frozen=True)
class EncoderConfig:
    """The BigGAN encoder E of stage 1 (the authors' `biggan_E.pth`)."""

    e_ch: int = 64
    z_dim: int = 120
    shared_dim: int = 128
    n_classes: int = 1000
    attention_resolution: int = 64
    bn_eps: float = 1e-5
    resolution: int = 256  # the gray input is resized to the prior's resolution

    def __post_init__(self) -> None:
        _check_resolution("EncoderConfig", self.resolution)


@dataclass(frozen=True)
class CorrespondenceConfig:
    """The alignment network: features at 64² are matched by a softmax over cosine similarity."""

    nonlocal_channels: int = 128
    temperature: float = 0.01
    #: side of the grid on which photo and exemplar are matched (the paper: 64, a 4096 x 4096
    #: matrix); a small prior's discriminator features are coarser, and a 32² grid costs 16x
    #: less in the matrix products that dominate the time of stage 2 on CPU
    grid: int = 64

    def __post_init__(self) -> None:
        if self.grid not in (16, 32, 64):
            raise ConfigError(f"CorrespondenceConfig: grid must be 16, 32 or 64, got {self.grid}")


#: The highest annealed-mean temperature of a "semantic" network that the configuration, the
#: command line and the web page accept.
MAX_TEMPERATURE = 10.0
#: A tilt of 0.1 per Lab unit already moves a bin at a* = 50 by 5 logits: far past any offset
#: a model could need.
MAX_A_TILT = 0.1


@dataclass(frozen=True)
class ColorizationConfig:
    """The colorization network C: the paper's SPADE network ("spade") or the default model's
    ImageNet-backbone network ("semantic", see docs/architecture.md)."""

    type: str = "spade"
    base_channels: int = 64
    n_res_blocks: int = 6
    n_downsampling: int = 2
    in_channels: int = 1
    out_channels: int = 2
    #: SPADE refines the reference with a modulated deformable conv (the paper); False swaps in
    #: a gated plain conv, far cheaper to train on CPU (our small default model)
    deformable: bool = True
    #: "semantic" only: temperature of the annealed mean that decodes the ab-bin distribution
    #: (lower is more vivid; Zhang et al. 2016 use 0.38)
    temperature: float = 0.38
    #: "semantic" only: an exponential tilt of the ab-bin distribution along a*, added to the
    #: logits before the temperature (logits + a_tilt · a* of each bin centre). The rebalanced
    #: loss leaves the network's a* too high by a constant (magenta-maroon shadows); a small
    #: negative tilt, fitted on training photos with `benchmarks/calibrate_temperature.py
    #: --a-tilts`, removes it. b* has no such constant offset (it follows content), so it has
    #: no tilt.
    a_tilt: float = 0.0

    def __post_init__(self) -> None:
        if self.type not in COLORIZATION_NETWORKS:
            raise ConfigError(
                f"ColorizationConfig: type must be one of {', '.join(COLORIZATION_NETWORKS)}, got {self.type!r}"
            )
        if not 0.0 < self.temperature <= MAX_TEMPERATURE:
            raise ConfigError(f"ColorizationConfig: temperature must be in (0, {MAX_TEMPERATURE:g}], got {self.temperature}")
        if not math.isfinite(self.a_tilt) or abs(self.a_tilt) > MAX_A_TILT:
            raise ConfigError(f"ColorizationConfig: a_tilt must be within ±{MAX_A_TILT:g}, got {self.a_tilt}")


@dataclass(frozen=True)
class DeformatorConfig:
    """Orthogonal latent deformator (Voynov & Babenko 2020) over the used z dims."""

    dim: int = 119


@dataclass(frozen=True)
class ColorizerConfig:
    biggan: BigGANConfig = field(default_factory=BigGANConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    correspondence: CorrespondenceConfig = field(default_factory=CorrespondenceConfig)
    colorization: ColorizationConfig = field(default_factory=ColorizationConfig)
    deformator: DeformatorConfig | None = field(default_factory=DeformatorConfig)
    #: conditioning of the colorization network: features (the method) or a Table 2 ablation
    guidance: str = "features"
    #: how a gray photo's class is picked: "discriminator" (the prior's class projection, the
    #: paper's ImageNet classes) or "lightness_centroids" (nearest pseudo-class centroid of the
    #: photo's lightness layout, for priors trained on k-means pseudo-classes) or
    #: "imagenet_probe" (a linear layer on the ImageNet backbone's pooled features of the gray
    #: photo, fitted to the prior's classes; needs the "semantic" colorization network)
    class_predictor: str = "discriminator"

    def __post_init__(self) -> None:
        prior, encoder = self.biggan, self.encoder
        mismatches = [
            (f"encoder.{name}", getattr(encoder, name), f"biggan.{other}", getattr(prior, other))
            for name, other in (("resolution", "resolution"), ("z_dim", "dim_z"), ("n_classes", "n_classes"))
            if getattr(encoder, name) != getattr(prior, other)
        ]
        if self.deformator is not None and self.deformator.dim != prior.used_z_dims:
            mismatches.append(("deformator.dim", self.deformator.dim, "the used z dims", prior.used_z_dims))
        if mismatches:
            raise ConfigError(
                "ColorizerConfig: " + "; ".join(f"{a}={va} must equal {b}={vb}" for a, va, b, vb in mismatches)
            )
        if self.class_predictor not in CLASS_PREDICTORS:
            raise ConfigError(
                f"ColorizerConfig: class_predictor must be one of {', '.join(CLASS_PREDICTORS)}, "
                f"got {self.class_predictor!r}"
            )
        if self.class_predictor == "imagenet_probe" and self.colorization.type != "semantic":
            raise ConfigError("ColorizerConfig: class_predictor imagenet_probe needs colorization.type semantic")

    #: Fields of earlier versions that saved configs still hold: `work_size` (only 256 was ever
    #: accepted, now the `work_size` property) and `ab_scale` (never read: the SPADE head's scale
    #: is `color.AB_SCALE`).
    RETIRED_FIELDS: ClassVar[tuple[str, ...]] = ("work_size", "ab_scale")

    @property
    def work_size(self) -> int:
        """The side the networks work at: the SPADE decoder's scales are the paper's 256²."""
        return WORK_SIZE

    @classmethod
    def tiny(cls) -> "ColorizerConfig":
        """A few-megabyte configuration for tests and the untrained demo (same layout, narrow)."""
        return cls(
            biggan=BigGANConfig(g_ch=8, d_ch=8, shared_dim=16, n_classes=1000),
            encoder=EncoderConfig(e_ch=8, shared_dim=16),
            correspondence=CorrespondenceConfig(nonlocal_channels=16),
            colorization=ColorizationConfig(base_channels=8, n_res_blocks=2),
            deformator=DeformatorConfig(dim=BigGANConfig().used_z_dims),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(config_to_dict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ColorizerConfig":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        return config_from_dict(cls, data)
