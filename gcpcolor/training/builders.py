"""The networks a training stage starts from, for each source of the generative prior.

`prior` in the train config names one source: the authors' released files, a `train-prior`
folder of our own, a `save_pretrained` folder (fine-tuning, possibly with a changed
colorization network), or random weights for smoke runs. Whatever the source, the result is one
`GCPColorizationModel` holding every network; the stage then decides what it trains.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..config import ColorizerConfig, DeformatorConfig, config_from_dict, config_to_dict
from ..legacy import load_biggan_discriminator, load_biggan_encoder, load_biggan_generator, load_deformator
from ..model import GCPColorizationModel, Guidance
from ..models.efficientnet_lite import load_efficientnet_lite0
from ..models.lightness_centroids import LightnessCentroidClassifier
from ..models.semantic_class_probe import SemanticClassProbe
from ..prior import load_lightness_centroids, load_prior
from ..weights import AUTHORS_FILES, find_weight_file
from .config import TrainConfig, resolve_model_config

logger = logging.getLogger(__name__)

RANDOM_PRIOR_WARNING = (
    "RANDOM PRIOR: BigGAN and the encoder are randomly initialised (prior.random_prior: true). "
    "This run only exercises the training code; what it trains cannot colorize photos."
)



def freeze(module: nn.Module | None) -> None:
    if module is not None:
        module.eval()
        module.requires_grad_(False)


def build_model(config: TrainConfig, guidance: Guidance, needs_encoder: bool) -> GCPColorizationModel:
    """The full network with its prior loaded from the configured source."""
    prior = config.prior
    if prior.random_prior:
        logger.warning(RANDOM_PRIOR_WARNING)
        return GCPColorizationModel(resolve_model_config(config.model), guidance)
    if prior.pretrained:
        source = GCPColorizationModel.from_pretrained(prior.pretrained)
        model_config = source.config
        if isinstance(config.model, Mapping):
            # With a pretrained source, `model` lists only what changes (e.g. a new colorization
            # network); every network whose layout stays the same keeps its trained weights.
            model_config = config_from_dict(ColorizerConfig, _deep_merge(config_to_dict(source.config), config.model))
        model = GCPColorizationModel(model_config, guidance)
        for name in ("generator", "discriminator", "encoder", "deformator", "class_predictor"):
            _copy_matching_weights(source, model, name)
        if isinstance(model.class_predictor, SemanticClassProbe) and isinstance(source.class_predictor, LightnessCentroidClassifier):
            # the probe reads the lightness thumbnail standardised as the prior's clustering did
            model.class_predictor.lightness.load_state_dict(source.class_predictor.state_dict())
        kept_colorization = False
        if prior.fresh_stage2:
            logger.info("fresh_stage2: the correspondence and colorization networks start from scratch")
        else:
            _copy_matching_weights(source, model, "correspondence")
            kept_colorization = _copy_same_shaped_layers(source.colorization_net, model.colorization_net)
        _load_pretrained_backbone(model, keep=kept_colorization)
        return model

    if prior.prior_dir:
        return _model_with_own_prior(config, guidance, prior.prior_dir)

    weights_dir = prior.prior_weights_dir
    roles = ["generator", "discriminator"] + (["encoder"] if needs_encoder else [])
    # Look for every file before building anything: a missing one is reported at once.
    paths = {role: find_weight_file(AUTHORS_FILES[role], weights_dir) for role in roles}
    try:
        paths["deformator"] = find_weight_file(AUTHORS_FILES["deformator"], weights_dir)
    except FileNotFoundError:
        pass
    model_config = resolve_model_config(config.model)
    if "deformator" not in paths and model_config.deformator is not None:
        model_config = dataclasses.replace(model_config, deformator=None)
    model = GCPColorizationModel(model_config, guidance)
    model.generator = load_biggan_generator(paths["generator"], model_config.biggan)
    model.discriminator = load_biggan_discriminator(paths["discriminator"], model_config.biggan)
    if needs_encoder:
        model.encoder = load_biggan_encoder(paths["encoder"], model_config.encoder)
    if "deformator" in paths and model_config.deformator is not None:
        model.deformator = load_deformator(paths["deformator"], model_config.deformator)
    return model


def _deep_merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _copy_matching_weights(source: GCPColorizationModel, model: GCPColorizationModel, name: str) -> None:
    """Copy network `name` from `source` when both have it with the same layout."""
    mine, theirs = getattr(model, name), getattr(source, name)
    if mine is None or theirs is None:
        return
    target, state = mine.state_dict(), theirs.state_dict()
    if set(target) == set(state) and all(target[k].shape == state[k].shape for k in target):
        mine.load_state_dict(state)


def _copy_same_shaped_layers(source: nn.Module, target: nn.Module) -> bool:
    """Copy every tensor of the same name and shape: the whole network when its layout is the
    same, and all but the layers that read the reference when only the guidance changed; True
    when anything was kept."""
    state, mine = source.state_dict(), target.state_dict()
    if set(state) != set(mine):
        logger.info("the colorization network's layout changed: it starts from scratch")
        return False
    restarted = sorted(k for k in mine if mine[k].shape != state[k].shape)
    target.load_state_dict({k: (mine[k] if k in restarted else state[k]) for k in mine})
    if restarted:
        logger.info("the colorization network keeps its trained weights but for %s", ", ".join(restarted))
    return True


def _load_pretrained_backbone(model: GCPColorizationModel, keep: bool = False) -> None:
    """A new semantic colorization network gets the ImageNet weights of its frozen backbone
    from the pinned package (`keep`: it came with its trained checkpoint already)."""
    if model.config.colorization.type == "semantic" and not keep:
        model.colorization_net.backbone.load_state_dict(load_efficientnet_lite0().state_dict())


def _model_with_own_prior(config: TrainConfig, guidance: Guidance, prior_dir: str) -> GCPColorizationModel:
    """The configured model around a `gcpcolor train-prior` generator and discriminator."""
    generator, discriminator = load_prior(prior_dir)
    centroids = load_lightness_centroids(prior_dir)
    biggan = generator.config
    model_config = resolve_model_config(config.model)
    model_config = dataclasses.replace(
        model_config,
        biggan=biggan,
        class_predictor="lightness_centroids" if centroids else "discriminator",
        encoder=dataclasses.replace(
            model_config.encoder,
            resolution=biggan.resolution,
            z_dim=biggan.dim_z,
            n_classes=biggan.n_classes,
            attention_resolution=biggan.attention_resolution,
        ),
        deformator=DeformatorConfig(dim=biggan.used_z_dims),
    )
    model = GCPColorizationModel(model_config, guidance)
    model.generator, model.discriminator = generator, discriminator
    with torch.no_grad():
        # No direction discovery has run for this prior: identity directions (raw latent axes).
        model.deformator.log_mat_half.zero_()
    if centroids:
        model.class_predictor.set_centroids(centroids)
    return model
