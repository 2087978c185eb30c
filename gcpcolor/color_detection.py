"""Telling a colour photo from a black-and-white one, toned prints (sepia, selenium, cyanotype)
counting as black-and-white.

Plain chroma cannot tell them apart: a sepia print has a mean chroma of up to 25 ΔE*ab units
while a grey-green colour landscape can have 4. What a toned print cannot have is two colours
at the same lightness: its tint comes from the toning of the silver, so it is a function of the
density (lightness) alone. The measure here is therefore the chroma left after removing, for
each band of lightness, the photo's own median tint in that band: the "off-tone chroma".

A photo counts as colour when at least a tenth of it is off its tone by more than
COLOR_THRESHOLD = 5 ΔE*ab units, about two just-noticeable colour differences (ΔE*ab ≈ 2.3).
On the project's photos (docs/color_detection.md) this classifies 23 of 23 black-and-white and
toned old photos as black-and-white and 113 of 118 colour photos as colour; the colour photos it
misses are scenes with almost no colour (an aircraft in a grey sky, a snake on sand, a wolf on
snow, a glass pyramid, a penguin on grey rock), which the tool may as well colorize.
A flat graphic whose every lightness has one colour would count as toned.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .color import rgb_to_lab
from .image_io import pixels_to_float_rgb

#: Off-tone chroma (ΔE*ab units) above which a photo counts as colour, measured at the
#: COLORFUL_QUANTILE of its pixels.
COLOR_THRESHOLD = 5.0
#: The share of the photo that must be that colourful is 1 - COLORFUL_QUANTILE (a tenth): a
#: colour photo of a grey street with one red car still counts, a stain on a print does not.
COLORFUL_QUANTILE = 0.9
#: The photo is measured at this size (area-averaged): it bounds the cost for big scans and
#: averages away film grain and the chroma noise of JPEG compression.
MEASURE_SIDE = 256
#: Bands of lightness (L 0..100) in which a toned print's tint is taken as constant; 5 L units
#: each, narrow enough that a tint changing with density stays within a fraction of a unit.
LIGHTNESS_BANDS = 20


def off_tone_chroma(rgb: np.ndarray) -> float:
    """How far the photo's colours depart from a single tone per lightness, in ΔE*ab units:
    the COLORFUL_QUANTILE of the pixels' distance in (a, b) from the median tint of their band
    of lightness. About 0 for gray and toned photos; see the module's documentation.

    `rgb`: the photo as `image_io.load_pixels` gives it — (H, W) gray (always 0) or (H, W, 3),
    uint8/uint16 over their type's range or floats in [0, 1]."""
    pixels = np.asarray(rgb)
    if pixels.size and (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 1)):
        return 0.0  # one channel: no colour to find
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.size == 0:
        raise ValueError(f"expected an RGB array of shape (H, W, 3), got shape {pixels.shape}")
    # Big scans are thinned before any float copy is made (a 200 MP float image is 2.4 GB);
    # the area average to MEASURE_SIDE below then sees at least 4 samples a cell.
    step = max(1, max(pixels.shape[:2]) // (8 * MEASURE_SIDE))
    pixels = np.nan_to_num(pixels_to_float_rgb(pixels[::step, ::step]), nan=0.0, posinf=1.0, neginf=0.0)
    tensor = torch.from_numpy(np.ascontiguousarray(np.clip(pixels, 0.0, 1.0).transpose(2, 0, 1)))[None]
    height, width = pixels.shape[:2]
    scale = MEASURE_SIDE / max(height, width)
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        tensor = F.interpolate(tensor, size=size, mode="area")
    lightness, a, b = rgb_to_lab(tensor.double())[0].reshape(3, -1).numpy()
    bands = np.clip((lightness * (LIGHTNESS_BANDS / 100.0)).astype(np.int64), 0, LIGHTNESS_BANDS - 1)
    off_a, off_b = np.empty_like(a), np.empty_like(b)
    for band in np.unique(bands):
        members = bands == band
        off_a[members] = a[members] - np.median(a[members])
        off_b[members] = b[members] - np.median(b[members])
    return float(np.quantile(np.hypot(off_a, off_b), COLORFUL_QUANTILE))


def looks_like_color(rgb: np.ndarray) -> bool:
    """Whether the photo already has colour (see `off_tone_chroma`); False for toned prints."""
    return off_tone_chroma(rgb) > COLOR_THRESHOLD


class ColorInputWarning(UserWarning):
    """A photo given to colorize already has colour; it is recoloured from its lightness alone."""


def color_input_note(chroma: float) -> str:
    """Why a photo counts as colour, for messages: 'looks like a colour photo (off-tone chroma 12.3 > 5)'."""
    return f"looks like a colour photo already (off-tone chroma {chroma:.1f} > {COLOR_THRESHOLD:g})"
