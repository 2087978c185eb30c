"""A contact sheet: every photo of a folder as given, then as each model colorizes it.

    python benchmarks/contact_sheet.py ../shared/data/historical docs/images/historical.jpg \
        --model v2=gcpcolor/assets/default_model --model v1=/tmp/v1 [--cell 200] [--columns 2]

Photos are colorized at full resolution with each model's automatic class, then shown as
thumbnails of `--cell` pixels (long side), `--columns` photos per row of the sheet, so a person
can judge hues at a glance; open the individual results for detail (`--keep DIR`).

`--reference NAME=PHOTO` (repeatable) adds a column per colour photo: the first model's result
following it in place of its prior's exemplar (models with image guidance); the sheet's first
row then shows the reference photos above their columns.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from gcpcolor.evaluation import comparison_grid
from gcpcolor.image_io import load_image
from gcpcolor.image_writing import save_image
from gcpcolor.photo_files import find_images
from gcpcolor.pipeline import Colorizer


def thumbnail(image: np.ndarray, cell: int) -> np.ndarray:
    """A cell² uint8 thumbnail, the photo fitted inside on white."""
    picture = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
    picture.thumbnail((cell, cell), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (cell, cell), "white")
    canvas.paste(picture, ((cell - picture.width) // 2, (cell - picture.height) // 2))
    return np.asarray(canvas)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("output")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--cell", type=int, default=200)
    parser.add_argument("--columns", type=int, default=2, help="photos side by side in one row of the sheet")
    parser.add_argument("--keep", metavar="DIR", help="also save every full-resolution result here")
    parser.add_argument("--reference", action="append", default=[], metavar="NAME=PHOTO")
    args = parser.parse_args()

    models = [spec.split("=", 1) for spec in args.model]
    colorizers = {name: Colorizer.from_pretrained(path) for name, path in models}
    first = next(iter(colorizers.values()))
    if args.reference and not first.takes_reference:
        parser.error(f"--reference: the first model ({models[0][1]}) cannot follow a reference photo")
    reference_photos = {name: load_image(path) for name, path in (spec.split("=", 1) for spec in args.reference)}
    references = {name: first.prepare_reference(photo) for name, photo in reference_photos.items()}
    files = [path for path, _ in find_images([args.folder])]
    blank = np.full((args.cell, args.cell, 3), 255, dtype=np.uint8)
    cells = []
    if references:
        cells.append([blank] * (1 + len(colorizers)) + [thumbnail(photo, args.cell) for photo in reference_photos.values()])
    for path in files:
        photo = load_image(path)
        row = [thumbnail(photo, args.cell)]
        results = [(name, colorizer.colorize(photo)) for name, colorizer in colorizers.items()]
        results += [(name, first.colorize(photo, reference=reference)) for name, reference in references.items()]
        for name, result in results:
            row.append(thumbnail(result.image, args.cell))
            if args.keep:
                target = Path(args.keep) / name / f"{Path(path).stem}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                save_image(result.image, target, overwrite=True)
        cells.append(row)
    per_photo = ["input", *colorizers, *references]
    rows = []
    for start in range(0, len(cells), args.columns):
        group = cells[start : start + args.columns]
        group += [[blank] * len(per_photo)] * (args.columns - len(group))
        rows.append([image for cell_row in group for image in cell_row])
    sheet = comparison_grid(per_photo * args.columns, rows, args.cell)
    sheet.save(args.output, quality=88)
    print(f"{len(files)} photos x {len(colorizers)} model(s) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
