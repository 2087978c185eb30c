"""How well the colour-photo detection (gcpcolor.color_detection) classifies the shared photos.

    python benchmarks/color_detection.py ../shared/data            # prints a table and the counts
    python benchmarks/color_detection.py ../shared/data --all      # every photo's value

`historical/` holds genuine old photos: black-and-white and toned prints, but also eight old
colour prints and autochromes from Bringing-Old-Photos (bopb_old_a..h, labelled colour here by
looking at them); `val/` holds colour benchmark photos only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gcpcolor.color_detection import COLOR_THRESHOLD, off_tone_chroma
from gcpcolor.image_io import load_image
from gcpcolor.photo_files import find_images

#: Old colour photos in historical/: faded colour prints and autochromes, judged by eye.
HISTORICAL_COLOR_PHOTOS = frozenset(f"bopb_old_{letter}.jpg" for letter in "abcdefgh")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the shared data folder (with historical/ and val/)")
    parser.add_argument("--all", action="store_true", help="print every photo's off-tone chroma")
    args = parser.parse_args()
    groups: dict[str, list[tuple[str, bool, float]]] = {}
    for folder in ("historical", "val"):
        for path, _ in find_images([args.data / folder], recursive=False):
            is_color = folder == "val" or path.name in HISTORICAL_COLOR_PHOTOS
            group = f"{folder} {'colour' if is_color else 'black-and-white/toned'}"
            chroma = off_tone_chroma(load_image(path))
            groups.setdefault(group, []).append((path.name, is_color, chroma))
            if args.all:
                print(f"{group:35s} {path.name:45s} {chroma:6.2f}")
    print(f"threshold: off-tone chroma > {COLOR_THRESHOLD:g} means colour")
    print("| photos | classified right | misclassified |")
    print("|---|---|---|")
    for group, rows in groups.items():
        wrong = [(name, chroma) for name, is_color, chroma in rows if (chroma > COLOR_THRESHOLD) != is_color]
        listed = ", ".join(f"{name} ({chroma:.2f})" for name, chroma in wrong) or "none"
        print(f"| {group} | {len(rows) - len(wrong)} of {len(rows)} | {listed} |")


if __name__ == "__main__":
    main()
