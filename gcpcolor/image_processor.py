"""Pre- and post-processing around the networks: photos in, network inputs out, and back.

The networks see a `work_size`² square of lightness values (L/50 - 1) and answer with ab at that
size. `ImageProcessor.preprocess` fits a photo into the square; `ImageProcessor.postprocess` joins
the answer's ab, upsampled bicubically to the photo's own size, with the photo's own lightness and
converts the result to RGB at the photo's bit depth (8-bit photos give 8-bit results, deeper ones
16-bit). The pipeline, the evaluation and the web page all go through here.

Both directions walk the photo in horizontal strips of about `strip_pixels` pixels, so that what
they need beyond the photo and the result is a few strips of floats, whatever the photo's size
(a 200 MP scan would need 30 GB as one float image).

Photos are numpy arrays: (H, W) for gray, (H, W, 3) for colour; uint8, uint16 (values over the
full range of their type) or float32 in [0, 1], as `image_io.load_pixels` returns them.

Two resize modes (docs/architecture.md, "Pre- and post-processing"):
- `pad` (ours): L at full resolution, aspect-preserving antialiased resize, reflection padding;
  scikit-image's CIELAB constants.
- `stretch` (the authors'): the 8-bit RGB photo squashed to the square by Pillow's bilinear
  resize, L of that; the authors' CIELAB constants and edge handling in both directions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .color import AUTHORS_LAB, SKIMAGE_LAB, LabConvention, lab_to_rgb, l_to_network, rgb_to_l
from .errors import InvalidResultError
from .image_io import full_scale, to_8_bit

RESIZE_MODES = ("pad", "stretch")

#: Pixels per strip: large enough that per-strip overhead vanishes, small enough that the float
#: temporaries of one strip (about 15 floats a pixel) stay under 100 MB.
DEFAULT_STRIP_PIXELS = 1 << 20

# Above this, the ab map widened to the photo's width is made strip by strip instead.
_MAX_WIDENED_BYTES = 64 * 2**20

# PyTorch's bicubic kernel (Keys' cubic convolution with a = -0.75), which the authors use too.
_CUBIC_A = -0.75


@dataclass(frozen=True)
class PreparedPhoto:
    """A photo and the network input made from it."""

    pixels: np.ndarray  # the photo as given: (H, W) or (H, W, 3), uint8, uint16 or float32
    work_input: torch.Tensor  # (1, 1, S, S) network input L/50 - 1
    crop: tuple[int, int, int, int]  # top, left, height, width of the photo inside the S² square
    resize_mode: str

    @property
    def convention(self) -> LabConvention:
        return lab_convention(self.resize_mode)


def lab_convention(resize_mode: str) -> LabConvention:
    """The CIELAB constants each resize mode uses in both directions."""
    return AUTHORS_LAB if resize_mode == "stretch" else SKIMAGE_LAB


def result_dtype(pixels: np.ndarray) -> np.dtype:
    """8-bit photos give 8-bit results; 16-bit and floating-point ones keep their depth in 16 bits."""
    return np.dtype(np.uint8) if pixels.dtype == np.uint8 else np.dtype(np.uint16)


def check_pixels(pixels: np.ndarray) -> np.ndarray:
    if not isinstance(pixels, np.ndarray) or pixels.dtype not in (np.uint8, np.uint16, np.float32):
        kind = getattr(pixels, "dtype", type(pixels).__name__)
        raise ValueError(f"expected a uint8, uint16 or float32 numpy image, got {kind}")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)) or min(pixels.shape[:2]) < 1:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {pixels.shape}")
    return pixels


@functools.cache
def _gray_lightness_table(dtype_name: str, convention: LabConvention) -> np.ndarray:
    """L of every gray level of an integer type: a gray photo's lightness is one lookup a pixel."""
    levels = np.arange(int(full_scale(np.dtype(dtype_name))) + 1, dtype=np.float64) / full_scale(np.dtype(dtype_name))
    gray = torch.from_numpy(levels).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    return rgb_to_l(gray, convention).flatten().numpy().astype(np.float32)


