"""scripts/gpu_bench.sh runs end to end (on the CPU, with the test-size model and batch 1), so the
GPU benchmark is known to work the day a device is lent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("timeout") is None, reason="the script needs coreutils' timeout")
def test_gpu_bench_script_writes_its_table(tmp_path):
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OUT": str(tmp_path),
        "DEVICE": "cpu", "MODELS": "tiny", "BATCHES": "1", "MODES": "fp32,bf16", "MIN_SECONDS": "0", "BUDGET_S": "600",
    }
    subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bench.sh")], env=environment, check=True,
                   capture_output=True, text=True, timeout=900)
    rows = [line for line in (tmp_path / "gpu_bench.md").read_text().splitlines() if line.startswith("| tiny")]
    assert [row.split("|")[2].strip() for row in rows] == ["fp32", "bf16"]
    assert all(float(row.split("|")[4]) > 0 for row in rows)  # images/s measured, not failed


def test_compile_rows_come_after_every_plain_row(tmp_path):
    """A compilation can outlast the budget: the plain rows of every model are listed first."""
    output = tmp_path / "table.md"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu_throughput.py"), "--device", "cpu",
         "--models", "tiny", "--batches", "1", "--modes", "compile,fp32", "--budget-s", "0", "--output", str(output)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True, text=True, timeout=300,
    )
    rows = [line.split("|") for line in output.read_text().splitlines() if line.startswith("| tiny")]
    assert [row[2].strip() for row in rows] == ["fp32", "compile"]
    assert all("not run (budget)" in row[4] for row in rows)
