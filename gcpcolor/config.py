"""Typed model configurations.

Every model is built from one of these dataclasses, so the same code builds the full-size
networks of the paper and the tiny ones the tests use. A `ColorizerConfig` is written as JSON
beside every checkpoint and is all that `Colorizer.from_pretrained` needs to rebuild the models.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or value is invalid."""


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass `cls` from a plain dict, recursing into nested dataclass fields.

    Unknown keys are an error: a typo in a config must not be silently ignored.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown option(s) {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        ftype = fields[name].type
        nested = _dataclass_type(ftype)
        if nested is not None and value is not None:
            value = config_from_dict(nested, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _dataclass_type(annotation: Any) -> type | None:
    if isinstance(annotation, str):
        annotation = _CONFIG_TYPES.get(annotation.replace(" | None", "").strip())
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return annotation
    return None


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


@dataclass(frozen=True)
class BigGANConfig:
    """BigGAN-PyTorch generator/discriminator at 256x256 (the authors' `biggan_*_256.pth`)."""

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

    @property
    def num_slots(self) -> int:
        return 7  # six generator blocks plus the first linear layer

    @property
    def z_chunk_size(self) -> int:
        return self.dim_z // self.num_slots

    @property
    def used_z_dims(self) -> int:
        return self.z_chunk_size * self.num_slots

    @property
    def feature_channels(self) -> dict[int, int]:
        """Channels of the generator block outputs handed to the colorization network."""
        return {64: 4 * self.g_ch, 128: 2 * self.g_ch, 256: self.g_ch}

    @property
    def correspondence_channels(self) -> int:
        """Discriminator features at 64² (2·d_ch) plus the upsampled 32² ones (4·d_ch)."""
        return 6 * self.d_ch


@dataclass(frozen=True)
class EncoderConfig:
    """The BigGAN encoder E of stage 1 (the authors' `biggan_E.pth`)."""

    e_ch: int = 64
    z_dim: int = 120
    shared_dim: int = 128
    n_classes: int = 1000
    attention_resolution: int = 64
    bn_eps: float = 1e-5


@dataclass(frozen=True)
class CorrespondenceConfig:
    """The alignment network: features at 64² are matched by a softmax over cosine similarity."""

    nonlocal_channels: int = 128
    temperature: float = 0.01


@dataclass(frozen=True)
class ColorizationConfig:
    """The SPADE colorization network C."""

    base_channels: int = 64
    n_res_blocks: int = 6
    n_downsampling: int = 2
    in_channels: int = 1
    out_channels: int = 2


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
    work_size: int = 256
    ab_scale: float = 110.0
    #: conditioning of the colorization network: features (the method) or a Table 2 ablation
    guidance: str = "features"

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


_CONFIG_TYPES: dict[str, type] = {
    "BigGANConfig": BigGANConfig,
    "EncoderConfig": EncoderConfig,
    "CorrespondenceConfig": CorrespondenceConfig,
    "ColorizationConfig": ColorizationConfig,
    "DeformatorConfig": DeformatorConfig,
    "ColorizerConfig": ColorizerConfig,
}


def register_config_type(cls: type[T]) -> type[T]:
    """Let nested fields of type `cls` be rebuilt by `config_from_dict` (string annotations)."""
    _CONFIG_TYPES[cls.__name__] = cls
    return cls
