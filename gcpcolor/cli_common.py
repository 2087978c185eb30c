"""What every command of the `gcpcolor` CLI shares: exit codes, the one-line error, stderr lines.

Expected problems (bad options, missing weights or data) end a command with a one-line message
and exit code 2, never a traceback; per-photo failures of a batch exit with 1.
"""

from __future__ import annotations

import sys

import click

EXIT_INPUT_ERRORS = 1
EXIT_USAGE = 2

DEMO_NOTICE = (
    "DEMO MODE: no trained weights are used; a tiny randomly initialised model colours the photo, "
    "so the colours are meaningless. Put the authors' weights in $GCPCOLOR_HOME (see README) for real results."
)


class CommandError(click.ClickException):
    """A one-line error with exit code 2 (click prints 'Error: ...', no traceback)."""

    exit_code = EXIT_USAGE


def echo_err(message: str) -> None:
    """One line on stderr that stays on its own line under a tqdm progress bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def load_colorizer(weights: str | None, demo: bool, device: str, classifier: str | None = None,
                   classifier_weights: str | None = None):
    """The model a command runs: the demo model, or `Colorizer.load(weights)`; what cannot be
    loaded ends the command with one line."""
    from .config import ConfigError
    from .errors import MissingWeightsError, WeightsFormatError
    from .pipeline import Colorizer

    external = None
    if classifier or classifier_weights:
        if not (classifier and classifier_weights):
            raise CommandError("--classifier and --classifier-weights go together")
        from .classify import ExternalClassifier

        external = ExternalClassifier(classifier, classifier_weights)
    try:
        if demo:
            return Colorizer.demo(device=device, classifier=external)
        return Colorizer.load(weights, device=device, classifier=external)
    except (MissingWeightsError, WeightsFormatError, ConfigError) as exc:
        raise CommandError(f"{exc} (or run with --demo to try the pipeline with untrained weights)") from None
    except RuntimeError as exc:
        raise CommandError(str(exc)) from None
