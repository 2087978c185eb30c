"""Reading odd real-world image files, atomic saving, and input discovery."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
import threading
import tomllib
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gcpcolor.image_io import (
    HEIF_EXTRA_HINT,
    ImageInputError,
    ImageOutputError,
    broken_result_reason,
    load_image,
    pil_to_rgb_array,
)
from gcpcolor.image_writing import copy_image_file, encode_image, save_image
from gcpcolor.photo_files import IMAGE_EXTENSIONS, find_images, output_path
from gcpcolor.weights import remove_stale_temporaries

EXIF_ORIENTATION = 0x0112


def _gradient_rgb(height: int = 24, width: int = 32) -> np.ndarray:
    rows = np.linspace(0, 255, height, dtype=np.float64)[:, None]
    cols = np.linspace(0, 255, width, dtype=np.float64)[None, :]
    red = np.broadcast_to(rows, (height, width))
    green = np.broadcast_to(cols, (height, width))
    blue = (red + green) / 2
    return np.rint(np.stack([red, green, blue], axis=2)).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with_declared_size(width: int, height: int) -> bytes:
    """A gray PNG whose header claims width x height but whose data is a few bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


# ----------------------------------------------------------------------------- loading


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".webp"])
def test_lossless_rgb_formats_load_exactly(tmp_path: Path, suffix: str) -> None:
    pixels = _gradient_rgb()
    path = tmp_path / f"photo{suffix}"
    options = {"lossless": True} if suffix == ".webp" else {}
    Image.fromarray(pixels).save(path, **options)
    loaded = load_image(path)
    assert loaded.dtype == np.float32 and loaded.shape == (24, 32, 3)
    np.testing.assert_allclose(loaded, pixels / 255.0, atol=1e-6)


def test_rgb_jpeg_loads_close_to_original(tmp_path: Path) -> None:
    pixels = _gradient_rgb()
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    loaded = load_image(path)
    assert loaded.shape == (24, 32, 3)
    assert 0.0 <= loaded.min() and loaded.max() <= 1.0
    assert np.abs(loaded - pixels / 255.0).mean() < 0.02


def test_gray_png_is_replicated_to_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    loaded = load_image(path)
    assert loaded.shape == (16, 16, 3)
    for channel in range(3):
        np.testing.assert_allclose(loaded[:, :, channel], gray / 255.0, atol=1e-7)
    # No min-max stretch: a dim image stays dim.
    Image.fromarray(np.full((4, 4), 40, np.uint8), mode="L").save(path)
    np.testing.assert_allclose(load_image(path), 40 / 255.0, atol=1e-7)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_gray_keeps_16_bit_precision(tmp_path: Path, suffix: str) -> None:
    values = np.array([[0, 1000, 1001], [32768, 65534, 65535]], dtype=np.uint16)
    path = tmp_path / f"scan16{suffix}"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I;16")
    loaded = load_image(path)
    assert loaded.shape == (2, 3, 3)
    assert abs(loaded[0, 1, 0] - 1000 / 65535) < 1e-6
    # 1000 and 1001 differ by 1/65535; 8-bit quantisation would merge them.
    assert loaded[0, 2, 0] - loaded[0, 1, 0] == pytest.approx(1 / 65535, abs=1e-7)
    np.testing.assert_allclose(loaded[:, :, 1], values / 65535.0, atol=1e-6)
    assert loaded.max() == 1.0 and loaded.min() == 0.0


def test_32_bit_integer_and_float_tiffs_are_scaled_by_their_type(tmp_path: Path) -> None:
    int_path = tmp_path / "int32.tif"
    Image.fromarray(np.array([[0, 2**30]], dtype=np.int32)).save(int_path)
    assert Image.open(int_path).mode == "I"
    np.testing.assert_allclose(load_image(int_path)[0, :, 0], [0.0, 2**30 / (2**31 - 1)], atol=1e-6)

    float_path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.25, 1.5, -0.5]], dtype=np.float32)).save(float_path)
    assert Image.open(float_path).mode == "F"
    np.testing.assert_allclose(load_image(float_path)[0, :, 2], [0.25, 1.0, 0.0])