def lightness(pixels: np.ndarray, convention: LabConvention = SKIMAGE_LAB) -> torch.Tensor:
    """CIELAB L (1, 1, H, W) float32 of (part of) a photo."""
    if pixels.ndim == 2 and pixels.dtype != np.float32:
        table = _gray_lightness_table(pixels.dtype.name, convention)
        return torch.from_numpy(table[pixels])[None, None]
    values = pixels.astype(np.float32)  # a strip-sized copy, writable as torch wants it
    if pixels.dtype != np.float32:
        values *= np.float32(1.0 / full_scale(pixels.dtype))
    values = torch.from_numpy(values)
    rgb = values[None, None].expand(1, 3, -1, -1) if pixels.ndim == 2 else values.permute(2, 0, 1)[None]
    return rgb_to_l(rgb.clamp(0.0, 1.0), convention)


def _bicubic_taps(source_size: int, target_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each target position, the 4 source indices and weights of PyTorch's bicubic resize
    (align_corners=False): source position (i + 0.5) · source/target - 0.5, edges replicated."""
    position = (np.arange(target_size, dtype=np.float64) + 0.5) * (source_size / target_size) - 0.5
    base = np.floor(position)
    t = (position - base)[:, None]
    distance = np.concatenate([t + 1.0, t, 1.0 - t, 2.0 - t], axis=1)
    near = ((_CUBIC_A + 2.0) * distance - (_CUBIC_A + 3.0)) * distance * distance + 1.0
    far = ((_CUBIC_A * distance - 5.0 * _CUBIC_A) * distance + 8.0 * _CUBIC_A) * distance - 4.0 * _CUBIC_A
    weights = np.where(distance <= 1.0, near, far)
    indices = np.clip(base[:, None] + np.arange(-1, 3), 0, source_size - 1).astype(np.int64)
    return torch.from_numpy(indices), torch.from_numpy(weights.astype(np.float32))


class ImageProcessor:
    """Photo -> network input and network ab -> full-resolution RGB, in bounded memory."""

    def __init__(self, work_size: int = 256, strip_pixels: int = DEFAULT_STRIP_PIXELS):
        if work_size < 1 or strip_pixels < 1:
            raise ValueError("work_size and strip_pixels must be positive")
        self.work_size = work_size
        self.strip_pixels = strip_pixels

    def strips(self, height: int, width: int) -> Iterator[slice]:
        rows = max(1, self.strip_pixels // max(1, width))
        for start in range(0, height, rows):
            yield slice(start, min(height, start + rows))

    # ----------------------------------------------------------------- photo -> network input
    def preprocess(self, pixels: np.ndarray, resize_mode: str = "pad") -> PreparedPhoto:
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        check_pixels(pixels)
        if resize_mode == "stretch":
            return self._stretch(pixels)
        return self._pad(pixels)

    def _pad(self, pixels: np.ndarray) -> PreparedPhoto:
        size = self.work_size
        height, width = pixels.shape[:2]
        scale = size / max(height, width)
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        # The antialiased resize is separable: narrowing each strip, then the narrow column,
        # gives the one-step result without ever holding the photo's L.
        narrowed = [
            F.interpolate(lightness(pixels[rows]), size=(rows.stop - rows.start, new_w), mode="bilinear",
                          align_corners=False, antialias=True)
            for rows in self.strips(height, width)
        ]
        small = F.interpolate(torch.cat(narrowed, dim=2), size=(new_h, new_w), mode="bilinear",
                              align_corners=False, antialias=True)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        padding = (left, size - new_w - left, top, size - new_h - top)
        if any(padding):
            # Reflection keeps image statistics for the GAN inversion; it needs pad < side.
            mode = "reflect" if max(padding) < min(new_h, new_w) else "replicate"
            small = F.pad(small, padding, mode=mode)
        return PreparedPhoto(pixels, l_to_network(small), (top, left, new_h, new_w), "pad")

    def _stretch(self, pixels: np.ndarray) -> PreparedPhoto:
        size = self.work_size
        height, width = pixels.shape[:2]
        # Pillow resizes in two passes with 8-bit rounding between them, width first; running
        # the width pass strip by strip therefore gives its exact bytes.
        narrowed = [
            np.asarray(Image.fromarray(to_8_bit(pixels[rows])).resize(
                (size, rows.stop - rows.start), Image.Resampling.BILINEAR))
            for rows in self.strips(height, width)
        ]
        small = np.asarray(Image.fromarray(np.concatenate(narrowed)).resize((size, size), Image.Resampling.BILINEAR))
        work_input = l_to_network(lightness(small, AUTHORS_LAB))
        return PreparedPhoto(pixels, work_input, (0, 0, size, size), "stretch")

    # ----------------------------------------------------------------- network ab -> photo
    def postprocess(self, prepared: PreparedPhoto, ab: torch.Tensor) -> np.ndarray:
        """Full-resolution RGB (H, W, 3) of the photo coloured with `ab` (1, 2, S, S) at the work size."""
        top, left, height, width = prepared.crop
        ab = ab[:, :, top : top + height, left : left + width].detach().float().cpu()
        if not bool(torch.isfinite(ab).all()):
            raise InvalidResultError("colorization failed: the model produced invalid (NaN or infinite) values")
        return self.compose(prepared.pixels, ab, prepared.convention)

    def gray_rendering(self, pixels: np.ndarray) -> np.ndarray:
        """The photo's lightness alone (a = b = 0) as RGB: its colour-free version."""
        return self.compose(check_pixels(pixels), torch.zeros(1, 2, 1, 1))

    def compose(self, pixels: np.ndarray, ab: torch.Tensor, convention: LabConvention = SKIMAGE_LAB) -> np.ndarray:
        """L of `pixels` joined with `ab` (1, 2, h, w), which covers the whole photo at any size,
        as RGB of `result_dtype(pixels)`, built strip by strip into the result."""
        height, width = pixels.shape[:2]
        ab_height = ab.shape[-2]
        row_indices, row_weights = _bicubic_taps(ab_height, height)
        result = np.empty((height, width, 3), dtype=result_dtype(pixels))
        scale = full_scale(result.dtype)
        # Upsampling is separable. Along the width PyTorch's own bicubic does it, for all of the
        # small map's rows at once when that map is small (it is, but for extreme panoramas in
        # stretch mode), else strip by strip; along the height the rows of each strip mix the
        # map's rows with the weights of the whole image's source positions.
        widened = None
        if 2 * ab_height * width * 4 <= _MAX_WIDENED_BYTES:
            widened = F.interpolate(ab, size=(ab_height, width), mode="bicubic", align_corners=False)[0]
        for rows in self.strips(height, width):
            indices, weights = row_indices[rows], row_weights[rows]
            source = widened if widened is not None else ab[0]
            ab_strip = source[:, indices[:, 0], :] * weights[:, 0, None]
            for k in range(1, 4):
                ab_strip.addcmul_(source[:, indices[:, k], :], weights[:, k, None])
            if widened is None:
                ab_strip = F.interpolate(ab_strip[None], size=(rows.stop - rows.start, width), mode="bicubic",
                                         align_corners=False)[0]
            lab = torch.cat([lightness(pixels[rows], convention), ab_strip[None]], dim=1)
            rgb = lab_to_rgb(lab, convention)[0].permute(1, 2, 0)
            result[rows] = torch.round(rgb * scale).numpy()
        return result


__all__ = [
    "DEFAULT_STRIP_PIXELS",
    "ImageProcessor",
    "PreparedPhoto",
    "RESIZE_MODES",
    "check_pixels",
    "lab_convention",
    "lightness",
    "result_dtype",
]
