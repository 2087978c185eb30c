"""`gcpcolor train-prior` (stage 0), `gcpcolor train-encoder` (stage 1), `gcpcolor train` (stage 2).

The module is also runnable on its own, which is the form torchrun launches:

    torchrun --nproc-per-node=8 -m gcpcolor.train_cli train --config configs/paper/stage2.yaml

Expected problems (missing or invalid config, missing weights or data) print one line and exit
with code 2, on every rank.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

import click

from .cli_common import CommandError
from .config import ConfigError
from .data import DatasetError
from .errors import MissingWeightsError, TrainingSetupError, WeightsFormatError
from .training.config import load_train_config
from .training.run import run_training

EXPECTED_ERRORS = (ConfigError, TrainingSetupError, MissingWeightsError, WeightsFormatError, DatasetError)


def _configure_logging() -> None:
    # Only rank 0 reports progress; the other ranks speak up for warnings and errors.
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s",
    )


def _training_options(function: Callable) -> Callable:
    options = [
        click.option(
            "--config", "config_path", required=True, metavar="YAML",
            help="Training config (see configs/paper/stage1.yaml, configs/paper/stage2.yaml).",
        ),
        click.option(
            "--resume", is_flag=False, flag_value="latest", default=None, metavar="[CHECKPOINT]",
            help="Continue from the latest checkpoint in output_dir (start fresh if there is none), "
            "or from CHECKPOINT: a checkpoint folder, a checkpoints folder or an output_dir.",
        ),
        click.option(
            "--set", "overrides", multiple=True, metavar="KEY=VALUE",
            help="Override a config value, e.g. --set optim.lr=2e-4 --set data.root=/data (repeatable).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _run(stage: int, config_path: str, resume: str | None, overrides: Sequence[str]) -> None:
    _configure_logging()
    try:
        config = load_train_config(stage, config_path, overrides)
        result = run_training(config, resume)
    except EXPECTED_ERRORS as exc:
        message = " ".join(str(exc).split("\n"))
        raise CommandError(message) from None
    if result.stopped_by is not None:
        click.echo(
            f"training stopped by {result.stopped_by} at step {result.step}; the checkpoint in "
            f"{result.output_dir} continues it with --resume",
            err=True,
        )
        # the shell's convention for a command ended by a signal (1 if another process got it)
        sys.exit(128 + signal.Signals[result.stopped_by] if result.stopped_by in signal.Signals.__members__ else 1)
    if result.final_dir is not None:
        click.echo(f"trained model written to {result.final_dir}")


@click.command("train-prior")
@_training_options
def train_prior_command(config_path: str, resume: str | None, overrides: tuple[str, ...]) -> None:
    """Stage 0: train our own class-conditional BigGAN colour prior (see configs/default_model/prior_small.yaml)."""
    _run(0, config_path, resume, overrides)


@click.command("train-encoder")
@_training_options
def train_encoder_command(config_path: str, resume: str | None, overrides: tuple[str, ...]) -> None:
    """Stage 1: train the encoder that inverts gray photos into BigGAN's latent space."""
    _run(1, config_path, resume, overrides)


@click.command("train")
@_training_options
def train_command(config_path: str, resume: str | None, overrides: tuple[str, ...]) -> None:
    """Stage 2: train the correspondence and colorization networks (GAN training)."""
    _run(2, config_path, resume, overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """gcpcolor training commands (the same as `gcpcolor train-encoder` / `gcpcolor train`)."""


main.add_command(train_prior_command)
main.add_command(train_encoder_command)
main.add_command(train_command)

if __name__ == "__main__":
    main()
