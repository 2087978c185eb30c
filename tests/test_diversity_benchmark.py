"""benchmarks/diversity.py: its distance against a hand computation, and the script end to end
on the tiny demo model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from benchmark_scripts import ROOT, benchmark_path, load_benchmark

SCRIPT = benchmark_path("diversity")
diversity = load_benchmark("diversity")


def test_ab_of_matches_skimage():
    rgb = np.random.default_rng(0).random((6, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(diversity.ab_of(rgb), rgb2lab(rgb).transpose(2, 0, 1)[1:], atol=0.05)


def test_mean_pairwise_ab_distance_by_hand():
    zero = np.zeros((2, 4, 4))
    shifted = zero.copy()
    shifted[0] += 3.0
    shifted[1] += 4.0  # 5 units away from zero everywhere
    assert diversity.mean_pairwise_ab_distance([zero, shifted]) == pytest.approx(5.0)
    assert diversity.mean_pairwise_ab_distance([zero, zero, shifted]) == pytest.approx((0 + 5 + 5) / 3)
    with pytest.raises(ValueError):
        diversity.mean_pairwise_ab_distance([zero])


def test_script_prints_its_table_for_a_model(tmp_path, demo_colorizer):
    demo_colorizer.save_pretrained(tmp_path / "model")
    photos = tmp_path / "photos"
    photos.mkdir()
    gray = (np.random.default_rng(1).random((40, 30)) * 255).astype(np.uint8)
    Image.fromarray(gray).save(photos / "a.png")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "model"), str(photos), "--samples", "2", "--classes", "2"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("1 photos of") and len(lines) == 6
    values = [float(line.strip("|").split("|")[1]) for line in lines[3:]]
    assert all(value >= 0 for value in values)


def test_script_measures_how_far_references_move_an_image_guided_model(tmp_path):
    import torch

    from gcpcolor.config import ColorizerConfig
    from gcpcolor.model import GCPColorizationModel
    from gcpcolor.pipeline import Colorizer

    torch.manual_seed(0)
    Colorizer(GCPColorizationModel(ColorizerConfig.tiny(), "image")).save_pretrained(tmp_path / "model")
    photos, references = tmp_path / "photos", tmp_path / "references"
    photos.mkdir()
    references.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray((rng.random((40, 30, 3)) * 255).astype(np.uint8)).save(photos / "a.png")
    for name, colour in [("red.png", (220, 30, 30)), ("blue.png", (30, 40, 220))]:
        Image.new("RGB", (20, 20), colour).save(references / name)
    command = [sys.executable, str(SCRIPT), str(tmp_path / "model"), str(photos), "--samples", "2", "--classes", "2",
               "--references", str(references), "--own-reference"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    rows = {line.strip("|").split("|")[0].strip(): float(line.strip("|").split("|")[1])
            for line in result.stdout.strip().splitlines()[3:]}
    assert rows["ab distance between 2 references"] > 0
    assert rows["ab error to the truth, automatic"] > 0 and rows["ab error to the truth, own colours as reference"] > 0

    demo = tmp_path / "demo"
    Colorizer.demo().save_pretrained(demo)  # guidance "features": no reference
    refused = subprocess.run([*command[:2], str(demo), *command[3:]], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert refused.returncode == 2 and "cannot follow a reference photo" in refused.stderr
