"""The per-image metrics of the evaluation report, one registered function each.

`evaluate_folders` computes every metric registered here on each (ground truth, result) pair,
averages it per method, and the report gives it a column in metrics.md / .csv / .json, in
registration order. Adding a metric is one function:

    @register_metric("colour_error", column="colour error", heading="colour error ↓", places=3)
    def colour_error(truth: np.ndarray, result: np.ndarray) -> float:
        ...

Images are uint8 RGB (H, W, 3) after the report's preprocessing. A metric that needs a loaded
network names it in `requires`; it receives it as a keyword and is left out when the network is
unavailable. The set-level metrics (FID, KID on Inception features) and the colourfulness
columns, which depend on the chosen variant, are computed by `evaluation.py` itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import ab_high_frequency_share, psnr, ssim


@dataclass(frozen=True)
class ReportMetric:
    name: str  # key in the per-image scores
    column: str  # metrics.csv header
    heading: str  # metrics.md header, with ↑ or ↓ for the better direction
    places: int  # decimals in metrics.md
    json_key: str  # key in metrics.json's per-method entries
    compute: Callable[..., float]
    requires: str | None = None  # a loaded network the function takes as a keyword argument
    #: also report the ground truth's own value (computed with the truth as the result)
    of_truth: bool = False

    def applies(self, resources: Mapping[str, Any]) -> bool:
        return self.requires is None or resources.get(self.requires) is not None

    def __call__(self, truth: np.ndarray, result: np.ndarray, resources: Mapping[str, Any]) -> float:
        if self.requires is None:
            return self.compute(truth, result)
        return self.compute(truth, result, **{self.requires: resources[self.requires]})


#: Every registered metric by name, in the order of the report's columns.
REPORT_METRICS: dict[str, ReportMetric] = {}


def register_metric(
    name: str,
    *,
    column: str,
    heading: str,
    places: int,
    json_key: str | None = None,
    requires: str | None = None,
    of_truth: bool = False,
) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Register a per-image metric `function(truth, result) -> float` under `name`."""

    def register(function: Callable[..., float]) -> Callable[..., float]:
        if name in REPORT_METRICS:
            raise ValueError(f"a report metric named {name!r} is already registered")
        REPORT_METRICS[name] = ReportMetric(
            name, column, heading, places, json_key or name, function, requires, of_truth
        )
        return function

    return register


def scores_of(
    truth: np.ndarray, result: np.ndarray, resources: Mapping[str, Any]
) -> dict[str, float]:
    """Every applicable registered metric of one result."""
    return {name: metric(truth, result, resources) for name, metric in REPORT_METRICS.items() if metric.applies(resources)}


def truth_scores_of(truth: np.ndarray, resources: Mapping[str, Any]) -> dict[str, float]:
    """The ground truth's own values of the metrics that report one."""
    return {
        name: metric(truth, truth, resources)
        for name, metric in REPORT_METRICS.items()
        if metric.of_truth and metric.applies(resources)
    }


def finite_mean(values: Sequence[float]) -> float | None:
    """The mean of the finite values (PSNR is inf for a result equal to the truth); None if none."""
    finite = [value for value in values if value is not None and math.isfinite(value)]
    return float(np.mean(finite)) if finite else None


# --------------------------------------------------------------------------- the built-in ones
@register_metric("psnr", column="PSNR", heading="PSNR ↑", places=2)
def _psnr(truth: np.ndarray, result: np.ndarray) -> float:
    return psnr(truth, result)


@register_metric("ssim", column="SSIM", heading="SSIM ↑", places=4)
def _ssim(truth: np.ndarray, result: np.ndarray) -> float:
    return ssim(truth, result)


@register_metric("lpips", column="LPIPS", heading="LPIPS ↓", places=4, requires="lpips")
def _lpips(truth: np.ndarray, result: np.ndarray, lpips: Callable[[np.ndarray, np.ndarray], float]) -> float:
    return lpips(truth, result)


@register_metric(
    "ab_hf",
    column="ab high-frequency share",
    heading="ab HF share",
    places=4,
    json_key="ab_high_frequency_share",
    of_truth=True,
)
def _ab_high_frequency(truth: np.ndarray, result: np.ndarray) -> float:
    """Checkerboards and colour noise raise it; compare with the ground truth's own value."""
    return ab_high_frequency_share(result)
