"""The pictures of the evaluation report, drawn with PIL alone (the package does not depend on a
plotting library): the contact sheet of sampled rows and the per-image colourfulness histogram."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

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
