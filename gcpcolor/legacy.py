"""Loaders (and writers) for the GCP-Colorization authors' released checkpoint files.

All knowledge of the authors' file layout lives here:

- `biggan_G_ema_256.pth`, `biggan_D_256.pth`, `biggan_E.pth`: plain `state_dict`s in the
  BigGAN-PyTorch naming (spectral-norm buffers `u0`/`sv0`, conditional BN `stored_mean`/`stored_var`).
- `colorization_model.pth`: `{"net_corr": state_dict, "net_gen": state_dict}`.
- `deformator_for_biggan.pt`: the GANLatentDiscovery ortho deformator, `{"log_mat_half": (119, 119)}`.

Every file is read with `map_location="cpu"`, `weights_only=True` and loaded with `strict=True`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from .config import BigGANConfig, ColorizerConfig, DeformatorConfig, EncoderConfig
from .errors import WeightsFormatError
from .serialization import load_state_dict_strict, read_checkpoint
from .model import GCPColorizationModel
from .models.biggan_discriminator import BigGANDiscriminator
from .models.biggan_encoder import BigGANEncoder
from .models.biggan_generator import BigGANGenerator
from .models.deformator import LatentDeformator
from .weights import AUTHORS_FILES, find_weight_file

PathLike = str | os.PathLike


def load_biggan_generator(path: PathLike, config: BigGANConfig = BigGANConfig()) -> BigGANGenerator:
    generator = BigGANGenerator(config)
    load_state_dict_strict(generator, read_checkpoint(path), path)
    return generator.eval()


def load_biggan_discriminator(
    path: PathLike, config: BigGANConfig = BigGANConfig()
) -> BigGANDiscriminator:
    discriminator = BigGANDiscriminator(config)
    load_state_dict_strict(discriminator, read_checkpoint(path), path)
    return discriminator.eval()


def load_biggan_encoder(path: PathLike, config: EncoderConfig = EncoderConfig()) -> BigGANEncoder:
    encoder = BigGANEncoder(config)
    load_state_dict_strict(encoder, read_checkpoint(path), path)
    return encoder.eval()


def load_deformator(path: PathLike, config: DeformatorConfig = DeformatorConfig()) -> LatentDeformator:
    data = read_checkpoint(path)
    if "log_mat_half" not in data and isinstance(data.get("deformator"), dict):
        data = data["deformator"]  # GANLatentDiscovery training checkpoints nest it
    deformator = LatentDeformator(config)
    load_state_dict_strict(deformator, data, path)
    return deformator.eval()


def load_colorization_weights(path: PathLike, model: GCPColorizationModel) -> None:
    """Load `colorization_model.pth` into the correspondence and colorization networks."""
    data = read_checkpoint(path)
    for key in ("net_corr", "net_gen"):
        if not isinstance(data.get(key), dict):
            raise WeightsFormatError(f"{path}: expected a '{key}' state_dict (authors' format)")
    load_state_dict_strict(model.correspondence, data["net_corr"], f"{path} [net_corr]")
    load_state_dict_strict(model.colorization_net, data["net_gen"], f"{path} [net_gen]")


def load_authors_model(
    weights_dir: PathLike | None = None,
    config: ColorizerConfig = ColorizerConfig(),
    require_deformator: bool = False,
) -> GCPColorizationModel:
    """The full system from the authors' five files (the deformator is optional unless required)."""
    paths = {
        role: find_weight_file(name, weights_dir)
        for role, name in AUTHORS_FILES.items()
        if role != "deformator"
    }
    try:
        deformator_path: Path | None = find_weight_file(AUTHORS_FILES["deformator"], weights_dir)
    except FileNotFoundError:
        if require_deformator:
            raise
        deformator_path = None
    if deformator_path is None and config.deformator is not None:
        config = dataclasses.replace(config, deformator=None)

    model = GCPColorizationModel(config)
    load_state_dict_strict(model.generator, read_checkpoint(paths["generator"]), paths["generator"])
    load_state_dict_strict(
        model.discriminator, read_checkpoint(paths["discriminator"]), paths["discriminator"]
    )
    load_state_dict_strict(model.encoder, read_checkpoint(paths["encoder"]), paths["encoder"])
    load_colorization_weights(paths["colorization"], model)
    if deformator_path is not None and model.deformator is not None:
        model.deformator.load_state_dict(load_deformator(deformator_path, config.deformator).state_dict())
    return model.eval()


def save_authors_checkpoints(model: GCPColorizationModel, directory: PathLike) -> dict[str, Path]:
    """Write `model` as the authors' five files (for exchange with their code, and for tests)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    contents: dict[str, Any] = {
        "generator": model.generator.state_dict(),
        "discriminator": model.discriminator.state_dict(),
        "encoder": model.encoder.state_dict(),
        "colorization": {
            "net_corr": model.correspondence.state_dict(),
            "net_gen": model.colorization_net.state_dict(),
        },
    }
    if model.deformator is not None:
        contents["deformator"] = model.deformator.state_dict()
    written = {}
    for role, payload in contents.items():
        path = directory / AUTHORS_FILES[role]
        torch.save(payload, path)
        written[role] = path
    return written
