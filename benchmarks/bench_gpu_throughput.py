"""Images per second of the network part at 256², by batch size and precision (GPU first).

    python benchmarks/bench_gpu_throughput.py --output /tmp/gpu_bench.md          # CUDA, everything
    python benchmarks/bench_gpu_throughput.py --device cpu --models tiny --batches 1,2 --modes fp32,bf16

The network part is what `gcpcolor export --onnx` exports (`onnx_export.ExportedNetwork`):
gray network inputs and class ids in, ab / exemplars / classes / z out; photo decoding, resizing
and the full-resolution Lab composition are not included. Modes: `fp32`; `bf16` (autocast, as
`Colorizer(precision="bfloat16")`); `compile` (bf16 autocast around `torch.compile` of the
network; the compilation time is reported separately). Models: `paper` (the paper's full-size
networks, random weights), `default` (the bundled model), `tiny` (test-size networks, to check
the script on a CPU). A configuration that runs out of memory is reported as such; once
`--budget-s` is spent the remaining rows are listed as not run, so the whole benchmark has a
known upper bound on its duration (scripts/gpu_bench.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from pathlib import Path

import torch

from gcpcolor.config import ColorizerConfig
from gcpcolor.image_io import is_out_of_memory
from gcpcolor.model import GCPColorizationModel
from gcpcolor.onnx_export import ExportedNetwork
from gcpcolor.weights import BUNDLED_MODEL_DIR, write_atomically

MODES = ("fp32", "bf16", "compile")
MODELS = ("paper", "default", "tiny")
#: Each configuration is timed for at least this long (and at least MIN_ITERATIONS calls).
MIN_SECONDS = 1.5
MIN_ITERATIONS = 3


def build_model(name: str) -> GCPColorizationModel:
    torch.manual_seed(0)
    if name == "paper":
        return GCPColorizationModel(ColorizerConfig())
    if name == "tiny":
        return GCPColorizationModel(ColorizerConfig.tiny())
    from gcpcolor.pipeline import Colorizer

    return Colorizer.from_pretrained(BUNDLED_MODEL_DIR).model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(network, device: torch.device, mode: str, batch: int, size: int, automatic: bool,
            min_seconds: float = MIN_SECONDS) -> dict:
    """images/s of `network` on a batch of random inputs (and compile seconds for 'compile')."""
    generator = torch.Generator().manual_seed(batch)
    l_input = (torch.rand(batch, 1, size, size, generator=generator) * 2 - 1).to(device)
    classes = torch.full((batch,), -1 if automatic else 1, device=device)
    precision = (
        torch.autocast(device.type, dtype=torch.bfloat16) if mode in ("bf16", "compile") else contextlib.nullcontext()
    )
    with torch.inference_mode(), precision:
        start = time.perf_counter()
        network(l_input, classes)  # warm-up (and, for 'compile', the compilation)
        synchronize(device)
        first_call = time.perf_counter() - start
        iterations, start = 0, time.perf_counter()
        while iterations < MIN_ITERATIONS or time.perf_counter() - start < min_seconds:
            network(l_input, classes)
            iterations += 1
        synchronize(device)
        elapsed = time.perf_counter() - start
    return {"images_per_s": batch * iterations / elapsed, "first_call_s": first_call}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--models", default="paper,default", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--budget-s", type=float, default=270.0, help="stop starting new rows after this many seconds")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for --device cpu (0: torch's default)")
    parser.add_argument("--min-seconds", type=float, default=MIN_SECONDS, help="time each row for at least this long")
    parser.add_argument("--output", help="also write the markdown table here (atomically)")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]
    batches = [int(b) for b in args.batches.split(",") if b]
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown model(s)/mode(s): {', '.join(unknown)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device is available (use --device cpu to check the script)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    began = time.perf_counter()

    name = torch.cuda.get_device_name() if device.type == "cuda" else (platform.processor() or platform.machine())
    lines = [
        f"machine: {name}, torch {torch.__version__}, network part at 256², images/s "
        f"(images timed over >= {args.min_seconds} s and >= {MIN_ITERATIONS} calls, after a warm-up call)",
        "",
        "| model | mode | batch | images/s | first call (s) |",
        "|---|---|---:|---:|---:|",
    ]
    # compile rows last: one compilation can outlast the budget, and the plain rows must not wait on it
    passes = [[mode for mode in modes if mode != "compile"], [mode for mode in modes if mode == "compile"]]
    for pass_modes in filter(None, passes):
        for model_name in models:
            model = build_model(model_name).to(device).eval()
            exported = ExportedNetwork(model).eval()
            size = model.config.work_size
            for mode in pass_modes:
                network = torch.compile(exported) if mode == "compile" else exported
                for batch in batches:
                    if time.perf_counter() - began > args.budget_s:
                        lines.append(f"| {model_name} | {mode} | {batch} | not run (budget) | |")
                        continue
                    try:
                        result = measure(network, device, mode, batch, size, exported.automatic_class, args.min_seconds)
                        lines.append(f"| {model_name} | {mode} | {batch} | {result['images_per_s']:.1f} | "
                                     f"{result['first_call_s']:.1f} |")
                    except Exception as error:  # one failing row must not lose the others
                        reason = "out of memory" if is_out_of_memory(error) else f"{type(error).__name__}: {error}"
                        lines.append(f"| {model_name} | {mode} | {batch} | failed: {reason.splitlines()[0][:120]} | |")
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                    print(lines[-1], flush=True)
                    if args.output:  # the table so far survives a hard time limit
                        write_table(args.output, lines)
            del model, exported, network
            if device.type == "cuda":
                torch.cuda.empty_cache()
    lines.append(f"\ntotal benchmark time: {time.perf_counter() - began:.0f} s")
    print("\n".join(lines))
    if args.output:
        write_table(args.output, lines)


def write_table(path: str, lines: list[str]) -> None:
    table = "\n".join(lines) + "\n"
    write_atomically(path, lambda temporary: Path(temporary).write_text(table))


if __name__ == "__main__":
    main()
