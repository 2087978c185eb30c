"""The evaluation report: per-method summaries and the files written from them (metrics.md,
metrics.csv, metrics.json, grid.png, colorfulness_hist.png). The columns after the colourfulness
ones are the registered per-image metrics of `report_metrics.py`, in registration order."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import EvaluationError
from .image_writing import save_image
from .metrics import COLORFULNESS_VARIANTS
from .report_figures import colorfulness_histogram, comparison_grid
from .report_metrics import REPORT_METRICS
from .weights import write_atomically

PathLike = str | os.PathLike
TRUTH_LABEL = "ground truth"
REPORT_FILES = ("metrics.md", "metrics.csv", "metrics.json", "grid.png", "colorfulness_hist.png")


@dataclass
class MethodSummary:
    """Dataset-level metrics of one method; None where a metric was not computed."""

    name: str
    source: str | None
    images: int
    colorfulness: dict[str, float]
    delta_colorfulness: dict[str, float]
    #: the mean of each registered per-image metric (`report_metrics.REPORT_METRICS`) by name
    means: dict[str, float | None] = field(default_factory=dict)
    fid: float | None = None
    identical_images: int = 0  # PSNR = inf, left out of the PSNR mean
    kid: float | None = None
    #: the central 95% of its FID over paired bootstrap resamples of the photos (small sets only)
    fid_interval: tuple[float, float] | None = None

    @property
    def psnr(self) -> float | None:
        return self.means.get("psnr")

    @property
    def ssim(self) -> float | None:
        return self.means.get("ssim")


@dataclass
class EvaluationSettings:
    size: int
    mode: str
    preprocessing: str
    colorfulness_variant: str
    result_suffix: str
    fid: str  # how FID was computed, or why not
    inception_variant: str | None = None
    inception_file: str | None = None
    lpips: str = "not requested"


@dataclass
class EvaluationReport:
    truth_dir: str
    settings: EvaluationSettings
    keys: list[str]
    truth_colorfulness: dict[str, float]
    methods: list[MethodSummary]
    #: per_image["truth"][key] and per_image[method][key]: metric name -> value
    per_image: dict[str, dict[str, dict[str, float | None]]]
    notes: list[str]
    counts: dict[str, Any]
    #: The sampled rows of grid.png: (key, one uint8 thumbnail per column of `grid_columns`).
    grid_rows: list[tuple[str, list[np.ndarray]]] = field(default_factory=list, repr=False)
    grid_columns: list[str] = field(default_factory=list)
    #: the ground truth's own mean of the registered metrics that report one (`of_truth`)
    truth_means: dict[str, float | None] = field(default_factory=dict)

    @property
    def truth_ab_high_frequency(self) -> float | None:
        return self.truth_means.get("ab_hf")

    def method(self, name: str) -> MethodSummary:
        for summary in self.methods:
            if summary.name == name:
                return summary
        raise KeyError(name)

    # ----------------------------------------------------------------- text forms
    def _table(self) -> tuple[list[str], list[list[Any]]]:
        variant = self.settings.colorfulness_variant
        header = ["method", "images", "FID", "KID x1000", f"colorfulness ({variant})", "delta colorfulness"]
        header += [metric.column for metric in REPORT_METRICS.values()]
        rows: list[list[Any]] = [
            [m.name, m.images, m.fid, None if m.kid is None else 1000 * m.kid, m.colorfulness[variant],
             m.delta_colorfulness[variant], *(m.means.get(name) for name in REPORT_METRICS)]
            for m in self.methods
        ]
        rows.append([TRUTH_LABEL, len(self.keys), None, None, self.truth_colorfulness[variant], None,
                     *(self.truth_means.get(name) for name in REPORT_METRICS)])
        return header, rows

    def to_markdown(self) -> str:
        _, rows = self._table()
        variant = self.settings.colorfulness_variant
        headings = ["Method", "Images", "FID ↓", "KID×10³ ↓", "Colorfulness ↑", "ΔColorful ↓"]
        headings += [metric.heading for metric in REPORT_METRICS.values()]
        lines = [
            "# Colorization metrics",
            "",
            f"- ground truth: `{self.truth_dir}`, {len(self.keys)} image(s) evaluated",
            f"- preprocessing: {self.settings.preprocessing} (`--size {self.settings.size} --mode {self.settings.mode}`)",
            f"- colourfulness: Hasler & Süsstrunk, **{variant}** variant "
            f"({'|rg|, |yb| as in the colorization literature' if variant == 'absolute' else 'signed rg, yb as in the original paper'})",
            f"- FID: {self.settings.fid}",
            f"- LPIPS: {self.settings.lpips}",
            "- KID: unbiased polynomial-kernel MMD² on the same Inception features (×10³)",
            "- ab HF share: share of the CIELAB a/b spectral power above 0.25 cycles/pixel (checkerboards and "
            "colour noise raise it; compare with the ground truth's)",
            "",
            "| " + " | ".join(headings) + " |",
            "|---|" + "---:|" * (len(headings) - 1),
        ]
        digits = [None, None, 2, 2, 2, 2, *(metric.places for metric in REPORT_METRICS.values())]
        for row in rows:
            cells = [_format(value, places) for value, places in zip(row, digits)]
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        header, rows = self._table()
        header = header + [f"colorfulness_{v}" for v in COLORFULNESS_VARIANTS]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        extra = {m.name: [m.colorfulness[v] for v in COLORFULNESS_VARIANTS] for m in self.methods}
        extra[TRUTH_LABEL] = [self.truth_colorfulness[v] for v in COLORFULNESS_VARIANTS]
        for row in rows:
            writer.writerow(["" if value is None else value for value in row + extra[row[0]]])
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report as JSON-ready data (non-finite numbers become null)."""
        methods = {}
        for m in self.methods:
            methods[m.name] = {
                "source": m.source,
                "images": m.images,
                "fid": m.fid,
                "kid": m.kid,
                "fid_interval_95": None if m.fid_interval is None else list(m.fid_interval),
                "colorfulness": m.colorfulness[self.settings.colorfulness_variant],
                "delta_colorfulness": m.delta_colorfulness[self.settings.colorfulness_variant],
                **{f"colorfulness_{v}": m.colorfulness[v] for v in COLORFULNESS_VARIANTS},
                **{f"delta_colorfulness_{v}": m.delta_colorfulness[v] for v in COLORFULNESS_VARIANTS},
                **{metric.json_key: m.means.get(name) for name, metric in REPORT_METRICS.items()},
                "psnr_identical_images": m.identical_images,
            }
        data = {
            "truth_dir": self.truth_dir,
            "settings": vars(self.settings),
            "counts": self.counts,
            "truth": {
                **{f"colorfulness_{v}": self.truth_colorfulness[v] for v in COLORFULNESS_VARIANTS},
                **{
                    metric.json_key: self.truth_means.get(name)
                    for name, metric in REPORT_METRICS.items()
                    if metric.of_truth
                },
            },
            "methods": methods,
            "notes": self.notes,
            "grid_rows": [key for key, _ in self.grid_rows],
            "per_image": self.per_image,
        }
        return _finite_or_none(data)

    # ----------------------------------------------------------------- files
    def grid_image(self, cell: int = 128) -> Image.Image:
        return comparison_grid(self.grid_columns, [images for _, images in self.grid_rows], cell)

    def histogram_image(self) -> Image.Image:
        variant = self.settings.colorfulness_variant
        key = f"cf_{variant}"
        series = {TRUTH_LABEL: [self.per_image["truth"][k][key] for k in self.keys]}
        for m in self.methods:
            series[m.name] = [self.per_image[m.name][k][key] for k in self.keys]
        return colorfulness_histogram(series, f"colourfulness ({variant})")

    def save(self, output_dir: PathLike, overwrite: bool = False) -> list[Path]:
        """Write the report files into `output_dir` atomically; refuses to replace them unless `overwrite`."""
        directory = Path(output_dir)
        check_report_target(directory, overwrite)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in (
            ("metrics.md", self.to_markdown()),
            ("metrics.csv", self.to_csv()),
            ("metrics.json", json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"),
        ):
            write_atomically(directory / name, lambda temporary, text=text: temporary.write_text(text, encoding="utf-8"))
            written.append(directory / name)
        if self.grid_rows:
            save_image(self.grid_image(), directory / "grid.png", overwrite=True)
            written.append(directory / "grid.png")
        save_image(self.histogram_image(), directory / "colorfulness_hist.png", overwrite=True)
        written.append(directory / "colorfulness_hist.png")
        return written


def check_report_target(output_dir: PathLike, overwrite: bool) -> None:
    """Raise `EvaluationError` if a report would replace existing files without `overwrite`."""
    directory = Path(output_dir)
    if directory.exists() and not directory.is_dir():
        raise EvaluationError(f"{directory}: exists and is not a folder")
    existing = [name for name in REPORT_FILES if (directory / name).exists()]
    if existing and not overwrite:
        raise EvaluationError(f"{directory / existing[0]}: a report already exists (pass --overwrite to replace it)")


def check_results_target(results_dir: PathLike, overwrite: bool) -> None:
    """Raise `EvaluationError` if colorizing into `results_dir` would replace results without `overwrite`."""
    directory = Path(results_dir)
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise EvaluationError(f"{directory}: results folder is not empty (pass --overwrite to replace its results)")


def _format(value: Any, places: int | None) -> str:
    if value is None:
        return "–"
    if places is None or isinstance(value, str):
        return str(value)
    return "inf" if math.isinf(value) else f"{value:.{places}f}"


def _finite_or_none(value: Any) -> Any:
    # JSON has no inf/nan; null keeps the file readable by every parser.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value
