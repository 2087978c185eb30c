"""benchmarks/calibrate_temperature.py end to end on a tiny ab-bin model and two photos."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import torch
from PIL import Image
from skimage.color import rgb2lab

from gcpcolor.config import ColorizationConfig, ColorizerConfig
from gcpcolor.model import GCPColorizationModel
from gcpcolor.pipeline import Colorizer

from benchmark_scripts import ROOT, benchmark_path, load_benchmark

SCRIPT = benchmark_path("calibrate_temperature")
calibrate_temperature = load_benchmark("calibrate_temperature")
TEMPERATURES = calibrate_temperature.TEMPERATURES


def mean_ab(image: np.ndarray) -> np.ndarray:
    return rgb2lab(image / 255.0)[..., 1:].reshape(-1, 2).mean(axis=0)


def test_calibration_table_has_every_temperature_and_the_photos_cast(tmp_path):
    torch.manual_seed(0)
    config = dataclasses.replace(ColorizerConfig.tiny(), colorization=ColorizationConfig(type="semantic", base_channels=8))
    Colorizer(GCPColorizationModel(config)).save_pretrained(tmp_path / "model")
    photos = tmp_path / "photos"
    photos.mkdir()
    orange = np.zeros((40, 50, 3), dtype=np.uint8)
    orange[...] = (230, 140, 40)
    Image.fromarray(orange).save(photos / "orange.png")
    Image.fromarray(orange[..., ::-1].copy()).save(photos / "blue.png")

    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "model"),
         str(photos), "--count", "2", "--size", "64"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    header, *table = result.stdout.strip().splitlines()
    assert header.startswith("2 photos from")
    truth_ab = np.mean([mean_ab(np.asarray(Image.open(photos / name).convert("RGB"), dtype=np.float64))
                        for name in ("blue.png", "orange.png")], axis=0)
    assert f"mean a* {truth_ab[0]:.2f}, b* {truth_ab[1]:.2f}" in header
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert [float(row[0]) for row in rows] == list(TEMPERATURES)
    for row in rows:
        assert len(row) == 6
        colourfulness, ratio = float(row[1]), float(row[2])
        assert colourfulness >= 0 and ratio >= 0
        assert all(-128 <= float(value) <= 128 for value in row[4:])
