"""Old-photo damage of the gray training input: each kind does what it says, the crop's seed
fixes it, and only the input is damaged, never the colour target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gcpcolor.config import ConfigError
from gcpcolor.data import DataConfig, LabeledFolderDataset, make_dataset
from gcpcolor.degradation import OldPhotoDegradation, dust, fade, film_grain, gaussian_blur, scratches

ONLY = dict(fade_chance=0.0, blur_chance=0.0, grain_chance=0.0, scratch_chance=0.0, dust_chance=0.0)


def smooth_lightness(size: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return (50 + 40 * torch.sin(3 * xx + 2 * yy))[None]


def high_frequency_energy(lightness: torch.Tensor) -> float:
    return float((lightness[..., 1:, :] - lightness[..., :-1, :]).pow(2).mean()
                 + (lightness[..., :, 1:] - lightness[..., :, :-1]).pow(2).mean())


def only(kind: str) -> OldPhotoDegradation:
    return OldPhotoDegradation(probability=1.0, **{**ONLY, f"{kind}_chance": 1.0})


def test_fade_maps_the_tone_range_onto_black_to_white():
    ramp = torch.linspace(0, 100, 11)[None, None]
    faded = fade(ramp, black=0.1, white=0.9, gamma=1.0)
    assert torch.allclose(faded[0, 0, [0, -1]], torch.tensor([10.0, 90.0]))
    assert torch.allclose(faded, 10 + 0.8 * ramp)
    assert fade(ramp, 0.0, 1.0, 2.0)[0, 0, 5] == pytest.approx(25.0)  # (0.5 ** 2) * 100


def test_blur_matches_a_normalised_gaussian_and_keeps_flat_regions():
    flat = torch.full((1, 20, 20), 42.0)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat, atol=1e-4)
    impulse = torch.zeros(1, 21, 21)
    impulse[0, 10, 10] = 1.0
    blurred = gaussian_blur(impulse, 1.0)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5)
    offsets = torch.arange(-3, 4, dtype=torch.float32)
    expected_1d = torch.exp(-0.5 * offsets**2) / torch.exp(-0.5 * offsets**2).sum()
    assert torch.allclose(blurred[0, 10, 7:14], expected_1d * expected_1d[3], atol=1e-6)


def test_grain_has_the_asked_strength_and_zero_mean():
    flat = torch.full((1, 128, 128), 50.0)
    grainy = film_grain(flat, 4.0, 1, torch.Generator().manual_seed(0))
    assert (grainy - flat).std() == pytest.approx(4.0, rel=1e-3)
    assert abs(float((grainy - flat).mean())) < 0.2


def test_scratches_and_dust_touch_few_pixels_strongly():
    base = torch.full((1, 96, 96), 40.0)
    for damaged in (scratches(base, 2, torch.Generator().manual_seed(1)), dust(base, 5, torch.Generator().manual_seed(2))):
        changed = (damaged - base).abs() > 1.0
        assert 0 < changed.float().mean() < 0.1
        assert (damaged - base).abs().max() > 30  # a scratch or speck is bright or dark, not a tint


@pytest.mark.parametrize("kind, more_detail", [("blur", False), ("grain", True), ("scratch", True), ("dust", True)])
def test_each_kind_of_damage_alone(kind, more_detail):
    clean = smooth_lightness()
    damaged = only(kind)(clean, torch.Generator().manual_seed(3))
    assert damaged.shape == clean.shape and damaged.min() >= 0 and damaged.max() <= 100
    assert (high_frequency_energy(damaged) > high_frequency_energy(clean)) == more_detail


def test_fading_alone_narrows_the_tone_range():
    clean = torch.linspace(0, 100, 64 * 64).view(1, 64, 64)
    damaged = only("fade")(clean, torch.Generator().manual_seed(4))
    assert damaged.min() >= 0 and damaged.max() <= 100
    assert damaged.max() - damaged.min() < 100 and not torch.equal(damaged, clean)


def test_probability_zero_is_the_identity_and_the_seed_fixes_the_damage():
    clean = smooth_lightness()
    assert torch.equal(OldPhotoDegradation(probability=0.0)(clean, torch.Generator().manual_seed(0)), clean)
    damage = OldPhotoDegradation(probability=1.0, fade_chance=1, blur_chance=1, grain_chance=1,
                                 scratch_chance=1, dust_chance=1)
    first = damage(clean, torch.Generator().manual_seed(5))
    assert torch.equal(first, damage(clean, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, damage(clean, torch.Generator().manual_seed(6)))


def test_dataset_damages_only_the_gray_input_of_training_crops(tmp_path):
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(tmp_path / f"p{index}.png")
    (tmp_path / "labels.csv").write_text("file,class\n" + "".join(f"p{i}.png,-1\n" for i in range(3)))
    clean = LabeledFolderDataset(tmp_path, "labels.csv", allow_unlabeled=True, image_size=32)
    damaged = LabeledFolderDataset(tmp_path, "labels.csv", allow_unlabeled=True, image_size=32, degrade_input=1.0)
    same_crop_clean, same_crop_damaged = clean[(1, 11)], damaged[(1, 11)]
    for key in ("rgb", "lab", "ab"):
        assert torch.equal(same_crop_clean[key], same_crop_damaged[key])  # the target is untouched
    assert not torch.equal(same_crop_clean["l_input"], same_crop_damaged["l_input"])
    assert torch.equal(same_crop_damaged["l_input"], damaged[(1, 11)]["l_input"])  # the seed fixes it

    evaluation = make_dataset(DataConfig(root=str(tmp_path), labels_file="labels.csv", allow_unlabeled=True,
                                         image_size=32, train=False, degrade_input=1.0))
    item = evaluation[(0, 0)]
    assert torch.equal(item["l_input"], clean.__class__(tmp_path, "labels.csv", allow_unlabeled=True,
                                                          image_size=32, train=False)[(0, 0)]["l_input"])
    with pytest.raises(ConfigError, match="degrade_input"):
        DataConfig(root=str(tmp_path), degrade_input=1.5)
