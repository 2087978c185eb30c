"""Finding the photos a user names, and where each result goes.

`find_images` takes files, folders (recursively, skipping hidden and unreadable entries with a
reason) and glob patterns, and keeps each photo's path relative to what the user named, so
`output_path` can mirror the folder layout under the output folder.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .image_io import ImageInputError, ImageOutputError, describe_os_error
from .image_writing import SAVE_FORMATS

logger = logging.getLogger(__name__)

#: Lower-case file suffixes that `find_images` collects from folders and glob patterns.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".bmp", ".gif", ".heic", ".heif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}
)


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


#: Called with a path the folder walk skipped and why, e.g. (album/loop, "symbolic link loop").
SkipReporter = Callable[[Path, str], None]


def _log_skipped(path: Path, reason: str) -> None:
    logger.warning("skipped %s: %s", path, reason)


def _unreachable_reason(path: Path, error: OSError) -> str:
    """Why stat() failed on an entry that a folder listing showed."""
    if error.errno == errno.ELOOP:
        return "symbolic link loop"
    if path.is_symlink() and isinstance(error, FileNotFoundError):
        return "broken symbolic link"
    return f"cannot read: {describe_os_error(error)}"


def _contains(folder: str, path: str) -> bool:
    """Whether real path `path` is `folder` or lies inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _files_in_folder(folder: Path, recursive: bool, on_skip: SkipReporter) -> Iterator[Path]:
    """Every visible regular file below `folder`, following symbolic links to folders.

    Hidden names (.git, .thumbnails, ...) are skipped. A link to a folder that contains the one
    being listed (a loop: by the route walked, or on disk, like a link to '..' that would also
    pull in the output folder next to the input), a broken link and a folder we cannot read are
    reported through `on_skip` and skipped, so that one odd entry cannot stop the walk; a folder
    reached again by another route is walked once. The walk uses its own stack: no recursion
    limit for deep trees.
    """
    root_info = folder.stat()
    seen_folders = {(root_info.st_dev, root_info.st_ino)}
    # Each entry: a folder to list and the identities of the folders that contain it (itself too).
    stack: list[tuple[Path, frozenset[tuple[int, int]]]] = [(folder, frozenset(seen_folders))]
    while stack:
        current, ancestors = stack.pop()
        current_real = os.path.realpath(current)
        try:
            with os.scandir(current) as iterator:
                # Real folders before links, so that a folder reached both ways is mirrored
                # under its own name rather than the link's.
                entries = sorted(iterator, key=lambda entry: (entry.is_symlink(), entry.name))
        except OSError as error:
            on_skip(current, f"cannot read folder: {describe_os_error(error)}")
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                info = path.stat()  # follows links: a link to a photo or folder counts as one
            except OSError as error:
                on_skip(path, _unreachable_reason(path, error))
                continue
            if stat.S_ISREG(info.st_mode):
                yield path
            elif stat.S_ISDIR(info.st_mode) and recursive:
                identity = (info.st_dev, info.st_ino)
                if identity in ancestors or _contains(os.path.realpath(path), current_real):
                    on_skip(path, "symbolic link loop (links to a folder that contains it)")
                elif identity not in seen_folders:
                    seen_folders.add(identity)
                    subfolders.append((path, ancestors | {identity}))
        stack.extend(reversed(subfolders))