def test_nan_and_infinite_float_pixels_are_cleaned(tmp_path: Path) -> None:
    # Left in, one NaN spreads through the network and the whole result comes out black.
    path = tmp_path / "gaps.tif"
    Image.fromarray(np.array([[np.nan, np.inf, -np.inf, 0.5]], dtype=np.float32)).save(path)
    loaded = load_image(path)
    assert np.isfinite(loaded).all()
    np.testing.assert_allclose(loaded[0, :, 0], [0.0, 1.0, 0.0, 0.5])


def test_broken_results_are_recognised() -> None:
    photo = np.full((4, 4, 3), 0.4, dtype=np.float32)
    assert broken_result_reason(photo, np.full((4, 4, 3), 0.3)) is None
    assert "all black" in broken_result_reason(photo, np.zeros((4, 4, 3)))
    assert "NaN" in broken_result_reason(photo, np.where(np.eye(4)[:, :, None] > 0, np.nan, 0.3))
    assert broken_result_reason(np.zeros((4, 4, 3)), np.zeros((4, 4, 3))) is None  # black in, black out


def test_bilevel_image(tmp_path: Path) -> None:
    bits = np.array([[True, False], [False, True]])
    path = tmp_path / "bilevel.png"
    Image.fromarray(bits).save(path)
    assert Image.open(path).mode == "1"
    np.testing.assert_array_equal(load_image(path)[:, :, 0], bits.astype(np.float32))


def _palette_image() -> Image.Image:
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    image.putdata([0, 1, 2])
    return image


def test_palette_png_without_transparency(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    _palette_image().save(path)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(load_image(path)[0], np.eye(3, dtype=np.float32))


def test_palette_png_transparent_index_becomes_white(tmp_path: Path) -> None:
    path = tmp_path / "palette_transparent.png"
    _palette_image().save(path, transparency=1)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded[0, 0], [1, 0, 0])
    np.testing.assert_array_equal(loaded[0, 1], [1, 1, 1])
    np.testing.assert_array_equal(loaded[0, 2], [0, 0, 1])


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [255, 0, 0, 102]]], dtype=np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    loaded = load_image(path)
    np.testing.assert_allclose(loaded[0, 0], [1, 1, 1])  # fully transparent black -> white
    np.testing.assert_allclose(loaded[0, 1], [0, 0, 0])
    alpha = 102 / 255
    np.testing.assert_allclose(loaded[0, 2], [1, 1 - alpha, 1 - alpha], atol=1e-6)


def test_gray_with_alpha_is_composited_over_white(tmp_path: Path) -> None:
    la = np.array([[[0, 0], [0, 255], [100, 51]]], dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)
    loaded = load_image(path)
    alpha = 51 / 255
    expected = [1.0, 0.0, 100 / 255 * alpha + (1 - alpha)]
    for channel in range(3):
        np.testing.assert_allclose(loaded[0, :, channel], expected, atol=1e-6)


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_is_converted_to_rgb(tmp_path: Path, suffix: str) -> None:
    image = Image.new("CMYK", (8, 8), (255, 0, 0, 0))  # pure cyan ink
    image.paste((0, 0, 0, 255), (0, 0, 4, 8))  # left half pure black ink
    path = tmp_path / f"cmyk{suffix}"
    image.save(path)
    assert Image.open(path).mode == "CMYK"
    loaded = load_image(path)
    assert loaded.shape == (8, 8, 3)
    np.testing.assert_allclose(loaded[4, 6], [0, 1, 1], atol=0.03)
    np.testing.assert_allclose(loaded[4, 1], [0, 0, 0], atol=0.03)


def test_cmyk_with_unusable_icc_profile_falls_back_to_plain_conversion(tmp_path: Path) -> None:
    path = tmp_path / "cmyk_bad_profile.tif"
    Image.new("CMYK", (4, 4), (0, 255, 0, 0)).save(path, icc_profile=b"not an icc profile")
    assert Image.open(path).info.get("icc_profile")
    np.testing.assert_allclose(load_image(path)[0, 0], [1, 0, 1])


def _corner_marked_image() -> np.ndarray:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)  # 40 wide, 20 tall
    pixels[:6, :6] = (255, 0, 0)  # stored top-left corner is red
    pixels[-6:, -6:] = (0, 0, 255)  # stored bottom-right corner is blue
    return pixels


