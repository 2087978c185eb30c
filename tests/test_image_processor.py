"""Pre- and post-processing: strips equal the whole, 16-bit round trips, and the authors' mode
checked against their formulas written out here in numpy."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gcpcolor.color import rgb_to_lab, lab_to_rgb
from gcpcolor.image_io import load_pixels
from gcpcolor.image_writing import save_image
from gcpcolor.image_processor import ImageProcessor


def _smooth_photo(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """8-bit photo-like content: smooth shapes plus a little grain, every level used."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    planes = [0.5 + 0.45 * np.sin(6 * x + 2 * c) * np.cos(5 * y - c) for c in range(channels)]
    values = np.stack(planes, axis=-1) + 0.03 * rng.standard_normal((height, width, channels))
    pixels = np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8)
    return pixels[:, :, 0] if channels == 1 else pixels


def _random_ab(size: int, seed: int = 1, amplitude: float = 60.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 2, 4, 4, generator=generator) * amplitude
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _as_float_rgb(pixels: np.ndarray) -> torch.Tensor:
    values = torch.from_numpy(pixels.astype(np.float32) / np.iinfo(pixels.dtype).max)
    return values[None, None].expand(1, 3, -1, -1) if pixels.ndim == 2 else values.permute(2, 0, 1)[None]


