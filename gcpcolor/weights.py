"""Where weight files are looked up. Nothing is ever downloaded at run time.

Search order: an explicit directory given by the caller, else `$GCPCOLOR_HOME`, else
`~/.cache/gcpcolor`. A missing file raises `MissingWeightsError` naming the file, every place
looked, and where the authors publish it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import MissingWeightsError

ENV_HOME = "GCPCOLOR_HOME"
DEFAULT_HOME = Path("~/.cache/gcpcolor")
#: The model gcpcolor trains itself and ships inside the package (fp16, `save_pretrained` format),
#: used when no other weights are installed; see docs/training-log.md for how it was made.
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default_model"

AUTHORS_RELEASE = (
    "the GCP-Colorization authors' release: https://github.com/ToTheBeginning/GCP-Colorization "
    "(README, 'pretrained models', Google Drive links)"
)

#: The authors' released checkpoint files (docs/architecture.md, "Formats"), keyed by the role they play.
AUTHORS_FILES = {
    "generator": "biggan_G_ema_256.pth",
    "discriminator": "biggan_D_256.pth",
    "encoder": "biggan_E.pth",
    "colorization": "colorization_model.pth",
    "deformator": "deformator_for_biggan.pt",
}

#: Our own format (see `Colorizer.save_pretrained`).
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    if weights_dir is not None:
        return [Path(weights_dir).expanduser()]
    env = os.environ.get(ENV_HOME)
    if env:
        return [Path(env).expanduser()]
    return [DEFAULT_HOME.expanduser()]


def find_weight_file(
    filename: str, weights_dir: str | os.PathLike | None = None, source: str = AUTHORS_RELEASE
) -> Path:
    """Path of `filename` in the first search directory that has it."""
    dirs = search_dirs(weights_dir)
    for directory in dirs:
        candidate = directory / filename
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(d) for d in dirs)
    hint = "" if weights_dir is not None else f" (set {ENV_HOME} or pass --weights DIR)"
    raise MissingWeightsError(
        f"missing weight file {filename}: looked in {looked}{hint}; get it from {source}"
    )


def find_pretrained_dir(weights_dir: str | os.PathLike | None = None) -> Path | None:
    """The first search directory holding our own format (config.json + model.safetensors)."""
    for directory in search_dirs(weights_dir):
        if (directory / CONFIG_NAME).is_file() and (directory / WEIGHTS_NAME).is_file():
            return directory
    return None


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call `write(temporary)` next to `path`, then rename: readers never see half a file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
