"""Stage 0: train the project's own generative colour prior (`gcpcolor train-prior`).

A class-conditional BigGAN (the same generator and discriminator modules as the paper's 256²
prior, at the width and resolution of the config) trained with the BigGAN recipe: hinge loss,
spectral norm in both networks, an exponential moving average of the generator's weights,
optional orthogonal regularisation, and Adam with betas (0, 0.999). Because the photo set is
small, every image the discriminator sees, real or generated, goes through differentiable
augmentation (DiffAugment: colour, translation, cutout) so the discriminator cannot memorise it.

Classes are the photos' own labels (`conditioning.mode: labels`) or k-means pseudo-classes
(`clusters`, the default; see `pseudo_classes.py` for why). The run shares the machinery of the
other stages: torchrun/DDP, checkpoints with exact resume, TensorBoard, and a `final/` export,
here in the prior format of `prior.py` that stages 1 and 2 read with `prior.prior_dir`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .augment import diff_augment, parse_policy
from .config import BigGANConfig, ConfigError, config_from_dict, config_to_dict, register_config_type
from .data import DataConfig
from .image_io import find_images
from .models.biggan_discriminator import BigGANDiscriminator
from .models.biggan_generator import BigGANGenerator
from .prior import PRIOR_CENTROIDS_FILE, save_prior
from .pseudo_classes import cluster_photos, write_centroids_json, write_labels_csv
from .train import (
    DistributedContext,
    TrainingSetupError,
    TrainResult,
    _Trainer,
    setup_distributed,
    teardown_distributed,
)
from .training_config import (
    CheckpointConfig,
    LoggingConfig,
    OptimizationConfig,
)

logger = logging.getLogger(__name__)

PSEUDO_CLASSES_FILE = "pseudo_classes.csv"
CONDITIONING_MODES = ("clusters", "labels")
#: Generator batches run to re-estimate the EMA generator's batch-norm statistics on export.
STANDING_STATISTICS_BATCHES = 64


@register_config_type
@dataclass(frozen=True)
class ConditioningConfig:
    mode: str = "clusters"  # clusters: k-means pseudo-classes; labels: the data's own classes
    num_clusters: int = 16


@register_config_type
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


@register_config_type
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


class PriorGAN(nn.Module):
    """Generator, its EMA copy (what gets exported) and the discriminator."""

    def __init__(self, config: BigGANConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = BigGANGenerator(config)
        self.discriminator = BigGANDiscriminator(config)
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)


class _GeneratorSampler(nn.Module):
    """What DDP wraps for the generator: (z, class ids) -> image, through the class embedding."""

    def __init__(self, generator: BigGANGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        return self.generator.generate(z, class_ids)[0]


def hinge_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """mean(relu(1 - D(x))) + mean(relu(1 + D(G(z)))) (Lim & Ye 2017, BigGAN)."""
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


def hinge_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    return -fake_scores.mean()


def orthogonal_regularization(module: nn.Module) -> torch.Tensor:
    """BigGAN's Σ_W ‖W Wᵀ ⊙ (1 - I)‖²_F over the weight matrices (rows = output units).

    The class embedding is left out, as in BigGAN: its rows need not be decorrelated.
    """
    total = torch.zeros(())
    for name, parameter in module.named_parameters():
        if parameter.ndim < 2 or name.startswith("shared"):
            continue
        rows = parameter.flatten(1)
        gram = rows @ rows.t()
        off_diagonal = gram - torch.diag_embed(torch.diagonal(gram))
        total = total.to(off_diagonal) + off_diagonal.pow(2).sum()
    return total


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for ema_parameter, parameter in zip(ema.parameters(), model.parameters()):
        ema_parameter.lerp_(parameter, 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


@torch.no_grad()
def refresh_standing_statistics(
    generator: BigGANGenerator, class_weights: torch.Tensor, batches: int, batch_size: int, seed: int = 0
) -> None:
    """Re-estimate the generator's batch-norm statistics from its own samples.

    The EMA generator's weights never ran a forward pass of their own, so the statistics it
    inherited belong to the raw generator; BigGAN-PyTorch's "standing statistics" fix that by
    running the generator in training mode over many batches.
    """
    device = next(generator.parameters()).device
    for module in generator.modules():
        if hasattr(module, "stored_mean"):
            module.stored_mean.zero_()
            module.stored_var.fill_(1.0)
    random = torch.Generator(device="cpu").manual_seed(seed)
    was_training = generator.training
    generator.train()
    for _ in range(batches):
        z = torch.randn(batch_size, generator.config.dim_z, generator=random).to(device)
        classes = torch.multinomial(class_weights, batch_size, replacement=True, generator=random).to(device)
        generator.generate(z, classes)
    generator.train(was_training)


class PriorTrainer(_Trainer):
    stage = 0
    config_class = PriorTrainConfig

    def _build_model(self) -> nn.Module:
        labels = [class_id for _, class_id in self.dataset.samples]
        if max(labels) >= self.config.model.n_classes or min(labels) < 0:
            raise TrainingSetupError(
                f"the data has classes {min(labels)}..{max(labels)}, model.n_classes is {self.config.model.n_classes}"
            )
        counts = torch.bincount(torch.tensor(labels), minlength=self.config.model.n_classes).double()
        self.class_weights = counts / counts.sum()
        return PriorGAN(self.config.model)

    def _save_model_config(self, path: Path) -> None:
        path.write_text(json.dumps(config_to_dict(self.model.config), indent=2) + "\n")

    def _same_model_config(self, path: Path) -> bool:
        return config_from_dict(BigGANConfig, json.loads(path.read_text())) == self.model.config

    def _build(self) -> None:
        config, model = self.config, self.model
        model.generator.train()
        model.discriminator.train()
        self.wrapped_generator = self._wrap(_GeneratorSampler(model.generator))
        self.wrapped_discriminator = self._wrap(model.discriminator)
        eps = config.gan.adam_eps
        generator_optimizer = self._adam(list(model.generator.parameters()), config.optim.lr, eps)
        discriminator_optimizer = self._adam(
            list(model.discriminator.parameters()), config.optim.discriminator_lr or config.optim.lr, eps
        )
        self.optimizers = {"generator": generator_optimizer, "discriminator": discriminator_optimizer}
        self.schedulers = {name: self._linear_decay(opt) for name, opt in self.optimizers.items()}

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {
            "generator": self.model.generator,
            "generator_ema": self.model.generator_ema,
            "discriminator": self.model.discriminator,
        }

    def ddp_modules(self) -> list[nn.Module]:
        return [self.wrapped_generator, self.wrapped_discriminator]

    def _latents(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.config.model.dim_z, device=self.device)

    def train_step(self, micro_batches: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        (batch,) = micro_batches
        self._record_skipped(batch)
        config, model = self.config, self.model
        real = batch["rgb"].to(self.device, non_blocking=True) * 2 - 1
        class_ids = batch["class_id"].to(self.device, non_blocking=True)
        policy = config.gan.augment
        self.step_learning_rates = {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}

        # Discriminator: real and generated images (classes as in the real batch) in one pass.
        with torch.no_grad(), self.autocast():
            fake = self.wrapped_generator(self._latents(len(real)), class_ids)
        with self.autocast():
            scores = self.wrapped_discriminator(
                diff_augment(torch.cat([real, fake.float()]), policy), torch.cat([class_ids, class_ids])
            ).float()
        discriminator_loss = hinge_discriminator_loss(scores[: len(real)], scores[len(real) :])
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        discriminator_loss.backward()
        self.optimizers["discriminator"].step()

        # Generator: through the unwrapped, frozen discriminator, so this pass neither trains D
        # nor enters D's DDP gradient sync.
        model.discriminator.requires_grad_(False)
        try:
            with self.autocast():
                fake = self.wrapped_generator(self._latents(len(real)), class_ids)
                fake_scores = model.discriminator(diff_augment(fake.float(), policy), class_ids).float()
            generator_loss = hinge_generator_loss(fake_scores)
            total_generator = generator_loss
            if config.gan.orthogonal_regularization > 0:
                total_generator = total_generator + config.gan.orthogonal_regularization * orthogonal_regularization(
                    model.generator
                )
            self.optimizers["generator"].zero_grad(set_to_none=True)
            total_generator.backward()
            self.optimizers["generator"].step()
        finally:
            model.discriminator.requires_grad_(True)
        for scheduler in self.schedulers.values():
            scheduler.step()
        decay = config.gan.ema_decay if self.step >= config.gan.ema_start else 0.0
        update_ema(model.generator_ema, model.generator, decay)

        terms = {
            "total": float(discriminator_loss.detach() + generator_loss.detach()),
            "discriminator": float(discriminator_loss.detach()),
            "generator": float(generator_loss.detach()),
            "real_score": float(scores[: len(real)].mean().detach()),
            "fake_score": float(scores[len(real) :].mean().detach()),
        }
        visuals = {"real": (real + 1) / 2, "generated": (fake.detach().float() + 1) / 2}
        return terms, visuals

    def _export(self, folder: Path) -> None:
        generator = copy.deepcopy(self.model.generator_ema)
        refresh_standing_statistics(
            generator, self.class_weights, STANDING_STATISTICS_BATCHES, self.config.optim.batch_size, self.config.seed
        )
        extra = {
            "conditioning": config_to_dict(self.config.conditioning),
            "class_sizes": (self.class_weights * len(self.dataset)).round().long().tolist(),
            "steps": self.step,
        }
        save_prior(folder, generator.eval(), self.model.discriminator.eval(), extra)
        for name in (PSEUDO_CLASSES_FILE, PRIOR_CENTROIDS_FILE):
            if (self.output_dir / name).is_file():
                shutil.copyfile(self.output_dir / name, folder / name)


def prepare_conditioning(config: PriorTrainConfig, context: DistributedContext) -> PriorTrainConfig:
    """With pseudo-classes: cluster the photos once (rank 0, kept for resumes) and point the data
    at the resulting labels file; the number of classes follows."""
    conditioning = config.conditioning
    if conditioning.mode == "labels":
        return config
    output_dir = Path(config.checkpoint.output_dir).expanduser()
    labels = output_dir / PSEUDO_CLASSES_FILE
    root = Path(config.data.root).expanduser()
    if context.is_main and not (labels.is_file() and (output_dir / PRIOR_CENTROIDS_FILE).is_file()):
        if not root.is_dir():
            raise TrainingSetupError(f"{root}: dataset folder not found")
        files = [str(path) for path, _ in find_images([str(root)])]
        logger.info("clustering %d photos into %d pseudo-classes", len(files), conditioning.num_clusters)
        clustering = cluster_photos(files, conditioning.num_clusters, seed=config.seed)
        output_dir.mkdir(parents=True, exist_ok=True)
        write_labels_csv(labels, root, clustering)
        write_centroids_json(output_dir / PRIOR_CENTROIDS_FILE, clustering)
        logger.info("pseudo-class sizes: %s (written to %s)", clustering.sizes(), labels)
    context.barrier()
    return dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, labels_file=str(labels.resolve())),
        model=dataclasses.replace(config.model, n_classes=conditioning.num_clusters),
    )


def run_prior_training(config: PriorTrainConfig, resume: str | os.PathLike | bool | None = None) -> TrainResult:
    validate_prior_config(config)
    context = setup_distributed(config.device)
    try:
        config = prepare_conditioning(config, context)
        return PriorTrainer(config, resume, context).train()
    finally:
        teardown_distributed(context)


__all__ = [
    "PriorTrainConfig",
    "PriorTrainer",
    "run_prior_training",
]
