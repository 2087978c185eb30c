"""The Python API end to end on the tiny demo model."""

from __future__ import annotations

import os

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gcpcolor.color import rgb_to_lab
from gcpcolor.config import ColorizerConfig
from gcpcolor.errors import MissingWeightsError
from gcpcolor.legacy import save_authors_checkpoints
from gcpcolor.model import GCPColorizationModel
from gcpcolor.pipeline import ColorInputWarning, Colorizer, to_rgb_array


def _gray_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 0.5 + 0.3 * np.sin(x / 9.0) * np.cos(y / 13.0) + 0.05 * rng.standard_normal((height, width))
    return np.clip(base, 0, 1).astype(np.float32)


def _lightness(rgb: np.ndarray) -> torch.Tensor:
    return rgb_to_lab(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None])[0, 0]


@pytest.mark.parametrize("shape", [(170, 300), (400, 90), (256, 256), (7, 5)])
@pytest.mark.parametrize("mode", ["pad", "stretch"])
def test_output_keeps_full_resolution_and_lightness(demo_colorizer, shape, mode):
    gray = _gray_photo(*shape)
    result = demo_colorizer.colorize(gray, class_id=1, resize_mode=mode)
    assert result.image.shape == (*shape, 3) and result.image.dtype == np.float32
    assert 0.0 <= result.image.min() and result.image.max() <= 1.0
    assert result.exemplar.shape == (256, 256, 3) and result.warped_exemplar.shape == (256, 256, 3)
    # The original L is kept, only clipped where the predicted colour leaves the sRGB gamut.
    original = _lightness(np.repeat(gray[:, :, None], 3, axis=2))
    output = _lightness(result.image)
    assert torch.corrcoef(torch.stack([original.flatten(), output.flatten()]))[0, 1] > 0.95 or shape == (7, 5)


def test_zero_ab_returns_the_original_gray_exactly(demo_colorizer):
    gray = np.repeat(_gray_photo(33, 47)[:, :, None], 3, axis=2)
    prepared = demo_colorizer._prepare(gray, "pad")
    restored = demo_colorizer.processor.postprocess(prepared, torch.zeros(1, 2, 256, 256))
    assert restored.dtype == np.uint16  # float photos keep their depth
    assert np.abs(restored / 65535.0 - gray).max() < 1 / 255


def test_colour_input_is_converted_to_lightness(demo_colorizer, monkeypatch):
    monkeypatch.setattr(demo_colorizer, "warn_on_color_input", True)  # whatever an earlier test left
    from gcpcolor.color import gray_to_rgb

    rgb = np.random.default_rng(3).random((64, 80, 3)).astype(np.float32)
    lightness = _lightness(rgb).view(1, 1, 64, 80)
    gray_rgb = gray_to_rgb(lightness)[0].permute(1, 2, 0).numpy()
    with pytest.warns(ColorInputWarning) as caught:  # recoloured all the same, but not silently
        a = demo_colorizer.colorize(rgb, class_id=5).image
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name]  # points at the caller's line
    b = demo_colorizer.colorize(gray_rgb, class_id=5).image
    assert np.abs(a - b).max() < 2e-3


def test_inputs_of_every_kind(demo_colorizer, tmp_path):
    gray = _gray_photo(40, 60)
    path = tmp_path / "p.png"
    Image.fromarray((gray * 255).astype(np.uint8)).save(path)
    arrays = [to_rgb_array(x) for x in (path, str(path), Image.open(path), (gray * 255).astype(np.uint8),
                                         torch.from_numpy(gray)[None])]
    for array in arrays:
        assert array.shape == (40, 60, 3) and np.abs(array - arrays[0]).max() < 1 / 255


def test_batch_equals_single(demo_colorizer):
    images = [_gray_photo(50, 70, 1), _gray_photo(90, 40, 2)]
    batch = demo_colorizer.colorize_batch(images, [4, 9])
    for image, class_id, result in zip(images, [4, 9], batch):
        single = demo_colorizer.colorize(image, class_id=class_id)
        assert np.abs(single.image - result.image).max() < 1e-4
        assert result.class_id == class_id


def test_class_by_name_and_automatic(demo_colorizer):
    gray = _gray_photo(64, 64)
    assert demo_colorizer.colorize(gray, class_id="goldfish").class_id == 1
    assert demo_colorizer.colorize(gray, class_id="goldfish").class_name == "goldfish"
    automatic = demo_colorizer.colorize(gray)
    work = demo_colorizer._prepare(to_rgb_array(gray), "pad").work_input
    expected = demo_colorizer.model.discriminator.class_logits(work).argmax(1).item()
    assert automatic.class_id == expected


