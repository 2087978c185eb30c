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

import math
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .errors import EvaluationError, MissingWeightsError
from .evaluation_report import (
    REPORT_FILES,
    TRUTH_LABEL,
    EvaluationReport,
    EvaluationSettings,
    MethodSummary,
    check_report_target,
    check_results_target,
)
from .image_io import ImageInputError, load_image, load_pixels, pixels_to_float_rgb
from .image_writing import save_image
from .photo_files import find_images, output_path
from .metrics import (
    COLORFULNESS_VARIANTS,
    DEFAULT_COLORFULNESS_VARIANT,
    ColorfulnessVariant,
    FID_BOOTSTRAP_RESAMPLES,
    FID_INTERVAL,
    FeatureStatistics,
    LPIPSMetric,
    colorfulness_all,
    delta_colorfulness,
    paired_fid_bootstrap,
    percentile_interval,
)
from .report_figures import colorfulness_histogram, comparison_grid
from .report_metrics import REPORT_METRICS, finite_mean, scores_of, truth_scores_of

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
# Below this many images FID's covariance is rank-deficient (2048 features): values are biased.
_FID_RELIABLE_COUNT = 2048
# Where FID is least reliable a bootstrap says how far to trust it; each resample costs an
# N×N SVD per method, so large sets (whose FID is steadier anyway) skip it.
_FID_BOOTSTRAP_MAX_IMAGES = 2048
_SHOWN_NAMES = 3


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


def _scores(truth: np.ndarray, result: np.ndarray, resources: Mapping[str, Any]) -> dict[str, float | None]:
    scores: dict[str, float | None] = dict(scores_of(truth, result, resources))
    scores.update({f"cf_{v}": value for v, value in colorfulness_all(result).items()})
    return scores


def _summary(name: str, source: PathLike | None, scores: list[dict[str, Any]],
             truth_scores: list[dict[str, Any]], fid_value: float | None, kid_value: float | None = None) -> MethodSummary:
    cf = {v: [s[f"cf_{v}"] for s in scores] for v in COLORFULNESS_VARIANTS}
    truth_cf = {v: [s[f"cf_{v}"] for s in truth_scores] for v in COLORFULNESS_VARIANTS}
    psnr_values = [s["psnr"] for s in scores if "psnr" in s]
    return MethodSummary(
        name=name,
        source=None if source is None else str(source),
        images=len(scores),
        colorfulness={v: float(np.mean(cf[v])) for v in COLORFULNESS_VARIANTS},
        delta_colorfulness={v: delta_colorfulness(cf[v], truth_cf[v]) for v in COLORFULNESS_VARIANTS},
        means={metric: finite_mean([s[metric] for s in scores]) if metric in scores[0] else None
               for metric in REPORT_METRICS},
        fid=fid_value,
        identical_images=sum(1 for value in psnr_values if not math.isfinite(value)),
        kid=kid_value,
    )


def _fid_bootstrap(summaries: list[MethodSummary], statistics: Mapping[str, FeatureStatistics]) -> list[str]:
    """Set each summary's FID interval, and say whether the first method's FID differs from each
    other's by more than the choice of photos explains (paired bootstrap)."""
    features = {name: np.concatenate(stats.features) for name, stats in statistics.items()}
    truth = features.pop("truth")
    values = paired_fid_bootstrap(features, truth)
    for summary in summaries:
        summary.fid_interval = percentile_interval(values[summary.name])
    share = f"{FID_INTERVAL:.0%}"
    notes = [f"FID {share} intervals: the central {share} of each method's FID over {FID_BOOTSTRAP_RESAMPLES} "
             "resamples of the photos with their truth (paired bootstrap): "
             + "; ".join(f"{m.name} [{m.fid_interval[0]:.1f}, {m.fid_interval[1]:.1f}]" for m in summaries)]
    first = summaries[0]
    for other in summaries[1:]:
        low, high = percentile_interval(values[first.name] - values[other.name])
        verdict = "lower" if high < 0 else "higher" if low > 0 else "not distinguishable on these photos"
        notes.append(f"FID {first.name} − {other.name}: {first.fid - other.fid:+.2f}, {share} interval "
                     f"[{low:+.2f}, {high:+.2f}]: {verdict}")
    return notes


def _check_sizes(raw: Mapping[str, np.ndarray], truth: np.ndarray, sources: Mapping[str, Path]) -> None:
    for name, source in sources.items():
        if raw[name].shape != truth.shape:
            raise EvaluationError(
                f"{source}: {raw[name].shape[1]}x{raw[name].shape[0]} but the ground truth is "
                f"{truth.shape[1]}x{truth.shape[0]}; use --mode resize or center-crop"
            )


