from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from gcpcolor.errors import MissingWeightsError
from gcpcolor.models.vgg import (
    VGG19_FILENAME,
    VGG19_URL,
    VGG19Features,
    find_vgg19_weights,
    vgg19_weight_candidates,
    vgg_layer_names,
)

ALL_LAYERS = ("relu1_1", "relu2_1", "relu3_2", "relu4_2", "relu5_2")


def random_vgg(layers: tuple[str, ...]) -> VGG19Features:
    with pytest.warns(UserWarning, match="randomly initialised"):
        return VGG19Features(layers=layers, allow_random=True)


@pytest.fixture
def empty_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every VGG19 lookup location into an empty temporary folder."""
    monkeypatch.delenv("GCPCOLOR_VGG19", raising=False)
    monkeypatch.setenv("GCPCOLOR_HOME", str(tmp_path / "gcpcolor_home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path


@pytest.fixture(scope="module")
def reference_vgg19() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg19(weights=None).eval()


@pytest.fixture(scope="module")
def reference_weights_file(reference_vgg19: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file laid out like torchvision's vgg19-dcbb9e9d.pth (features.* and classifier.*)."""
    path = tmp_path_factory.mktemp("vgg") / VGG19_FILENAME
    torch.save(reference_vgg19.state_dict(), path)
    return path


def test_layer_names_follow_torchvision_vgg19(reference_vgg19: nn.Module) -> None:
    names = vgg_layer_names(reference_vgg19.features)
    assert names["relu1_1"] == 1
    assert names["relu3_2"] == 13
    assert names["relu4_2"] == 22
    assert names["relu5_2"] == 31
    assert names["conv5_2"] == 30
    assert sum(name.startswith("conv") for name in names) == 16
    features = reference_vgg19.features
    assert isinstance(features[31], nn.ReLU)
    assert isinstance(features[30], nn.Conv2d) and features[30].in_channels == 512


def test_module_keeps_layers_up_to_deepest_requested(empty_search_path: Path) -> None:
    with pytest.warns(UserWarning, match="randomly initialised"):
        vgg = VGG19Features(layers=("relu1_1", "relu3_2"), allow_random=True)
    assert vgg.layer_indices == {"relu1_1": 1, "relu3_2": 13}
    assert len(vgg.features) == 14
    assert vgg.weights_file is None


def test_unknown_layer_is_rejected(empty_search_path: Path) -> None:
    with pytest.raises(ValueError, match="relu6_1"):
        VGG19Features(layers=("relu6_1",), allow_random=True)


def test_missing_weights_message_names_file_places_and_url(empty_search_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as info:
        VGG19Features()
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in message
    assert VGG19_FILENAME in message
    assert VGG19_URL == "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
    assert VGG19_URL in message
    for place in ("gcpcolor_home", str(Path("home") / ".cache" / "gcpcolor"), "torch_home"):
        assert place in message


def test_missing_explicit_path_is_named(empty_search_path: Path) -> None:
    absent = empty_search_path / "nowhere" / "my_vgg.pth"
    with pytest.raises(MissingWeightsError, match="my_vgg.pth"):
        VGG19Features(weights_path=absent)


def test_lookup_order(empty_search_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = empty_search_path / "env" / "custom.pth"
    home_file = empty_search_path / "gcpcolor_home" / VGG19_FILENAME
    cache_file = empty_search_path / "home" / ".cache" / "gcpcolor" / VGG19_FILENAME
    hub_file = empty_search_path / "torch_home" / "hub" / "checkpoints" / VGG19_FILENAME
    monkeypatch.setenv("GCPCOLOR_VGG19", str(env_file))
    assert vgg19_weight_candidates() == [env_file, home_file, cache_file, hub_file]

    # Each file, once present, wins over every later place.
    for expected in (hub_file, cache_file, home_file, env_file):
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.touch()
        assert find_vgg19_weights() == expected
    # An explicit argument is the only place looked.
    assert vgg19_weight_candidates(empty_search_path / "given.pth") == [empty_search_path / "given.pth"]


def test_file_without_feature_keys_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "broken.pth"
    torch.save({"classifier.0.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="features.0.weight"):
        VGG19Features(weights_path=path)


def test_weights_from_env_var_load_and_match_torchvision(
    empty_search_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reference_vgg19: nn.Module,
    reference_weights_file: Path,
) -> None:
    monkeypatch.setenv("GCPCOLOR_VGG19", str(reference_weights_file))
    vgg = VGG19Features(layers=ALL_LAYERS)
    assert vgg.weights_file == reference_weights_file

    torch.manual_seed(1)
    rgb = torch.rand(2, 3, 32, 32)
    outputs = vgg(rgb)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    normalised = (rgb - mean) / std
    with torch.no_grad():
        for name, index in zip(ALL_LAYERS, (1, 6, 13, 22, 31)):
            expected = reference_vgg19.features[: index + 1](normalised)
            assert torch.equal(outputs[name], expected), name
    assert outputs["relu5_2"].shape == (2, 512, 2, 2)
    assert outputs["relu3_2"].shape == (2, 256, 8, 8)


def test_frozen_and_stays_in_eval(empty_search_path: Path) -> None:
    vgg = random_vgg(("relu2_1",))
    assert all(not parameter.requires_grad for parameter in vgg.parameters())
    parent = nn.Sequential(vgg)
    parent.train()
    assert not vgg.training
    # Normalisation constants are not checkpoint state.
    assert set(vgg.state_dict()) == {f"features.{i}.{p}" for i in (0, 2, 5) for p in ("weight", "bias")}


def test_gradient_reaches_input_not_parameters(empty_search_path: Path) -> None:
    vgg = random_vgg(("conv2_1", "relu2_1"))
    rgb = torch.rand(1, 3, 16, 16, requires_grad=True)
    outputs = vgg(rgb)
    # The conv output is returned unmodified even though its ReLU follows it.
    assert (outputs["conv2_1"] < 0).any()
    assert torch.equal(outputs["relu2_1"], outputs["conv2_1"].clamp_min(0))
    outputs["relu2_1"].sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in vgg.parameters())


def test_rejects_non_rgb_input(empty_search_path: Path) -> None:
    vgg = random_vgg(("relu1_1",))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        vgg(torch.rand(1, 1, 8, 8))


def test_home_expansion_in_env_path(empty_search_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GCPCOLOR_VGG19", os.path.join("~", "weights", "vgg.pth"))
    assert vgg19_weight_candidates()[0] == empty_search_path / "home" / "weights" / "vgg.pth"
