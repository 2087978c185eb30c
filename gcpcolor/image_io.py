"""Reading and writing photos robustly.

Inputs come from archives and family scans: any common format, gray or colour, 16-bit, palette,
with alpha, CMYK, rotated by an EXIF tag, tiny or huge. `load_pixels` turns all of them into one
compact array at their own bit depth (`load_image` into float RGB) and reports every expected
problem as an `ImageInputError` whose message is one line naming the file, so the command line
can print it and move on. `save_image` writes atomically: a reader never sees a half-written
file, and a failed save leaves nothing behind; 16-bit results stay 16-bit in PNG and TIFF.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import errno
import fnmatch
import functools
import glob
import io
import logging
import os
import shutil
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from .photo_metadata import PhotoMetadata, read_metadata, software_name
from .weights import temporary_path, write_atomically

logger = logging.getLogger(__name__)

#: Lower-case file suffixes that `find_images` collects from folders and glob patterns.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".bmp", ".gif", ".heic", ".heif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}
)

#: What to install for HEIC/HEIF photos (phones' default format), which Pillow cannot read alone.
HEIF_EXTRA_HINT = 'HEIC/HEIF photos need the optional extra: pip install "gcpcolor[heif]"'

# Brands in the "ftyp" box at the start of a HEIF file; a renamed .jpg from a phone is still one.
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)

#: Lower-case suffixes `save_image` can write, and the PIL format each one selects.
SAVE_FORMATS: dict[str, str] = {
    ".bmp": "BMP",
    ".jpeg": "JPEG",
    ".jpg": "JPEG",
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}

DEFAULT_MAX_PIXELS = 200_000_000

# Modes each output format stores without loss; anything else is converted to RGB(A) first.
_FORMAT_MODES: dict[str, frozenset[str]] = {
    "BMP": frozenset({"1", "L", "P", "RGB", "RGBA"}),
    "JPEG": frozenset({"L", "RGB", "CMYK"}),
    "PNG": frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}),
    "TIFF": frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16"}),
    "WEBP": frozenset({"RGB", "RGBA"}),
}
_ALPHA_FORMATS = frozenset({"BMP", "PNG", "TIFF", "WEBP"})
#: Formats whose results carry the photo's transparency (BMP's alpha is read by too few programs).
_TRANSPARENT_RESULT_FORMATS = frozenset({"PNG", "TIFF", "WEBP"})
#: A JPEG's EXIF segment holds at most 64 KiB; larger EXIF (maker notes) is left out there.
MAX_JPEG_EXIF_BYTES = 65_000

# PIL's decompression-bomb limit is a module global that is also consulted while decoding
# (TIFF tiles, GIF frames), so it is swapped for our limit around the whole open+decode.
_PIXEL_LIMIT_LOCK = threading.Lock()


class ImageInputError(Exception):
    """An input image cannot be read; the message is one line naming the file."""


class ImageOutputError(Exception):
    """An output image cannot be written; the message is one line naming the file."""


def one_line_message(error: BaseException) -> str:
    """The error's message on one line, or its type name when it has none (e.g. MemoryError)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