# ----------------------------------------------------------------------------- strips = whole
@pytest.mark.parametrize("widen_at_once", [True, False], ids=["widened", "per-strip"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("ab_shape", [(12, 16), (40, 70), (37, 53)])
def test_composition_in_strips_equals_the_whole_image(channels, ab_shape, widen_at_once, monkeypatch):
    if not widen_at_once:  # the path for ab maps too wide to widen in one piece
        monkeypatch.setattr("gcpcolor.image_processor._MAX_WIDENED_BYTES", 0)
    pixels = _smooth_photo(37, 53, channels)
    ab = _random_ab(80)[:, :, : ab_shape[0], : ab_shape[1]].contiguous()
    # The untiled reference: everything at full size at once.
    lightness = rgb_to_lab(_as_float_rgb(pixels).double())[:, :1]
    upsampled = F.interpolate(ab.double(), size=pixels.shape[:2], mode="bicubic", align_corners=False)
    whole = np.rint(lab_to_rgb(torch.cat([lightness, upsampled], 1))[0].permute(1, 2, 0).numpy() * 255)

    for rows_per_strip in (1, 3, 37):
        tiled = ImageProcessor(strip_pixels=53 * rows_per_strip).compose(pixels, ab)
        assert tiled.dtype == np.uint8 and tiled.shape == (37, 53, 3)
        assert np.abs(tiled.astype(int) - whole).max() <= 1


def test_network_input_in_strips_equals_the_whole_image():
    pixels = _smooth_photo(90, 61, 3)
    lightness = rgb_to_lab(_as_float_rgb(pixels))[:, :1]
    whole = F.interpolate(lightness, size=(64, 43), mode="bilinear", align_corners=False, antialias=True) / 50 - 1
    for rows_per_strip in (1, 7, 90):
        prepared = ImageProcessor(work_size=64, strip_pixels=61 * rows_per_strip).preprocess(pixels, "pad")
        top, left, height, width = prepared.crop
        assert (top, left, height, width) == (0, 10, 64, 43)
        inside = prepared.work_input[:, :, top : top + height, left : left + width]
        assert (inside - whole).abs().max() < 1e-4


def test_zero_ab_gives_back_the_gray_photo_at_its_depth():
    processor = ImageProcessor(strip_pixels=100)
    # scikit-image's D65 white is rounded differently from the row sums of the sRGB matrix: a
    # tint of 1e-4 in blue, 2 levels of 65535, none of 255.
    for pixels, tolerance in ((_smooth_photo(20, 30, 1), 1), (_smooth_photo(20, 30, 1).astype(np.uint16) * 257 + 99, 3)):
        gray = processor.gray_rendering(pixels)
        assert gray.dtype == pixels.dtype and gray.shape == (20, 30, 3)
        assert np.abs(gray.astype(int) - pixels[:, :, None]).max() <= tolerance


def test_invalid_network_output_is_one_clear_error():
    from gcpcolor.errors import InvalidResultError

    processor = ImageProcessor(work_size=16)
    prepared = processor.preprocess(_smooth_photo(10, 12, 1))
    ab = torch.zeros(1, 2, 16, 16)
    ab[0, 0, 8, 8] = float("nan")
    with pytest.raises(InvalidResultError, match="NaN"):
        processor.postprocess(prepared, ab)


# ----------------------------------------------------------------------------- 16 bit
def _read_png(path: Path) -> np.ndarray:
    """A small independent PNG reader for 8/16-bit RGB or gray, filters None/Sub/Up."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", None
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        assert struct.unpack(">I", data[position + 8 + length : position + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    width, height, depth, colour_type = header[:4]
    channels = {0: 1, 2: 3}[colour_type]
    sample_bytes = depth // 8
    stride, pixel_bytes = width * channels * sample_bytes, channels * sample_bytes
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, stride + 1)
    rows, previous = [], np.zeros(stride, dtype=np.uint8)
    for line in raw:
        kind, row = line[0], line[1:].copy()
        if kind == 1:
            for i in range(pixel_bytes, stride):
                row[i] = (int(row[i]) + int(row[i - pixel_bytes])) & 0xFF
        elif kind == 2:
            row = (row + previous).astype(np.uint8)
        else:
            assert kind == 0, f"filter {kind} not handled by this reader"
        rows.append(row)
        previous = row
    dtype = ">u2" if depth == 16 else np.uint8
    return np.stack(rows).view(dtype).reshape(height, width, channels).astype(np.uint16 if depth == 16 else np.uint8)


def test_16_bit_gray_png_gives_16_bit_rgb_with_its_own_lightness(tmp_path):
    rng = np.random.default_rng(5)
    scan = (np.linspace(3000, 60000, 24 * 40).reshape(24, 40) + rng.integers(0, 40, (24, 40))).astype(np.uint16)
    scan[0, :2] = [1000, 1001]  # one 16-bit level apart: 8 bits would merge them
    Image.fromarray(scan).save(tmp_path / "scan.png")
    pixels = load_pixels(tmp_path / "scan.png")
    assert pixels.dtype == np.uint16 and pixels.shape == (24, 40)

    processor = ImageProcessor(work_size=32, strip_pixels=40 * 5)
    prepared = processor.preprocess(pixels)
    ab = torch.zeros(1, 2, 32, 32)
    ab[:, 0], ab[:, 1] = 6.0, -9.0  # a gentle blue-green, inside the gamut for these grays
    result = processor.postprocess(prepared, ab)
    save_image(result, tmp_path / "out.png")
    stored = _read_png(tmp_path / "out.png")
    assert stored.dtype == np.uint16 and stored.shape == (24, 40, 3)
    np.testing.assert_array_equal(stored, result)
    assert not np.all(stored[..., 0] == stored[..., 2])  # coloured

    def l_of(values: np.ndarray) -> np.ndarray:  # CIE L* from sRGB in [0, 1], float64
        linear = np.where(values > 0.04045, ((values + 0.055) / 1.055) ** 2.4, values / 12.92)
        y = linear @ np.array([0.212671, 0.715160, 0.072169]) if values.ndim == 3 else linear
        return np.where(y > 0.008856, 116 * np.cbrt(y) - 16, 903.3 * y)

    l_in = l_of(scan / 65535.0)
    l_out = l_of(stored / 65535.0)
    # 16-bit rounding of RGB moves L by well under 0.01; 8-bit rounding by up to ~0.2.
    assert np.abs(l_out - l_in).max() < 0.01
    assert stored[0, 1, 1] != stored[0, 0, 1]


def test_16_bit_tiff_is_written_with_16_bits(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    pixels = (np.arange(5 * 7 * 3, dtype=np.uint16).reshape(5, 7, 3) * 997) % 65535
    save_image(pixels.astype(np.uint16), tmp_path / "out.tif")
    stored = tifffile.imread(tmp_path / "out.tif")
    assert stored.dtype == np.uint16
    np.testing.assert_array_equal(stored, pixels)


def test_8_bit_photos_stay_8_bit(tmp_path):
    pixels = _smooth_photo(12, 9, 1)
    result = ImageProcessor(work_size=16).gray_rendering(pixels)
    assert result.dtype == np.uint8
    save_image(result, tmp_path / "out.png")
    bit_depth, colour_type = (tmp_path / "out.png").read_bytes()[24:26]  # in the IHDR chunk
    assert (bit_depth, colour_type) == (8, 2)


def test_16_bit_results_are_rounded_for_8_bit_formats(tmp_path):
    pixels = np.array([[[0, 128, 257], [32896, 65407, 65535]]], dtype=np.uint16)
    save_image(pixels, tmp_path / "out.webp", jpeg_quality=100)
    save_image(pixels, tmp_path / "out.bmp")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.bmp")), [[[0, 0, 1], [128, 255, 255]]])


# ----------------------------------------------------------------------------- the authors' mode
# Their pipeline, from their code's formulas: torchvision's Resize((S, S)) on the PIL image (that
# is PIL's bilinear resize), ToTensor, their rgb_to_lab for L (of the resized image for the
# network, of the full photo for the output), bicubic upsampling of the network's ab, and their
# lab_to_rgb: D65 white (0.950456, 1, 1.088754), no clipping of f_z, 1e-6 before every power.
_EPSILON = 6.0 / 29.0
_AUTHORS_WHITE = np.array([0.950456, 1.0, 1.088754])
_AUTHORS_XYZ_TO_RGB = np.array([  # rows: X, Y, Z; columns: R, G, B (their table)
    [3.2404542, -0.9692660, 0.0556434],
    [-1.5371385, 1.8760108, -0.2040259],
    [-0.4985314, 0.0415560, 1.0572252],
])
_RGB_TO_XYZ = np.array([
    [0.412453, 0.212671, 0.019334],
    [0.357580, 0.715160, 0.119193],
    [0.180423, 0.072169, 0.950227],
])


def _authors_rgb_to_l(rgb: np.ndarray) -> np.ndarray:
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = (linear @ _RGB_TO_XYZ) / _AUTHORS_WHITE
    f = np.where(xyz <= _EPSILON**3, xyz / (3 * _EPSILON**2) + 4 / 29, (xyz + 1e-6) ** (1 / 3))
    return 116 * f[..., 1] - 16


def _authors_lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f <= _EPSILON, 3 * _EPSILON**2 * (f - 4 / 29), (f + 1e-6) ** 3) * _AUTHORS_WHITE
    rgb = np.clip(xyz @ _AUTHORS_XYZ_TO_RGB, 0, 1)
    return np.where(rgb <= 0.0031308, rgb * 12.92, (rgb + 1e-6) ** (1 / 2.4) * 1.055 - 0.055)


@pytest.mark.parametrize("channels", [1, 3])
def test_stretch_mode_is_the_authors_pipeline(channels):
    size = 48
    photo = _smooth_photo(70, 101, channels, seed=7)
    rgb8 = np.repeat(photo[:, :, None], 3, axis=2) if channels == 1 else photo
    processor = ImageProcessor(work_size=size, strip_pixels=101 * 4)
    prepared = processor.preprocess(photo, "stretch")

    resized = np.asarray(Image.fromarray(rgb8).resize((size, size), Image.Resampling.BILINEAR)) / 255.0
    expected_input = _authors_rgb_to_l(resized) / 50.0 - 1.0
    assert prepared.crop == (0, 0, size, size)
    assert np.abs(prepared.work_input[0, 0].numpy() - expected_input).max() < 1e-4

    # Network output incl. very blue darks, where f_z < 0: only the authors' formula extrapolates.
    ab = _random_ab(size, seed=3, amplitude=70.0)
    ab[:, 1, :8, :] = 105.0
    tanh_ab = (ab / 110.0).double()
    upsampled = F.interpolate(tanh_ab, size=photo.shape[:2], mode="bicubic") * 110.0
    lab = np.concatenate([_authors_rgb_to_l(rgb8 / 255.0)[..., None], upsampled[0].permute(1, 2, 0).numpy()], axis=-1)
    expected = np.floor(np.clip(_authors_lab_to_rgb(lab) * 255 + 0.5, 0, 255))

    ours = processor.postprocess(prepared, ab)
    assert ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - expected).max() <= 1
    # The same ab through our own constants (pad mode's) differs visibly: the test can tell them apart.
    own = processor.compose(photo, ab)
    assert np.abs(own.astype(int) - expected).max() > 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_written_in_parallel_blocks_is_one_valid_stream(tmp_path, monkeypatch, dtype):
    """Many small blocks compressed on several threads still make one zlib stream (checked by
    zlib's own Adler-32 test in the reader) that decodes to the exact pixels."""
    from gcpcolor import image_writing

    monkeypatch.setattr(image_writing, "_ROWS_PER_BLOCK_BYTES", 1000)  # a few rows a block
    monkeypatch.setattr(image_writing, "_PNG_THREADS", 3)
    rng = np.random.default_rng(9)
    pixels = (rng.random((61, 37, 3)) * np.iinfo(dtype).max).astype(dtype)
    pixels[10:30] = pixels[10:11]  # alike rows, as in photos
    image_writing.save_image(pixels, tmp_path / "blocks.png")
    np.testing.assert_array_equal(_read_png(tmp_path / "blocks.png"), pixels)
