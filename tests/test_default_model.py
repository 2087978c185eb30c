"""The model shipped inside the package: it must colorize a real photo offline, no flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from gcpcolor.classes import ClassNotFoundError
from gcpcolor.cli import main
from gcpcolor.color import rgb_to_lab
from gcpcolor.image_io import load_image
from gcpcolor.pipeline import Colorizer
from gcpcolor.weights import BUNDLED_MODEL_DIR, CONFIG_NAME, WEIGHTS_NAME

SAMPLE = BUNDLED_MODEL_DIR.parent / "sample_bw.png"  # "cameraman", a classic black-and-white photograph
#: Mean Lab chroma sqrt(a² + b²) a colour photo must exceed; a gray one has 0.
MIN_MEAN_CHROMA = 3.0

pytestmark = pytest.mark.skipif(
    not (BUNDLED_MODEL_DIR / WEIGHTS_NAME).is_file(), reason="the default model is not bundled"
)


def mean_chroma(rgb: np.ndarray) -> float:
    lab = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None].double())
    return float(torch.sqrt(lab[:, 1] ** 2 + lab[:, 2] ** 2).mean())


def test_bundled_weights_are_small_half_precision_files():
    total = sum(path.stat().st_size for path in BUNDLED_MODEL_DIR.iterdir())
    assert total <= 80 * 2**20
    stored = load_file(str(BUNDLED_MODEL_DIR / WEIGHTS_NAME))
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    assert (BUNDLED_MODEL_DIR / CONFIG_NAME).is_file()


def test_load_falls_back_to_the_bundled_model():
    # conftest points GCPCOLOR_HOME at an empty folder: nothing else is installed.
    colorizer = Colorizer.load()
    assert not colorizer.is_demo
    assert colorizer.config == Colorizer.default().config


def test_default_model_colours_a_real_old_photo():
    colorizer = Colorizer.default()
    photo = load_image(SAMPLE)
    result = colorizer.colorize(photo)
    assert result.image.shape == photo.shape
    assert 0.0 <= result.image.min() and result.image.max() <= 1.0
    assert mean_chroma(result.image) > MIN_MEAN_CHROMA > mean_chroma(photo)
    # The lightness is the photo's own: colour is added, detail is kept.
    l_in = rgb_to_lab(torch.from_numpy(photo).permute(2, 0, 1)[None].double())[:, 0]
    l_out = rgb_to_lab(torch.from_numpy(result.image).permute(2, 0, 1)[None].double())[:, 0]
    assert float((l_in - l_out).abs().mean()) < 2.0


def test_readme_first_command_needs_no_flags(tmp_path):
    result = CliRunner().invoke(main, ["colorize", str(SAMPLE), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "DEMO MODE" not in result.output
    written = tmp_path / "out" / f"{SAMPLE.stem}_color{SAMPLE.suffix}"
    with Image.open(written) as image:
        assert image.size == Image.open(SAMPLE).size
        assert mean_chroma(np.asarray(image.convert("RGB"), dtype=np.float32) / 255) > MIN_MEAN_CHROMA


def test_pseudo_class_models_refuse_imagenet_class_names(tmp_path):
    result = CliRunner().invoke(
        main, ["colorize", str(SAMPLE), "-o", str(tmp_path / "a"), "--class", "golden retriever"]
    )
    assert result.exit_code == 2 and "pseudo-classes" in result.output
    assert "Traceback" not in result.output
    colorizer = Colorizer.default()
    result = colorizer.colorize(load_image(SAMPLE), class_id=3)
    assert result.class_id == 3 and result.class_name == "pseudo-class 3"
    for spec in ["9" * 5000, "\u00b2", "-1", "16"]:  # int() fails on the first two: not a ValueError leak
        with pytest.raises(ClassNotFoundError):
            colorizer.class_index(spec)