def _images_in_folder(folder: Path, recursive: bool, on_skip: SkipReporter) -> list[tuple[Path, Path]]:
    found = [
        (file, file.relative_to(folder))
        for file in _files_in_folder(folder, recursive, on_skip)
        if file.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(found, key=lambda item: item[1].parts)


def _glob_base(pattern: str) -> Path:
    """The folder part of a pattern before its first wildcard: matches are mirrored from it."""
    parts = Path(pattern).parts
    base_parts = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        base_parts.append(part)
    return Path(*base_parts) if base_parts else Path(".")


def _parts_match(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    """glob's rules for one path split into parts: '**' spans any number of folders."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_parts_match(pattern[1:], parts[start:]) for start in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatch(parts[0], pattern[0]) and _parts_match(pattern[1:], parts[1:])


def _glob_files(pattern: str, base: Path, on_skip: SkipReporter) -> list[Path]:
    if "**" not in Path(pattern).parts:
        # Without '**' glob lists a fixed number of folders, so a link loop cannot trap it.
        return [Path(match) for match in glob.glob(pattern) if Path(match).is_file()]
    # glob's own '**' follows links without noticing loops: with two looping links the number
    # of paths it tries doubles per level. Walk the base folder safely instead and match the
    # rest of the pattern ourselves.
    if not base.is_dir():
        return []
    wanted = Path(pattern).parts[len(base.parts):]
    return [
        file
        for file in _files_in_folder(base, True, on_skip)
        if _parts_match(wanted, file.relative_to(base).parts)
    ]


def _images_matching(pattern: str, on_skip: SkipReporter) -> tuple[list[tuple[Path, Path]], int]:
    base = _glob_base(pattern)
    found = []
    others = 0
    for file in _glob_files(pattern, base, on_skip):
        relative = file.relative_to(base)
        if _is_hidden(relative) or file.suffix.lower() not in IMAGE_EXTENSIONS:
            others += 1
            continue
        found.append((file, relative))
    return sorted(found, key=lambda item: item[1].parts), others


def _missing_input_reason(path: Path) -> str:
    if path.is_symlink():
        try:
            path.stat()
        except OSError as error:
            return _unreachable_reason(path, error)
    return "no such file, folder or pattern"


def find_images(
    inputs: Sequence[str | Path], recursive: bool = True, on_skip: SkipReporter | None = None
) -> list[tuple[Path, Path]]:
    """Expand files, folders and glob patterns into (path, relative path) pairs.

    The relative path mirrors the input's structure into an output folder: for a folder it is
    the path inside that folder, for a glob pattern the path below the pattern's fixed leading
    folders, for a single file just its name. A file given by name is returned whatever its
    suffix, so that `load_image` can say what is wrong with it. Each file appears once.
    Entries of folders that cannot be used (link loops, broken links, unreadable folders) are
    passed to `on_skip` with the reason (default: logged as warnings) and skipped.
    """
    on_skip = on_skip or _log_skipped
    results: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    destinations: dict[Path, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_file():
            candidates = [(path, Path(path.name))]
        elif path.is_dir():
            candidates = _images_in_folder(path, recursive, on_skip)
            if not candidates:
                raise ImageInputError(f"{path}: folder contains no image files")
        elif glob.has_magic(str(item)):
            candidates, others = _images_matching(str(item), on_skip)
            if not candidates:
                detail = f" ({others} non-image or hidden files skipped)" if others else ""
                raise ImageInputError(f"{item}: pattern matches no image files{detail}")
        else:
            raise ImageInputError(f"{item}: {_missing_input_reason(path)}")

        for file, relative in candidates:
            identity = file.resolve()
            if identity in seen:
                continue
            if relative in destinations:
                raise ImageInputError(
                    f"{file}: would be written to the same output as {destinations[relative]} "
                    f"({relative}); pass their common folder instead"
                )
            seen.add(identity)
            destinations[relative] = file
            results.append((file, relative))
    return results


def output_path(
    relative: Path,
    output_dir: Path,
    suffix: str = "_color",
    extension: str | None = None,
) -> Path:
    """Where the result for input `relative` goes: output_dir/<parents>/<stem><suffix><ext>.

    The input's extension is kept when we can write it (a TIFF scan stays a TIFF), otherwise
    the result is a PNG; `extension` (".jpg" or "jpg") overrides both.
    """
    relative = Path(relative)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"{relative}: expected a path inside the output folder")
    if extension is not None:
        extension = extension if extension.startswith(".") else f".{extension}"
        if extension.lower() not in SAVE_FORMATS:
            known = ", ".join(sorted(SAVE_FORMATS))
            raise ImageOutputError(
                f"cannot write images with suffix '{extension}' (use one of {known})"
            )
    elif relative.suffix.lower() in SAVE_FORMATS:
        extension = relative.suffix
    else:
        extension = ".png"
    return Path(output_dir) / relative.parent / f"{relative.stem}{suffix}{extension}"
