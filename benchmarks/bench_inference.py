"""Per-image time and peak memory of the full-size pipeline (random weights).

    python benchmarks/bench_inference.py                       # CPU, and CUDA if available
    python benchmarks/bench_inference.py --batch-size 4 --repeats 3 --device cpu
    python benchmarks/bench_inference.py --model old=/tmp/v1 --model new=gcpcolor/assets/default_model

Each configuration runs in a fresh subprocess so that peak memory (max RSS on CPU,
torch.cuda.max_memory_allocated on GPU) belongs to that configuration alone. Ratios are against
the baseline measured in the same run: batch 1 at 256² on the same device, of the first model.
Without --model the paper-size network with random weights is measured; with --model NAME=DIR
(repeatable) trained models in our format, each with its automatic class prediction.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

SIZES = {"256x256": (256, 256), "12MP (4000x3000)": (3000, 4000)}


def measure(device: str, height: int, width: int, batch_size: int, repeats: int, threads: int,
            model_dir: str | None = None) -> dict:
    import numpy as np
    import torch

    from gcpcolor.config import ColorizerConfig
    from gcpcolor.model import GCPColorizationModel
    from gcpcolor.pipeline import Colorizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if model_dir:
        colorizer, classes = Colorizer.from_pretrained(model_dir, device=device), None
    else:
        colorizer, classes = Colorizer(GCPColorizationModel(ColorizerConfig()), device=device), 1
    rng = np.random.default_rng(0)
    images = [rng.random((height, width), dtype=np.float32) for _ in range(batch_size)]
    colorizer.colorize_batch(images, class_ids=classes)  # warm-up: allocator, kernels, caches
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        colorizer.colorize_batch(images, class_ids=classes)
        if device == "cuda":
            torch.cuda.synchronize()
        timings.append((time.perf_counter() - start) / batch_size)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {"seconds_per_image": sorted(timings)[len(timings) // 2], "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                        help="a trained model in our format (repeatable); default: the paper network, random weights")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        device, height, width, batch, model_dir = json.loads(args.worker)
        threads = args.threads or __import__("os").cpu_count()
        print(json.dumps(measure(device, height, width, batch, args.repeats, threads, model_dir)))
        return
    models = [tuple(spec.split("=", 1)) if "=" in spec else (spec, spec) for spec in args.model] or [("paper", None)]

    import torch

    devices = ["cpu", "cuda"] if args.device == "auto" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
          f"torch {torch.__version__}" + (f", GPU {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    print(f"{'model':10} {'device':6} {'size':18} {'batch':>5} {'s/image':>9} {'peak MiB':>9} {'vs first 256² b1':>16}")
    for device in devices:
        baseline = None
        configs = [("256x256", 1)] + [(name, args.batch_size) for name in SIZES if (name, args.batch_size) != ("256x256", 1)]
        for (model_name, model_dir), (name, batch) in [(m, c) for m in models for c in configs]:
            height, width = SIZES[name]
            worker = json.dumps([device, height, width, batch, model_dir])
            out = subprocess.run(
                [sys.executable, __file__, "--worker", worker, "--repeats", str(args.repeats), "--threads", str(args.threads)],
                capture_output=True, text=True, check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            baseline = baseline or result["seconds_per_image"]
            ratio = result["seconds_per_image"] / baseline
            print(f"{model_name:10} {device:6} {name:18} {batch:>5} {result['seconds_per_image']:>9.3f} "
                  f"{result['peak_mib']:>9.0f} {ratio:>15.2f}x")


if __name__ == "__main__":
    main()
