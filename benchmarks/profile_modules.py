"""Where the time of one colorization goes: milliseconds per stage of `Colorizer.colorize_batch`.

    python benchmarks/profile_modules.py                          # paper-size model (random weights) and the default model
    python benchmarks/profile_modules.py --model paper --threads 1 --repeats 3
    python benchmarks/profile_modules.py --model default --size 256
    python benchmarks/profile_modules.py --model paper --flops    # + GFLOP and GFLOP/s per stage

Each stage is the time spent inside the model methods listed in STAGES, exclusive of nested
stages (the class prediction of the default model contains the backbone, which is reported on
its own line); "other" is what the whole call took beyond the listed stages (glue, resampling
between stages). The median of `--repeats` timed runs after one warm-up run is reported, as a
markdown table of milliseconds and share of the total.

Times are CPU time of the process (`--clock cpu`, the default) unless `--clock wall`: on a
machine whose cores are shared with higher-priority work, wall time measures the other work's
load, while CPU time of a 1-thread run still measures ours. With several threads, use wall.

`--flops` adds the floating-point operations of each stage's dense work (convolutions, matrix
products; counted by torch's FlopCounterMode in one extra run, with the same exclusive
accounting) and the rate each stage reaches, which shows how far a stage is from the core's
arithmetic limit: a stage near it is only made faster by doing less work or by cheaper arithmetic.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import numpy as np
import torch

from gcpcolor import pipeline
from gcpcolor.config import ColorizerConfig
from gcpcolor.model import GCPColorizationModel
from gcpcolor.pipeline import Colorizer

#: Stage label → (path of the object from the Colorizer, method names timed as that stage).
STAGES: list[tuple[str, str, tuple[str, ...]]] = [
    ("pre-processing (L, resize)", "processor", ("preprocess",)),
    ("class prediction", "", ("resolve_classes",)),
    ("ImageNet backbone", "model.colorization_net.backbone", ("features",)),
    ("encoder (inversion)", "model", ("invert",)),
    ("BigGAN generator", "model.generator", ("generate",)),
    ("discriminator features", "model", ("correspondence_features",)),
    ("correspondence", "model.correspondence", ("embed_gray", "embed_reference", "correspondence")),
    ("warp", "model", ("_warp_native",)),
    ("colorization net", "model.colorization_net", ("forward", "logits", "decode")),
    ("post-processing (ab up, Lab→RGB)", "processor", ("postprocess",)),
]


class StageTimer:
    """Accumulates exclusive wall time per stage: a nested timed call is charged to its own
    stage and subtracted from the enclosing one."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.totals: dict[str, float] = defaultdict(float)
        self._nested_time: list[float] = []

    def wrap(self, stage: str, method: Callable) -> Callable:
        @functools.wraps(method)
        def timed(*args, **kwargs):
            self._nested_time.append(0.0)
            start = self.clock()
            try:
                return method(*args, **kwargs)
            finally:
                elapsed = self.clock() - start
                nested = self._nested_time.pop()
                self.totals[stage] += elapsed - nested
                if self._nested_time:
                    self._nested_time[-1] += elapsed

        return timed


def _resolve(root: object, path: str) -> object | None:
    target = root
    for name in filter(None, path.split(".")):
        target = getattr(target, name, None)
        if target is None:
            return None
    return target


@contextlib.contextmanager
def timed_stages(colorizer: Colorizer, timer: StageTimer) -> Iterator[None]:
    """Shadow the STAGES methods on their instances with timing wrappers, restored on exit."""
    patched: list[tuple[object, str]] = []
    try:
        for stage, path, names in STAGES:
            owner = _resolve(colorizer, path)
            for name in names:
                if owner is None or not hasattr(owner, name):
                    continue
                setattr(owner, name, timer.wrap(stage, getattr(owner, name)))
                patched.append((owner, name))
        original_to_images = pipeline._to_images
        pipeline._to_images = timer.wrap("post-processing (ab up, Lab→RGB)", original_to_images)
        yield
    finally:
        pipeline._to_images = original_to_images
        for owner, name in patched:
            delattr(owner, name)


def build_colorizer(model: str, precision: str = "float32") -> tuple[Colorizer, int | None]:
    """The Colorizer and the class to pass (None: automatic) for 'paper', 'tiny' (test-size
    networks), 'default' or a DIR."""
    torch.manual_seed(0)
    # Passed only when it is not the default, so this script also runs on code that predates it.
    options = {} if precision == "float32" else {"precision": precision}
    if model in ("paper", "tiny"):
        config = ColorizerConfig() if model == "paper" else ColorizerConfig.tiny()
        return Colorizer(GCPColorizationModel(config), device="cpu", classifier=None, is_demo=True, **options), 1
    if model == "default":
        return Colorizer.default(device="cpu", **options), None
    return Colorizer.from_pretrained(model, device="cpu", **options), None


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def measure_stages(colorizer: Colorizer, classes: int | None, image: np.ndarray,
                   counter: Callable[[], float], scale: float = 1.0) -> tuple[dict[str, float], np.ndarray]:
    """One colorization of `image`: how far `counter` (a clock, or a running count of operations)
    advanced in each stage, exclusively, plus 'other' and 'total', times `scale`; and the photo."""
    timer = StageTimer(counter)
    with timed_stages(colorizer, timer):
        start = timer.clock()
        result = colorizer.colorize_batch([image], class_ids=classes)[0]
        total = timer.clock() - start
    stages = {stage: scale * timer.totals.get(stage, 0.0) for stage, _, _ in STAGES}
    stages["other"] = scale * total - sum(stages.values())
    stages["total"] = scale * total
    return stages, result.image


