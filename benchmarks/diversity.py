"""How much a model's colours change with its prior: between diverse samples and between classes.

The GAN prior is what gives GCP-Colorization its diverse results (`--samples`: z perturbed) and
its palettes (`--class`); a colorization network that learnt to ignore the prior's features gives
the same colours whatever z and class are. This script measures it: for each photo (its long side
brought to 256), the mean CIELAB ab distance (ΔE in the ab plane, over all pixels) between every
pair of `--samples` diverse results at `--sigma`, and between every pair of results for the
prior's classes (all of them up to `--classes`), beside the mean chroma of the automatic result
for scale. A distance under about 2 is invisible; the authors' BigGAN changes whole objects.

For a model that takes a reference photo (image guidance), `--references DIR` adds the distance
between the results of each photo with the first `--samples` colour photos of DIR as its
reference, and `--own-reference` (PHOTO_DIR of colour photos, such as a benchmark's truth) the
mean ab error of the results against the photos' own colours, automatic and with the photo's own
colours, mirrored, as the reference: how far a reference that matches moves the result.

    python benchmarks/diversity.py MODEL_DIR PHOTO_DIR [--every 3] [--samples 4] [--sigma 1.0]
        [--references DIR] [--own-reference]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image

from gcpcolor.image_io import load_image
from gcpcolor.photo_files import find_images
from gcpcolor.metrics import image_ab
from gcpcolor.pipeline import Colorizer


def ab_of(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (a*, b*) of an (H, W, 3) float RGB image in [0, 1], as (2, H, W)."""
    return image_ab(np.asarray(rgb, dtype=np.float32) * 255)


def mean_pairwise_ab_distance(abs_: Sequence[np.ndarray]) -> float:
    """Mean over all pairs of the per-pixel ab distance, averaged over the pixels."""
    pairs = list(itertools.combinations(abs_, 2))
    if not pairs:
        raise ValueError("need at least two results to compare")
    return float(np.mean([np.hypot(*(first - second)).mean() for first, second in pairs]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("photo_dir")
    parser.add_argument("--every", type=int, default=1, help="use every N-th photo")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--classes", type=int, default=16, help="at most this many of the prior's classes")
    parser.add_argument("--references", help="folder of colour photos to use as references")
    parser.add_argument("--own-reference", action="store_true", help="PHOTO_DIR holds colour photos: see above")
    args = parser.parse_args()

    colorizer = Colorizer.from_pretrained(args.model_dir)
    if (args.references or args.own_reference) and not colorizer.takes_reference:
        parser.error(f"{args.model_dir} cannot follow a reference photo (its guidance is not 'image')")
    references = []
    if args.references:
        references = [load_image(path) for path, _ in find_images([args.references])][: args.samples]
    colorizer.warn_on_color_input = False
    classes = range(min(args.classes, colorizer.config.biggan.n_classes))
    files = [path for path, _ in find_images([args.photo_dir])][:: max(1, args.every)]
    chroma, between_samples, between_classes, between_references = [], [], [], []
    error_automatic, error_own_reference = [], []
    for path in files:
        photo = load_image(path)
        height, width = photo.shape[:2]
        scale = 256 / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        photo = np.asarray(Image.fromarray(np.rint(photo * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS))
        automatic = ab_of(colorizer.colorize(photo).image)
        chroma.append(float(np.hypot(*automatic).mean()))
        samples = colorizer.diverse(photo, samples=args.samples, sigma=args.sigma, seed=0)
        between_samples.append(mean_pairwise_ab_distance([ab_of(result.image) for result in samples]))
        between_classes.append(mean_pairwise_ab_distance([ab_of(colorizer.colorize(photo, class_id=k).image) for k in classes]))
        if len(references) > 1:
            between_references.append(mean_pairwise_ab_distance(
                [ab_of(colorizer.colorize(photo, reference=reference).image) for reference in references]))
        if args.own_reference:
            truth = ab_of(photo.astype(np.float32) / 255)
            guided = ab_of(colorizer.colorize(photo, reference=np.ascontiguousarray(photo[:, ::-1])).image)
            error_automatic.append(float(np.hypot(*(automatic - truth)).mean()))
            error_own_reference.append(float(np.hypot(*(guided - truth)).mean()))
    print(f"{len(files)} photos of {args.photo_dir}; model {args.model_dir}")
    print("| | mean | largest photo |")
    print("|---|---:|---:|")
    print(f"| chroma of the automatic result | {np.mean(chroma):.2f} | {np.max(chroma):.2f} |")
    print(f"| ab distance between {args.samples} samples (sigma {args.sigma:g}) | {np.mean(between_samples):.2f} | {np.max(between_samples):.2f} |")
    print(f"| ab distance between {len(classes)} classes | {np.mean(between_classes):.2f} | {np.max(between_classes):.2f} |")
    if between_references:
        print(f"| ab distance between {len(references)} references | {np.mean(between_references):.2f} | {np.max(between_references):.2f} |")
    if args.own_reference:
        print(f"| ab error to the truth, automatic | {np.mean(error_automatic):.2f} | {np.max(error_automatic):.2f} |")
        print(f"| ab error to the truth, own colours as reference | {np.mean(error_own_reference):.2f} | {np.max(error_own_reference):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
