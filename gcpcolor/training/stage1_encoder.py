"""Stage 1: the encoder E that inverts a gray photo into the prior's latent space.

z = E(L, y), x_inv = G(z, y); the loss is L1 between the frozen BigGAN discriminator's last three
block outputs on x_inv and on the real photo, plus λ_reg·‖z‖²/2. Generator, discriminator and
every later network stay frozen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..color import gray_to_rgb
from ..losses import encoder_feature_loss, latent_regularizer
from ..model import resample_square
from .builders import freeze
from .config import Stage1Config
from .engine import Trainer

class EncoderInversion(nn.Module):
    """Stage 1's trainable part, the module DDP wraps: gray photo and class -> latent z."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, l_input: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(l_input, class_ids)


class EncoderTrainer(Trainer):
    """Stage 1: z = E(L, y), x_inv = G(z, y); L1 on D's last three block outputs + λ_reg·‖z‖²/2."""

    stage = 1
    config_class = Stage1Config

    def _build(self) -> None:
        model = self.model
        for module in (model.generator, model.discriminator, model.correspondence,
                       model.colorization_net, model.deformator):
            freeze(module)
        model.encoder.train()
        model.encoder.requires_grad_(True)
        self.wrapped_inversion = self._wrap(EncoderInversion(model.encoder))
        optimizer = self.make_optimizer(list(model.encoder.parameters()), self.config.optim.lr)
        self.optimizers = {"encoder": optimizer}
        self.schedulers = {"encoder": self.make_scheduler(optimizer)}

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.model.encoder}

    def ddp_modules(self) -> list[nn.Module]:
        return [self.wrapped_inversion]

    def losses(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        l_input, class_ids, rgb, lab = self._inputs(batch)
        weights = self.config.loss
        discriminator = self.model.discriminator
        with self.autocast():
            # The prior networks see photos at their own resolution (256² for the paper's).
            z = self.wrapped_inversion(self.model.to_prior_resolution(l_input), class_ids)
            inversion, _ = self.model.generator.generate(z, class_ids)
            inversion_features = discriminator.encoder_loss_features(inversion)
            with torch.no_grad():
                real_features = discriminator.encoder_loss_features(self.model.to_prior_resolution(rgb * 2 - 1))
        feature = encoder_feature_loss(
            [f.float() for f in inversion_features], [f.float() for f in real_features]
        )
        latent = latent_regularizer(z.float())
        total = weights.feature * feature + weights.latent * latent
        terms = {"total": total, "feature": feature, "latent": latent}
        visuals = {
            "gray": gray_to_rgb(lab[:, :1]),
            "inversion": resample_square((inversion.detach().float() + 1) / 2, rgb.shape[-1]),
            "truth": rgb,
        }
        return terms, visuals

    def accumulate_gradients(
        self, phase: str, batch: dict[str, Any], scale: float
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        terms, visuals = self.losses(batch)
        (terms["total"] * scale).backward()
        return terms, visuals
