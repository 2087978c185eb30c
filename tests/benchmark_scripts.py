"""A script of benchmarks/ as a module, for its tests (the folder is not a package and the
scripts are run by path, so they are loaded by path too)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def benchmark_path(name: str) -> Path:
    return ROOT / "benchmarks" / f"{name}.py"


def load_benchmark(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, benchmark_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
