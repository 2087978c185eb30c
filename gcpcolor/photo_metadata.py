"""What a colorized photo keeps of its original file: the resolution (DPI), the EXIF and the XMP.

Archives print and catalogue by them: a 600-dpi scan that comes back marked 72 dpi prints at
the wrong size, a scan's EXIF holds its date, the scanner or camera, the photographer and the
caption, and cataloguing programs (Lightroom, digiKam, Bridge) keep titles, keywords and
descriptions in XMP. The result's pixels are already upright (loading applies the EXIF
orientation), so the orientation is dropped from the EXIF and set to 1 in the XMP, or viewers
would turn the photo a second time; the Software tag names gcpcolor, which marks the file as a
colorized derivative rather than the original. A thumbnail (EXIF's second directory) is not
carried: it would show the gray photo.

Reading never fails a photo: a file whose metadata cannot be read gets only the Software tag.
`image_writing.save_image(..., metadata=...)` writes them: DPI into JPEG, PNG, TIFF and BMP; EXIF
into JPEG, PNG, WebP and 8-bit TIFF (16-bit TIFF, whose writer is our own, gets the DPI and the
Software tag only); XMP into JPEG, PNG, WebP and TIFF.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass

from PIL import Image

from .version import __version__

logger = logging.getLogger(__name__)

SOFTWARE_TAG = 0x0131


@dataclass(frozen=True)
class PhotoMetadata:
    """The parts of a photo file that its colorized version carries over."""

    dpi: tuple[float, float] | None = None
    exif: bytes | None = None  # an EXIF block as Pillow's `Exif.tobytes()` writes it and `exif=` takes it
    xmp: bytes | None = None  # the XMP packet (XML), orientation set to 1


def software_name() -> str:
    """The Software tag of every file gcpcolor writes with metadata."""
    return f"gcpcolor {__version__}"


def _valid_dpi(value: object) -> tuple[float, float] | None:
    try:
        x, y = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(x) and math.isfinite(y) and 0 < x < 1e6 and 0 < y < 1e6):
        return None
    return (x, y)


#: The two ways XMP writes an orientation (as an attribute, as an element).
_XMP_ORIENTATION = (re.compile(rb'(tiff:Orientation=")[0-9](")'), re.compile(rb"(<tiff:Orientation>)[0-9](</tiff:Orientation>)"))


def _upright_xmp(xmp: object) -> bytes | None:
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if not isinstance(xmp, bytes) or not xmp.strip():
        return None
    for pattern in _XMP_ORIENTATION:
        xmp = pattern.sub(rb"\g<1>1\g<2>", xmp)
    return xmp


#: The main EXIF directory's tags that describe the photo rather than its file, the only ones
#: carried: a TIFF's directory also holds its own layout (size, strips, compression, ICC profile),
#: which would be false for the result.
DESCRIPTIVE_TAGS = frozenset({
    0x010E,  # ImageDescription
    0x010F, 0x0110,  # Make, Model (camera or scanner)
    0x011A, 0x011B, 0x0128,  # XResolution, YResolution, ResolutionUnit
    0x0132,  # DateTime
    0x013B,  # Artist
    0x8298,  # Copyright
    0x83BB,  # IPTC-NAA
    0x4746, 0x4749,  # Rating, RatingPercent
    0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F,  # Windows title, comment, author, keywords, subject
    0x8769, 0x8825,  # pointers to the Exif (dates, exposure) and GPS directories
})


def _derivative_exif(exif: Image.Exif) -> bytes:
    for tag in [tag for tag in exif if tag not in DESCRIPTIVE_TAGS]:
        del exif[tag]  # the orientation among them: the pixels are upright already
    exif[SOFTWARE_TAG] = software_name()
    return exif.tobytes()


def read_metadata(path: str | os.PathLike) -> PhotoMetadata:
    """The DPI, EXIF and XMP of the photo file at `path`, ready for its colorized version."""
    dpi, exif, xmp = None, None, None
    try:
        with Image.open(path) as image:
            dpi = _valid_dpi(image.info.get("dpi"))
            xmp = _upright_xmp(image.info.get("xmp"))
            exif = _derivative_exif(image.getexif())
    except Exception as error:  # metadata is a courtesy: a photo that decodes is never lost over it
        logger.info("%s: its metadata is not carried over (%s)", os.fspath(path), error)
    if exif is None:
        exif = _derivative_exif(Image.Exif())
    return PhotoMetadata(dpi=dpi, exif=exif, xmp=xmp)


__all__ = ["DESCRIPTIVE_TAGS", "PhotoMetadata", "read_metadata", "software_name"]
