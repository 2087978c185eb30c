"""A corpus of hostile inputs, generated tiny, through the whole command line.

Each odd photo must either be colorized (at its own size) or be reported on exactly one line,
and no run may end in a traceback. test_image_io.py checks the loader on many of these files
and test_cli.py the command on some; this corpus adds the ones only the whole pipeline can
break (shapes the network must pad or stretch, 16-bit colour, truncated PNG, a folder that
refuses writes) and runs the whole corpus through the real `gcpcolor` entry point at once.
"""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gcpcolor import image_writing
from gcpcolor.cli import main

REPOSITORY = Path(__file__).resolve().parents[1]


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _rgb16_png(path: Path, height: int = 12, width: int = 20) -> None:
    """A 16-bit-per-channel RGB PNG, written by hand: Pillow cannot write one."""
    pixels = np.random.default_rng(1).integers(0, 65536, (height, width, 3), dtype=np.uint16)
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b""))


def _truncated(path: Path, image_format: str) -> None:
    whole = path.with_name("whole-" + path.name)
    Image.fromarray(_noise(40, 60)).save(whole, format=image_format)
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()


def _exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90°
    Image.fromarray(_noise(20, 40)).save(path, exif=exif)


#: name -> (how to make it, expected output size (width, height) or None for a one-line error)
CORPUS = {
    "truncated.png": (lambda p: _truncated(p, "PNG"), None),
    "truncated.jpg": (lambda p: _truncated(p, "JPEG"), None),
    "zero_bytes.jpg": (lambda p: p.write_bytes(b""), None),
    "text.jpg": (lambda p: p.write_text("not a photo\n"), None),
    "cmyk.jpg": (lambda p: Image.fromarray(_noise(20, 30)).convert("CMYK").save(p), (30, 20)),
    "rgba.png": (lambda p: Image.fromarray(np.dstack([_noise(20, 30)] * 3 + [_noise(20, 30, 2)])).save(p), (30, 20)),
    "palette.png": (lambda p: Image.fromarray(_noise(20, 30)).convert("P").save(p), (30, 20)),
    "gray16.png": (lambda p: Image.fromarray(_noise(20, 30).astype(np.uint16) * 257).save(p), (30, 20)),
    "rgb16.png": (_rgb16_png, (20, 12)),
    "exif_rotated.jpg": (_exif_rotated, (20, 40)),
    "one_pixel.png": (lambda p: Image.new("L", (1, 1), 128).save(p), (1, 1)),
    "tall.png": (lambda p: Image.fromarray(_noise(50000, 3)).save(p), (3, 50000)),
    "wide.png": (lambda p: Image.fromarray(_noise(3, 50000)).save(p), (50000, 3)),
}
ERRORS = sorted(name for name, (_, size) in CORPUS.items() if size is None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for name, (make, _) in CORPUS.items():
        make(folder / name)
    return folder


def _check_outputs(out: Path) -> None:
    for name, (_, size) in CORPUS.items():
        written = out / f"{Path(name).stem}_color{Path(name).suffix}"
        if size is None:
            assert not written.exists(), name
        else:
            with Image.open(written) as image:
                # a transparent photo's PNG result gets its alpha back
                assert image.size == size and image.mode == ("RGBA" if name == "rgba.png" else "RGB"), name


def test_the_corpus_through_the_real_entry_point(corpus, tmp_path):
    """One batch: every bad file one line naming it, every other one colorized, no traceback."""
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "gcpcolor.cli", "colorize", str(corpus), "-o", str(out), "--demo", "-q"],
        capture_output=True, text=True, timeout=600, cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY), "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert sorted(line.split(":")[1].strip() for line in errors) == [str(corpus / name) for name in ERRORS]
    _check_outputs(out)


def test_an_output_folder_that_refuses_writes(tmp_path, monkeypatch):
    """One line per photo, exit 1, nothing left behind. Root ignores folder permissions, so
    there the refusal the kernel would give is simulated where the file is created."""
    photo = tmp_path / "p.png"
    Image.fromarray(_noise(20, 30)).save(photo)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):
        real = image_writing._create_temporary_file

        def refuse_in_locked(path: Path):
            if path.parent == locked:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(image_writing, "_create_temporary_file", refuse_in_locked)
    try:
        result = CliRunner().invoke(main, ["colorize", str(photo), "-o", str(locked), "--demo", "-q"])
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "permission denied" in errors[0] and str(locked) in errors[0]
    assert list(locked.iterdir()) == []