@pytest.mark.parametrize(
    ("orientation", "quarter_turns", "red_corner"),
    [(6, -1, (0, -1)), (8, 1, (-1, 0))],  # 6: turn clockwise; 8: counter-clockwise
)
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied(
    tmp_path: Path, orientation: int, quarter_turns: int, red_corner: tuple[int, int], suffix: str
) -> None:
    pixels = _corner_marked_image()
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = orientation
    path = tmp_path / f"oriented{suffix}"
    image.save(path, exif=exif)
    loaded = load_image(path)
    assert loaded.shape == (40, 20, 3)  # portrait now
    np.testing.assert_allclose(loaded[red_corner], [1, 0, 0], atol=0.05)
    if suffix == ".png":
        np.testing.assert_array_equal(loaded, np.rot90(pixels, quarter_turns) / np.float32(255))


def test_multi_frame_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 4), color) for color in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert Image.open(path).n_frames == 2
    np.testing.assert_allclose(load_image(path), np.broadcast_to([1.0, 0.0, 0.0], (4, 6, 3)))


def test_one_pixel_image(tmp_path: Path) -> None:
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    np.testing.assert_allclose(load_image(path), [[[10 / 255, 20 / 255, 30 / 255]]], atol=1e-7)


def test_bundled_sample_is_a_512_gray_photo() -> None:
    sample = resources.files("gcpcolor").joinpath("assets/sample_bw.png")
    with resources.as_file(sample) as path:
        assert path.stat().st_size < 300_000
        assert Image.open(path).mode == "L"
        loaded = load_image(path)
    assert loaded.shape == (512, 512, 3)
    np.testing.assert_array_equal(loaded[:, :, 0], loaded[:, :, 2])
    assert loaded.std() > 0.1  # a real photograph, not a flat placeholder


# ----------------------------------------------------------------------------- bad inputs


def _single_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_header_over_max_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(path)
    with pytest.raises(ImageInputError) as error:
        load_image(path, max_pixels=5_000)
    message = _single_line(error)
    assert str(path) in message and "100x100" in message and "5000" in message
    assert load_image(path, max_pixels=10_000).shape == (100, 100, 3)


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (15_000, 15_000)])
def test_crafted_huge_header_is_refused(tmp_path: Path, width: int, height: int) -> None:
    # 10 gigapixels trips PIL's own bomb error; 225 megapixels only passes PIL's warning
    # threshold and must be caught by our check. Neither may be decoded.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_declared_size(width, height))
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageInputError) as error:
        load_image(path)
    message = _single_line(error)
    assert str(path) in message and "200000000" in message
    assert Image.MAX_IMAGE_PIXELS == limit_before


def test_our_pixel_limit_replaces_pils(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    path = tmp_path / "ordinary.png"
    Image.new("L", (100, 100)).save(path)  # 10,000 pixels: a "bomb" by the patched PIL limit
    assert load_image(path).shape == (100, 100, 3)


def test_zero_sized_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty_image.png"
    path.write_bytes(_png_with_declared_size(0, 10))
    with pytest.raises(ImageInputError) as error:
        load_image(path)
    assert str(path) in _single_line(error)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("these are not the pixels you are looking for\n"), "not an image"),
    ],
    ids=["missing", "directory", "empty", "text"],
)
def test_unreadable_inputs_raise_one_line_errors(tmp_path: Path, make, expected: str) -> None:
    path = tmp_path / "photo.jpg"
    make(path)
    with pytest.raises(ImageInputError) as error:
        load_image(path)
    message = _single_line(error)
    assert message.startswith(str(path)) and expected in message


@pytest.mark.skipif(importlib.util.find_spec("pillow_heif") is not None, reason="pillow-heif reads HEIC")
def test_heic_without_the_extra_names_it(tmp_path: Path) -> None:
    # The start of an iPhone photo: an ISO media "ftyp" box with the "heic" brand; saved as .jpg
    # too, because renamed phone photos are common.
    header = struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0" + b"mif1heic" + bytes(64)
    for name in ["IMG_0001.HEIC", "renamed.jpg"]:
        path = tmp_path / name
        path.write_bytes(header)
        with pytest.raises(ImageInputError) as error:
            load_image(path)
        assert _single_line(error) == f"{path}: {HEIF_EXTRA_HINT}"
    assert 'pip install "gcpcolor[heif]"' in HEIF_EXTRA_HINT
    assert [relative.name for _, relative in find_images([tmp_path])] == ["IMG_0001.HEIC", "renamed.jpg"]


