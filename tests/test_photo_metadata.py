"""Results keep their original's DPI and EXIF (minus the orientation, which the pixels already
carry), marked with gcpcolor as the Software; read back with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import ExifTags, Image

from gcpcolor.cli import main
from gcpcolor.image_io import save_image
from gcpcolor.photo_metadata import PhotoMetadata, read_metadata, software_name

ORIENTATION, DESCRIPTION, ARTIST, SOFTWARE, DATE_TAKEN = 0x0112, 0x010E, 0x013B, 0x0131, 0x9003


def _scan(path: Path, size=(40, 24), dpi=(600, 600), orientation: int | None = 6) -> Path:
    """A gray 'scan' with a resolution, a caption and an EXIF orientation."""
    pixels = (np.random.default_rng(0).random((size[1], size[0])) * 255).astype(np.uint8)
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    exif[DESCRIPTION] = "Grandma and Grandpa, 1932"
    exif[ARTIST] = "Studio Weiss"
    exif.get_ifd(ExifTags.IFD.Exif)[DATE_TAKEN] = "1932:05:01 10:00:00"  # in the EXIF sub-directory
    Image.fromarray(pixels).save(path, dpi=dpi, exif=exif.tobytes())
    return path


def test_read_metadata_keeps_dpi_and_caption_and_drops_orientation(tmp_path):
    metadata = read_metadata(_scan(tmp_path / "scan.jpg"))
    assert metadata.dpi == pytest.approx((600, 600))
    exif = Image.Exif()
    exif.load(metadata.exif)
    assert exif[DESCRIPTION] == "Grandma and Grandpa, 1932" and exif[ARTIST] == "Studio Weiss"
    assert exif.get_ifd(ExifTags.IFD.Exif)[DATE_TAKEN] == "1932:05:01 10:00:00"
    assert ORIENTATION not in exif
    assert exif[SOFTWARE] == software_name() and software_name().startswith("gcpcolor ")


def test_unreadable_metadata_costs_nothing_but_itself(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    metadata = read_metadata(broken)
    assert metadata.dpi is None
    exif = Image.Exif()
    exif.load(metadata.exif)
    assert dict(exif) == {SOFTWARE: software_name()}


@pytest.mark.parametrize(
    "name, depth, carries_dpi, carries_exif",
    [
        ("out.jpg", 8, True, True),
        ("out.png", 8, True, True),
        ("out.png", 16, True, True),  # our own PNG writer: pHYs and eXIf chunks
        ("out.tif", 8, True, True),
        ("out.tif", 16, True, False),  # our own TIFF writer: resolution and Software tags only
        ("out.webp", 8, False, True),
        ("out.bmp", 8, True, False),
    ],
)
def test_save_image_writes_the_metadata_each_format_holds(tmp_path, name, depth, carries_dpi, carries_exif):
    metadata = read_metadata(_scan(tmp_path / "scan.jpg", dpi=(300, 400)))
    dtype = np.uint16 if depth == 16 else np.uint8
    pixels = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, (24, 40, 3), dtype=dtype)
    save_image(pixels, tmp_path / name, metadata=metadata)
    with Image.open(tmp_path / name) as written:
        if carries_dpi:
            assert written.info["dpi"] == pytest.approx((300, 400), abs=0.01)
        exif = written.getexif()
        if carries_exif:
            assert exif[DESCRIPTION] == "Grandma and Grandpa, 1932" and ORIENTATION not in exif
            if not name.endswith(".tif"):  # TIFF: the main directory only (libtiff refuses the pointers)
                assert exif.get_ifd(ExifTags.IFD.Exif)[DATE_TAKEN] == "1932:05:01 10:00:00"
        if carries_exif or name.endswith(".tif"):
            assert exif[SOFTWARE] == software_name()
    if depth == 16 and name.endswith(".png"):  # the pixels themselves are untouched by the extra chunks
        with Image.open(tmp_path / name) as written:
            assert written.mode.startswith("RGB") and written.size == (40, 24)


def test_metadata_an_encoder_refuses_costs_only_the_metadata(tmp_path, monkeypatch):
    # an option Pillow's JPEG encoder raises on, standing in for whatever EXIF an encoder refuses
    monkeypatch.setattr("gcpcolor.image_io._metadata_options", lambda image_format, metadata: {"dpi": "refused"})
    save_image(np.full((8, 8, 3), 100, np.uint8), tmp_path / "photo.jpg", metadata=PhotoMetadata(dpi=(300, 300)))
    with Image.open(tmp_path / "photo.jpg") as written:
        assert written.size == (8, 8) and written.getpixel((4, 4))[0] in range(98, 103)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["photo.jpg"]  # no temporary left


def test_save_image_without_metadata_writes_none(tmp_path):
    save_image(np.zeros((8, 8, 3), np.uint8), tmp_path / "plain.png")
    save_image(np.zeros((8, 8, 3), np.uint8), tmp_path / "plain.jpg", metadata=PhotoMetadata())
    for name in ("plain.png", "plain.jpg"):
        with Image.open(tmp_path / name) as written:
            assert SOFTWARE not in written.getexif()


def test_colorize_command_passes_the_scan_metadata_to_its_result(tmp_path):
    scan = _scan(tmp_path / "scan.jpg")
    result = CliRunner().invoke(main, ["colorize", str(scan), "-o", str(tmp_path / "out"), "--demo", "-q"])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "scan_color.jpg") as colorized:
        assert colorized.size == (24, 40)  # turned upright once, by the pixels
        exif = colorized.getexif()
        assert ORIENTATION not in exif and exif[DESCRIPTION] == "Grandma and Grandpa, 1932"
        assert colorized.info["dpi"] == pytest.approx((600, 600))


def test_api_results_of_a_file_carry_its_metadata_and_arrays_none(tmp_path, demo_colorizer):
    scan = _scan(tmp_path / "scan.png", orientation=None)
    result = demo_colorizer.colorize(scan)
    result.save(tmp_path / "color.png")
    with Image.open(tmp_path / "color.png") as colorized:
        assert colorized.info["dpi"] == pytest.approx((600, 600), abs=0.01)
        assert colorized.getexif()[ARTIST] == "Studio Weiss"
    assert all(frame.metadata == result.metadata for frame in demo_colorizer.diverse(scan, samples=2))
    assert demo_colorizer.colorize(np.zeros((16, 16), np.uint8)).metadata is None
