"""benchmarks/contact_sheet.py end to end on tiny models: one column per model, and one per
reference photo for a model that follows one."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from benchmark_scripts import ROOT, benchmark_path
from gcpcolor.config import ColorizerConfig
from gcpcolor.model import GCPColorizationModel
from gcpcolor.pipeline import Colorizer

SCRIPT = benchmark_path("contact_sheet")


def test_sheet_has_a_column_per_model_and_per_reference(tmp_path):
    torch.manual_seed(0)
    Colorizer(GCPColorizationModel(ColorizerConfig.tiny(), "image")).save_pretrained(tmp_path / "guided")
    Colorizer.demo().save_pretrained(tmp_path / "demo")
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        gray = (np.random.default_rng(index).random((30, 40 + index)) * 255).astype(np.uint8)
        Image.fromarray(gray).save(photos / f"p{index}.png")
    red = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (220, 20, 20)).save(red)
    cell = 32

    def sheet(*args):
        output = tmp_path / "sheet.png"
        result = subprocess.run([sys.executable, str(SCRIPT), str(photos), str(output), "--cell", str(cell), *args],
                                capture_output=True, text=True, timeout=300, cwd=ROOT)
        return result, output

    result, output = sheet("--model", f"guided={tmp_path / 'guided'}", "--model", f"demo={tmp_path / 'demo'}",
                           "--reference", f"red={red}", "--columns", "1", "--keep", str(tmp_path / "kept"))
    assert result.returncode == 0, result.stderr
    assert "3 photos x 2 model(s)" in result.stdout
    with Image.open(output) as picture:
        width, height = picture.size
        pixels = np.asarray(picture.convert("RGB"), dtype=np.float64)
    assert width == 4 * cell  # input, two models, one reference
    assert height > 4 * cell  # a row of reference photos above the three photos
    # the reference photo itself is shown above its column, and every kept result is a file
    column = pixels[:, 3 * cell :]
    red_pixels = (column[..., 0] > 180) & (column[..., 1] < 80) & (column[..., 2] < 80)
    assert red_pixels.sum() >= 0.8 * cell * cell
    assert sorted(p.name for p in (tmp_path / "kept" / "red").iterdir()) == ["p0.png", "p1.png", "p2.png"]

    refused, _ = sheet("--model", f"demo={tmp_path / 'demo'}", "--reference", f"red={red}")
    assert refused.returncode == 2 and "cannot follow a reference photo" in refused.stderr