# How torch words an allocation failure in its RuntimeErrors (GPU, then CPU allocators).
_OUT_OF_MEMORY_PHRASES = ("out of memory", "not enough memory", "can't allocate memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` reports an allocation failure: Python's MemoryError or torch's."""
    text = str(error).lower()
    return isinstance(error, MemoryError) or any(phrase in text for phrase in _OUT_OF_MEMORY_PHRASES)


@contextlib.contextmanager
def _pil_pixel_limit(max_pixels: int) -> Iterator[None]:
    with _PIXEL_LIMIT_LOCK, warnings.catch_warnings():
        # Images above max_pixels are rejected by our own size check right after the header
        # is read; PIL's warning for them would only be noise on the user's terminal.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read any supported photo as float32 RGB of shape (H, W, 3) in [0, 1].

    The float view of `load_pixels` (same rules); it costs 12 bytes a pixel, so the colorization
    pipeline works on `load_pixels`' compact arrays instead.
    """
    return pixels_to_float_rgb(load_pixels(path, max_pixels))


def load_pixels(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read any supported photo at its own depth: (H, W) for gray, (H, W, 3) for colour.

    8-bit sources give uint8, 16-bit ones uint16, 32-bit integer and floating-point ones float32
    in [0, 1] (values are scaled by the range of the stored type, never stretched). The EXIF
    orientation is applied; transparency is composited over white; CMYK is converted through its
    embedded ICC profile when it has one. Multi-frame files give their first frame. A 200 MP gray
    scan takes 200 MB (400 MB at 16 bit). The array may be read-only.
    """
    path = Path(path)
    with _decode_upright(path, max_pixels) as image:
        return _to_pixels(image, path)


def load_photo(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, PhotoMetadata, np.ndarray | None]:
    """A photo file's pixels (`load_pixels`) with what its results pass on: its metadata
    (`photo_metadata.read_metadata`) and its transparency as uint8 alpha (H, W), upright like the
    pixels, or None for an opaque photo. The file is decoded once.

    `load_pixels` composites transparent photos over white for the networks; results get this
    alpha back (`save_image(..., alpha=...)`), so a cut-out stays a cut-out."""
    path = Path(path)
    with _decode_upright(path, max_pixels) as image:
        pixels = _to_pixels(image, path)
        alpha = _alpha_channel(image)
    return pixels, read_metadata(path), alpha


def _decode_upright(path: Path, max_pixels: int) -> Image.Image:
    """The decoded image of a file, turned upright by its EXIF orientation; one-line
    `ImageInputError`s for a missing, empty, unreadable or too large file."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError) as error:
        raise ImageInputError(f"{path}: no such file") from error
    except OSError as error:
        raise ImageInputError(f"{path}: cannot read: {_describe_os_error(error)}") from error
    if stat.S_ISDIR(info.st_mode):
        raise ImageInputError(f"{path}: is a folder, not an image file")
    if info.st_size == 0:
        raise ImageInputError(f"{path}: file is empty")

    with _pil_pixel_limit(max_pixels):
        image = _open_and_decode(path, max_pixels)
    try:
        _apply_exif_orientation(image, path)
    except BaseException:
        image.close()
        raise
    return image


def pixels_to_float_rgb(pixels: np.ndarray) -> np.ndarray:
    """Pixels as `load_pixels` returns them -> float32 RGB (H, W, 3) in [0, 1]."""
    pixels = np.asarray(pixels)
    scale = full_scale(pixels.dtype)
    values = pixels.astype(np.float32)
    if scale != 1.0:
        values *= np.float32(1.0 / scale)
    if values.ndim == 2:
        values = np.repeat(values[:, :, None], 3, axis=2)
    return values


@functools.cache
def _heif_plugin_registered() -> bool:
    """Teach Pillow HEIC/HEIF through pillow-heif, the optional `heif` extra, when installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    try:
        pillow_heif.register_heif_opener()
    except Exception as error:  # a broken plugin must not cost the user their other photos
        logger.warning("pillow-heif is installed but failed to register: %s", one_line_message(error))
        return False
    return True


def _is_heif(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            header = stream.read(12)
    except OSError:
        return False
    return header[4:8] == b"ftyp" and header[8:12] in _HEIF_BRANDS


def _open_and_decode(path: Path, max_pixels: int) -> Image.Image:
    too_large = f"{path}: image is larger than the limit of {max_pixels} pixels"
    heif_readable = _heif_plugin_registered()
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise ImageInputError(too_large) from error
    except PermissionError as error:
        raise ImageInputError(f"{path}: cannot read: permission denied") from error
    except Image.UnidentifiedImageError as error:
        if not heif_readable and _is_heif(path):
            raise ImageInputError(f"{path}: {HEIF_EXTRA_HINT}") from error
        raise ImageInputError(f"{path}: not an image file, or an unsupported format") from error
    except Exception as error:  # PIL plugins raise many types for malformed headers
        raise ImageInputError(f"{path}: cannot read image: {one_line_message(error)}") from error

    try:
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageInputError(f"{path}: image has no pixels ({width}x{height})")
        if width * height > max_pixels:  # checked on the header, before any decoding
            raise ImageInputError(
                f"{path}: image is {width}x{height} = {width * height} pixels, more than the "
                f"limit of {max_pixels}"
            )
        try:
            image.load()  # decode everything now so corrupt or truncated data fails here
        except Image.DecompressionBombError as error:
            raise ImageInputError(too_large) from error
        except MemoryError as error:
            raise ImageInputError(
                f"{path}: not enough memory to decode a {width}x{height} image"
            ) from error
        except Exception as error:
            raise ImageInputError(
                f"{path}: corrupt or truncated image: {one_line_message(error)}"
            ) from error
    except BaseException:
        image.close()
        raise
    return image


def _apply_exif_orientation(image: Image.Image, path: Path) -> None:
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as error:
        # A damaged EXIF block should not cost the user the photo itself.
        logger.warning("%s: ignoring unreadable EXIF orientation: %s", path, one_line_message(error))


def pil_to_pixels(image: Image.Image) -> np.ndarray:
    """An in-memory PIL image as pixels by the rules of `load_pixels`."""
    image = image.copy()  # EXIF transposition works in place; the caller's image stays as it was
    _apply_exif_orientation(image, Path("<image>"))
    return _to_pixels(image, Path("<image>"))


def pil_to_rgb_array(image: Image.Image) -> np.ndarray:
    """An in-memory PIL image as float32 RGB (H, W, 3) in [0, 1], by the rules of `load_image`."""
    return pixels_to_float_rgb(pil_to_pixels(image))


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def _alpha_channel(image: Image.Image) -> np.ndarray | None:
    """The decoded image's alpha as uint8 (H, W); None where it has none or is fully opaque."""
    if not _has_alpha(image):
        return None
    mode = image.mode
    if mode not in ("RGBA", "LA"):  # converted as _to_float_rgb converts them for the composite
        image = image.convert(mode.upper() if mode in ("La", "RGBa") else "LA" if mode == "L" else "RGBA")
    alpha = np.asarray(image.getchannel("A"))  # one byte a pixel: no copy of the whole photo
    return None if alpha.min(initial=255) == 255 else alpha


# Modes whose pixels numpy can take as they are (a copy at most); the others are converted strip
# by strip so that no float copy of a whole huge photo is ever made.
_DIRECT_MODES = frozenset({"L", "RGB", "I;16", "I;16L", "I;16B", "I;16N"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})
_ROWS_PER_CONVERSION = 512


def _to_pixels(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode in _DIRECT_MODES and "transparency" not in image.info:
        pixels = np.asarray(image)
        return pixels.astype(np.uint16) if pixels.dtype.kind == "u" and pixels.itemsize == 2 else pixels
    gray = mode in _GRAY_MODES or mode.startswith("I;16")
    dtype = np.float32 if mode in ("I", "F") else np.uint16 if mode.startswith("I;16") else np.uint8
    scale = full_scale(dtype)
    width, height = image.size
    pixels = np.empty((height, width) if gray else (height, width, 3), dtype=dtype)
    for top in range(0, height, _ROWS_PER_CONVERSION):
        bottom = min(height, top + _ROWS_PER_CONVERSION)
        strip = _to_float_rgb(image.crop((0, top, width, bottom)), path)
        strip = strip[:, :, 0] if gray else strip
        pixels[top:bottom] = strip if scale == 1.0 else np.rint(strip * scale)
    return pixels


def _to_float_rgb(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode in ("1", "F", "I") or mode.startswith("I;16"):
        gray = _high_depth_gray(image)
        return np.repeat(gray[:, :, None], 3, axis=2)

    if mode in ("La", "RGBa"):  # premultiplied alpha
        image = image.convert(mode.upper())
    elif mode == "PA" or (mode in ("P", "L", "RGB") and "transparency" in image.info):
        image = image.convert("LA" if mode == "L" else "RGBA")
    elif mode == "CMYK":
        image = _cmyk_to_rgb(image, path)
    elif mode in ("P", "RGBX", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageInputError(f"{path}: unsupported image mode {image.mode}")

    pixels = np.asarray(image).astype(np.float32)
    pixels *= 1.0 / 255.0
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    color = pixels[:, :, :3] if channels >= 3 else np.repeat(pixels[:, :, :1], 3, axis=2)
    if channels in (2, 4):
        alpha = pixels[:, :, -1:]
        color = color * alpha + (1.0 - alpha)  # composite over white
    return np.ascontiguousarray(color, dtype=np.float32)


def _high_depth_gray(image: Image.Image) -> np.ndarray:
    """Gray modes other than 8-bit 'L', scaled by the full range of their stored type."""
    mode = image.mode
    if mode == "1":
        return np.asarray(image, dtype=np.float32)
    if mode == "F":
        # Floating-point scans follow the usual convention of values in [0, 1]. A NaN sample
        # (a gap in the scan) becomes black and infinities the nearest end of the range: left
        # in, one NaN spreads through the network and turns the whole result black.
        values = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(values, 0.0, 1.0)
    if mode.startswith("I;16"):
        bits = 16
    else:
        bits = _stored_bits_per_sample(image)
    # Mode 'I' holds signed 32-bit integers: a full 32-bit sample tops out at 2**31 - 1.
    maximum = 2**31 - 1 if bits >= 32 else 2**bits - 1
    values = np.asarray(image).astype(np.float64) * (1.0 / maximum)
    return np.clip(values, 0.0, 1.0).astype(np.float32)


def _stored_bits_per_sample(image: Image.Image) -> int:
    # Mode 'I' is a 32-bit container; the file says how many of those bits it really uses.
    tags = getattr(image, "tag_v2", None)
    if tags is not None and 258 in tags:  # TIFF BitsPerSample
        bits = tags[258]
        return int(bits[0] if isinstance(bits, tuple) else bits)
    if image.format in ("PNG", "PPM"):
        return 16
    return 32


def _cmyk_to_rgb(image: Image.Image, path: Path) -> Image.Image:
    icc_profile = image.info.get("icc_profile")
    if icc_profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            converted = ImageCms.profileToProfile(
                image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError) as error:
            logger.warning(
                "%s: embedded ICC profile unusable (%s); converting CMYK without it",
                path,
                one_line_message(error),
            )
    return image.convert("RGB")


def full_scale(dtype: Any) -> float:
    """The value that stands for 1.0 (white) in pixels of this type: 255, 65535, or 1.0 for floats."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def to_8_bit(pixels: np.ndarray) -> np.ndarray:
    """Pixels rounded to uint8 (a 16-bit value v is v/257 in 8-bit units; floats are in [0, 1])."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    values = np.nan_to_num(np.asarray(pixels, dtype=np.float32), nan=0.0)
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def with_alpha(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGBA pixels (H, W, 4) of `pixels`' dtype: RGB pixels that were made from a photo composited
    over white (`load_pixels`), with the photo's `alpha` (H, W, uint8) back.

    Where the photo was partly transparent, its colour is taken out of the white it was blended
    with, c = (rgb - (1 - a)) / a, so the result shown over white is `pixels` exactly and edges
    have no white fringe over other backgrounds. Works in strips of rows (bounded memory)."""
    pixels = to_8_bit(pixels) if pixels.dtype not in (np.uint8, np.uint16) else pixels
    if alpha.shape != pixels.shape[:2]:
        raise ValueError(f"alpha of shape {alpha.shape} does not match pixels of shape {pixels.shape}")
    scale = full_scale(pixels.dtype)
    result = np.empty(pixels.shape[:2] + (4,), dtype=pixels.dtype)
    for top in range(0, pixels.shape[0], _ROWS_PER_CONVERSION):
        rows = slice(top, top + _ROWS_PER_CONVERSION)
        a = alpha[rows, :, None].astype(np.float32) / 255.0
        color = pixels[rows].astype(np.float32) / scale
        color = np.where(a > 0, (color - (1.0 - a)) / np.maximum(a, 1e-6), color)
        result[rows, :, :3] = np.rint(np.clip(color, 0.0, 1.0) * scale)
        result[rows, :, 3] = np.rint(a[:, :, 0] * scale)
    return result


def _rgb_pixels(rgb: Any) -> np.ndarray:
    """RGB (H, W, 3) or, with transparency, RGBA (H, W, 4) pixels of an array or tensor."""
    if hasattr(rgb, "detach"):  # a torch tensor; checked by duck type to keep torch optional here
        rgb = rgb.detach().cpu().float().numpy()
    pixels = np.asarray(rgb)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB (H, W, 3) or RGBA (H, W, 4) array, got shape {pixels.shape}")
    return pixels


def _to_pil(rgb: Any) -> Image.Image:
    if isinstance(rgb, Image.Image):
        return rgb
    return Image.fromarray(to_8_bit(_rgb_pixels(rgb)))


def broken_result_reason(photo: Any, result: Any) -> str | None:
    """Why `result` (RGB pixels) cannot be a colorization of `photo`; None if it can.

    A model that produced NaN or infinity, or an all-black image for a photo that is not black,
    has failed although it raised nothing: saving that as a success would hide the failure.
    Works on integer pixels without converting them, so it costs nothing for a huge photo.
    """
    result, photo = np.asarray(result), np.asarray(photo)
    if result.dtype.kind == "f" and not np.isfinite(result).all():
        return "colorization failed: the model produced invalid (NaN or infinite) pixel values"
    darkest_visible = 0.5 / 255  # the smallest value that is not 0 in an 8-bit file
    brightest = result.max(initial=0) / full_scale(result.dtype)
    if brightest < darkest_visible <= np.nan_to_num(photo.max(initial=0)) / full_scale(photo.dtype):
        return "colorization failed: the result is all black although the photo is not"
    return None


# PNG is written here rather than by Pillow: Pillow has no 16-bit RGB mode, and it needs its own
# copy of the image (4 bytes a pixel) where this writer streams from the array in blocks of rows.
# Filter "Up" with zlib level 1 makes files about as small as Pillow's defaults (adaptive filters,
# level 6) at a fifth of the time: on our historical photos 5 % smaller, 7 times faster.
_ROWS_PER_BLOCK_BYTES = 1 << 22
_PNG_COMPRESSION_LEVEL = 1
_PNG_THREADS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _png_chunk(stream: Any, kind: bytes, data: Any) -> None:
    data = bytes(data)
    stream.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))


def _png_filtered_block(pixels: np.ndarray, top: int, rows: int) -> bytes:
    """Rows top..top+rows of RGB pixels as PNG scanlines, each with filter type 2 ("Up": each
    byte minus the one above it; neighbouring rows of a photo are alike, so the differences
    compress far better than the values)."""
    block = pixels[max(0, top - 1) : top + rows]
    if pixels.dtype.itemsize == 2:
        block = block.astype(">u2")  # PNG stores 16-bit samples big-endian
    raw = np.ascontiguousarray(block).view(np.uint8).reshape(block.shape[0], -1)
    if top == 0:
        raw = np.concatenate([np.zeros_like(raw[:1]), raw])  # the row above the first is zeros
    lines = np.empty((raw.shape[0] - 1, raw.shape[1] + 1), dtype=np.uint8)
    lines[:, 0] = 2
    np.subtract(raw[1:], raw[:-1], out=lines[:, 1:])
    return lines.tobytes()


def _deflate_block(data: bytes, last: bool) -> bytes:
    """Raw deflate of one block. Blocks that end on a sync flush (byte-aligned, not final) can be
    concatenated into one valid deflate stream, so they can be compressed side by side."""
    compressor = zlib.compressobj(_PNG_COMPRESSION_LEVEL, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _write_png(stream: Any, pixels: np.ndarray, metadata: PhotoMetadata | None = None) -> None:
    """RGB or RGBA pixels (uint8 or uint16, (H, W, 3 or 4)) as an 8- or 16-bit PNG, with `metadata`'s DPI
    (pHYs, in pixels per metre) and EXIF (eXIf) where given.

    Blocks of rows are filtered and compressed on up to _PNG_THREADS threads (zlib and numpy
    release the GIL) and written in order; at most two blocks a thread are in flight."""
    height, width, channels = pixels.shape
    sample_bytes = pixels.dtype.itemsize
    color_type = 6 if channels == 4 else 2  # RGBA or RGB
    stream.write(b"\x89PNG\r\n\x1a\n")
    _png_chunk(stream, b"IHDR", struct.pack(">IIBBBBB", width, height, 8 * sample_bytes, color_type, 0, 0, 0))
    if metadata is not None and metadata.dpi is not None:
        per_metre = [round(value / 0.0254) for value in metadata.dpi]
        _png_chunk(stream, b"pHYs", struct.pack(">IIB", *per_metre, 1))
    if metadata is not None and metadata.exif is not None:
        _png_chunk(stream, b"eXIf", metadata.exif)
    if metadata is not None and metadata.xmp is not None:
        # iTXt: keyword, no compression, empty language and translated keyword, UTF-8 text
        _png_chunk(stream, b"iTXt", _PNG_XMP_KEYWORD + b"\0\0\0\0\0" + metadata.xmp)
    rows = max(1, _ROWS_PER_BLOCK_BYTES // (width * channels * sample_bytes))
    tops = range(0, height, rows)

    def work(top: int) -> tuple[bytes, bytes]:
        lines = _png_filtered_block(pixels, top, rows)
        return lines, _deflate_block(lines, last=top + rows >= height)

    # The zlib stream: header (deflate, 32K window, no dictionary, level "fastest"), the raw
    # deflate blocks, then the Adler-32 of all the scanlines.
    _png_chunk(stream, b"IDAT", b"\x78\x01")
    checksum = zlib.adler32(b"")
    threads = min(_PNG_THREADS, len(tops))
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        pending: collections.deque = collections.deque()
        for top in tops:
            pending.append(pool.submit(work, top))
            if len(pending) >= 2 * threads:
                lines, compressed = pending.popleft().result()
                checksum = zlib.adler32(lines, checksum)
                _png_chunk(stream, b"IDAT", compressed)
        while pending:
            lines, compressed = pending.popleft().result()
            checksum = zlib.adler32(lines, checksum)
            _png_chunk(stream, b"IDAT", compressed)
    _png_chunk(stream, b"IDAT", struct.pack(">I", checksum))
    _png_chunk(stream, b"IEND", b"")


_TIFF_BYTE, _TIFF_ASCII, _TIFF_SHORT, _TIFF_LONG, _TIFF_RATIONAL = 1, 2, 3, 4, 5
_TIFF_XMP_TAG = 700
_PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"


def _write_tiff_16(stream: Any, pixels: np.ndarray, metadata: PhotoMetadata | None = None) -> None:
    """Baseline little-endian TIFF, 16-bit RGB or RGBA (beyond Pillow's modes), deflate-compressed strips;
    with `metadata`, its DPI, the Software tag and the XMP (its EXIF would need a directory of its own)."""
    height, width, channels = pixels.shape
    rows = max(1, _ROWS_PER_BLOCK_BYTES // (width * 2 * channels))
    stream.write(b"II*\x00\x00\x00\x00\x00")  # the directory's offset is filled in at the end
    offsets, counts = [], []
    for top in range(0, height, rows):
        data = zlib.compress(np.ascontiguousarray(pixels[top : top + rows], dtype="<u2"), 6)
        offsets.append(stream.tell())
        counts.append(len(data))
        stream.write(data)

    def place(values: list[int], code: str) -> int:
        if stream.tell() % 2:
            stream.write(b"\x00")  # TIFF offsets point to word boundaries
        offset = stream.tell()
        stream.write(struct.pack(f"<{len(values)}{code}", *values))
        return offset

    def entry(tag: int, kind: int, values: list[int]) -> bytes:
        code = {_TIFF_SHORT: "H", _TIFF_ASCII: "B", _TIFF_BYTE: "B"}.get(kind, "I")
        count = len(values) // 2 if kind == _TIFF_RATIONAL else len(values)  # a rational is two longs
        if len(values) * struct.calcsize(code) <= 4:
            inline = struct.pack(f"<{len(values)}{code}", *values).ljust(4, b"\x00")
            return struct.pack("<HHI", tag, kind, count) + inline
        return struct.pack("<HHII", tag, kind, count, place(values, code))

    entries = [
        entry(256, _TIFF_LONG, [width]),
        entry(257, _TIFF_LONG, [height]),
        entry(258, _TIFF_SHORT, [16] * channels),  # bits per sample
        entry(259, _TIFF_SHORT, [8]),  # compression: deflate (zlib)
        entry(262, _TIFF_SHORT, [2]),  # photometric interpretation: RGB
        entry(273, _TIFF_LONG, offsets),
        entry(277, _TIFF_SHORT, [channels]),  # samples per pixel
        entry(278, _TIFF_LONG, [rows]),
        entry(279, _TIFF_LONG, counts),
    ]
    if metadata is not None and metadata.dpi is not None:
        # RATIONAL: numerator and denominator, in hundredths of a dot per inch
        entries += [entry(tag, _TIFF_RATIONAL, [round(value * 100), 100]) for tag, value in zip((282, 283), metadata.dpi)]
    entries.append(entry(284, _TIFF_SHORT, [1]))  # planar configuration: RGB interleaved
    if metadata is not None:
        if metadata.dpi is not None:
            entries.append(entry(296, _TIFF_SHORT, [2]))  # resolution unit: inch
        entries.append(entry(305, _TIFF_ASCII, list(software_name().encode("ascii", "replace") + b"\0")))
    if channels == 4:
        entries.append(entry(338, _TIFF_SHORT, [2]))  # extra sample: unassociated alpha
    if metadata is not None and metadata.xmp is not None:
        entries.append(entry(_TIFF_XMP_TAG, _TIFF_BYTE, list(metadata.xmp)))
    if stream.tell() >= 2**32 - 12 * len(entries) - 8:
        raise ImageOutputError("a TIFF file cannot hold more than 4 GiB; write a PNG instead")
    directory = place([], "H")
    stream.write(struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0))
    stream.seek(4)
    stream.write(struct.pack("<I", directory))
    stream.seek(0, os.SEEK_END)


def _encoder(rgb: Any, image_format: str, jpeg_quality: int, metadata: PhotoMetadata | None = None,
             alpha: np.ndarray | None = None) -> Callable[[Any], None]:
    """A function that writes `rgb` (with the photo's `alpha` where the format keeps it) in
    `image_format` to a binary stream."""
    metadata = metadata or PhotoMetadata()
    if alpha is not None and image_format in _TRANSPARENT_RESULT_FORMATS and not isinstance(rgb, Image.Image):
        rgb = with_alpha(_rgb_pixels(rgb), alpha)
    if not isinstance(rgb, Image.Image):
        pixels = _rgb_pixels(rgb)
        if pixels.dtype != np.uint16:
            pixels = to_8_bit(pixels)
        if image_format == "PNG":
            return functools.partial(_write_png, pixels=pixels, metadata=metadata)
        if image_format == "TIFF" and pixels.dtype == np.uint16:
            return functools.partial(_write_tiff_16, pixels=pixels, metadata=metadata)
        rgb = pixels
    image = _encodable(_to_pil(rgb), image_format)
    options = _save_options(image_format, jpeg_quality)
    extra = _metadata_options(image_format, metadata)

    def write(stream: Any) -> None:
        try:
            image.save(stream, format=image_format, **options, **extra)
        except Exception as error:
            if not extra:
                raise
            # Metadata is a courtesy: EXIF that the format's encoder refuses must not cost the photo.
            logger.info("writing without the original's metadata (%s)", one_line_message(error))
            stream.seek(0)
            stream.truncate()
            image.save(stream, format=image_format, **options)

    return write


#: EXIF tags that point to sub-directories (Exif, GPS, Interoperability): libtiff refuses them
#: as plain tags, so TIFF files get the main directory's tags only.
_EXIF_POINTER_TAGS = (0x8769, 0x8825, 0xA005)


def _metadata_options(image_format: str, metadata: PhotoMetadata) -> dict[str, Any]:
    """Pillow's save options that write `metadata` in `image_format` (where it holds them)."""
    options: dict[str, Any] = {}
    if metadata.dpi is not None and image_format in ("JPEG", "PNG", "TIFF", "BMP"):
        options["dpi"] = metadata.dpi
    exif = metadata.exif
    if image_format == "TIFF" and (exif is not None or metadata.xmp is not None):
        # one directory: Pillow writes `tiffinfo` instead of `exif`, so the XMP goes in as tag 700
        main_directory = Image.Exif()
        if exif is not None:
            main_directory.load(exif)
        for tag in _EXIF_POINTER_TAGS:
            main_directory.pop(tag, None)
        if metadata.xmp is not None:
            main_directory[_TIFF_XMP_TAG] = metadata.xmp
        exif = main_directory.tobytes()
    if exif is not None and image_format in ("JPEG", "PNG", "WEBP", "TIFF"):
        if not (image_format == "JPEG" and len(exif) > MAX_JPEG_EXIF_BYTES):
            options["exif"] = exif
    xmp = metadata.xmp
    if xmp is not None:
        if image_format in ("JPEG", "WEBP"):
            options["xmp"] = xmp
        elif image_format == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_itxt(_PNG_XMP_KEYWORD.decode(), xmp.decode("utf-8", "replace"))
            options["pnginfo"] = info
    return options


def _encodable(image: Image.Image, image_format: str) -> Image.Image:
    if image.mode in _FORMAT_MODES[image_format]:
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # PIL's own conversion clips these to 0..255 instead of rescaling their range.
        gray = np.rint(_high_depth_gray(image) * 255.0).astype(np.uint8)
        image = Image.fromarray(gray, mode="L")
        return image if "L" in _FORMAT_MODES[image_format] else image.convert("RGB")
    has_alpha = image.mode in ("LA", "PA", "RGBA", "RGBa", "La") or "transparency" in image.info
    return image.convert("RGBA" if has_alpha and image_format in _ALPHA_FORMATS else "RGB")


def _save_options(image_format: str, jpeg_quality: int) -> dict[str, Any]:
    if image_format == "JPEG":
        # 4:4:4 chroma: the colours are the whole point of this tool, so do not subsample them.
        return {"quality": jpeg_quality, "subsampling": 0, "optimize": True}
    if image_format == "WEBP":
        return {"quality": jpeg_quality}
    if image_format == "TIFF":
        return {"compression": "tiff_lzw"}
    if image_format == "PNG":
        return {"optimize": False}
    return {}


def _create_temporary_file(path: Path) -> tuple[Path, int]:
    # os.open with O_EXCL (instead of tempfile.mkstemp) so the file gets the usual permissions
    # from the umask rather than mkstemp's private 0600; the name carries our pid so that
    # `remove_stale_temporaries` can clean up after a killed run.
    while True:
        temporary = temporary_path(path, unique=True)
        try:
            return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def _describe_os_error(error: OSError) -> str:
    if isinstance(error, PermissionError):
        return "permission denied"
    return (error.strerror or one_line_message(error)).lower()


def save_image(
    rgb: Any,
    path: str | Path,
    overwrite: bool = False,
    jpeg_quality: int = 95,
    metadata: PhotoMetadata | None = None,
    alpha: np.ndarray | None = None,
) -> None:
    """Write `rgb` to `path`: (H, W, 3) pixels (uint8; uint16; float array or tensor in [0, 1]) or a
    PIL image.

    The format follows the suffix. uint16 pixels keep 16 bits in PNG and TIFF and are rounded to
    8 bit for the other formats; floats are clipped and rounded to 8 bit, not stretched.
    `metadata` (`photo_metadata.read_metadata` of the original) writes its DPI and EXIF where
    the format holds them. `alpha` (`load_photo` of the original) makes PNG, TIFF and WebP files
    RGBA (`with_alpha`); the other formats stay RGB, over white.
    The file appears atomically: it is written to a temporary file beside the destination and
    renamed over it, so a failure never leaves a partial file. Parent folders are created.
    """
    path = Path(path)
    image_format = SAVE_FORMATS.get(path.suffix.lower())
    if image_format is None:
        known = ", ".join(sorted(SAVE_FORMATS))
        raise ImageOutputError(
            f"{path}: cannot write images with suffix '{path.suffix}' (use one of {known})"
        )
    _check_destination(path, overwrite)
    _write_file_atomically(path, overwrite, _encoder(rgb, image_format, jpeg_quality, metadata, alpha))


def encode_image(
    rgb: Any,
    image_format: str = "PNG",
    jpeg_quality: int = 95,
    metadata: PhotoMetadata | None = None,
    alpha: np.ndarray | None = None,
) -> bytes:
    """The bytes `save_image` would write for `rgb` in `image_format` (e.g. "PNG"), in memory."""
    buffer = io.BytesIO()
    _encoder(rgb, image_format, jpeg_quality, metadata, alpha)(buffer)
    return buffer.getvalue()


def copy_image_file(source: str | Path, path: str | Path, overwrite: bool = False) -> None:
    """Copy the file `source` byte for byte to `path`, with save_image's rules: atomic, never
    over an existing file unless `overwrite`, parent folders created, one-line errors."""
    source, path = Path(source), Path(path)
    _check_destination(path, overwrite)
    try:
        reader = open(source, "rb")
    except OSError as error:
        raise ImageOutputError(f"{path}: cannot copy {source}: {_describe_os_error(error)}") from error
    with reader:
        _write_file_atomically(path, overwrite, lambda stream: shutil.copyfileobj(reader, stream))


def _check_destination(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise ImageOutputError(f"{path}: is a folder")
    if path.exists() and not overwrite:
        raise ImageOutputError(f"{path}: already exists (pass overwrite to replace it)")


def _write_file_atomically(path: Path, overwrite: bool, write: Callable[[Any], None]) -> None:
    """Create `path` with what `write(stream)` writes, through a temporary file beside it."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:
        raise ImageOutputError(
            f"{path}: cannot create folder {folder}: a file is in the way"
        ) from error
    except OSError as error:
        raise ImageOutputError(
            f"{path}: cannot create folder {folder}: {_describe_os_error(error)}"
        ) from error
    try:
        temporary, descriptor = _create_temporary_file(path)
    except OSError as error:
        raise ImageOutputError(
            f"{path}: cannot write to folder {folder}: {_describe_os_error(error)}"
        ) from error

    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        _move_into_place(temporary, path, overwrite)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, ImageOutputError):
            raise
        if isinstance(error, Exception):
            raise ImageOutputError(f"{path}: cannot write image: {one_line_message(error)}") from error
        raise


def _move_into_place(temporary: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(temporary, path)
        return
    # A hard link fails if the destination appeared since our check, so two workers writing the
    # same output cannot silently replace each other's file.
    try:
        os.link(temporary, path)
    except FileExistsError as error:
        raise ImageOutputError(f"{path}: already exists (pass overwrite to replace it)") from error
    except OSError:
        # Some filesystems (FAT, some network shares) have no hard links.
        if path.exists():
            raise ImageOutputError(f"{path}: already exists (pass overwrite to replace it)")
        os.replace(temporary, path)
    else:
        temporary.unlink()


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
    return f"cannot read: {_describe_os_error(error)}"


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
            on_skip(current, f"cannot read folder: {_describe_os_error(error)}")
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


def save_animation(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: float = 6.0, overwrite: bool = False) -> None:
    """An animated GIF that plays the frames forth and back (atomic write)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (use --overwrite to replace it)")
    pictures = [Image.fromarray(to_8_bit(np.asarray(frame))) for frame in frames]
    sequence = pictures + pictures[-2:0:-1]
    write_atomically(path, lambda temporary: sequence[0].save(
        temporary, format="GIF", save_all=True, append_images=sequence[1:], duration=int(1000 / fps), loop=0))
