"""Typed configurations of the three training stages, read from YAML.

A config file only lists what differs from the stage's defaults (the paper's settings, see
`Stage1Config` / `Stage2Config`; `PriorTrainConfig` for stage 0); unknown keys are errors, and
`--set key.sub=value` overrides are applied on top of the file. Files are decoded by
`config.config_from_dict`, the decoder of every config of the package.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from torch.optim import Adam, AdamW, Optimizer

from ..augment import parse_policy
from ..config import BigGANConfig, ColorizerConfig, ConfigError, config_from_dict, dataclass_in, field_types
from ..data import DataConfig
from ..losses import LossWeights
from ..model import Guidance
from ..models.patchgan import PatchGANConfig

PRECISIONS = ("bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")
MODEL_PRESETS = ("full", "tiny")
FEATURE_EXTRACTORS = ("vgg19", "prior_discriminator", "auto")
CLASS_SOURCES = ("labels", "predicted")
#: The optimiser classes that `optim.optimizer` names.
OPTIMIZER_CLASSES: dict[str, type[Optimizer]] = {"adam": Adam, "adamw": AdamW}


@dataclass(frozen=True)
class PriorConfig:
    """Where the frozen generative prior comes from; set exactly one of these.

    prior_weights_dir: a folder with the authors' released files (`biggan_G_ema_256.pth`,
        `biggan_D_256.pth`, and for stage 2 `biggan_E.pth`; `deformator_for_biggan.pt` is
        used when present). Only the prior is loaded; the trained networks start from scratch.
    prior_dir: the `final/` folder of `gcpcolor train-prior`: our own BigGAN generator and
        discriminator. The model config's BigGAN part is taken from it; the encoder is made to
        match (resolution, classes, latent size), and the deformator starts as the identity,
        so transitions walk along the raw latent axes.
    pretrained: a `Colorizer.save_pretrained` folder (e.g. the `final/` export of stage 1).
        Every network starts from its weights, so stage 2 then fine-tunes the correspondence
        and colorization networks stored there (stage 1's export holds untrained ones).
    fresh_stage2: with `pretrained`, the correspondence and colorization networks start from
        scratch all the same (the frozen ImageNet backbone still comes from its package): stage
        2 trained anew on a trained prior, so that it and its "without prior" ablation, which
        has no trained network to start from, get the same budget.
    random_prior: randomly initialised BigGAN and encoder, for tests and smoke runs only.
    """

    prior_weights_dir: str | None = None
    prior_dir: str | None = None
    pretrained: str | None = None
    fresh_stage2: bool = False
    random_prior: bool = False


@dataclass(frozen=True)
class OptimizationConfig:
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    discriminator_lr: float | None = None  # stage 2's PatchGAN; None: same as lr
    epochs: int = 10
    max_steps: int | None = None  # optimizer steps; when set it replaces `epochs`
    batch_size: int = 8  # per process (per GPU)
    grad_accumulation: int = 1  # micro-batches per optimizer step
    linear_decay: bool = True  # learning rate decays linearly to 0 over the run
    # The rate rises linearly over the first optimizer steps: fine-tuning a trained model with
    # fresh Adam moments at full rate jolts it (60 steps at 5e-4 moved the ablation's mean b*
    # on val by +3.6). Counts from step 0, so a resumed run past it is unaffected.
    warmup_steps: int = 0
    optimizer: str = "adam"  # adam or adamw, with `betas`; the GAN stages use it for both sides


@dataclass(frozen=True)
class LoggingConfig:
    log_every: int = 50  # steps between TensorBoard scalars
    image_every: int = 1000  # steps between TensorBoard image grids
    tensorboard: bool = True
    tensorboard_dir: str | None = None  # default: <output_dir>/tensorboard
    progress_bar: bool = True


@dataclass(frozen=True)
class CheckpointConfig:
    output_dir: str = "runs/train"
    save_every: int = 2000  # steps; a checkpoint is also written at the last step
    keep_last: int = 3  # older checkpoints are deleted; 0 keeps all


@dataclass(frozen=True)
class Stage1Config:
    """Stage 1, the encoder E (paper: Adam lr 1e-5, λ_ftr 1, λ_reg 0.0125, 10 epochs, 8/GPU).

    The paper does not give Adam's betas for this stage; we use PyTorch's (0.9, 0.999), the
    usual choice for a non-adversarial regression objective.
    """

    stage: ClassVar[int] = 1

    model: str | dict[str, Any] = "full"  # "full", "tiny" or a ColorizerConfig mapping
    prior: PriorConfig = field(default_factory=PriorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimizationConfig = field(default_factory=OptimizationConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(
        default_factory=lambda: CheckpointConfig(output_dir="runs/stage1")
    )
    precision: str = "bf16"  # bf16 autocast on CUDA; CPU always runs in fp32
    device: str = "auto"
    seed: int = 0


@dataclass(frozen=True)
class Stage2Config:
    """Stage 2, correspondence + colorization against a PatchGAN (paper: Adam lr 1e-4,
    λ_perc 1e-3, λ_adv 1, λ_dom 10, λ_ctx 0.1, 10 epochs, 8/GPU).

    The paper does not give Adam's betas; we use (0.5, 0.999), the usual setting for GAN
    training (pix2pixHD, SPADE), for both optimisers.
    """

    stage: ClassVar[int] = 2

    model: str | dict[str, Any] = "full"
    prior: PriorConfig = field(default_factory=PriorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimizationConfig = field(
        default_factory=lambda: OptimizationConfig(lr=1e-4, betas=(0.5, 0.999))
    )
    loss: LossWeights = field(default_factory=LossWeights)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(
        default_factory=lambda: CheckpointConfig(output_dir="runs/stage2")
    )
    precision: str = "bf16"
    device: str = "auto"
    seed: int = 0
    guidance: str = Guidance.FEATURES.value  # Table 2 ablations: features|image|unaligned|none
    patchgan: PatchGANConfig = field(default_factory=PatchGANConfig)
    #: perceptual/contextual features: vgg19 (the paper), prior_discriminator (no download
    #: needed), or auto (VGG19 when its file is found); checkpoints record the one used
    feature_extractor: str = "vgg19"
    vgg_weights: str | None = None  # torchvision's vgg19-dcbb9e9d.pth; None: default places
    allow_random_vgg: bool = False  # tests only: a missing VGG19 file means random layers
    contextual_max_positions: int | None = None  # pool VGG maps above this many positions
    #: the prior's class of each photo: "labels" (the data's class column, the paper) or
    #: "predicted" (the model's own class predictor on the gray photo, as at inference; the
    #: data then needs no labels)
    class_source: str = "labels"
    #: labelled photos to fit an "imagenet_probe" class predictor on before training (its
    #: labels are the prior's classes, e.g. the pseudo_classes.csv of `train-prior`)
    class_probe_data: DataConfig | None = None
    #: share of the photos whose exemplar is their own true colours (mirrored at random) instead
    #: of the prior's, for guidance "image": a network trained only on the prior's exemplars
    #: learns to ignore a weak prior; one that also sees references that match the truth learns
    #: to follow its reference, and so to vary with the prior's samples and a user's photo
    truth_reference: float = 0.0


# --------------------------------------------------------------------------- stage 0, the prior

PSEUDO_CLASSES_FILE = "pseudo_classes.csv"
CONDITIONING_MODES = ("clusters", "labels")


@dataclass(frozen=True)
class ConditioningConfig:
    mode: str = "clusters"  # clusters: k-means pseudo-classes; labels: the data's own classes
    num_clusters: int = 16


@dataclass(frozen=True)
class PriorGANConfig:
    """The GAN recipe beyond the optimiser settings."""

    augment: str = "color,translation,cutout"  # DiffAugment policy applied to all D inputs
    ema_decay: float = 0.999
    ema_start: int = 250  # steps before which the EMA generator just copies the generator
    orthogonal_regularization: float = 0.0  # BigGAN's off-diagonal ortho reg; 0 disables
    adam_eps: float = 1e-6


def _small_prior() -> BigGANConfig:
    return BigGANConfig(
        g_ch=32, d_ch=32, dim_z=120, shared_dim=64, n_classes=16, resolution=64, attention_resolution=32
    )


@dataclass(frozen=True)
class PriorTrainConfig:
    """Defaults: a 64² BigGAN of width 32 for a few thousand photos on modest hardware.

    BigGAN's settings: Adam (0, 0.999), G lr 1e-4, D lr 4e-4 (two-timescale), EMA 0.999.
    """

    stage: ClassVar[int] = 0

    model: BigGANConfig = field(default_factory=_small_prior)
    data: DataConfig = field(default_factory=lambda: DataConfig(image_size=64, crop_scale_min=0.8, num_workers=1))
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    gan: PriorGANConfig = field(default_factory=PriorGANConfig)
    optim: OptimizationConfig = field(
        default_factory=lambda: OptimizationConfig(
            lr=1e-4, discriminator_lr=4e-4, betas=(0.0, 0.999), batch_size=32, epochs=100, linear_decay=False
        )
    )
    logging: LoggingConfig = field(default_factory=lambda: LoggingConfig(log_every=25, image_every=250))
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(output_dir="runs/prior", save_every=250))
    precision: str = "bf16"
    device: str = "auto"
    seed: int = 0


def validate_prior_config(config: PriorTrainConfig) -> None:
    problems = []
    if config.conditioning.mode not in CONDITIONING_MODES:
        problems.append(f"conditioning.mode must be one of {', '.join(CONDITIONING_MODES)}")
    if config.conditioning.mode == "clusters" and config.conditioning.num_clusters < 1:
        problems.append("conditioning.num_clusters must be >= 1")
    if config.data.image_size != config.model.resolution:
        problems.append(
            f"data.image_size ({config.data.image_size}) must equal model.resolution ({config.model.resolution})"
        )
    if config.optim.grad_accumulation != 1:
        problems.append("optim.grad_accumulation must be 1 for the prior (each step is one D and one G update)")
    if not 0.0 <= config.gan.ema_decay < 1.0:
        problems.append("gan.ema_decay must be in [0, 1)")
    try:
        parse_policy(config.gan.augment)
    except ValueError as error:
        problems.append(f"gan.augment: {error}")
    if problems:
        raise ConfigError("; ".join(problems))


TrainConfig = Stage1Config | Stage2Config | PriorTrainConfig


def resolve_model_config(spec: str | Mapping[str, Any]) -> ColorizerConfig:
    if spec == "full":
        return ColorizerConfig()
    if spec == "tiny":
        return ColorizerConfig.tiny()
    if isinstance(spec, Mapping):
        return config_from_dict(ColorizerConfig, dict(spec))
    raise ConfigError(f"model: expected one of {', '.join(MODEL_PRESETS)} or a mapping, got {spec!r}")


def validate_train_config(config: TrainConfig) -> None:
    """Value checks that the field types cannot express; raises ConfigError."""
    problems = []
    prior = getattr(config, "prior", None)  # the prior's own training (stage 0) has none
    sources = [bool(prior.prior_weights_dir), bool(prior.prior_dir), bool(prior.pretrained), prior.random_prior] if prior else [1]
    if sum(sources) != 1:
        problems.append(
            "prior: set exactly one of prior_weights_dir (the authors' files), prior_dir (a "
            "gcpcolor train-prior export), pretrained (a save_pretrained folder) or random_prior: true"
        )
    if prior and prior.fresh_stage2 and not prior.pretrained:
        problems.append("prior.fresh_stage2 applies to prior.pretrained only (the other sources train stage 2 from scratch anyway)")
    optim = config.optim
    if optim.lr <= 0:
        problems.append(f"optim.lr must be positive, got {optim.lr}")
    if optim.discriminator_lr is not None and optim.discriminator_lr <= 0:
        problems.append(f"optim.discriminator_lr must be positive, got {optim.discriminator_lr}")
    if isinstance(config, Stage1Config) and optim.discriminator_lr is not None:
        problems.append("optim.discriminator_lr applies to stage 2 only")
    if optim.optimizer not in OPTIMIZER_CLASSES:
        problems.append(f"optim.optimizer must be one of {', '.join(OPTIMIZER_CLASSES)}, got {optim.optimizer!r}")
    if not all(0.0 <= beta < 1.0 for beta in optim.betas):
        problems.append(f"optim.betas must be in [0, 1), got {list(optim.betas)}")
    for name in ("epochs", "batch_size", "grad_accumulation"):
        if getattr(optim, name) < 1:
            problems.append(f"optim.{name} must be >= 1, got {getattr(optim, name)}")
    if optim.max_steps is not None and optim.max_steps < 1:
        problems.append(f"optim.max_steps must be >= 1, got {optim.max_steps}")
    if optim.warmup_steps < 0:
        problems.append(f"optim.warmup_steps must be >= 0, got {optim.warmup_steps}")
    for name in ("log_every", "image_every"):
        if getattr(config.logging, name) < 1:
            problems.append(f"logging.{name} must be >= 1, got {getattr(config.logging, name)}")
    if config.checkpoint.save_every < 1:
        problems.append(f"checkpoint.save_every must be >= 1, got {config.checkpoint.save_every}")
    if config.checkpoint.keep_last < 0:
        problems.append(f"checkpoint.keep_last must be >= 0, got {config.checkpoint.keep_last}")
    if not config.checkpoint.output_dir:
        problems.append("checkpoint.output_dir is not set")
    if config.precision not in PRECISIONS:
        problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    if config.device not in DEVICES:
        problems.append(f"device must be one of {', '.join(DEVICES)}, got {config.device!r}")
    predicted_classes = getattr(config, "class_source", "labels") == "predicted"
    if config.data.allow_unlabeled and not predicted_classes:
        problems.append(
            "data.allow_unlabeled: training needs a class for every photo (or class_source: predicted)"
        )
    if isinstance(config, Stage2Config):
        valid = [g.value for g in Guidance]
        if config.guidance not in valid:
            problems.append(f"guidance must be one of {', '.join(valid)}, got {config.guidance!r}")
        if config.feature_extractor not in FEATURE_EXTRACTORS:
            problems.append(f"feature_extractor must be one of {', '.join(FEATURE_EXTRACTORS)}")
        if config.contextual_max_positions is not None and config.contextual_max_positions < 1:
            problems.append("contextual_max_positions must be >= 1")
        if not 0.0 <= config.truth_reference <= 1.0:
            problems.append(f"truth_reference must be in [0, 1], got {config.truth_reference}")
        elif config.truth_reference and config.guidance != Guidance.IMAGE.value:
            problems.append("truth_reference needs guidance: image (the other guidances read the generator's features, which a photo has not)")
        if config.class_source not in CLASS_SOURCES:
            problems.append(f"class_source must be one of {', '.join(CLASS_SOURCES)}, got {config.class_source!r}")
    if problems:
        raise ConfigError("; ".join(problems))
    if prior and not (prior.pretrained and isinstance(config.model, Mapping)):
        resolve_model_config(config.model)  # (with `pretrained`, a mapping lists changes only)


def config_to_plain(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON/YAML-safe builtins (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def dump_train_config(config: TrainConfig) -> str:
    return yaml.safe_dump(config_to_plain(config), sort_keys=False)


def stage_config_class(stage: int) -> type[TrainConfig]:
    """0: the prior (`train-prior`), 1: the encoder, 2: correspondence + colorization."""
    classes = {0: PriorTrainConfig, 1: Stage1Config, 2: Stage2Config}
    if stage not in classes:
        raise ConfigError(f"unknown training stage {stage} (0, 1 or 2)")
    return classes[stage]


def load_train_config(
    stage: int, path: str | Path | None = None, overrides: Sequence[str] = ()
) -> TrainConfig:
    """Stage defaults, then the YAML file at `path`, then `key.sub=value` overrides."""
    cls = stage_config_class(stage)
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = loaded or {}
    for override in overrides:
        apply_override(data, override, cls)
    return train_config_from_dict(cls, data)


def train_config_from_dict(cls: type[TrainConfig], data: Mapping[str, Any]) -> TrainConfig:
    config = config_from_dict(cls, data)
    validate_train_config(config)
    return config


def apply_override(data: dict[str, Any], override: str, cls: type) -> None:
    """Set `key.sub=value` in the nested dict `data`; the value is parsed as YAML."""
    key, sep, raw_value = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected key.sub=value")
    parts = key.split(".")
    current_cls: Any = cls
    target = data
    for depth, part in enumerate(parts):
        is_last = depth == len(parts) - 1
        if current_cls is not None:
            hints = field_types(current_cls)
            if part not in hints:
                known = ", ".join(hints)
                raise ConfigError(f"--set {key}: unknown option '{part}' (known: {known})")
            next_cls = dataclass_in(hints[part])
        else:
            next_cls = None  # inside a free-form mapping (an explicit model config)
        if is_last:
            try:
                target[part] = yaml.safe_load(raw_value) if raw_value.strip() else None
            except yaml.YAMLError:
                raise ConfigError(f"--set {key}: cannot parse value {raw_value!r}") from None
            return
        child = target.get(part)
        if part == "model" and depth == 0 and isinstance(child, str):
            # A preset name becomes its full mapping, so single sizes can be changed.
            child = target[part] = config_to_plain(resolve_model_config(child))
        if child is None:
            child = target[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is {child!r}, not a mapping")
        target = child
        current_cls = next_cls
