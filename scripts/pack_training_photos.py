"""Pack training photos small enough to travel to a rented GPU machine with the repository.

A GPU lease here copies the working tree (at most 64 MiB, the bundled model included) and
nothing beside it, so the 5,920 training photos (183 MB) cannot go as they are. Colour is
learnt at 192-224 px crops, so each photo is shrunk to a short side of `--short-side`, its
long side cut to at most 4:3 around the centre, and stored as lossy WebP.

Quality matters more than count: a network trained on strongly compressed photos colours sharp
ones with a yellow-green cast. In 200-step CPU fine-tunes that differed only in their photos
(docs/training-log.md), WebP quality 52 moved the mean b* of benchmark photos by +2.4 to +2.9
and cost 0.2 to 0.4 dB, while quality 90 and 100 stayed within the noise of the original JPEGs,
and shrinking to 192 px changed nothing. Hence quality 90 by default, and `--every` to send a
subset that fits: every third photo at quality 90 and 192 px is 25.5 MiB.

    python scripts/pack_training_photos.py OUT_DIR --folder train=../shared/data/train \
        --folder extra=../shared/data/extra --labels train=runs/v2/pseudo_classes.csv --every 3 \
        --exclude-near-duplicates-of ../shared/data/val

writes OUT_DIR/<name>/*.webp, OUT_DIR/manifest.csv (every photo, class -1) and, for each
`--labels name=CSV`, OUT_DIR/<name>_classes.csv with the same classes under the new names.
"""

from __future__ import annotations

import argparse
import csv
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gcpcolor.photo_files import find_images  # noqa: E402
from gcpcolor.near_duplicates import find_near_duplicates  # noqa: E402


def shrink(job: tuple[str, str, int, int]) -> int:
    source, target, short_side, quality = job
    with Image.open(source) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    width, height = image.size
    scale = min(1.0, short_side / min(width, height))
    if scale < 1.0:
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.LANCZOS)
    width, height = image.size
    long_limit = round(min(width, height) * 4 / 3)
    if max(width, height) > long_limit:
        if width > height:
            left = (width - long_limit) // 2
            image = image.crop((left, 0, left + long_limit, height))
        else:
            top = (height - long_limit) // 2
            image = image.crop((0, top, width, top + long_limit))
    image.save(target, "WEBP", quality=quality, method=6)
    return Path(target).stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--folder", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--labels", action="append", default=[], metavar="NAME=CSV")
    parser.add_argument("--short-side", type=int, default=192)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="keep every N-th photo of each folder (in sorted order), to fit the lease's 64 MiB")
    parser.add_argument("--exclude-near-duplicates-of", metavar="DIR",
                        help="leave out copies of these benchmark photos (data.exclude_near_duplicates_of)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.every < 1:
        parser.error("--every must be at least 1")

    benchmark = [path for path, _ in find_images([args.exclude_near_duplicates_of])] if args.exclude_near_duplicates_of else []
    jobs, manifest_rows, renamed = [], [], {}
    for spec in args.folder:
        name, folder = spec.split("=", 1)
        (args.output / name).mkdir(parents=True, exist_ok=True)
        photos = sorted(find_images([folder]), key=lambda pair: pair[1].as_posix())
        copies = find_near_duplicates([path for path, _ in photos], benchmark) if benchmark else {}
        if copies:
            print(f"{name}: {len(copies)} copies of benchmark photos left out")
        for path, relative in [pair for pair in photos if pair[0] not in copies][:: args.every]:
            target = args.output / name / (Path(relative).with_suffix(".webp").as_posix().replace("/", "__"))
            jobs.append((str(path), str(target), args.short_side, args.quality))
            manifest_rows.append(f"{name}/{target.name}")
            renamed[(name, Path(relative).as_posix())] = target.name
    with ProcessPoolExecutor(args.workers) as pool:
        total = sum(pool.map(shrink, jobs, chunksize=32))
    with open(args.output / "manifest.csv", "w", newline="") as handle:
        handle.write("file,class\n")
        handle.writelines(f"{row},-1\n" for row in manifest_rows)
    for spec in args.labels:
        name, labels_file = spec.split("=", 1)
        with open(labels_file, newline="") as source, open(
            args.output / f"{name}_classes.csv", "w", newline=""
        ) as target:
            writer = csv.writer(target)
            writer.writerow(["file", "class"])
            for row in csv.DictReader(source):
                if (name, row["file"]) in renamed:  # photos that --every left out have no class row
                    writer.writerow([renamed[(name, row["file"])], row["class"]])
    print(f"{len(jobs)} photos, {total / 2**20:.1f} MiB in {args.output}")


if __name__ == "__main__":
    main()
