"""Error types shared across gcpcolor."""

from __future__ import annotations


class MissingWeightsError(FileNotFoundError):
    """A pretrained weight file is needed but was not found in any of the places looked.

    This is the shared error type for missing weight files (VGG19, BigGAN, the authors'
    checkpoints): its message names the file, every place searched, and where to get it.
    gcpcolor never downloads weights at run time.
    """


class WeightsFormatError(ValueError):
    """A weight file exists but cannot be read, or does not match the model it is loaded into."""


class TrainingSetupError(ValueError):
    """An expected problem that stops training before it starts (one-line message)."""


class EvaluationError(Exception):
    """An expected problem with the inputs or outputs of an evaluation; the message is one line."""


class InvalidResultError(ValueError):
    """A colorization produced values that are not numbers (NaN or infinity); one-line message."""