def test_the_heif_extra_exists() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extra = pyproject["project"]["optional-dependencies"]["heif"]
    assert any(requirement.startswith("pillow-heif") for requirement in extra)


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(noise).save(whole, quality=90)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageInputError) as error:
        load_image(path)
    message = _single_line(error)
    assert str(path) in message and "truncated" in message


def test_corrupt_png_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.png"
    Image.fromarray(_gradient_rgb()).save(path)
    data = bytearray(path.read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = b"\xff" * 32  # garbage inside the compressed stream
    path.write_bytes(bytes(data))
    with pytest.raises(ImageInputError) as error:
        load_image(path)
    assert str(path) in _single_line(error)


# ----------------------------------------------------------------------------- saving


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_png_round_trip_is_exact_to_one_level(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).random((17, 23, 3), dtype=np.float32)
    path = tmp_path / "out.png"
    save_image(rgb, path)
    loaded = load_image(path)
    assert np.abs(loaded - rgb).max() <= 0.5 / 255 + 1e-6
    np.testing.assert_array_equal(np.asarray(Image.open(path)), np.rint(rgb * 255).astype(np.uint8))
    assert _listing(tmp_path) == ["out.png"]


@pytest.mark.parametrize(
    ("suffix", "tolerance"),
    [(".jpg", 0.02), (".jpeg", 0.02), (".webp", 0.03), (".tif", 1e-6), (".bmp", 1e-6)],
)
def test_other_formats_round_trip(tmp_path: Path, suffix: str, tolerance: float) -> None:
    rgb = _gradient_rgb() / np.float32(255)
    path = tmp_path / f"out{suffix.upper()}"
    save_image(rgb, path)
    assert np.abs(load_image(path) - rgb).mean() <= tolerance


def test_save_clips_and_rounds_without_stretching(tmp_path: Path) -> None:
    rgb = np.full((2, 2, 3), 0.5, dtype=np.float64)
    rgb[0, 0] = (-0.5, 1.5, np.nan)
    path = tmp_path / "clipped.png"
    save_image(rgb, path)
    stored = np.asarray(Image.open(path))
    np.testing.assert_array_equal(stored[0, 0], [0, 255, 0])
    np.testing.assert_array_equal(stored[1, 1], [128, 128, 128])  # 0.5 -> 127.5 -> 128


def test_save_accepts_tensors_and_pil_images(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.full((3, 4, 3), 0.2, requires_grad=True)
    save_image(tensor * 1, tmp_path / "tensor.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "tensor.png")), 51)
    save_image(Image.new("RGBA", (3, 3), (1, 2, 3, 4)), tmp_path / "pil.jpg")
    assert Image.open(tmp_path / "pil.jpg").mode == "RGB"
    with pytest.raises(ValueError, match="shape"):
        save_image(np.zeros((4, 4)), tmp_path / "gray.png")


def test_16_bit_pil_image_is_rescaled_for_8_bit_formats(tmp_path: Path) -> None:
    scan = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    assert scan.mode == "I;16"
    save_image(scan, tmp_path / "scan.png")  # PNG keeps all 16 bits
    stored = np.asarray(Image.open(tmp_path / "scan.png"))
    np.testing.assert_array_equal(stored, [[0, 32896, 65535]])
    save_image(scan, tmp_path / "scan.webp")
    stored = np.asarray(Image.open(tmp_path / "scan.webp").convert("L")).astype(int)
    assert np.abs(stored - [[0, 128, 255]]).max() <= 2


def test_save_creates_parent_folders_with_normal_permissions(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.png"
    save_image(np.zeros((2, 2, 3)), path)
    assert path.is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    save_image(np.zeros((2, 2, 3)), path)
    original = path.read_bytes()
    with pytest.raises(ImageOutputError) as error:
        save_image(np.ones((2, 2, 3)), path)
    assert str(path) in _single_line(error) and "exists" in str(error.value)
    assert path.read_bytes() == original
    assert _listing(tmp_path) == ["out.png"]

    save_image(np.ones((2, 2, 3)), path, overwrite=True)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), 255)
    assert _listing(tmp_path) == ["out.png"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_failed_encode_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    existing = tmp_path / "existing.png"
    save_image(np.zeros((2, 2, 3)), existing)
    original = existing.read_bytes()

    def failing_save(self: Image.Image, fp, *args, **kwargs) -> None:
        fp.write(b"half an image")
        raise OSError("disk full")

    def failing_write(stream, pixels, metadata=None) -> None:  # our own PNG writer, for pixel arrays
        stream.write(b"half an image")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    monkeypatch.setattr("gcpcolor.image_writing._write_png", failing_write)
    target = existing if overwrite else tmp_path / "new.png"
    with pytest.raises(ImageOutputError) as error:
        save_image(np.ones((2, 2, 3)), target, overwrite=overwrite)
    assert str(target) in _single_line(error) and "disk full" in str(error.value)
    assert _listing(tmp_path) == ["existing.png"]
    assert existing.read_bytes() == original


def test_killed_save_leaves_a_temporary_that_a_later_start_removes(tmp_path: Path) -> None:
    # kill -9 in the middle of writing: os._exit skips every cleanup, as a real kill would.
    script = (
        "import os, sys, numpy as np\n"
        "import gcpcolor.image_writing as image_writing\n"
        "def killed(stream, pixels, metadata=None):\n"
        "    stream.write(b'half an image'); stream.flush(); os._exit(9)\n"
        "image_writing._write_png = killed\n"
        "image_writing.save_image(np.zeros((2, 2, 3)), sys.argv[1])\n"
    )
    killed = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out.png")])
    assert killed.wait(timeout=120) == 9
    leftovers = _listing(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(f".out.png.tmp-{killed.pid}")

    alive = tmp_path / f".other.png.tmp-{os.getppid()}"  # a writer that is still running
    others = [alive, tmp_path / ".out.png.1234abcd.tmp", tmp_path / "holiday.tmp-1",
              tmp_path / f".notes.txt.tmp-{killed.pid}x"]
    for path in others:
        path.write_bytes(b"")
    folder_named_like_ours = tmp_path / f".album.tmp-{killed.pid}"
    folder_named_like_ours.mkdir()
    assert [path.name for path in remove_stale_temporaries(tmp_path)] == leftovers
    assert sorted(_listing(tmp_path)) == sorted([path.name for path in others] + [folder_named_like_ours.name])


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageOutputError) as error:
        save_image(np.zeros((2, 2, 3)), tmp_path / "out.xyz")
    assert "'.xyz'" in _single_line(error)
    assert _listing(tmp_path) == []


def test_destination_that_is_a_folder_or_below_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "taken.png"
    folder.mkdir()
    with pytest.raises(ImageOutputError, match="is a folder"):
        save_image(np.zeros((2, 2, 3)), folder, overwrite=True)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ImageOutputError) as error:
        save_image(np.zeros((2, 2, 3)), blocker / "out.png")
    assert str(blocker / "out.png") in _single_line(error)


def test_unwritable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running with privileges that ignore folder permissions")
        with pytest.raises(ImageOutputError) as error:
            save_image(np.zeros((2, 2, 3)), folder / "out.png")
        assert "permission denied" in _single_line(error)
        assert _listing(folder) == []
    finally:
        folder.chmod(0o700)


# ----------------------------------------------------------------------------- finding inputs


@pytest.fixture
def photo_tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for relative in ["b.jpg", "a.PNG", "notes.txt", ".hidden.jpg", "1950/x.tif", "1950/y.webp",
                     "1950/deep/z.bmp", ".thumbnails/t.jpg", "other/w.png"]:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return root


def test_folder_is_expanded_recursively_and_sorted(photo_tree: Path) -> None:
    found = find_images([photo_tree])
    relatives = [str(relative) for _, relative in found]
    assert relatives == [
        "1950/deep/z.bmp", "1950/x.tif", "1950/y.webp", "a.PNG", "b.jpg", "other/w.png"
    ]
    assert all(path == photo_tree / relative for path, relative in found)


def test_folder_without_recursion(photo_tree: Path) -> None:
    found = find_images([str(photo_tree)], recursive=False)
    assert [str(relative) for _, relative in found] == ["a.PNG", "b.jpg"]


def test_files_keep_their_name_whatever_the_suffix(photo_tree: Path) -> None:
    found = find_images([photo_tree / "1950" / "x.tif", photo_tree / "notes.txt"])
    assert found == [
        (photo_tree / "1950" / "x.tif", Path("x.tif")),
        (photo_tree / "notes.txt", Path("notes.txt")),
    ]


def test_glob_patterns(photo_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(photo_tree)
    assert find_images(["*.jpg"]) == [(Path("b.jpg"), Path("b.jpg"))]
    found = find_images([str(photo_tree / "**" / "*.png"), "1950/**/*.bmp"])
    assert found == [
        (photo_tree / "other" / "w.png", Path("other/w.png")),
        (Path("1950/deep/z.bmp"), Path("deep/z.bmp")),
    ]


def test_duplicates_are_listed_once(photo_tree: Path) -> None:
    single = photo_tree / "b.jpg"
    found = find_images([single, photo_tree, str(single), photo_tree / "*.jpg"])
    paths = [path.resolve() for path, _ in found]
    assert len(paths) == len(set(paths)) == 6
    assert found[0] == (photo_tree / "b.jpg", Path("b.jpg"))


@pytest.fixture
def hostile_tree(photo_tree: Path) -> Path:
    """photo_tree plus three links looping back (the last one past the top, where an output
    folder could be), a link to itself, a broken link and a link to a folder that is also
    reached directly."""
    (photo_tree / "1950" / "back_to_top").symlink_to("..")
    (photo_tree / "1950" / "past_the_top").symlink_to("../..")
    (photo_tree / "1950" / "itself").symlink_to(".")
    (photo_tree / "self.jpg").symlink_to("self.jpg")
    (photo_tree / "gone.png").symlink_to("deleted.png")
    (photo_tree / "also_other").symlink_to("other")
    return photo_tree


def _walk_in_thread(inputs: list, on_skip, seconds: float = 120) -> list:
    """find_images in a thread, so a walk that never ends fails the test instead of hanging it."""
    found: list = []
    thread = threading.Thread(target=lambda: found.extend(find_images(inputs, on_skip=on_skip)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the folder walk did not finish"
    return found


@pytest.mark.parametrize("as_pattern", [False, True], ids=["folder", "glob"])
def test_link_loops_and_broken_links_are_reported_and_skipped(hostile_tree: Path, as_pattern: bool) -> None:
    skipped: list[tuple[str, str]] = []
    inputs = [str(hostile_tree / "**" / "*")] if as_pattern else [hostile_tree]
    found = _walk_in_thread(inputs, lambda path, reason: skipped.append((path.name, reason)))
    assert [str(relative) for _, relative in found] == [
        "1950/deep/z.bmp", "1950/x.tif", "1950/y.webp", "a.PNG", "b.jpg", "other/w.png"
    ]
    assert sorted(skipped) == [
        ("back_to_top", "symbolic link loop (links to a folder that contains it)"),
        ("gone.png", "broken symbolic link"),
        ("itself", "symbolic link loop (links to a folder that contains it)"),
        ("past_the_top", "symbolic link loop (links to a folder that contains it)"),
        ("self.jpg", "symbolic link loop"),
    ]


def test_a_link_loop_given_by_name_is_a_one_line_error(hostile_tree: Path) -> None:
    with pytest.raises(ImageInputError) as error:
        find_images([hostile_tree / "self.jpg"])
    assert _single_line(error) == f"{hostile_tree / 'self.jpg'}: symbolic link loop"


def test_unreadable_subfolder_is_reported_and_the_rest_found(
    photo_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = photo_tree / "1950"
    real_scandir = os.scandir

    def scandir(path=".", *args):
        # chmod cannot lock out root (as in CI containers), so the refusal is simulated.
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    skipped: list[tuple[Path, str]] = []
    found = find_images([photo_tree], on_skip=lambda path, reason: skipped.append((path, reason)))
    assert [str(relative) for _, relative in found] == ["a.PNG", "b.jpg", "other/w.png"]
    assert skipped == [(locked, "cannot read folder: permission denied")]


def test_inputs_that_match_nothing(photo_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match="no such file"):
        find_images([photo_tree / "missing.jpg"])
    with pytest.raises(ImageInputError, match="matches no image files"):
        find_images([str(photo_tree / "*.gif")])
    with pytest.raises(ImageInputError, match="1 non-image"):
        find_images([str(photo_tree / "*.txt")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageInputError, match="no image files"):
        find_images([empty])


def test_inputs_that_would_share_an_output_are_refused(photo_tree: Path) -> None:
    (photo_tree / "other" / "b.jpg").write_bytes(b"")
    with pytest.raises(ImageInputError, match="same output"):
        find_images([photo_tree / "b.jpg", photo_tree / "other" / "b.jpg"])


def test_image_extensions_are_lower_case_suffixes() -> None:
    assert {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"} <= IMAGE_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)


def test_output_path_mirrors_structure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert output_path(Path("1950/x.tif"), out) == out / "1950" / "x_color.tif"
    assert output_path(Path("b.JPG"), out, suffix="") == out / "b.JPG"
    assert output_path(Path("anim.gif"), out) == out / "anim_color.png"
    renamed = output_path(Path("a/b.tif"), out, suffix="_v2", extension="jpg")
    assert renamed == out / "a" / "b_v2.jpg"
    with pytest.raises(ImageOutputError, match="'.gif'"):
        output_path(Path("b.png"), out, extension=".gif")
    with pytest.raises(ValueError):
        output_path(Path("../escape.png"), out)


def test_in_memory_pil_images_follow_the_same_rules() -> None:
    rgba = Image.new("RGBA", (4, 2), (255, 0, 0, 0))
    exif = rgba.getexif()
    exif[EXIF_ORIENTATION] = 6
    rgba.info["exif"] = exif.tobytes()
    converted = pil_to_rgb_array(rgba)
    assert converted.dtype == np.float32 and converted.shape == (4, 2, 3)  # rotated
    np.testing.assert_array_equal(converted, 1.0)  # transparent -> white
    assert rgba.size == (4, 2) and rgba.getexif()[EXIF_ORIENTATION] == 6  # caller's image untouched


def test_genuine_old_photos_load(shared_data: Path) -> None:
    photos = find_images([shared_data / "historical"])
    assert len(photos) >= 20
    for path, _ in photos:
        rgb = load_image(path)
        assert rgb.dtype == np.float32 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert 0.0 <= rgb.min() and rgb.max() <= 1.0 and rgb.std() > 0.02


def test_copy_image_file_is_exact_atomic_and_never_overwrites(tmp_path: Path) -> None:
    source = tmp_path / "holiday.jpg"
    Image.fromarray(_gradient_rgb()).save(source, quality=70)
    target = tmp_path / "out" / "deeper" / "holiday_color.jpg"
    copy_image_file(source, target)
    assert target.read_bytes() == source.read_bytes()
    target.write_bytes(b"the user's edit")
    with pytest.raises(ImageOutputError) as error:
        copy_image_file(source, target)
    assert "already exists" in _single_line(error) and target.read_bytes() == b"the user's edit"
    copy_image_file(source, target, overwrite=True)
    assert target.read_bytes() == source.read_bytes()
    with pytest.raises(ImageOutputError) as error:
        copy_image_file(tmp_path / "gone.jpg", tmp_path / "out" / "gone.jpg")
    assert "gone.jpg" in _single_line(error)
    assert _listing(target.parent) == ["holiday_color.jpg"]  # no temporaries left behind


@pytest.mark.parametrize("suffix, image_format", [(".png", "PNG"), (".tif", "TIFF"), (".jpg", "JPEG")])
def test_encode_image_gives_the_bytes_save_image_writes(tmp_path: Path, suffix: str, image_format: str) -> None:
    pixels = np.random.default_rng(5).integers(0, 65536, (12, 20, 3)).astype(np.uint16)
    save_image(pixels, tmp_path / f"photo{suffix}")
    assert encode_image(pixels, image_format) == (tmp_path / f"photo{suffix}").read_bytes()
