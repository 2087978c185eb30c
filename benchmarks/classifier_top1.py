"""Top-1/top-5 of the automatic ImageNet class on gray photos (and on their colour originals).

    python benchmarks/classifier_top1.py ../shared/data/train [--every 1] [--model DIR]

Reads `labels.csv` (file, imagenet_index; -1 rows are skipped) of the folder, converts each photo
to its gray version (L only, as gcpcolor sees it) and asks EfficientNet-Lite0 (the default
class predictor of ImageNet priors). With --model DIR (a 1000-class model in our format) the
BigGAN discriminator's class projection of that model is scored on the same photos.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

from gcpcolor.classify import ImageNetClassifier
from gcpcolor.color import l_to_network, rgb_to_lab
from gcpcolor.image_io import load_image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--every", type=int, default=1, help="take every N-th labelled photo")
    parser.add_argument("--model", help="also score this 1000-class model's discriminator projection")
    args = parser.parse_args()

    folder = Path(args.folder)
    rows = [r for r in csv.DictReader(open(folder / "labels.csv")) if int(r["imagenet_index"]) >= 0][:: args.every]
    classifier = ImageNetClassifier()
    projection = None
    if args.model:
        from gcpcolor.pipeline import Colorizer

        projection = Colorizer.from_pretrained(args.model).model
    hits = {"gray top-1": 0, "gray top-5": 0, "colour top-1": 0, "discriminator gray top-1": 0}
    start = time.perf_counter()
    with torch.no_grad():
        for row in rows:
            label = int(row["imagenet_index"])
            rgb = torch.from_numpy(load_image(folder / row["file"])).permute(2, 0, 1)[None]
            l_input = l_to_network(rgb_to_lab(rgb)[:, :1])
            gray = classifier(l_input)[0]
            hits["gray top-1"] += int(gray.argmax() == label)
            hits["gray top-5"] += int(label in gray.topk(5).indices.tolist())
            colour = classifier.network(classifier.preprocess(rgb))[0]
            hits["colour top-1"] += int(colour.argmax() == label)
            if projection is not None:
                hits["discriminator gray top-1"] += int(projection.predict_class(l_input)[0] == label)
    print(f"{len(rows)} labelled photos of {folder}, {time.perf_counter() - start:.0f} s")
    for name, count in hits.items():
        if name.startswith("discriminator") and projection is None:
            continue
        print(f"{name:26} {count / len(rows):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
