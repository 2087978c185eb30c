"""Telling colour photos from black-and-white and toned ones, and warning about them."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gcpcolor.color import lab_to_rgb, rgb_to_lab
from gcpcolor.color_detection import COLOR_THRESHOLD, ColorInputWarning, looks_like_color, off_tone_chroma
from gcpcolor.image_io import load_image


def _lightness(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A photo-like lightness field (L 5..95): smooth shapes plus grain."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 1, 6, 8)))
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    grain = rng.normal(0, 0.03, (height, width))
    return np.clip(smooth[0, 0].numpy() + grain, 0, 1) * 90 + 5


def _from_lab(lightness: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lab = torch.from_numpy(np.stack([lightness, a, b]))[None].double()
    return lab_to_rgb(lab)[0].permute(1, 2, 0).numpy().astype(np.float32)


def _gray() -> np.ndarray:
    lightness = _lightness()
    return _from_lab(lightness, np.zeros_like(lightness), np.zeros_like(lightness))


def _toned(tint_a: float, tint_b: float, shadows: tuple[float, float] | None = None) -> np.ndarray:
    """A toned print: the tint is strongest in the mid-tones (a function of lightness alone);
    with `shadows`, a split toning whose shadows take another hue."""
    lightness = _lightness()
    strength = np.sin(np.pi * lightness / 100)
    a, b = tint_a * strength, tint_b * strength
    if shadows is not None:
        dark = np.clip((50 - lightness) / 50, 0, 1)
        a, b = a * (1 - dark) + shadows[0] * dark, b * (1 - dark) + shadows[1] * dark
    return _from_lab(lightness, a, b)


def _mean_chroma(rgb: np.ndarray) -> float:
    lab = rgb_to_lab(torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None])[0]
    return float(torch.hypot(lab[1], lab[2]).mean())


def _jpeg(rgb: np.ndarray, quality: int = 75) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255


SEPIA = (6.0, 28.0)
SELENIUM = (12.0, -4.0)  # purple-brown
CYANOTYPE = (-8.0, -38.0)


@pytest.mark.parametrize("rgb", [
    pytest.param(_gray(), id="gray"),
    pytest.param(_toned(*SEPIA), id="sepia"),
    pytest.param(_toned(*SELENIUM), id="selenium"),
    pytest.param(_toned(*CYANOTYPE), id="cyanotype"),
    pytest.param(_toned(*SEPIA, shadows=(0.0, -12.0)), id="split-toned"),
    pytest.param(_jpeg(_toned(*SEPIA)), id="sepia-jpeg"),
])
def test_gray_and_toned_photos_are_black_and_white(rgb):
    assert off_tone_chroma(rgb) < 0.8 * COLOR_THRESHOLD  # JPEG chroma noise on grain: about 3
    assert not looks_like_color(rgb)


def test_strong_toning_has_more_plain_chroma_than_the_threshold():
    """Why the measure is off-tone chroma: by plain mean chroma a sepia print is colour."""
    sepia = _toned(*SEPIA)
    assert _mean_chroma(sepia) > 2 * COLOR_THRESHOLD and not looks_like_color(sepia)


def _colour_photo(share: float = 1.0, seed: int = 1) -> np.ndarray:
    """Hues that vary across the picture independently of lightness, on `share` of its width
    (the rest neutral gray): a colour photo, or a gray street with one coloured object."""
    lightness = _lightness(seed=seed)
    height, width = lightness.shape
    rng = np.random.default_rng(seed)
    angle = torch.nn.functional.interpolate(torch.from_numpy(rng.random((1, 1, 3, 4)) * 2 * np.pi),
                                            size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()
    chroma = np.zeros_like(lightness)
    chroma[:, : int(round(share * width))] = 30.0
    return _from_lab(lightness, chroma * np.cos(angle), chroma * np.sin(angle))


@pytest.mark.parametrize("rgb", [
    pytest.param(_colour_photo(), id="colour"),
    pytest.param(_jpeg(_colour_photo(seed=2)), id="colour-jpeg"),
    pytest.param(_colour_photo(share=0.2), id="gray-street-with-a-red-car"),
    pytest.param(np.random.default_rng(3).random((40, 60, 3)).astype(np.float32), id="colour-noise"),
])
def test_colour_photos_are_colour(rgb):
    assert off_tone_chroma(rgb) > COLOR_THRESHOLD and looks_like_color(rgb)


def test_a_small_stain_on_a_sepia_print_does_not_make_it_colour():
    print_ = _toned(*SEPIA)
    print_[10:18, 20:30] = [0.2, 0.6, 0.3]  # a green stain on under a tenth of the print
    assert not looks_like_color(print_)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 5000, 3), (3000, 2, 3)])
def test_tiny_and_extreme_shapes(shape):
    assert not looks_like_color(np.full(shape, 0.5, dtype=np.float32))


def test_invalid_pixels_do_not_break_the_measure():
    rgb = _gray()
    rgb[::7, ::5] = np.nan
    rgb[1, 1] = np.inf
    assert np.isfinite(off_tone_chroma(rgb)) and not looks_like_color(rgb)
    with pytest.raises(ValueError):
        off_tone_chroma(np.zeros((4, 4, 2)))


def test_compact_pixels_are_measured_like_floats():
    """The pipeline hands over pixels as image_io.load_pixels gives them: one-channel photos have
    no colour, and uint8/uint16 photos measure like their [0, 1] float versions."""
    assert off_tone_chroma(np.full((40, 60), 200, np.uint8)) == 0.0
    rng = np.random.default_rng(0)
    colourful = rng.random((48, 64, 3)).astype(np.float32)
    as_uint8 = np.round(colourful * 255).astype(np.uint8)
    as_uint16 = np.round(colourful * 65535).astype(np.uint16)
    expected = off_tone_chroma(as_uint8.astype(np.float32) / 255)
    assert off_tone_chroma(as_uint8) == pytest.approx(expected, abs=1e-3)
    assert off_tone_chroma(as_uint16) == pytest.approx(off_tone_chroma(colourful), abs=1e-2)
    assert looks_like_color(as_uint8)


# ----------------------------------------------------------------------------- the Python API


def test_colorizing_a_colour_photo_warns_once_and_flags_the_result(demo_colorizer, monkeypatch):
    monkeypatch.setattr(demo_colorizer, "warn_on_color_input", True)  # whatever an earlier test left
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = demo_colorizer.colorize(_colour_photo())
        samples = demo_colorizer.diverse(_colour_photo(), samples=2)
    colour_warnings = [w for w in caught if issubclass(w.category, ColorInputWarning)]
    assert len(colour_warnings) == 2  # once for colorize, once for both samples
    assert "looks like a colour photo" in str(colour_warnings[0].message)
    assert result.input_is_color and result.input_off_tone_chroma > COLOR_THRESHOLD
    assert all(sample.input_is_color for sample in samples)


def test_the_warning_names_the_file_spares_toned_prints_and_can_be_turned_off(demo_colorizer, tmp_path,
                                                                              monkeypatch):
    colour, sepia = tmp_path / "holiday.png", tmp_path / "grandma.png"
    Image.fromarray(np.round(_colour_photo() * 255).astype(np.uint8)).save(colour)
    Image.fromarray(np.round(_toned(*SEPIA) * 255).astype(np.uint8)).save(sepia)
    monkeypatch.setattr(demo_colorizer, "warn_on_color_input", True)
    with pytest.warns(ColorInputWarning, match="holiday.png"):
        demo_colorizer.colorize(colour)
    monkeypatch.setattr(demo_colorizer, "warn_on_color_input", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = demo_colorizer.colorize_batch([colour, sepia])
    assert [result.input_is_color for result in results] == [True, False]


# ----------------------------------------------------------------------------- genuine photos

#: Old colour prints and autochromes among the historical photos (judged by eye).
HISTORICAL_COLOUR = frozenset(f"bopb_old_{letter}.jpg" for letter in "abcdefgh")


def test_genuine_old_photos(shared_data: Path):
    """The 23 black-and-white and sepia prints count as black-and-white, the 8 old colour
    prints as colour (docs/color_detection.md)."""
    photos = sorted((shared_data / "historical").glob("*.jpg"))
    assert len(photos) >= 31
    wrong = [path.name for path in photos if looks_like_color(load_image(path)) != (path.name in HISTORICAL_COLOUR)]
    assert wrong == []
