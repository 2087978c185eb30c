"""Where weight files are looked up. Nothing is ever downloaded at run time.

Search order: an explicit directory given by the caller, else `$GCPCOLOR_HOME`, else
`~/.cache/gcpcolor`. A missing file raises `MissingWeightsError` naming the file, every place
looked, and where the authors publish it.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
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

#: Our own format (see `GCPColorizationModel.save_pretrained`).
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


#: Our temporaries: `.<name>.tmp-<pid>`, or `.<name>.tmp-<pid>-<8 hex digits>` where one process
#: may write the same file from several threads. The pid says whether the writer may still be alive.
_TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>[0-9]+)(?:-[0-9a-f]{8})?")


def temporary_path(path: str | os.PathLike, unique: bool = False) -> Path:
    """The hidden temporary beside `path` that this process writes before renaming it to `path`.

    With `unique`, a random part tells apart temporaries of one file written by several threads.
    """
    path = Path(path)
    random_part = f"-{secrets.token_hex(4)}" if unique else ""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{random_part}")


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call `write(temporary)` next to `path`, then rename: readers never see half a file.

    The file gets the permissions any new file gets under the umask, even from writers that
    make their own file private (safetensors creates 0600): the temporary is created first to
    learn them, without touching the process-wide umask."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
        usual_mode = stat.S_IMODE(os.stat(temporary).st_mode)
        write(temporary)
        os.chmod(temporary, usual_mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _may_still_be_written(pid: int) -> bool:
    if pid == os.getpid():
        return False  # see remove_stale_temporaries: nothing of ours is being written yet
    if not 0 < pid < 2**31:
        return True  # no process can have this pid: not a name we wrote, so leave the file alone
    try:
        os.kill(pid, 0)  # signal 0 only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of `temporary_path` in `folder` left by processes that are gone.

    A killed run cannot clean up after itself. Only regular files named by our pattern whose pid
    is not running are removed; every other file is left alone. Call this before the current
    process writes into `folder`: a temporary with our own pid is then a leftover of an earlier
    process that had the same pid (common in containers). Returns the removed paths.
    """
    if os.name == "nt":
        return []  # os.kill on Windows terminates the process instead of probing it
    removed = []
    try:
        with os.scandir(folder) as iterator:
            entries = list(iterator)
    except OSError:
        return []  # writing into it will report the problem where it matters
    for entry in entries:
        match = _TEMPORARY_NAME.fullmatch(entry.name)
        if match is None:
            continue
        if _may_still_be_written(int(match["pid"])):
            continue
        try:
            if not stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
                continue
            os.unlink(entry.path)
        except OSError:
            continue  # its owner renamed it meanwhile, or it is not ours to force
        removed.append(Path(entry.path))
    return removed
