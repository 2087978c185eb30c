"""Near-duplicate photos across folders, so that benchmark photos stay out of training data.

Benchmarks are often cut from the same public collections as training sets: CBSD68, 68 of the
110 photos of our validation set, is a subset of BSDS500, all 500 of which are training photos
in `../shared/data/train`, resized and recompressed. Byte or file-name comparison misses such
copies. The correlation of two photos' small gray thumbnails does not: resizing, JPEG
recompression and colour changes leave it near 1, while different photos rarely come close.
On our data (24² thumbnails): every CBSD68 photo correlates at least 0.985 with its BSDS500
copy; no other validation photo exceeds 0.87 with any of the 5,920 training photos; and 99.9%
of those training photos have no other above 0.96 (the few that do are the same photo shipped
by two sources, or burst shots of one object).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .image_io import _apply_exif_orientation

#: Side of the gray thumbnail that is compared.
THUMBNAIL_SIDE = 24
#: Photos whose thumbnails correlate at least this much count as the same photo.
MIN_CORRELATION = 0.97


def thumbnail_signature(path: str | Path) -> np.ndarray | None:
    """(THUMBNAIL_SIDE²,) float32 of unit norm and zero mean: the photo's gray thumbnail as it
    is seen (EXIF rotation applied), squashed to a square; None for a file that is not a
    readable image, or a blank one."""
    try:
        with Image.open(path) as opened:
            opened.draft("L", (4 * THUMBNAIL_SIDE, 4 * THUMBNAIL_SIDE))  # JPEG: decode at a fraction of the size
            _apply_exif_orientation(opened, Path(path))
            thumbnail = opened.convert("L").resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BOX)
    except Exception:  # PIL plugins raise many types for malformed files; load_image names the problem
        return None
    pixels = np.asarray(thumbnail, dtype=np.float32).ravel()
    pixels -= pixels.mean()
    norm = float(np.linalg.norm(pixels))
    return pixels / norm if norm > 1e-3 else None


def _signatures(paths: Sequence[str | Path]) -> tuple[list[Path], np.ndarray]:
    kept, rows = [], []
    for path in paths:
        signature = thumbnail_signature(path)
        if signature is not None:
            kept.append(Path(path))
            rows.append(signature)
    return kept, np.asarray(rows, dtype=np.float32).reshape(len(rows), THUMBNAIL_SIDE**2)


def find_near_duplicates(
    candidates: Sequence[str | Path],
    references: Sequence[str | Path],
    min_correlation: float = MIN_CORRELATION,
) -> dict[Path, Path]:
    """Each candidate photo that is a near-duplicate of a reference photo, with the reference
    it matches best. Unreadable and blank files on either side are left out."""
    candidate_paths, candidate_rows = _signatures(candidates)
    reference_paths, reference_rows = _signatures(references)
    if not candidate_paths or not reference_paths:
        return {}
    correlation = candidate_rows @ reference_rows.T
    best = correlation.argmax(axis=1)
    return {
        candidate_paths[row]: reference_paths[column]
        for row, column in enumerate(best)
        if correlation[row, column] >= min_correlation
    }
