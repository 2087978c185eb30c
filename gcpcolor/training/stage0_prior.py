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
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import diff_augment
from ..config import BigGANConfig, config_to_dict
from ..errors import TrainingSetupError
from ..photo_files import find_images
from ..models.biggan_discriminator import BigGANDiscriminator
from ..models.biggan_generator import BigGANGenerator
from ..prior import PRIOR_CENTROIDS_FILE, save_prior
from ..pseudo_classes import cluster_photos, write_centroids_json, write_labels_csv
from .config import PSEUDO_CLASSES_FILE, PriorTrainConfig, validate_prior_config
from .distributed import DistributedContext
from .engine import Phase, Trainer

logger = logging.getLogger(__name__)

#: Generator batches run to re-estimate the EMA generator's batch-norm statistics on export.
STANDING_STATISTICS_BATCHES = 64


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


class PriorTrainer(Trainer):
    """The GAN in two phases per step: the discriminator learns from real photos and from
    samples of the current generator, then the generator learns against the updated
    discriminator; the EMA generator follows after both."""

    stage = 0
    config_class = PriorTrainConfig

    def prepare_config(self, config: PriorTrainConfig) -> PriorTrainConfig:
        """With pseudo-classes, the photos are clustered into classes before anything is built."""
        validate_prior_config(config)
        return prepare_conditioning(config, self.context)

    def _build_model(self) -> nn.Module:
        labels = [class_id for _, class_id in self.dataset.samples]
        if max(labels) >= self.config.model.n_classes or min(labels) < 0:
            raise TrainingSetupError(
                f"the data has classes {min(labels)}..{max(labels)}, model.n_classes is {self.config.model.n_classes}"
            )
        counts = torch.bincount(torch.tensor(labels), minlength=self.config.model.n_classes).double()
        self.class_weights = counts / counts.sum()
        return PriorGAN(self.config.model)

    def _build(self) -> None:
        config, model = self.config, self.model
        model.generator.train()
        model.discriminator.train()
        self.wrapped_generator = self._wrap(_GeneratorSampler(model.generator))
        self.wrapped_discriminator = self._wrap(model.discriminator)
        eps = config.gan.adam_eps
        generator_optimizer = self.make_optimizer(list(model.generator.parameters()), config.optim.lr, eps)
        discriminator_optimizer = self.make_optimizer(
            list(model.discriminator.parameters()), config.optim.discriminator_lr or config.optim.lr, eps
        )
        self.optimizers = {"generator": generator_optimizer, "discriminator": discriminator_optimizer}
        self.schedulers = {name: self.make_scheduler(opt) for name, opt in self.optimizers.items()}

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {
            "generator": self.model.generator,
            "generator_ema": self.model.generator_ema,
            "discriminator": self.model.discriminator,
        }

    def ddp_modules(self) -> list[nn.Module]:
        return [self.wrapped_generator, self.wrapped_discriminator]

    def phases(self) -> tuple[Phase, ...]:
        return (Phase("discriminator", ("discriminator",)), Phase("generator", ("generator",)))

    def _latents(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.config.model.dim_z, device=self.device)

    def batch_to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Real photos in [-1, 1] and their classes, copied once for both phases."""
        return {
            "real": batch["rgb"].to(self.device, non_blocking=True) * 2 - 1,
            "class_id": batch["class_id"].to(self.device, non_blocking=True),
        }

    def accumulate_gradients(
        self, phase: str, batch: dict[str, Any], scale: float
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        real, class_ids = batch["real"], batch["class_id"]
        if phase == "discriminator":
            return self._discriminator_phase(real, class_ids, scale), {}
        return self._generator_phase(real, class_ids, scale)

    def _discriminator_phase(self, real: torch.Tensor, class_ids: torch.Tensor, scale: float) -> dict[str, torch.Tensor]:
        """Hinge loss on real and generated images (classes as in the real batch), in one pass."""
        with torch.no_grad(), self.autocast():
            fake = self.wrapped_generator(self._latents(len(real)), class_ids)
        with self.autocast():
            scores = self.wrapped_discriminator(
                diff_augment(torch.cat([real, fake.float()]), self.config.gan.augment),
                torch.cat([class_ids, class_ids]),
            ).float()
        loss = hinge_discriminator_loss(scores[: len(real)], scores[len(real) :])
        (loss * scale).backward()
        return {
            "total": loss,
            "discriminator": loss,
            "real_score": scores[: len(real)].mean(),
            "fake_score": scores[len(real) :].mean(),
        }

    def _generator_phase(
        self, real: torch.Tensor, class_ids: torch.Tensor, scale: float
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Hinge loss through the unwrapped, frozen discriminator, so this pass neither trains
        D nor enters D's DDP gradient sync."""
        config, model = self.config, self.model
        model.discriminator.requires_grad_(False)
        try:
            with self.autocast():
                fake = self.wrapped_generator(self._latents(len(real)), class_ids)
                fake_scores = model.discriminator(diff_augment(fake.float(), config.gan.augment), class_ids).float()
            loss = hinge_generator_loss(fake_scores)
            total = loss
            if config.gan.orthogonal_regularization > 0:
                total = total + config.gan.orthogonal_regularization * orthogonal_regularization(model.generator)
            (total * scale).backward()
        finally:
            model.discriminator.requires_grad_(True)
        visuals = {"real": (real + 1) / 2, "generated": (fake.detach().float() + 1) / 2}
        return {"total": loss, "generator": loss}, visuals

    def after_step(self) -> None:
        gan = self.config.gan
        decay = gan.ema_decay if self.step >= gan.ema_start else 0.0
        update_ema(self.model.generator_ema, self.model.generator, decay)

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
