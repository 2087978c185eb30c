"""Training of the three stages (0: our own prior, 1: the encoder, 2: correspondence and
colorization), in one process or under torchrun.

    config.py          typed train configs, YAML loading and `--set` overrides
    distributed.py     the process's place in a torchrun job
    rng.py             seeding and RNG state for exact resume
    checkpoints.py     checkpoint folders on disk, `latest`, resume targets
    builders.py        the model a stage starts from, for each source of the prior
    engine.py          the `Trainer` loop every stage runs (phases, DDP, logging, checkpoints)
    reporting.py       TensorBoard writer and image grids, skipped data files
    stage0_prior.py    the class-conditional BigGAN prior (`gcpcolor train-prior`)
    stage1_encoder.py  the encoder E (`gcpcolor train-encoder`)
    stage2_colorization.py  correspondence + colorization (`gcpcolor train`)
    run.py             `run_training`, `export_checkpoint`
"""

from __future__ import annotations

from ..errors import TrainingSetupError
from .checkpoints import CheckpointManager
from .config import PriorTrainConfig, Stage1Config, Stage2Config, TrainConfig, load_train_config
from .engine import Trainer, TrainResult
from .run import TRAINERS, export_checkpoint, run_training
from .stage0_prior import PriorTrainer
from .stage1_encoder import EncoderTrainer
from .stage2_colorization import ColorizationTrainer

__all__ = [
    "CheckpointManager",
    "ColorizationTrainer",
    "EncoderTrainer",
    "PriorTrainConfig",
    "PriorTrainer",
    "Stage1Config",
    "Stage2Config",
    "TRAINERS",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingSetupError",
    "export_checkpoint",
    "load_train_config",
    "run_training",
]
