"""The network part of a model under onnxruntime against PyTorch, on CPU, one 256² photo.

    python benchmarks/bench_onnxruntime.py                        # the shipped default model
    python benchmarks/bench_onnxruntime.py --model DIR --threads 2 --repeats 10

Both run exactly the exported computation (`onnx_export.ExportedNetwork`: network input and
class ids in, ab / exemplars / class / z out) on the same input, alternating, after one warm-up
call each; the median over `--repeats` is reported with the largest ab difference between them.
Times are process CPU time by default (robust on a machine shared with higher-priority work,
for one thread); `--clock wall` for elapsed time.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from gcpcolor.onnx_export import ExportedNetwork, OnnxNetwork, export_onnx
from gcpcolor.pipeline import Colorizer
from profile_modules import CLOCKS  # benchmarks/ is on the path of a script run from it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder in our format (default: the bundled default model)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]

    colorizer = Colorizer.from_pretrained(args.model) if args.model else Colorizer.default()
    network = ExportedNetwork(colorizer.model).eval()
    size = colorizer.work_size
    l_input = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    classes = torch.tensor([-1 if network.automatic_class else 0])
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(colorizer.model, Path(folder) / "network.onnx")
        session = OnnxNetwork(path, threads=args.threads)

        def run_torch():
            with torch.no_grad():
                return network(l_input, classes)[0]

        def run_onnxruntime():
            return session(l_input, classes).ab

        timings: dict[str, list[float]] = {"PyTorch": [], "onnxruntime": []}
        outputs = {"PyTorch": run_torch(), "onnxruntime": run_onnxruntime()}  # warm-up
        for _ in range(args.repeats):
            for name, run in (("PyTorch", run_torch), ("onnxruntime", run_onnxruntime)):
                start = clock()
                run()
                timings[name].append(clock() - start)

    import onnxruntime

    medians = {name: 1000 * float(np.median(values)) for name, values in timings.items()}
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, {args.threads} thread(s), {size}² input, "
          f"{args.clock} time, median of {args.repeats}\n")
    print("| runtime | ms per photo (network part) | vs PyTorch |")
    print("|---|---:|---:|")
    for name, value in medians.items():
        print(f"| {name} | {value:.0f} | {medians['PyTorch'] / value:.2f}x |")
    difference = (outputs["PyTorch"] - outputs["onnxruntime"]).abs().max().item()
    print(f"\nlargest ab difference (Lab units): {difference:.2e}")


if __name__ == "__main__":
    main()
