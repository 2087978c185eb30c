"""Pick the annealed-mean temperature of a "semantic" model so its colourfulness is honest.

The network predicts a distribution over ab bins; the temperature T of softmax(logits / T)
trades vividness (low T, the mode) against safety (T = 1, the mean, which drifts to sepia).
This script colorizes the gray versions of colour photos once, decodes the same logits at
several T, and prints mean colourfulness (absolute Hasler & Süsstrunk) against the photos' own,
with PSNR and the mean CIELAB a*/b* of the results beside the photos' own (a colour cast shows
there: the H100 runs trained on over-compressed photos moved b* on val by +3 to +5), at 256²
(the evaluation protocol). Choose T where the ratio is near 1 — on photos that are not the
benchmark you report.

With `--a-tilts`, the same for each a* tilt of the decoding (`colorization.a_tilt`): one table
per tilt, then for each tilt the temperature whose ratio is nearest 1 and the mean a* there.
The rule used for the default model: the tilt whose mean a* at its own temperature is nearest
the photos', with that temperature (both fitted on training photos, never on the benchmark).

    python benchmarks/calibrate_temperature.py MODEL_DIR PHOTO_DIR [PHOTO_DIR...] [--count 200]
        [--a-tilts 0 -0.004 -0.006] [--temperatures 0.4 0.5 0.6]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

from gcpcolor.color import lab_to_rgb, l_to_network, rgb_to_lab
from gcpcolor.image_io import load_image
from gcpcolor.photo_files import find_images
from gcpcolor.metrics import colorfulness, image_ab, psnr
from gcpcolor.model import resample_square
from gcpcolor.pipeline import Colorizer

TEMPERATURES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.38, 0.42, 0.46, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("photo_dirs", nargs="+", metavar="photo_dir")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--a-tilts", type=float, nargs="+", default=None,
                        help="a* tilts to try (default: the model's own)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(TEMPERATURES))
    args = parser.parse_args()

    colorizer = Colorizer.from_pretrained(args.model_dir)
    model = colorizer.model
    if not model.predicts_distribution:
        print("this model has no ab-bin distribution to calibrate", file=sys.stderr)
        return 2
    tilts = args.a_tilts if args.a_tilts is not None else [model.config.colorization.a_tilt]
    settings = [(tilt, temperature) for tilt in tilts for temperature in args.temperatures]
    files = [path for path, _ in find_images(args.photo_dirs)]
    files = files[:: max(1, len(files) // args.count)][: args.count]  # evenly over all folders
    truth_cf, output_cf = [], {setting: [] for setting in settings}
    scores = {setting: [] for setting in settings}
    truth_ab, output_ab = [], {setting: [] for setting in settings}  # per photo mean (a*, b*)
    with torch.no_grad():
        for path in files:
            rgb = torch.from_numpy(load_image(path)).permute(2, 0, 1)[None]
            rgb = F.interpolate(rgb, size=(args.size, args.size), mode="bilinear", antialias=True, align_corners=False)
            lab = rgb_to_lab(rgb.clamp(0, 1))
            l_input = l_to_network(lab[:, :1])
            output = model(l_input, colorizer.predict_classes(l_input))
            truth = (rgb[0].permute(1, 2, 0).numpy() * 255).round()
            truth_cf.append(colorfulness(truth))
            truth_ab.append(lab[0, 1:].mean(dim=(1, 2)).numpy())
            for setting in settings:
                tilt, temperature = setting
                ab = resample_square(model.colorization_net.decode(output.ab_logits, temperature, tilt), args.size)
                result = lab_to_rgb(torch.cat([lab[:, :1], ab], dim=1))[0].permute(1, 2, 0).numpy()
                result = (result * 255).round()
                output_cf[setting].append(colorfulness(result))
                output_ab[setting].append(image_ab(result).mean(axis=(1, 2)))
                scores[setting].append(psnr(truth, result))
    reference = float(np.mean(truth_cf))
    truth_a, truth_b = np.mean(truth_ab, axis=0)
    print(f"{len(files)} photos from {', '.join(args.photo_dirs)}; ground-truth colourfulness {reference:.2f}, "
          f"mean a* {truth_a:.2f}, b* {truth_b:.2f}")
    def mean_colourfulness(setting: tuple[float, float]) -> float:
        return float(np.mean(output_cf[setting]))

    def ratio(setting: tuple[float, float]) -> float:
        return mean_colourfulness(setting) / reference

    def mean_ab(setting: tuple[float, float]) -> np.ndarray:
        return np.mean(output_ab[setting], axis=0)

    chosen = {}  # tilt -> the temperature whose colourfulness ratio is nearest 1
    for tilt in tilts:
        if len(tilts) > 1:
            print(f"\na* tilt {tilt:g}")
        print("| T | colourfulness | ratio | PSNR | mean a* | mean b* |")
        print("|---:|---:|---:|---:|---:|---:|")
        for temperature in args.temperatures:
            setting = (tilt, temperature)
            a, b = mean_ab(setting)
            print(f"| {temperature:.2f} | {mean_colourfulness(setting):.2f} | {ratio(setting):.3f} "
                  f"| {np.mean(scores[setting]):.2f} | {a:.2f} | {b:.2f} |")
        chosen[tilt] = min(args.temperatures, key=lambda t: abs(ratio((tilt, t)) - 1))
    if len(tilts) > 1:
        print("\n| a* tilt | T with ratio nearest 1 | ratio | mean a* (photos' own: %.2f) |" % truth_a)
        print("|---:|---:|---:|---:|")
        for tilt, temperature in chosen.items():
            print(f"| {tilt:g} | {temperature:.2f} | {ratio((tilt, temperature)):.3f} | {mean_ab((tilt, temperature))[0]:.2f} |")
        best = min(chosen, key=lambda tilt: abs(mean_ab((tilt, chosen[tilt]))[0] - truth_a))
        print(f"\nrule: a_tilt {best:g}, temperature {chosen[best]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
