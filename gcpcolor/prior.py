"""Our own generative colour prior on disk: a BigGAN generator (EMA) and discriminator.

`gcpcolor train-prior` writes a folder holding `prior_config.json` (the BigGANConfig and how
classes were made), `generator.safetensors` (the EMA generator) and
`discriminator.safetensors`; stage 1 and 2 read it with `prior.prior_dir` in their config.
The paper's ImageNet BigGAN comes in the authors' files instead (see `legacy.py`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


from .config import BigGANConfig, ConfigError, config_from_dict, config_to_dict
from .errors import MissingWeightsError
from .serialization import load_state_dict_strict, read_safetensors, write_safetensors
from .models.biggan_discriminator import BigGANDiscriminator
from .models.biggan_generator import BigGANGenerator
from .weights import write_atomically

PRIOR_CONFIG_FILE = "prior_config.json"
PRIOR_GENERATOR_FILE = "generator.safetensors"
PRIOR_DISCRIMINATOR_FILE = "discriminator.safetensors"
#: Written by `train-prior` with pseudo-classes: lightness centroids to class gray photos.
PRIOR_CENTROIDS_FILE = "pseudo_class_centroids.json"


def save_prior(
    directory: str | os.PathLike,
    generator: BigGANGenerator,
    discriminator: BigGANDiscriminator,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the prior folder (atomically per file); `extra` is kept in the JSON for people."""
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    for name, module in ((PRIOR_GENERATOR_FILE, generator), (PRIOR_DISCRIMINATOR_FILE, discriminator)):
        write_safetensors(directory / name, module.state_dict())
    document = {"biggan": config_to_dict(generator.config), **(extra or {})}
    write_atomically(
        directory / PRIOR_CONFIG_FILE, lambda path: path.write_text(json.dumps(document, indent=2) + "\n")
    )
    return directory


def load_prior_config(directory: str | os.PathLike) -> BigGANConfig:
    path = Path(directory).expanduser() / PRIOR_CONFIG_FILE
    if not path.is_file():
        raise MissingWeightsError(f"missing {path.name} in {path.parent} (a folder written by gcpcolor train-prior)")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    return config_from_dict(BigGANConfig, document.get("biggan", {}))


def load_prior(directory: str | os.PathLike) -> tuple[BigGANGenerator, BigGANDiscriminator]:
    """The generator and discriminator of a `train-prior` folder, in eval mode."""
    directory = Path(directory).expanduser()
    config = load_prior_config(directory)
    modules = (BigGANGenerator(config), BigGANDiscriminator(config))
    for name, module in zip((PRIOR_GENERATOR_FILE, PRIOR_DISCRIMINATOR_FILE), modules):
        path = directory / name
        if not path.is_file():
            raise MissingWeightsError(f"missing {name} in {directory} (a folder written by gcpcolor train-prior)")
        load_state_dict_strict(module, read_safetensors(path), path)
        module.eval()
    return modules


def load_lightness_centroids(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The pseudo-class centroids of a prior folder, or None for a prior without them."""
    path = Path(directory).expanduser() / PRIOR_CENTROIDS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