def profile(colorizer: Colorizer, classes: int | None, image: np.ndarray, repeats: int, clock: str = "cpu",
            warm_up: bool = True) -> tuple[dict[str, float], np.ndarray]:
    """Median milliseconds per stage (and 'total') over `repeats` runs of one photo, and the
    colorized photo."""
    if warm_up:
        colorizer.colorize_batch([image], class_ids=classes)  # allocator, kernels, caches
    runs = [measure_stages(colorizer, classes, image, CLOCKS[clock], scale=1000.0) for _ in range(repeats)]
    return {key: float(np.median([run[0][key] for run in runs])) for key in runs[0][0]}, runs[-1][1]


def gigaflops_per_stage(colorizer: Colorizer, classes: int | None, image: np.ndarray) -> dict[str, float]:
    """GFLOP of each stage's dense operations in one colorization (torch's FlopCounterMode counts
    convolutions and matrix products; sampling, norms and activations are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as mode:
        gigaflops, _ = measure_stages(colorizer, classes, image, lambda: float(mode.get_total_flops()), scale=1e-9)
    return gigaflops


def markdown_table(title: str, milliseconds: dict[str, float], gigaflops: dict[str, float] | None = None) -> str:
    total = milliseconds["total"]
    header, rule = "| stage | ms | share |", "|---|---:|---:|"
    if gigaflops is not None:
        header, rule = header + " GFLOP | GFLOP/s |", rule + "---:|---:|"

    def row(stage: str, label: str) -> str:
        value = milliseconds[stage]
        shown = f"**{value:.0f}**" if stage == "total" else f"{value:.0f}"
        cells = f"| {label} | {shown} | {100 * value / total:.0f}% |"
        if gigaflops is not None:
            work = gigaflops.get(stage, 0.0)
            rate = f"{1000 * work / value:.1f}" if value > 0 and work > 0 else "–"
            cells += f" {work:.2f} | {rate} |"
        return cells

    lines = [f"**{title}**", "", header, rule]
    for stage, value in milliseconds.items():
        if stage == "total" or (value < 0.05 and stage != "other"):
            continue  # stages the model does not have (no backbone in the paper model)
        lines.append(row(stage, stage))
    lines.append(row("total", "**total**"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[],
                        help="'paper' (full size, random weights), 'tiny' (test-size), 'default' (shipped) or a model DIR; repeatable")
    parser.add_argument("--size", type=int, default=256, help="side of the square test photo")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                        help="network arithmetic (Colorizer(precision=...))")
    parser.add_argument("--photo", help="photo to colorize, resized to --size² (default: uniform noise)")
    parser.add_argument("--no-warm-up", action="store_true",
                        help="time the first run too (one-time costs are then included: a pessimistic figure)")
    parser.add_argument("--save-output", metavar="NPY",
                        help="write the colorized photo (float32 RGB) of the last model, to compare precisions or code versions")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: process CPU time (robust on a loaded machine, 1 thread); wall: elapsed time")
    parser.add_argument("--flops", action="store_true",
                        help="also count each stage's GFLOP (one more run) and report GFLOP/s")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.size}x{args.size} photo, {args.clock} time, median of {args.repeats}\n")
    if args.photo:
        from PIL import Image

        from gcpcolor.image_io import load_image

        gray = Image.fromarray(np.round(load_image(args.photo).mean(axis=2) * 255).astype(np.uint8))
        image = np.asarray(gray.resize((args.size, args.size), Image.BICUBIC), dtype=np.float32) / 255
    else:
        image = np.random.default_rng(0).random((args.size, args.size), dtype=np.float32)
    for model in args.model or ["paper", "default"]:
        colorizer, classes = build_colorizer(model, args.precision)
        milliseconds, colorized = profile(colorizer, classes, image, args.repeats, args.clock, not args.no_warm_up)
        gigaflops = gigaflops_per_stage(colorizer, classes, image) if args.flops else None
        print(markdown_table(f"{model} model, {args.precision}", milliseconds, gigaflops), "\n", flush=True)
        if args.save_output:
            np.save(args.save_output, colorized)


if __name__ == "__main__":
    main()
