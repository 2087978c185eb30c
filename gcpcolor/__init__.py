"""gcpcolor: colorize black-and-white photos with a generative colour prior (GCP-Colorization)."""

from __future__ import annotations

from .version import __version__


def __getattr__(name: str):
    # Lazy so that `import gcpcolor` (and the CLI's start-up) does not import torch models.
    if name in {"Colorizer", "ColorizeResult", "ColorInputWarning"}:
        from . import pipeline

        return getattr(pipeline, name)
    if name == "ColorizerConfig":
        from .config import ColorizerConfig

        return ColorizerConfig
    raise AttributeError(f"module 'gcpcolor' has no attribute {name!r}")


__all__ = ["ColorInputWarning", "Colorizer", "ColorizeResult", "ColorizerConfig", "__version__"]
