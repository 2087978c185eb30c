"""Results keep their original's DPI and EXIF (minus the orientation, which the pixels already
carry), marked with gcpcolor as the Software; read back with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import ExifTags, Image

from gcpcolor.cli import main
from gcpcolor.image_writing import save_image
from gcpcolor.photo_metadata import PhotoMetadata, read_metadata, software_name

ORIENTATION, DESCRIPTION, ARTIST, SOFTWARE, DATE_TAKEN = 0x0112, 0x010E, 0x013B, 0x0131, 0x9003
#: An XMP packet as cataloguing programs write it: a title, and the orientation again.
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
       b' tiff:Orientation="6"><dc:title>Wedding in Lodz</dc:title></rdf:Description></rdf:RDF></x:xmpmeta>')


def _scan(path: Path, size=(40, 24), dpi=(600, 600), orientation: int | None = 6) -> Path:
    """A gray 'scan' with a resolution, a caption and an EXIF orientation."""
    pixels = (np.random.default_rng(0).random((size[1], size[0])) * 255).astype(np.uint8)
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    exif[DESCRIPTION] = "Grandma and Grandpa, 1932"
    exif[ARTIST] = "Studio Weiss"
    exif.get_ifd(ExifTags.IFD.Exif)[DATE_TAKEN] = "1932:05:01 10:00:00"  # in the EXIF sub-directory
    Image.fromarray(pixels).save(path, dpi=dpi, exif=exif.tobytes(), xmp=XMP)  # (PNG ignores xmp=)
    return path


def _upright_title_xmp(xmp: bytes | None) -> bool:
    return xmp is not None and b"Wedding in Lodz" in xmp and b'tiff:Orientation="1"' in xmp and b'"6"' not in xmp


def test_read_metadata_keeps_dpi_and_caption_and_drops_orientation(tmp_path):
    metadata = read_metadata(_scan(tmp_path / "scan.jpg"))
    assert metadata.dpi == pytest.approx((600, 600))
    exif = Image.Exif()
    exif.load(metadata.exif)
    assert exif[DESCRIPTION] == "Grandma and Grandpa, 1932" and exif[ARTIST] == "Studio Weiss"
    assert exif.get_ifd(ExifTags.IFD.Exif)[DATE_TAKEN] == "1932:05:01 10:00:00"
    assert exif.get(ORIENTATION, 1) == 1
    assert exif[SOFTWARE] == software_name() and software_name().startswith("gcpcolor ")
    assert _upright_title_xmp(metadata.xmp)


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
            assert exif[DESCRIPTION] == "Grandma and Grandpa, 1932" and exif.get(ORIENTATION, 1) == 1
            if not name.endswith(".tif"):  # TIFF: the main directory only (libtiff refuses the pointers)
                assert exif.get_ifd(ExifTags.IFD.Exif)[DATE_TAKEN] == "1932:05:01 10:00:00"
        if carries_exif or name.endswith(".tif"):
            assert exif[SOFTWARE] == software_name()
        if not name.endswith(".bmp"):
            assert _upright_title_xmp(written.info.get("xmp"))
    if depth == 16 and name.endswith(".png"):  # the pixels themselves are untouched by the extra chunks
        with Image.open(tmp_path / name) as written:
            assert written.mode.startswith("RGB") and written.size == (40, 24)


def test_metadata_an_encoder_refuses_costs_only_the_metadata(tmp_path, monkeypatch):
    # an option Pillow's JPEG encoder raises on, standing in for whatever EXIF an encoder refuses
    monkeypatch.setattr("gcpcolor.image_writing._metadata_options", lambda image_format, metadata: {"dpi": "refused"})
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
        assert exif.get(ORIENTATION, 1) == 1 and exif[DESCRIPTION] == "Grandma and Grandpa, 1932"
        assert colorized.info["dpi"] == pytest.approx((600, 600))
        assert _upright_title_xmp(colorized.info.get("xmp"))


def test_api_results_of_a_file_carry_its_metadata_and_arrays_none(tmp_path, demo_colorizer):
    scan = _scan(tmp_path / "scan.png", orientation=None)
    result = demo_colorizer.colorize(scan)
    result.save(tmp_path / "color.png")
    with Image.open(tmp_path / "color.png") as colorized:
        assert colorized.info["dpi"] == pytest.approx((600, 600), abs=0.01)
        assert colorized.getexif()[ARTIST] == "Studio Weiss"
    assert all(frame.metadata == result.metadata for frame in demo_colorizer.diverse(scan, samples=2))
    assert demo_colorizer.colorize(np.zeros((16, 16), np.uint8)).metadata is None


# --------------------------------------------------------------------------- transparency
from gcpcolor.image_io import load_photo, load_pixels, with_alpha  # noqa: E402


def load_alpha(path):
    return load_photo(path)[2]


def _cut_out(path: Path, size=(40, 24)) -> tuple[Path, np.ndarray]:
    """A gray portrait 'cut out' of its background: opaque disc, soft edge, clear corners."""
    rng = np.random.default_rng(2)
    gray = (rng.random((size[1], size[0])) * 200 + 30).astype(np.uint8)
    yy, xx = np.mgrid[: size[1], : size[0]]
    distance = np.hypot(yy - size[1] / 2, xx - size[0] / 2)
    alpha = np.clip((12 - distance) * 60, 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([gray, gray, gray, alpha])).save(path)
    return path, alpha


def test_load_alpha_reads_transparency_and_none_for_opaque_photos(tmp_path):
    path, alpha = _cut_out(tmp_path / "cut.png")
    np.testing.assert_array_equal(load_alpha(path), alpha)
    Image.new("RGBA", (8, 6), (10, 20, 30, 255)).save(tmp_path / "opaque.png")
    Image.new("L", (8, 6), 90).save(tmp_path / "gray.png")
    assert load_alpha(tmp_path / "opaque.png") is None and load_alpha(tmp_path / "gray.png") is None
    palette = Image.new("P", (8, 6), 0)
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "palette.png", transparency=0)
    expected = np.zeros((6, 8), np.uint8)
    expected[1, 1] = 255
    np.testing.assert_array_equal(load_alpha(tmp_path / "palette.png"), expected)
    rotated = Image.open(path)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    rotated.save(tmp_path / "rotated.png", exif=exif.tobytes())
    assert load_alpha(tmp_path / "rotated.png").shape == load_pixels(tmp_path / "rotated.png").shape[:2] == (40, 24)


def test_load_photo_gives_load_pixels_pixels_and_the_files_metadata(tmp_path):
    path, _ = _cut_out(tmp_path / "cut.png")
    pixels, metadata, _ = load_photo(path)
    np.testing.assert_array_equal(pixels, load_pixels(path))
    assert metadata == read_metadata(path)


def test_with_alpha_takes_the_colour_out_of_the_white_it_was_blended_with():
    rng = np.random.default_rng(3)
    colour = rng.random((16, 16, 3))
    alpha = rng.integers(51, 256, (16, 16)).astype(np.uint8)  # alpha >= 0.2
    a = alpha[:, :, None] / 255.0
    composite = np.rint((colour * a + 1 - a) * 65535).astype(np.uint16)  # as load_pixels blends over white
    rgba = with_alpha(composite, alpha)
    assert rgba.dtype == np.uint16 and rgba.shape == (16, 16, 4)
    np.testing.assert_allclose(rgba[:, :, :3] / 65535, colour, atol=3e-4)
    np.testing.assert_allclose(rgba[:, :, 3] / 65535, alpha / 255, atol=1e-6)
    shown_over_white = rgba[:, :, :3] / 65535 * a + 1 - a
    np.testing.assert_allclose(shown_over_white, composite / 65535, atol=3e-5)


@pytest.mark.parametrize("name, depth, transparent", [
    ("out.png", 8, True), ("out.png", 16, True), ("out.tif", 8, True), ("out.tif", 16, True),
    ("out.webp", 8, True), ("out.jpg", 8, False), ("out.bmp", 8, False),
])
def test_save_image_puts_the_alpha_back_where_the_format_holds_it(tmp_path, name, depth, transparent):
    _, alpha = _cut_out(tmp_path / "cut.png")
    dtype = np.uint16 if depth == 16 else np.uint8
    pixels = np.full((24, 40, 3), np.iinfo(dtype).max // 2, dtype)
    save_image(pixels, tmp_path / name, alpha=alpha)
    with Image.open(tmp_path / name) as written:
        assert written.size == (40, 24)
        if transparent:  # (Pillow reads 16-bit RGBA at 8 bits, which gives back the uint8 alpha)
            assert written.mode == "RGBA"
            np.testing.assert_array_equal(np.asarray(written.getchannel("A")), alpha)
        else:
            assert written.mode == "RGB"


def test_colorize_command_keeps_a_cut_out_transparent(tmp_path):
    path, alpha = _cut_out(tmp_path / "cut.png")
    result = CliRunner().invoke(main, ["colorize", str(path), "-o", str(tmp_path / "out"), "--demo", "-q"])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "cut_color.png") as colorized:
        assert colorized.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(colorized.getchannel("A")), alpha)


def test_api_results_of_a_transparent_file_save_with_its_alpha(tmp_path, demo_colorizer):
    path, alpha = _cut_out(tmp_path / "cut.png")
    result = demo_colorizer.colorize(path)
    assert result.pixels.shape == (24, 40, 3)  # the colorized photo itself stays RGB
    result.save(tmp_path / "color.png")
    with Image.open(tmp_path / "color.png") as colorized:
        np.testing.assert_array_equal(np.asarray(colorized.getchannel("A")), alpha)


def test_a_tiff_scan_passes_its_description_but_not_its_file_layout(tmp_path):
    """A TIFF's main directory is also its layout (size, strips, compression): none of it may
    reach a result of another size and format; the caption and the scanner do."""
    pixels = (np.random.default_rng(6).random((24, 40)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "scan.tif", dpi=(1200, 1200), compression="tiff_lzw",
                                 tiffinfo={DESCRIPTION: "Harbour, 1908", 0x0110: "Epson V850"})
    metadata = read_metadata(tmp_path / "scan.tif")
    save_image(np.zeros((10, 12, 3), np.uint8), tmp_path / "result.jpg", metadata=metadata)
    with Image.open(tmp_path / "result.jpg") as written:
        exif = written.getexif()
        assert exif[DESCRIPTION] == "Harbour, 1908" and exif[0x0110] == "Epson V850"
        assert not {0x0100, 0x0101, 0x0103, 0x0111, 0x0117} & set(exif)  # width, height, compression, strips
        assert written.info["dpi"] == pytest.approx((1200, 1200))
