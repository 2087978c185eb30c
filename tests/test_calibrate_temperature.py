"""benchmarks/calibrate_temperature.py end to end on a tiny ab-bin model and two photos."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

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


def calibrate_tiny_model(tmp_path, colours: dict[str, tuple[int, int, int]], *options: str) -> tuple[str, Path]:
    """Run the script on a tiny untrained ab-bin model and flat photos of `colours` (name → RGB);
    returns its output and the photos' folder."""
    torch.manual_seed(0)
    config = dataclasses.replace(ColorizerConfig.tiny(), colorization=ColorizationConfig(type="semantic", base_channels=8))
    Colorizer(GCPColorizationModel(config)).save_pretrained(tmp_path / "model")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, rgb in colours.items():
        Image.fromarray(np.full((40, 50, 3), rgb, dtype=np.uint8)).save(photos / f"{name}.png")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "model"), str(photos), "--count", str(len(colours)),
         "--size", "64", *options],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, photos


def test_calibration_table_has_every_temperature_and_the_photos_cast(tmp_path):
    stdout, photos = calibrate_tiny_model(tmp_path, {"orange": (230, 140, 40), "blue": (40, 140, 230)})
    header, *table = stdout.strip().splitlines()
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


def test_a_tilt_sweep_prints_a_table_per_tilt_and_picks_the_tilt_by_its_mean_a(tmp_path):
    text, _ = calibrate_tiny_model(tmp_path, {"skin": (200, 150, 120)},
                                   "--a-tilts", "0", "-0.05", "--temperatures", "0.3", "0.6")
    assert "a* tilt 0\n" in text and "a* tilt -0.05\n" in text
    summary = text[text.index("| a* tilt |"):].splitlines()
    rows = {float(cells[0]): (float(cells[1]), float(cells[3]))
            for cells in ([c.strip() for c in line.strip("|").split("|")] for line in summary[2:4])}
    assert set(rows) == {0.0, -0.05}
    assert all(temperature in (0.3, 0.6) for temperature, _ in rows.values())
    # the stronger negative tilt gives the lower mean a*
    assert rows[-0.05][1] < rows[0.0][1]
    truth_a = float(summary[0].split("own: ")[1].split(")")[0])
    best = min(rows, key=lambda tilt: abs(rows[tilt][1] - truth_a))
    assert text.strip().endswith(f"rule: a_tilt {best:g}, temperature {rows[best][0]:.2f}")
