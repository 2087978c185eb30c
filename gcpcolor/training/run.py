"""Running a stage, and turning a run into our reloadable model format."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
import yaml

from ..errors import TrainingSetupError
from ..model import GCPColorizationModel
from .checkpoints import CHECKPOINTS_DIR, TRAIN_CONFIG_FILE, CheckpointManager, resolve_resume
from .config import TrainConfig, stage_config_class, train_config_from_dict
from .distributed import setup_distributed, teardown_distributed
from .engine import Trainer, TrainResult
from .stage0_prior import PriorTrainer
from .stage1_encoder import EncoderTrainer
from .stage2_colorization import ColorizationTrainer

TRAINERS: dict[int, type[Trainer]] = {0: PriorTrainer, 1: EncoderTrainer, 2: ColorizationTrainer}


def export_checkpoint(source: str | os.PathLike, target: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write our reloadable format (`GCPColorizationModel.from_pretrained`) to `target` from a run's
    `final/` folder, one of its checkpoints, or a run folder (its newest checkpoint); with
    `dtype` (e.g. float16) the floating-point weights are stored in it."""
    source, target = Path(source).expanduser(), Path(target).expanduser()
    if (source / "config.json").is_file():
        GCPColorizationModel.from_pretrained(source).save_pretrained(target, dtype)
        return target
    checkpoint = resolve_resume(source, CheckpointManager(source / CHECKPOINTS_DIR))
    if checkpoint is None:
        raise TrainingSetupError(f"{source}: neither an exported model nor a run with checkpoints")
    data = yaml.safe_load((checkpoint / TRAIN_CONFIG_FILE).read_text())
    stage = 1 if "guidance" not in data else 2
    config = train_config_from_dict(stage_config_class(stage), data)
    config = dataclasses.replace(config, logging=dataclasses.replace(config.logging, tensorboard=False))
    trainer = TRAINERS[stage](config, checkpoint)  # rebuilds every network, then loads the checkpoint
    trainer.model.save_pretrained(target, dtype)
    return target


def run_training(config: TrainConfig, resume: str | os.PathLike | bool | None = None) -> TrainResult:
    """Train the stage `config` is for, in this process or as one rank of a torchrun job."""
    context = setup_distributed(config.device)
    try:
        return TRAINERS[config.stage](config, resume, context).train()
    finally:
        teardown_distributed(context)
