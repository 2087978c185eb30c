"""The paper's quantitative protocol on folders: results of one or more methods vs ground truth.

    from gcpcolor.evaluation import evaluate_folders
    report = evaluate_folders("val_256/", {"ours": "out/ours", "baseline": "out/base"})
    report.save("eval/")          # metrics.md / .csv / .json, grid.png, colorfulness_hist.png
    print(report.to_markdown())

Results pair with ground truth by their path inside the folder without extension, with an
optional `_color` suffix (what `gcpcolor colorize` writes). Both sides go through the same
preprocessing (default: resize to 256², the paper's working size) and are rounded to 8 bit, as
if saved; then PSNR, SSIM, colourfulness, LPIPS (when available) and Inception features are
computed one image at a time, so memory does not grow with the folder.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .errors import MissingWeightsError
from .image_io import (
    ImageInputError,
    find_images,
    load_image,
    load_pixels,
    output_path,
    pixels_to_float_rgb,
    save_image,
)
from .metrics import (
    COLORFULNESS_VARIANTS,
    DEFAULT_COLORFULNESS_VARIANT,
    ColorfulnessVariant,
    FeatureStatistics,
    LPIPSMetric,
    ab_high_frequency_share,
    colorfulness_all,
    delta_colorfulness,
    psnr,
    ssim,
)
from .weights import write_atomically

if TYPE_CHECKING:
    import torch

    from .models.inception import InceptionFeatures
    from .pipeline import Colorizer

PathLike = str | os.PathLike
PREPROCESS_MODES = ("resize", "center-crop", "none")
DEFAULT_SIZE = 256
#: `gcpcolor colorize`'s default `--suffix`: results may be named <stem>.ext or <stem>_color.ext.
RESULT_SUFFIX = "_color"
#: The built-in method: the gray input itself (L only), the floor any colorization should beat.
GRAY_METHOD = "gray"
TRUTH_LABEL = "ground truth"
REPORT_FILES = ("metrics.md", "metrics.csv", "metrics.json", "grid.png", "colorfulness_hist.png")
# Below this many images FID's covariance is rank-deficient (2048 features): values are biased.
_FID_RELIABLE_COUNT = 2048
_SHOWN_NAMES = 3


class EvaluationError(Exception):
    """An expected problem with the inputs or outputs of an evaluation; the message is one line."""


# --------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Preprocessing:
    """How results and ground truth are brought to a common size before the metrics."""

    size: int = DEFAULT_SIZE
    mode: str = "resize"

    def __post_init__(self) -> None:
        if self.mode not in PREPROCESS_MODES:
            raise ValueError(f"preprocessing mode must be one of {PREPROCESS_MODES}, got {self.mode!r}")
        if self.mode != "none" and self.size < 11:
            raise ValueError(f"size must be at least 11 pixels (the SSIM window), got {self.size}")

    def describe(self) -> str:
        if self.mode == "resize":
            return f"resized to {self.size}x{self.size} (bicubic), rounded to 8 bit"
        if self.mode == "center-crop":
            return f"short side resized to {self.size} (bicubic), centre {self.size}x{self.size} crop, rounded to 8 bit"
        return "original size (result and ground truth must match), rounded to 8 bit"

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """Float RGB in [0, 1] -> uint8 RGB (H, W, 3) ready for the metrics."""
        image = Image.fromarray(np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8))
        if self.mode == "resize":
            image = image.resize((self.size, self.size), Image.Resampling.BICUBIC)
        elif self.mode == "center-crop":
            width, height = image.size
            scale = self.size / min(width, height)
            new_w, new_h = max(self.size, round(width * scale)), max(self.size, round(height * scale))
            image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
            left, top = (new_w - self.size) // 2, (new_h - self.size) // 2
            image = image.crop((left, top, left + self.size, top + self.size))
        return np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one


def gray_version(pixels: np.ndarray) -> np.ndarray:
    """The colour-free version of a photo: its CIELAB L with a = b = 0, as RGB pixels (uint8 for
    an 8-bit photo, else uint16), made by the same code that composes colorized results."""
    from .image_processor import ImageProcessor

    return ImageProcessor().gray_rendering(pixels)


# --------------------------------------------------------------------------- pairing
def _pair_key(relative: Path) -> str:
    return relative.with_suffix("").as_posix()


def _examples(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_SHOWN_NAMES])
    return shown + (", ..." if len(names) > _SHOWN_NAMES else "")


def _images_of(folder: Path, role: str) -> list[tuple[Path, Path]]:
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: no such folder ({role})")
    try:
        return find_images([folder])
    except ImageInputError as exc:
        raise EvaluationError(f"{exc} ({role})") from None


@dataclass
class Pairing:
    """Which files are compared: `keys` are the images every method has, in order."""

    keys: list[str]
    truth: dict[str, Path]
    methods: dict[str, dict[str, Path]]
    notes: list[str] = field(default_factory=list)


def pair_folders(truth_dir: PathLike, methods: Mapping[str, PathLike], suffix: str = RESULT_SUFFIX) -> Pairing:
    """Match each method's results to ground-truth files by path without extension.

    A result `sub/a_color.png` (with `suffix`) or `sub/a.jpg` pairs with truth `sub/a.*`; an
    exact name wins over a suffixed one. Files that pair with nothing are reported in `notes`;
    the evaluation runs on the images that every method has.
    """
    notes: list[str] = []
    truth: dict[str, Path] = {}
    duplicates: list[str] = []
    for path, relative in _images_of(Path(truth_dir), "ground truth"):
        key = _pair_key(relative)
        if key in truth:
            duplicates.append(relative.as_posix())
        else:
            truth[key] = path
    if duplicates:
        notes.append(f"ground truth: {len(duplicates)} file(s) share a name with another and were ignored: "
                     f"{_examples(duplicates)}")

    paired: dict[str, dict[str, Path]] = {}
    for name, folder in methods.items():
        matches: dict[str, tuple[bool, Path]] = {}  # key -> (matched without the suffix, path)
        unmatched: list[str] = []
        for path, relative in _images_of(Path(folder), f"results of {name}"):
            exact = _pair_key(relative)
            stripped = exact[: -len(suffix)] if suffix and exact.endswith(suffix) and len(exact) > len(suffix) else None
            if exact in truth:
                key, suffixed = exact, False
            elif stripped is not None and stripped in truth:
                key, suffixed = stripped, True
            else:
                unmatched.append(relative.as_posix())
                continue
            if key not in matches or (matches[key][0] and not suffixed):
                matches[key] = (suffixed, path)
        paired[name] = {key: path for key, (_, path) in matches.items()}
        if unmatched:
            notes.append(f"{name}: {len(unmatched)} result file(s) match no ground-truth file: {_examples(unmatched)}")
        missing = set(truth) - set(paired[name])
        if missing:
            notes.append(f"{name}: {len(missing)} ground-truth image(s) have no result: {_examples(missing)}")

    keys = set(truth)
    for name, matched in paired.items():
        if not matched:
            raise EvaluationError(
                f"nothing pairs: no file in {methods[name]} ({name}) matches a file in {truth_dir} by name "
                f"(results are named <stem>.<ext> or <stem>{suffix}.<ext>)"
            )
        keys &= set(matched)
    if not keys:
        raise EvaluationError(f"nothing pairs: no ground-truth image in {truth_dir} has a result from every method")
    if len(methods) > 1 and any(len(matched) > len(keys) for matched in paired.values()):
        notes.append(f"evaluating the {len(keys)} image(s) that every method has")
    return Pairing(sorted(keys), truth, paired, notes)


# --------------------------------------------------------------------------- the report
@dataclass
class MethodSummary:
    """Dataset-level metrics of one method; None where a metric was not computed."""

    name: str
    source: str | None
    images: int
    colorfulness: dict[str, float]
    delta_colorfulness: dict[str, float]
    psnr: float | None
    ssim: float
    fid: float | None = None
    lpips: float | None = None
    identical_images: int = 0  # PSNR = inf, left out of the PSNR mean
    kid: float | None = None
    ab_high_frequency: float | None = None  # mean share of a/b power above 0.25 cycles/pixel


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
    truth_ab_high_frequency: float | None = None

    def method(self, name: str) -> MethodSummary:
        for summary in self.methods:
            if summary.name == name:
                return summary
        raise KeyError(name)

    # ----------------------------------------------------------------- text forms
    def _table(self) -> tuple[list[str], list[list[Any]]]:
        variant = self.settings.colorfulness_variant
        header = ["method", "images", "FID", "KID x1000", f"colorfulness ({variant})", "delta colorfulness", "PSNR",
                  "SSIM", "LPIPS", "ab high-frequency share"]
        rows: list[list[Any]] = [
            [m.name, m.images, m.fid, None if m.kid is None else 1000 * m.kid, m.colorfulness[variant],
             m.delta_colorfulness[variant], m.psnr, m.ssim, m.lpips, m.ab_high_frequency]
            for m in self.methods
        ]
        rows.append([TRUTH_LABEL, len(self.keys), None, None, self.truth_colorfulness[variant], None, None, None, None,
                     self.truth_ab_high_frequency])
        return header, rows

    def to_markdown(self) -> str:
        _, rows = self._table()
        variant = self.settings.colorfulness_variant
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
            "| Method | Images | FID ↓ | KID×10³ ↓ | Colorfulness ↑ | ΔColorful ↓ | PSNR ↑ | SSIM ↑ | LPIPS ↓ | ab HF share |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        digits = [None, None, 2, 2, 2, 2, 2, 4, 4, 4]
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
                "ab_high_frequency_share": m.ab_high_frequency,
                "colorfulness": m.colorfulness[self.settings.colorfulness_variant],
                "delta_colorfulness": m.delta_colorfulness[self.settings.colorfulness_variant],
                **{f"colorfulness_{v}": m.colorfulness[v] for v in COLORFULNESS_VARIANTS},
                **{f"delta_colorfulness_{v}": m.delta_colorfulness[v] for v in COLORFULNESS_VARIANTS},
                "psnr": m.psnr,
                "psnr_identical_images": m.identical_images,
                "ssim": m.ssim,
                "lpips": m.lpips,
            }
        data = {
            "truth_dir": self.truth_dir,
            "settings": vars(self.settings),
            "counts": self.counts,
            "truth": {
                **{f"colorfulness_{v}": self.truth_colorfulness[v] for v in COLORFULNESS_VARIANTS},
                "ab_high_frequency_share": self.truth_ab_high_frequency,
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


# --------------------------------------------------------------------------- pictures
_PALETTE = [(0, 0, 0), (128, 128, 128), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
            (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207)]


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def comparison_grid(columns: Sequence[str], rows: Sequence[Sequence[np.ndarray]], cell: int = 128) -> Image.Image:
    """A white sheet with a header of column names and one row of thumbnails per sample."""
    header = 20
    sheet = Image.new("RGB", (cell * len(columns), header + cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for index, name in enumerate(columns):
        label = name if len(name) <= cell // 7 else name[: cell // 7 - 1] + "…"
        draw.text((index * cell + 4, 4), label, fill="black", font=font)
    for row, images in enumerate(rows):
        for index, pixels in enumerate(images):
            thumbnail = ImageOps.contain(Image.fromarray(pixels), (cell, cell), Image.Resampling.BICUBIC)
            offset = ((cell - thumbnail.width) // 2, (cell - thumbnail.height) // 2)
            sheet.paste(thumbnail, (index * cell + offset[0], header + row * cell + offset[1]))
    return sheet


def colorfulness_histogram(series: Mapping[str, Sequence[float]], label: str, bins: int = 20) -> Image.Image:
    """Step outlines of per-image value histograms, one per series, drawn with PIL alone."""
    width, height, left, right, top, bottom = 760, 420, 60, 190, 30, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for seq in series.values() for v in seq if math.isfinite(v)]
    upper = max(values, default=1.0) * 1.05 or 1.0
    edges = np.linspace(0.0, upper, bins + 1)
    fractions = {name: np.histogram(seq, bins=edges)[0] / max(len(seq), 1) for name, seq in series.items()}
    peak = max((float(f.max()) for f in fractions.values()), default=1.0) or 1.0

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = _font()
    draw.text((left, 8), f"Per-image {label}", fill="black", font=font)
    draw.rectangle((left, top, left + plot_w, top + plot_h), outline="black")
    for tick in np.arange(0.0, upper, _tick_step(upper)):
        x = left + plot_w * tick / upper
        draw.line((x, top + plot_h, x, top + plot_h + 4), fill="black")
        draw.text((x - 10, top + plot_h + 8), f"{tick:.0f}", fill="black", font=font)
    draw.text((left + plot_w // 2 - 40, height - 18), label, fill="black", font=font)
    for fraction in (0.0, peak):
        y = top + plot_h - plot_h * fraction / peak
        draw.text((8, y - 6), f"{100 * fraction:.0f}%", fill="black", font=font)

    def to_xy(x_value: float, fraction: float) -> tuple[float, float]:
        return left + plot_w * x_value / upper, top + plot_h - plot_h * fraction / peak

    # Drawn last to first so the first series (the ground truth) stays visible on top.
    for index, (name, fraction) in reversed(list(enumerate(fractions.items()))):
        colour = _PALETTE[index % len(_PALETTE)]
        points = [to_xy(edges[0], 0.0)]
        for b, value in enumerate(fraction):
            points += [to_xy(edges[b], float(value)), to_xy(edges[b + 1], float(value))]
        points.append(to_xy(edges[-1], 0.0))
        draw.line(points, fill=colour, width=2)
        y = top + 16 * index
        draw.rectangle((left + plot_w + 12, y + 2, left + plot_w + 22, y + 12), fill=colour)
        mean = float(np.mean(series[name])) if len(series[name]) else float("nan")
        draw.text((left + plot_w + 28, y), f"{name[:18]} (mean {mean:.1f})", fill="black", font=font)
    return image


def _tick_step(upper: float) -> float:
    """A 1, 2 or 5 times a power of ten step giving about five ticks up to `upper`."""
    rough = upper / 5
    power = 10.0 ** math.floor(math.log10(rough))
    return next(power * m for m in (1, 2, 5, 10) if power * m >= rough)


def _grid_sample(count: int, rows: int) -> set[int]:
    # Evenly spaced over the sorted names: deterministic, and spread over the whole folder.
    if rows <= 0 or count == 0:
        return set()
    return {int(i) for i in np.linspace(0, count - 1, min(rows, count)).round()}


# --------------------------------------------------------------------------- evaluation
class _FeatureSet:
    """Inception statistics of one image set, fed in batches to bound memory and time."""

    def __init__(self, model: "InceptionFeatures", batch_size: int) -> None:
        from .models.inception import FEATURE_DIMS

        self.model = model
        self.batch_size = batch_size
        self.pending: list["torch.Tensor"] = []
        self.statistics = FeatureStatistics(FEATURE_DIMS, keep_features=True)

    def add(self, pixels: np.ndarray) -> None:
        import torch

        device = self.model.mean.device
        tensor = torch.from_numpy(pixels).to(device).permute(2, 0, 1)[None].float() / 255.0
        self.pending.append(self.model.resize(tensor))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        import torch

        if self.pending:
            features = self.model(torch.cat(self.pending))
            self.statistics.update(features.double().cpu().numpy())
            self.pending = []


def _load_inception(fid: bool | None, weights: PathLike | None, device: "torch.device",
                    notes: list[str]) -> tuple["InceptionFeatures | None", str]:
    """The Inception network and a line saying how FID is computed, or None and why not."""
    if fid is False:
        return None, "not computed (--no-fid)"
    from .models.inception import load_inception

    try:
        model = load_inception(weights, device=device)
    except MissingWeightsError as exc:
        reason = str(exc)
    else:
        what = {
            "tf-fid": "the TF-FID network (inception-2015-12-05, TorchScript)",
            "pytorch-fid": "pytorch-fid's port of the TF-FID network",
            "torchvision": "torchvision's Inception-v3 (not comparable with published FIDs)",
        }[model.variant]
        return model, f"Inception-v3 pool3 (2048-d), {what}: {model.source}"
    if fid or weights is not None:  # naming a weight file asks for FID as much as --fid does
        raise EvaluationError(f"FID was requested but cannot be computed: {reason}")
    notes.append(f"FID skipped: {reason}")
    return None, "skipped (see notes)"


def _load_lpips(device: "torch.device", notes: list[str]) -> tuple[LPIPSMetric | None, str]:
    loaded = LPIPSMetric.load(device)
    if isinstance(loaded, str):
        notes.append(loaded)
        return None, "unavailable (see notes)"
    return loaded, "AlexNet LPIPS v0.1 (lpips package), inputs scaled to [-1, 1]"


def _scores(truth: np.ndarray, result: np.ndarray, lpips_metric: LPIPSMetric | None) -> dict[str, float | None]:
    scores: dict[str, float | None] = {
        "psnr": psnr(truth, result), "ssim": ssim(truth, result), "ab_hf": ab_high_frequency_share(result)
    }
    scores.update({f"cf_{v}": value for v, value in colorfulness_all(result).items()})
    if lpips_metric is not None:
        scores["lpips"] = lpips_metric(truth, result)
    return scores


def _summary(name: str, source: PathLike | None, scores: list[dict[str, Any]],
             truth_scores: list[dict[str, Any]], fid_value: float | None, kid_value: float | None = None) -> MethodSummary:
    finite_psnr = [s["psnr"] for s in scores if math.isfinite(s["psnr"])]
    cf = {v: [s[f"cf_{v}"] for s in scores] for v in COLORFULNESS_VARIANTS}
    truth_cf = {v: [s[f"cf_{v}"] for s in truth_scores] for v in COLORFULNESS_VARIANTS}
    return MethodSummary(
        name=name,
        source=None if source is None else str(source),
        images=len(scores),
        colorfulness={v: float(np.mean(cf[v])) for v in COLORFULNESS_VARIANTS},
        delta_colorfulness={v: delta_colorfulness(cf[v], truth_cf[v]) for v in COLORFULNESS_VARIANTS},
        psnr=float(np.mean(finite_psnr)) if finite_psnr else None,
        ssim=float(np.mean([s["ssim"] for s in scores])),
        fid=fid_value,
        lpips=float(np.mean([s["lpips"] for s in scores])) if "lpips" in scores[0] else None,
        identical_images=len(scores) - len(finite_psnr),
        kid=kid_value,
        ab_high_frequency=float(np.mean([s["ab_hf"] for s in scores])),
    )


def _check_sizes(raw: Mapping[str, np.ndarray], truth: np.ndarray, sources: Mapping[str, Path]) -> None:
    for name, source in sources.items():
        if raw[name].shape != truth.shape:
            raise EvaluationError(
                f"{source}: {raw[name].shape[1]}x{raw[name].shape[0]} but the ground truth is "
                f"{truth.shape[1]}x{truth.shape[0]}; use --mode resize or center-crop"
            )


def evaluate_folders(
    truth_dir: PathLike,
    methods: Mapping[str, PathLike],
    *,
    include_gray: bool = False,
    size: int = DEFAULT_SIZE,
    mode: str = "resize",
    colorfulness_variant: ColorfulnessVariant = DEFAULT_COLORFULNESS_VARIANT,
    fid: bool | None = None,
    inception_weights: PathLike | None = None,
    lpips: bool = True,
    result_suffix: str = RESULT_SUFFIX,
    batch_size: int = 16,
    device: str = "auto",
    grid_rows: int = 8,
    progress: bool = False,
) -> EvaluationReport:
    """Evaluate each method's result folder against `truth_dir` with the paper's metrics.

    `fid`: None computes FID when Inception weights are found (else a note says why not); True,
    or an explicit `inception_weights` file, makes missing weights an error; False skips it.
    `include_gray` adds the method "gray": the gray input made from each ground-truth image.
    `lpips`: try LPIPS (a note says when it is unavailable). Raises `EvaluationError` on
    unusable inputs.
    """
    if colorfulness_variant not in COLORFULNESS_VARIANTS:
        raise ValueError(f"colorfulness_variant must be one of {COLORFULNESS_VARIANTS}")
    if include_gray and GRAY_METHOD in methods:
        raise EvaluationError(f"the method name '{GRAY_METHOD}' is reserved for --include-gray; rename that folder")
    if not methods and not include_gray:
        raise EvaluationError("nothing to evaluate: give at least one results folder (or include the gray baseline)")
    preprocessing = Preprocessing(size, mode)
    pairing = pair_folders(truth_dir, methods, result_suffix)
    notes = list(pairing.notes)
    names = list(methods) + ([GRAY_METHOD] if include_gray else [])

    inception, fid_status = None, "not computed (--no-fid)"
    lpips_metric, lpips_status = None, "not requested"
    if fid is not False or lpips:
        from .pipeline import resolve_device

        try:
            torch_device = resolve_device(device)
        except RuntimeError as exc:
            raise EvaluationError(str(exc)) from None
        inception, fid_status = _load_inception(fid, inception_weights, torch_device, notes)
        if lpips:
            lpips_metric, lpips_status = _load_lpips(torch_device, notes)

    feature_sets = {name: _FeatureSet(inception, batch_size) for name in ["truth", *names]} if inception else {}
    per_image: dict[str, dict[str, dict[str, float | None]]] = {name: {} for name in ["truth", *names]}
    sampled = _grid_sample(len(pairing.keys), grid_rows)
    grid: list[tuple[str, list[np.ndarray]]] = []
    unreadable: list[str] = []

    from tqdm import tqdm

    for index, key in enumerate(tqdm(pairing.keys, unit="image", disable=not progress, file=sys.stderr)):
        try:
            truth_rgb = load_image(pairing.truth[key])
            raw = {name: load_image(pairing.methods[name][key]) for name in methods}
        except ImageInputError as exc:
            unreadable.append(str(exc))
            continue
        if preprocessing.mode == "none":
            _check_sizes(raw, truth_rgb, {name: pairing.methods[name][key] for name in methods})
        gray = pixels_to_float_rgb(gray_version(truth_rgb)) if include_gray or index in sampled else None
        if include_gray:
            raw[GRAY_METHOD] = gray
        truth = preprocessing.apply(truth_rgb)
        per_image["truth"][key] = {f"cf_{v}": value for v, value in colorfulness_all(truth).items()}
        per_image["truth"][key]["ab_hf"] = ab_high_frequency_share(truth)
        outputs = {name: preprocessing.apply(raw[name]) for name in names}
        for name, pixels in [("truth", truth), *outputs.items()]:
            if inception:
                feature_sets[name].add(pixels)
            if name != "truth":
                per_image[name][key] = _scores(truth, pixels, lpips_metric)
        if gray is not None and index in sampled:  # the gray input column stands for the gray method
            grid.append((key, [preprocessing.apply(gray), truth, *(outputs[name] for name in methods)]))

    evaluated = list(per_image["truth"])
    if unreadable:
        notes.append(f"{len(unreadable)} image(s) could not be read and were left out: "
                     f"{'; '.join(unreadable[:_SHOWN_NAMES])}")
    if not evaluated:
        raise EvaluationError("no image could be evaluated: every pair has an unreadable file")
    for feature_set in feature_sets.values():
        feature_set.flush()
    with_fid = inception is not None and len(evaluated) >= 2
    if inception is not None and not with_fid:
        notes.append("FID skipped: it needs at least 2 images")
    elif with_fid and len(evaluated) < _FID_RELIABLE_COUNT:
        notes.append(f"FID on {len(evaluated)} image(s) (< {_FID_RELIABLE_COUNT}) is biased upwards; "
                     "compare only runs of equal size (the paper uses the 50,000 ImageNet validation images)")

    truth_scores = list(per_image["truth"].values())
    summaries = []
    for name in names:
        fid_value = kid_value = None
        if with_fid:
            statistics, truth_statistics = feature_sets[name].statistics, feature_sets["truth"].statistics
            fid_value = statistics.frechet_distance(truth_statistics)
            kid_value = statistics.kernel_inception_distance(truth_statistics)
        summary = _summary(name, methods.get(name), list(per_image[name].values()), truth_scores, fid_value, kid_value)
        if summary.identical_images:
            notes.append(f"{name}: {summary.identical_images} image(s) equal the ground truth "
                         "(PSNR = inf) and are left out of the PSNR mean")
        summaries.append(summary)

    settings = EvaluationSettings(
        size=preprocessing.size, mode=preprocessing.mode, preprocessing=preprocessing.describe(),
        colorfulness_variant=colorfulness_variant, result_suffix=result_suffix, fid=fid_status,
        inception_variant=inception.variant if inception else None,
        inception_file=str(inception.source) if inception else None, lpips=lpips_status,
    )
    counts = {
        "truth_files": len(pairing.truth),
        "paired": len(pairing.keys),
        "evaluated": len(evaluated),
        "unreadable": len(unreadable),
        "results": {name: len(matched) for name, matched in pairing.methods.items()},
    }
    return EvaluationReport(
        truth_dir=str(truth_dir), settings=settings, keys=evaluated,
        truth_colorfulness={v: float(np.mean([s[f"cf_{v}"] for s in truth_scores])) for v in COLORFULNESS_VARIANTS},
        methods=summaries, per_image=per_image, notes=notes, counts=counts,
        grid_rows=grid, grid_columns=["gray input", TRUTH_LABEL, *methods],
        truth_ab_high_frequency=float(np.mean([s["ab_hf"] for s in truth_scores])),
    )


# --------------------------------------------------------------------------- colorize, then evaluate
def colorize_folder(
    truth_dir: PathLike,
    output_dir: PathLike,
    colorizer: "Colorizer",
    *,
    batch_size: int = 4,
    suffix: str = RESULT_SUFFIX,
    overwrite: bool = False,
    progress: bool = False,
) -> list[str]:
    """Colorize the gray version (L only) of every colour image in `truth_dir` into `output_dir`.

    Results are PNGs named like `gcpcolor colorize` names them (<stem><suffix>.png, sub-folders
    mirrored), so `evaluate_folders` pairs them. Returns one-line messages for images that could
    not be read (they are skipped); refuses a non-empty `output_dir` unless `overwrite`.
    """
    from tqdm import tqdm

    output = Path(output_dir)
    check_results_target(output, overwrite)
    found = _images_of(Path(truth_dir), "ground truth")
    problems: list[str] = []
    with tqdm(total=len(found), unit="photo", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(found), batch_size):
            batch: list[tuple[Path, np.ndarray]] = []
            for path, relative in found[start : start + batch_size]:
                try:
                    batch.append((relative, gray_version(load_pixels(path))))
                except ImageInputError as exc:
                    problems.append(str(exc))
            results = colorizer.colorize_batch([gray for _, gray in batch]) if batch else []
            for (relative, _), result in zip(batch, results):
                save_image(result.pixels, output_path(relative, output, suffix=suffix, extension=".png"), overwrite=overwrite)
                result.release()
            bar.update(len(found[start : start + batch_size]))
    return problems


__all__ = [
    "EvaluationError",
    "EvaluationReport",
    "EvaluationSettings",
    "GRAY_METHOD",
    "MethodSummary",
    "PREPROCESS_MODES",
    "Pairing",
    "Preprocessing",
    "check_report_target",
    "check_results_target",
    "colorfulness_histogram",
    "colorize_folder",
    "comparison_grid",
    "evaluate_folders",
    "gray_version",
    "pair_folders",
]
