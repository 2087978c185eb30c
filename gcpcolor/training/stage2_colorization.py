"""Stage 2: the correspondence and colorization networks, trained end to end against a
multi-scale LSGAN PatchGAN on Lab, with the prior (E, G, D) frozen.

Generator side: λ_perc·perceptual(VGG relu5_2, output vs truth) + λ_ctx·contextual(output vs
exemplar) + λ_adv·LSGAN + λ_dom·domain alignment (+ λ_cls·ab classification for the semantic
network). Both sides come from the same forward pass of every micro-batch (one `joint` phase of
the engine): splitting them into two phases would run the colorizer twice per step.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..class_probe import fit_class_probe
from ..color import gray_to_rgb, lab_to_rgb
from ..data import make_dataset
from ..errors import MissingWeightsError, TrainingSetupError
from ..losses import (
    ContextualLoss,
    DiscriminatorFeatures,
    ab_classification_loss,
    domain_alignment_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    perceptual_loss,
    rebalancing_weights,
)
from ..model import BackboneFeatures, ForwardOutput, GCPColorizationModel, Guidance
from ..models.patchgan import MultiScalePatchGAN, lab_to_discriminator_input
from ..models.vgg import VGG19Features, find_vgg19_weights
from .builders import freeze
from .config import Stage2Config
from .engine import Trainer

logger = logging.getLogger(__name__)

#: photos whose colours make the ab prior of the rebalanced classification loss
AB_PRIOR_SAMPLES = 512
#: VGG19 layers of the stage-2 losses: perceptual on relu5_2, contextual on all three.
VGG_LAYERS = ("relu3_2", "relu4_2", "relu5_2")


class ColorizerForward(nn.Module):
    """Stage 2's trainable part, the module DDP wraps.

    Only the correspondence and colorization networks are registered as submodules; the frozen
    prior is held outside the module tree so DDP neither synchronises nor broadcasts it.
    """

    def __init__(self, model: GCPColorizationModel) -> None:
        super().__init__()
        self.correspondence = model.correspondence
        self.colorization_net = model.colorization_net
        self._model = (model,)  # a tuple is not registered by nn.Module

    def forward(
        self,
        l_input: torch.Tensor,
        class_ids: torch.Tensor,
        truth_rgb: torch.Tensor,
        backbone_features: BackboneFeatures | None = None,
        reference: torch.Tensor | None = None,
        use_reference: torch.Tensor | None = None,
    ) -> tuple[ForwardOutput, torch.Tensor]:
        """The colorization of `l_input` and the correspondence embedding of the true colours;
        `reference` and `use_reference` as `GCPColorizationModel.forward` takes them."""
        model = self._model[0]
        output = model(
            l_input, class_ids, backbone_features=backbone_features, reference=reference, use_reference=use_reference
        )
        # No loss uses the warped exemplar (it is for display). Returned with its graph, it would
        # make DDP expect gradients for the matching layers even where the guidance leaves them
        # unused (none, unaligned), and their bucket would never be all-reduced.
        output = dataclasses.replace(output, warped_exemplar=output.warped_exemplar.detach())
        with torch.no_grad():
            truth_features = model.correspondence_features(truth_rgb * 2 - 1)
        return output, self.correspondence.embed_reference(truth_features)


class ColorizationTrainer(Trainer):
    """Stage 2: correspondence + colorization against a multi-scale LSGAN PatchGAN on Lab.

    Generator side: λ_perc·perceptual(VGG relu5_2, output vs truth) + λ_ctx·contextual(output vs
    exemplar) + λ_adv·LSGAN + λ_dom·domain alignment. Both sides are computed from the same
    forward pass of every micro-batch and both optimisers step together.
    """

    stage = 2
    config_class = Stage2Config

    @property
    def guidance(self) -> Guidance:
        return Guidance(self.config.guidance)

    def _build_model(self) -> nn.Module:
        model = super()._build_model()
        probe_data = self.config.class_probe_data
        if model.config.class_predictor == "imagenet_probe" and probe_data is not None and self.resume_from is None:
            model.to(self.device)  # the backbone pass over every probe photo is the cost: on the GPU
            fit_class_probe(model, make_dataset(dataclasses.replace(probe_data, train=False)))
        return model

    def _check_weight_files(self) -> None:
        """Settle the loss feature extractor; the checkpoints' config records the one used."""
        config = self.config
        extractor = config.feature_extractor
        if extractor == "auto":
            try:
                find_vgg19_weights(config.vgg_weights)
                extractor = "vgg19"
            except MissingWeightsError:
                extractor = "prior_discriminator"
            logger.info("loss features: %s", extractor)
        elif extractor == "vgg19" and not config.allow_random_vgg:
            find_vgg19_weights(config.vgg_weights)
        self.config = dataclasses.replace(config, feature_extractor=extractor)

    def _build(self) -> None:
        config, model = self.config, self.model
        for module in (*model.prior_modules(), model.deformator):
            freeze(module)
        for module in (model.correspondence, model.colorization_net):
            module.train()
            module.requires_grad_(True)
        if model.config.colorization.type == "semantic":
            model.colorization_net.backbone.requires_grad_(False)
        self.patchgan = MultiScalePatchGAN(config.patchgan).to(self.device).train()
        self.ab_bin_weights: torch.Tensor | None = None
        if config.loss.ab_classification > 0:
            if not model.predicts_distribution:
                raise TrainingSetupError("loss.ab_classification needs model.colorization.type: semantic")
            centers = model.colorization_net.bin_centers
            counts = ab_bin_counts(self.dataset, centers, AB_PRIOR_SAMPLES)
            self.ab_bin_weights = rebalancing_weights(counts, centers, config.loss.rebalance_mix).to(self.device)
        if config.feature_extractor == "vgg19":
            self.loss_features: nn.Module = VGG19Features(
                config.vgg_weights, layers=VGG_LAYERS, allow_random=config.allow_random_vgg
            )
            layers = VGG_LAYERS
        else:
            # The paper already uses the prior's discriminator as a feature extractor for the
            # inversion loss; without VGG19 it stands in for the perceptual and contextual ones.
            self.loss_features = DiscriminatorFeatures(model.discriminator, model.prior_resolution)
            layers = DiscriminatorFeatures.LAYERS
        self.loss_features = self.loss_features.to(self.device)
        self.perceptual_layer = layers[-1]
        self.contextual = ContextualLoss(
            self.loss_features,
            dict(zip(layers, config.loss.contextual_layer_weights.values())),
            max_positions=config.contextual_max_positions,
        )
        # Without warping (none / unaligned) the matching layers after the embeddings get no
        # gradient; DDP must be told to expect that.
        unused = self.guidance in (Guidance.NONE, Guidance.UNALIGNED)
        self.wrapped_colorizer = self._wrap(ColorizerForward(model), find_unused_parameters=unused)
        self.wrapped_patchgan = self._wrap(self.patchgan)
        generator_parameters = [
            p for p in (*model.correspondence.parameters(), *model.colorization_net.parameters()) if p.requires_grad
        ]
        generator_optimizer = self.make_optimizer(generator_parameters, config.optim.lr)
        discriminator_optimizer = self.make_optimizer(
            list(self.patchgan.parameters()), config.optim.discriminator_lr or config.optim.lr
        )
        self.optimizers = {"colorizer": generator_optimizer, "patchgan": discriminator_optimizer}
        self.schedulers = {name: self.make_scheduler(opt) for name, opt in self.optimizers.items()}

    def trainable_modules(self) -> dict[str, nn.Module]:
        modules = {
            "correspondence": self.model.correspondence,
            "colorization_net": self.model.colorization_net,
            "patchgan": self.patchgan,
        }
        if self.model.config.class_predictor == "imagenet_probe":
            modules["class_predictor"] = self.model.class_predictor  # fitted once, kept with the run
        return modules

    def ddp_modules(self) -> list[nn.Module]:
        return [self.wrapped_colorizer, self.wrapped_patchgan]

    def _scores_for_generator(self, fake_lab: torch.Tensor) -> list[torch.Tensor]:
        """PatchGAN scores of the fake with the PatchGAN frozen: the generator loss must not
        train it, and going around the DDP wrapper keeps this pass out of its gradient sync."""
        self.patchgan.requires_grad_(False)
        try:
            return self.patchgan(lab_to_discriminator_input(fake_lab))
        finally:
            self.patchgan.requires_grad_(True)

    def generator_losses(
        self, batch: dict[str, Any]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
        """(loss terms with 'total', the predicted Lab, visuals) of one micro-batch."""
        l_input, class_ids, rgb, lab = self._inputs(batch)
        # The backbone is frozen, so one pass without gradients serves both the class probe and
        # the colorization network.
        with self.autocast():
            backbone_features = self.model.backbone_features(l_input)
        if self.config.class_source == "predicted":
            class_ids = self.model.predict_class(l_input, backbone_features)
        weights = self.config.loss
        # Networks run under autocast; colour conversion and losses in float32, where the
        # contextual loss's relative distances and the Lab round trip keep their precision.
        reference, use_reference = self._truth_references(rgb)
        with self.autocast():
            output, truth_embedding = self.wrapped_colorizer(
                l_input, class_ids, rgb, backbone_features, reference, use_reference
            )
        fake_lab = torch.cat([lab[:, :1], output.ab.float()], dim=1)
        output_rgb = lab_to_rgb(fake_lab)
        exemplar_rgb = ((output.exemplar.float() + 1) / 2).clamp(0, 1)
        terms = {"domain": domain_alignment_loss(output.gray_embedding.float(), truth_embedding.float())}
        # Terms with weight 0 are not computed at all: each costs a network pass.
        if weights.perceptual or weights.contextual:
            with self.autocast():
                output_features = _as_float(self.loss_features(output_rgb))
                with torch.no_grad():
                    truth_features = _as_float(self.loss_features(rgb))
                    exemplar_features = _as_float(self.loss_features(exemplar_rgb)) if weights.contextual else None
            if weights.perceptual:
                terms["perceptual"] = perceptual_loss(output_features, truth_features, self.perceptual_layer)
            if weights.contextual:
                terms["contextual"] = self.contextual.feature_loss(output_features, exemplar_features)
        if weights.adversarial:
            with self.autocast():
                fake_scores = [score.float() for score in self._scores_for_generator(fake_lab)]
            terms["adversarial"] = lsgan_generator_loss(fake_scores)
        if weights.ab_classification:
            terms["ab_classification"] = ab_classification_loss(
                output.ab_logits, lab[:, 1:], self.model.colorization_net.bin_centers, self.ab_bin_weights
            )
        total = sum(getattr(weights, name) * value for name, value in terms.items())
        terms = {"total": total, **terms}
        visuals = {
            "gray": gray_to_rgb(lab[:, :1]),
            "exemplar": exemplar_rgb.detach(),
            "warped": (output.warped_exemplar.float() + 1) / 2,
            "output": output_rgb.detach(),
            "truth": rgb,
        }
        return terms, fake_lab, visuals

    def _truth_references(self, rgb: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(reference photos in [-1, 1], which photos use them) for `truth_reference`: each
        photo's own colours, mirrored for half of them so that the correspondence network has
        to find the match rather than copy the layout; (None, None) when the share is 0."""
        share = self.config.truth_reference
        if not share:
            return None, None
        count = rgb.shape[0]
        use_reference = torch.rand(count, device=rgb.device) < share
        mirror = (torch.rand(count, device=rgb.device) < 0.5).view(-1, 1, 1, 1)
        reference = torch.where(mirror, rgb.flip(-1), rgb) * 2 - 1
        return reference, use_reference

    def discriminator_loss(self, real_lab: torch.Tensor, fake_lab: torch.Tensor) -> torch.Tensor:
        """LSGAN loss of the PatchGAN on real and (detached) predicted Lab, in one pass."""
        count = real_lab.shape[0]
        both = lab_to_discriminator_input(torch.cat([real_lab, fake_lab.detach()]))
        with self.autocast():
            scores = [score.float() for score in self.wrapped_patchgan(both)]
        return lsgan_discriminator_loss([s[:count] for s in scores], [s[count:] for s in scores])

    def accumulate_gradients(
        self, phase: str, batch: dict[str, Any], scale: float
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        terms, fake_lab, visuals = self.generator_losses(batch)
        (terms["total"] * scale).backward()
        if not self.config.loss.adversarial:
            return terms, visuals
        real_lab = batch["lab"].to(self.device, non_blocking=True)
        discriminator = self.discriminator_loss(real_lab, fake_lab)
        (discriminator * scale).backward()
        return {**terms, "discriminator": discriminator}, visuals


def ab_bin_counts(dataset: Dataset, centers: torch.Tensor, samples: int) -> torch.Tensor:
    """How often each ab bin is the nearest to a pixel, over the first `samples` photos of
    `dataset` (evenly spread, fixed crops) at a quarter of their size: the colour prior that
    the rebalanced classification loss divides by."""
    counts = torch.zeros(len(centers), dtype=torch.float64)
    step = max(1, len(dataset) // samples)
    for index in range(0, min(len(dataset), step * samples), step):
        lab = dataset[(index, 0)]["lab"][None]
        ab = F.avg_pool2d(lab[:, 1:], 4).permute(0, 2, 3, 1).reshape(-1, 2)
        nearest = torch.cdist(ab, centers.to(ab)).argmin(dim=1)
        counts += torch.bincount(nearest, minlength=len(centers)).double()
    return counts


def _as_float(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.float() for name, value in features.items()}
