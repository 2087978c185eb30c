"""Peak memory and time of colorizing one photo at full resolution, by photo size.

    python benchmarks/bench_memory.py                          # 256², 12 MP, 36 MP, 200 MP
    python benchmarks/bench_memory.py --sizes 256x256 4000x3000 --format png

Each size runs in a fresh process with the bundled default model: a synthetic gray photo (smooth
shapes plus grain, 8-bit) is written to a temporary file, then timed through the public API the
way the command line runs it: read the file, colorize, write the result. Reported per size:
- peak: the process's peak resident memory while doing that, above what it held before (the
  model, loaded and warmed up on a 256² photo); measured with Linux's resettable high-water mark
  (/proc/self/clear_refs), so the model's own loading peak does not hide it;
- wall and CPU seconds, and their excess over the 256² photo (CPU seconds are the fairer figure
  on a shared machine).

The script uses only `Colorizer.default`, `colorize` and `save`, so it also runs against older
versions of gcpcolor (check one out in a second worktree and pass `--pythonpath` to it) to give
before-and-after figures on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SIZES = ["256x256", "4000x3000", "7360x4912", "16320x12250"]  # 0.07, 12, 36, 200 MP


def _memory_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _write_photo(path: Path, width: int, height: int) -> None:
    """A gray 8-bit photo, built and written in bands so that even 200 MP costs little memory."""
    import numpy as np
    from PIL import Image

    image = Image.new("L", (width, height))
    band = max(1, 4_000_000 // width)
    rng = np.random.default_rng(0)
    x = np.arange(width, dtype=np.float32)[None, :] / width
    for top in range(0, height, band):
        y = np.arange(top, min(height, top + band), dtype=np.float32)[:, None] / height
        values = 0.5 + 0.35 * np.sin(9 * x + 3 * y) * np.cos(7 * y - 2 * x)
        values = values + 0.03 * rng.standard_normal(values.shape, dtype=np.float32)
        strip = np.clip(values * 255 + 0.5, 0, 255).astype(np.uint8)
        image.paste(Image.fromarray(strip), (0, top))
    image.save(path, compress_level=1)


def _child(photo: str, output: str) -> None:
    import numpy as np
    import torch

    from gcpcolor.pipeline import Colorizer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    colorizer = Colorizer.default()
    warm = np.full((256, 256), 128, dtype=np.uint8)
    colorizer.colorize(warm, class_id=0).image  # first-call costs (allocator, kernels) out of the figure
    _reset_peak()
    before = _memory_status()["VmRSS"]
    wall, cpu = time.perf_counter(), time.process_time()
    result = colorizer.colorize(photo, class_id=0)
    result.save(output, overwrite=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    status = _memory_status()
    print(json.dumps({"peak_above_model": status["VmHWM"] - before, "model_rss": before,
                      "wall_s": wall, "cpu_s": cpu}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="WIDTHxHEIGHT of each synthetic photo")
    parser.add_argument("--format", default="png", help="suffix of the output file (png, jpg, tif)")
    parser.add_argument("--pythonpath", help="import gcpcolor from this folder (another checkout)")
    parser.add_argument("--child", nargs=2, metavar=("PHOTO", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([args.pythonpath, env.get("PYTHONPATH", "")])
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            width, height = (int(v) for v in size.lower().split("x"))
            photo, output = Path(folder) / f"photo_{size}.png", Path(folder) / f"out_{size}.{args.format}"
            _write_photo(photo, width, height)
            run = subprocess.run([sys.executable, __file__, "--child", str(photo), str(output)], env=env,
                                 capture_output=True, text=True)
            photo.unlink()
            output.unlink(missing_ok=True)
            if run.returncode != 0:
                tail = (run.stderr.strip().splitlines() or ["killed"])[-1]
                print(f"{size}: failed (exit {run.returncode}): {tail}", flush=True)
                continue
            figures = json.loads(run.stdout.strip().splitlines()[-1])
            figures["size"], figures["megapixels"] = size, width * height / 1e6
            rows.append(figures)
            print(json.dumps(figures), flush=True)

    if rows:
        base = rows[0]
        print(f"\n| photo | MP | peak RSS above model | wall s | CPU s | wall over {base['size']} | CPU over {base['size']} |")
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['size']} | {row['megapixels']:.1f} | {row['peak_above_model'] / 2**20:.0f} MiB | "
                  f"{row['wall_s']:.2f} | {row['cpu_s']:.2f} | {row['wall_s'] - base['wall_s']:+.2f} | "
                  f"{row['cpu_s'] - base['cpu_s']:+.2f} |")


if __name__ == "__main__":
    main()