def _leave_out_seen_photos(pairing: Pairing, training_folders: list[Path]) -> int:
    """Drop from `pairing.keys` the ground-truth images that are copies of a training photo in
    `training_folders`; a note says how many and which. Returns their number."""
    if not training_folders:
        return 0
    from .near_duplicates import find_near_duplicates

    training = [path for folder in training_folders for path, _ in _images_of(folder, "training photos")]
    copies = find_near_duplicates([pairing.truth[key] for key in pairing.keys], training)
    seen = [key for key in pairing.keys if pairing.truth[key] in copies]
    if len(seen) == len(pairing.keys):
        raise EvaluationError(f"every ground-truth image is a copy of a training photo in {', '.join(map(str, training_folders))}")
    if seen:
        pairing.keys = [key for key in pairing.keys if pairing.truth[key] not in copies]
        pairing.notes.append(f"{len(seen)} ground-truth image(s) left out as copies of training photos: {_examples(seen)}")
    return len(seen)


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
    leave_out_copies_of: Iterable[PathLike] = (),
) -> EvaluationReport:
    """Evaluate each method's result folder against `truth_dir` with the paper's metrics.

    `fid`: None computes FID when Inception weights are found (else a note says why not); True,
    or an explicit `inception_weights` file, makes missing weights an error; False skips it.
    `include_gray` adds the method "gray": the gray input made from each ground-truth image.
    `lpips`: try LPIPS (a note says when it is unavailable). Raises `EvaluationError` on
    unusable inputs. `leave_out_copies_of`: folders of training photos; ground-truth images that
    are copies of one of them (`near_duplicates`) are not evaluated, so the scores are on unseen
    photos only.
    """
    if colorfulness_variant not in COLORFULNESS_VARIANTS:
        raise ValueError(f"colorfulness_variant must be one of {COLORFULNESS_VARIANTS}")
    if include_gray and GRAY_METHOD in methods:
        raise EvaluationError(f"the method name '{GRAY_METHOD}' is reserved for --include-gray; rename that folder")
    if not methods and not include_gray:
        raise EvaluationError("nothing to evaluate: give at least one results folder (or include the gray baseline)")
    preprocessing = Preprocessing(size, mode)
    pairing = pair_folders(truth_dir, methods, result_suffix)
    left_out = _leave_out_seen_photos(pairing, [Path(folder) for folder in leave_out_copies_of])
    notes = list(pairing.notes)
    names = list(methods) + ([GRAY_METHOD] if include_gray else [])

    inception, fid_status = None, "not computed (--no-fid)"
    lpips_metric, lpips_status = None, "not requested"
    if fid is not False or lpips:
        from .devices import resolve_device

        try:
            torch_device = resolve_device(device)
        except RuntimeError as exc:
            raise EvaluationError(str(exc)) from None
        inception, fid_status = _load_inception(fid, inception_weights, torch_device, notes)
        if lpips:
            lpips_metric, lpips_status = _load_lpips(torch_device, notes)
    resources = {"lpips": lpips_metric}

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
        per_image["truth"][key].update(truth_scores_of(truth, resources))
        outputs = {name: preprocessing.apply(raw[name]) for name in names}
        for name, pixels in [("truth", truth), *outputs.items()]:
            if inception:
                feature_sets[name].add(pixels)
            if name != "truth":
                per_image[name][key] = _scores(truth, pixels, resources)
        if gray is not None and index in sampled:  # the gray input column stands for the gray method
            gray_column = outputs[GRAY_METHOD] if include_gray else preprocessing.apply(gray)
            grid.append((key, [gray_column, truth, *(outputs[name] for name in methods)]))

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
    if with_fid and len(evaluated) <= _FID_BOOTSTRAP_MAX_IMAGES:
        notes += _fid_bootstrap(summaries, {name: feature_sets[name].statistics for name in ["truth", *names]})

    settings = EvaluationSettings(
        size=preprocessing.size, mode=preprocessing.mode, preprocessing=preprocessing.describe(),
        colorfulness_variant=colorfulness_variant, result_suffix=result_suffix, fid=fid_status,
        inception_variant=inception.variant if inception else None,
        inception_file=str(inception.source) if inception else None, lpips=lpips_status,
    )
    counts = {
        "truth_files": len(pairing.truth),
        "paired": len(pairing.keys) + left_out,
        "left_out_as_copies_of_training_photos": left_out,
        "evaluated": len(evaluated),
        "unreadable": len(unreadable),
        "results": {name: len(matched) for name, matched in pairing.methods.items()},
    }
    return EvaluationReport(
        truth_dir=str(truth_dir), settings=settings, keys=evaluated,
        truth_colorfulness={v: float(np.mean([s[f"cf_{v}"] for s in truth_scores])) for v in COLORFULNESS_VARIANTS},
        methods=summaries, per_image=per_image, notes=notes, counts=counts,
        grid_rows=grid, grid_columns=["gray input", TRUTH_LABEL, *methods],
        truth_means={name: finite_mean([s[name] for s in truth_scores]) for name in truth_scores[0]
                     if name in REPORT_METRICS},
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
    "REPORT_FILES",
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
