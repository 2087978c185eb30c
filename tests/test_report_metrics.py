"""Registered report metrics: one decorated function adds a column to every report file."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from gcpcolor import report_metrics
from gcpcolor.evaluation import evaluate_folders
from gcpcolor.report_metrics import REPORT_METRICS, register_metric


@pytest.fixture()
def two_photos(tmp_path):
    rng = np.random.default_rng(0)
    for stem in ("a", "b"):
        photo = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        for folder, pixels in (("truth", photo), ("res", photo // 2)):
            (tmp_path / folder).mkdir(exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / folder / f"{stem}.png")
    return tmp_path


@pytest.fixture()
def mean_red_metric():
    @register_metric("mean_red", column="mean red", heading="mean red ↑", places=1, of_truth=True)
    def mean_red(truth: np.ndarray, result: np.ndarray) -> float:
        return float(result[..., 0].mean())

    yield mean_red
    del REPORT_METRICS["mean_red"]


def test_the_built_in_metrics_are_registered_in_column_order():
    assert list(REPORT_METRICS)[:4] == ["psnr", "ssim", "lpips", "ab_hf"]
    assert REPORT_METRICS["lpips"].requires == "lpips" and REPORT_METRICS["ab_hf"].of_truth


def test_a_registered_metric_reaches_every_report_file(two_photos, mean_red_metric):
    report = evaluate_folders(two_photos / "truth", {"res": two_photos / "res"}, mode="none", fid=False, lpips=False)
    truth_red = np.mean([np.asarray(Image.open(two_photos / "truth" / f"{s}.png"))[..., 0].mean() for s in "ab"])
    assert report.method("res").means["mean_red"] == pytest.approx(truth_red / 2, abs=0.5)
    assert report.truth_means["mean_red"] == pytest.approx(truth_red)
    report.save(two_photos / "report")
    assert "mean red ↑" in (two_photos / "report" / "metrics.md").read_text()
    rows = list(csv.DictReader((two_photos / "report" / "metrics.csv").open()))
    assert float(rows[0]["mean red"]) == pytest.approx(report.method("res").means["mean_red"])
    data = json.loads((two_photos / "report" / "metrics.json").read_text())
    assert data["methods"]["res"]["mean_red"] == pytest.approx(report.method("res").means["mean_red"])
    assert data["truth"]["mean_red"] == pytest.approx(truth_red)
    assert data["per_image"]["res"]["a"]["mean_red"] >= 0


def test_a_metric_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_metric("psnr", column="x", heading="x", places=1)(lambda truth, result: 0.0)
    assert REPORT_METRICS["psnr"].compute is report_metrics._psnr
