"""Training checkpoints on disk: `<output_dir>/checkpoints/step_XXXXXXX/` folders.

Each holds the trainable weights (safetensors), the train and model configs, and
`training_state.pt` (optimisers, schedulers, step, epoch, position in the epoch, every rank's RNG
states). A checkpoint is written into a temporary folder and renamed into place; `latest` names
the newest one and is updated last, so a crash at any moment leaves the previous one usable.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..errors import TrainingSetupError

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
LATEST_POINTER = "latest"
WEIGHTS_FILE = "weights.safetensors"
TRAIN_CONFIG_FILE = "train_config.yaml"
MODEL_CONFIG_FILE = "model_config.json"
STATE_FILE = "training_state.pt"
CHECKPOINT_FILES = (WEIGHTS_FILE, TRAIN_CONFIG_FILE, MODEL_CONFIG_FILE, STATE_FILE)
FINAL_DIR = "final"
SKIPPED_FILES_REPORT = "skipped_files.txt"


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def is_complete_checkpoint(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in CHECKPOINT_FILES)


class CheckpointManager:
    """`step_XXXXXXX/` folders in `directory`, written atomically, with a `latest` pointer."""

    PREFIX = "step_"
    TEMPORARY_PREFIXES = (".tmp-", ".old-")

    def __init__(self, directory: Path, keep_last: int = 0) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last

    @classmethod
    def step_name(cls, step: int) -> str:
        return f"{cls.PREFIX}{step:07d}"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (half-written temporary folders are not listed)."""
        if not self.directory.is_dir():
            return []
        found = [
            path
            for path in self.directory.iterdir()
            if path.name.startswith(self.PREFIX)
            and path.name[len(self.PREFIX) :].isdigit()
            and is_complete_checkpoint(path)
        ]
        return sorted(found, key=lambda path: int(path.name[len(self.PREFIX) :]))

    def latest(self) -> Path | None:
        pointer = self.directory / LATEST_POINTER
        if pointer.is_file():
            candidate = self.directory / pointer.read_text().strip()
            if is_complete_checkpoint(candidate):
                return candidate
            logger.warning("%s names %s, which is not a complete checkpoint", pointer, candidate)
        complete = self.checkpoints()
        return complete[-1] if complete else None

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """Let `write` fill a temporary folder, then move it into place and update `latest`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = self.step_name(step)
        final = self.directory / name
        temporary = self.directory / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        try:
            write(temporary)
            for path in temporary.iterdir():
                _fsync_path(path)
            _fsync_path(temporary)
            if final.exists():  # a resumed run saving a step an earlier attempt had reached
                stale = self.directory / f".old-{name}-{os.getpid()}"
                os.replace(final, stale)
                shutil.rmtree(stale)
            os.replace(temporary, final)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        _fsync_path(self.directory)
        self._write_pointer(name)
        self._prune(keep=final)
        return final

    def _write_pointer(self, name: str) -> None:
        pointer = self.directory / LATEST_POINTER
        temporary = self.directory / f".tmp-{LATEST_POINTER}-{os.getpid()}"
        with open(temporary, "w") as handle:
            handle.write(name + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, pointer)
        _fsync_path(self.directory)

    def _prune(self, keep: Path) -> None:
        for path in self.directory.iterdir():
            if path.name.startswith(self.TEMPORARY_PREFIXES):  # left by an interrupted save
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        if self.keep_last <= 0:
            return
        complete = [path for path in self.checkpoints() if path != keep]
        for path in complete[: max(0, len(complete) - (self.keep_last - 1))]:
            shutil.rmtree(path, ignore_errors=True)


def resolve_resume(resume: str | os.PathLike | bool | None, manager: CheckpointManager) -> Path | None:
    """The checkpoint folder to resume from; None means start from scratch.

    `True` or "latest": the newest checkpoint of this run's output_dir, if there is one.
    A path: a checkpoint folder, a `checkpoints/` folder, or an output_dir.
    """
    if resume is None or resume is False:
        return None
    if resume is True or resume == "latest":
        return manager.latest()
    path = Path(resume).expanduser()
    if is_complete_checkpoint(path):
        return path
    for folder in (path, path / CHECKPOINTS_DIR):
        found = CheckpointManager(folder).latest()
        if found is not None:
            return found
    raise TrainingSetupError(
        f"--resume {path}: no complete checkpoint there (a checkpoint folder holds "
        f"{', '.join(CHECKPOINT_FILES)})"
    )


def changed_settings(saved_train_config: str, current: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between a checkpoint's `train_config.yaml` text and
    the current config (as plain data)."""
    saved = _flatten(yaml.safe_load(saved_train_config) or {})
    now = _flatten(current)
    return sorted(key for key in saved.keys() | now.keys() if saved.get(key) != now.get(key))


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat
