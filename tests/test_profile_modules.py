"""benchmarks/profile_modules.py: per-stage accounting of time and of dense floating-point work."""

from __future__ import annotations

import numpy as np
from torch.utils.flop_counter import FlopCounterMode

from benchmark_scripts import load_benchmark


def _profile_modules():
    return load_benchmark("profile_modules")


def test_stage_gigaflops_add_up_to_the_whole_colorization():
    profile_modules = _profile_modules()
    colorizer, classes = profile_modules.build_colorizer("tiny")
    image = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    gigaflops = profile_modules.gigaflops_per_stage(colorizer, classes, image)

    with FlopCounterMode(display=False) as mode:
        colorizer.colorize_batch([image], class_ids=classes)
    assert np.isclose(gigaflops["total"], mode.get_total_flops() * 1e-9, rtol=1e-9)
    stages = {key: value for key, value in gigaflops.items() if key != "total"}
    assert np.isclose(sum(stages.values()), gigaflops["total"], rtol=1e-9)
    for stage in ("BigGAN generator", "correspondence", "warp", "colorization net"):
        assert stages[stage] > 0, stage
    assert abs(stages["other"]) < 0.01 * gigaflops["total"]  # the dense work happens inside the listed stages

    table = profile_modules.markdown_table("tiny", profile_modules.profile(colorizer, classes, image, 1)[0], gigaflops)
    assert "| GFLOP | GFLOP/s |" in table
    rows = [line for line in table.splitlines()[4:] if line.startswith("| ")]
    assert rows[-1].startswith("| **total** |") and all(len(row.split("|")) == 7 for row in rows)