def test_diversity_seeded(demo_colorizer):
    gray = _gray_photo(64, 96)
    first = demo_colorizer.diverse(gray, samples=3, sigma=1.0, seed=1)
    again = demo_colorizer.diverse(gray, samples=3, sigma=1.0, seed=1)
    other = demo_colorizer.diverse(gray, samples=3, sigma=1.0, seed=2)
    assert len(first) == 3
    for a, b in zip(first, again):
        assert np.array_equal(a.image, b.image)
    assert all(np.abs(a.image - b.image).mean() > 1e-4 for a, b in zip(first, other))
    assert np.abs(first[0].image - first[1].image).mean() > 1e-4
    by_class = demo_colorizer.diverse(gray, samples=1, sigma=0.0, class_ids=[1, 2])
    assert [r.class_id for r in by_class] == [1, 2]
    assert np.abs(by_class[0].image - by_class[1].image).mean() > 1e-4


def test_direction_walk_is_smooth(demo_colorizer):
    gray = _gray_photo(64, 64)
    frames = demo_colorizer.transition(gray, direction=3, shift=16, steps=9, class_id=2)
    assert len(frames) == 9
    images = np.stack([f.image for f in frames])
    neighbours = np.abs(np.diff(images, axis=0)).mean(axis=(1, 2, 3))
    ends = np.abs(images[-1] - images[0]).mean()
    assert ends > 0
    assert neighbours.max() < ends
    zs = torch.stack([f.z for f in frames])
    steps = (zs[1:] - zs[:-1]).norm(dim=1)
    assert torch.allclose(steps, torch.full_like(steps, 4.0), atol=1e-4)  # 32 / 8 per step, orthogonal map


def test_save_load_round_trip_identical_outputs(demo_colorizer, tmp_path):
    previous_umask = os.umask(0o022)
    try:
        demo_colorizer.save_pretrained(tmp_path / "model")
    finally:
        os.umask(previous_umask)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
    # both files get the permissions of any new file (safetensors alone would make its own 0600)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "model").iterdir()}
    assert modes == {"config.json": 0o644, "model.safetensors": 0o644}
    reloaded = Colorizer.from_pretrained(tmp_path / "model")
    gray = _gray_photo(48, 80)
    assert np.array_equal(reloaded.colorize(gray, class_id=3).image, demo_colorizer.colorize(gray, class_id=3).image)


def test_load_prefers_our_format_then_authors_files(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = GCPColorizationModel(ColorizerConfig.tiny())
    with pytest.raises(MissingWeightsError, match="biggan_G_ema_256.pth"):
        Colorizer.load(tmp_path)
    # tiny authors' files are not the default config: loading them needs ours (config.json)
    Colorizer(model).save_pretrained(tmp_path)
    monkeypatch.setenv("GCPCOLOR_HOME", str(tmp_path))
    assert Colorizer.load().config == ColorizerConfig.tiny()


def test_from_pretrained_missing_files(tmp_path):
    with pytest.raises(MissingWeightsError, match="config.json"):
        Colorizer.from_pretrained(tmp_path)


def test_authors_checkpoints_give_same_outputs_as_converted(tmp_path):
    torch.manual_seed(0)
    config = ColorizerConfig.tiny()
    model = GCPColorizationModel(config)
    save_authors_checkpoints(model, tmp_path / "authors")
    from gcpcolor.legacy import load_authors_model

    a = Colorizer(load_authors_model(tmp_path / "authors", config))
    a.save_pretrained(tmp_path / "ours")
    b = Colorizer.from_pretrained(tmp_path / "ours")
    gray = _gray_photo(40, 40)
    assert np.array_equal(a.colorize(gray, 0).image, b.colorize(gray, 0).image)


def test_ablation_guidance_survives_save_and_load(tmp_path):
    import dataclasses

    torch.manual_seed(0)
    model = GCPColorizationModel(dataclasses.replace(ColorizerConfig.tiny(), guidance="image"))
    assert model.colorization_net.up_norm3.mlp_gamma.in_channels == 3
    Colorizer(model).save_pretrained(tmp_path)
    reloaded = Colorizer.from_pretrained(tmp_path)
    assert reloaded.model.guidance.value == "image"
    gray = _gray_photo(32, 32)
    assert np.array_equal(reloaded.colorize(gray, 1).image, Colorizer(model).colorize(gray, 1).image)
    with pytest.raises(ValueError, match="guidance must be one of"):
        GCPColorizationModel(dataclasses.replace(ColorizerConfig.tiny(), guidance="sideways"))
