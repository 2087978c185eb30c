"""Reading photos robustly.

Inputs come from archives and family scans: any common format, gray or colour, 16-bit, palette,
with alpha, CMYK, rotated by an EXIF tag, tiny or huge. `load_pixels` turns all of them into one
compact array at their own bit depth (`load_image` into float RGB) and reports every expected
problem as an `ImageInputError` whose message is one line naming the file, so the command line
can print it and move on. Writing results is `image_writing.py`; finding the photos a user
names (files, folders, glob patterns) is `photo_files.py`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import stat
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps

from .photo_metadata import PhotoMetadata, read_metadata

logger = logging.getLogger(__name__)

#: What to install for HEIC/HEIF photos (phones' default format), which Pillow cannot read alone.
HEIF_EXTRA_HINT = 'HEIC/HEIF photos need the optional extra: pip install "gcpcolor[heif]"'

# Brands in the "ftyp" box at the start of a HEIF file; a renamed .jpg from a phone is still one.
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)

DEFAULT_MAX_PIXELS = 200_000_000

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


def describe_os_error(error: OSError) -> str:
    """An OS error's reason in a few lower-case words, for one-line messages."""
    if isinstance(error, PermissionError):
        return "permission denied"
    return (error.strerror or one_line_message(error)).lower()


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
        raise ImageInputError(f"{path}: cannot read: {describe_os_error(error)}") from error
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
        gray = high_depth_gray(image)
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


def high_depth_gray(image: Image.Image) -> np.ndarray:
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
