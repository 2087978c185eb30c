"""Strict loading of checkpoints in the authors' format, built from an independent layout spec."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from authors_spec import (
    colorization_spec,
    correspondence_spec,
    discriminator_spec,
    encoder_spec,
    generator_spec,
    random_state_dict,
)
from gcpcolor.config import ColorizerConfig
from gcpcolor.errors import MissingWeightsError, WeightsFormatError
from gcpcolor.legacy import (
    load_authors_model,
    load_biggan_generator,
    load_deformator,
    save_authors_checkpoints,
)
from gcpcolor.model import GCPColorizationModel
from gcpcolor.weights import AUTHORS_FILES


def write_authors_files(directory, config: ColorizerConfig, deformator: bool = True) -> None:
    """Random weights in the authors' naming, saved as their five files would be."""
    big = config.biggan
    torch.save(random_state_dict(generator_spec(big), 1), directory / AUTHORS_FILES["generator"])
    torch.save(random_state_dict(discriminator_spec(big), 2), directory / AUTHORS_FILES["discriminator"])
    torch.save(random_state_dict(encoder_spec(config.encoder), 3), directory / AUTHORS_FILES["encoder"])
    torch.save(
        {
            "net_corr": random_state_dict(correspondence_spec(config.correspondence, big.correspondence_channels), 4),
            "net_gen": random_state_dict(colorization_spec(config.colorization, big.feature_channels), 5),
        },
        directory / AUTHORS_FILES["colorization"],
    )
    if deformator:
        dim = config.deformator.dim
        torch.save({"log_mat_half": torch.randn(dim, dim) * 0.01}, directory / AUTHORS_FILES["deformator"])


def _assert_loaded(model: GCPColorizationModel, directory) -> None:
    saved = torch.load(directory / AUTHORS_FILES["generator"], weights_only=True)
    for key, value in saved.items():
        assert torch.equal(model.generator.state_dict()[key], value), key
    colorization = torch.load(directory / AUTHORS_FILES["colorization"], weights_only=True)
    for key, value in colorization["net_gen"].items():
        assert torch.equal(model.colorization_net.state_dict()[key], value), key


def test_tiny_authors_files_load_strictly_and_run(tmp_path):
    config = ColorizerConfig.tiny()
    write_authors_files(tmp_path, config)
    model = load_authors_model(tmp_path, config)
    _assert_loaded(model, tmp_path)
    assert not model.training
    l_input = torch.rand(1, 1, 256, 256) * 2 - 1
    out = model(l_input, torch.tensor([3]))
    assert out.ab.shape == (1, 2, 256, 256) and torch.isfinite(out.ab).all()


def test_full_size_authors_files_load_strictly(tmp_path):
    config = ColorizerConfig()
    write_authors_files(tmp_path, config)
    model = load_authors_model(tmp_path, config)
    _assert_loaded(model, tmp_path)
    deformator = torch.load(tmp_path / AUTHORS_FILES["deformator"], weights_only=True)["log_mat_half"]
    assert torch.equal(model.deformator.log_mat_half, deformator)


def test_save_authors_checkpoints_round_trip(tmp_path):
    torch.manual_seed(0)
    config = ColorizerConfig.tiny()
    model = GCPColorizationModel(config).eval()
    save_authors_checkpoints(model, tmp_path)
    reloaded = load_authors_model(tmp_path, config)
    l_input = torch.rand(1, 1, 256, 256) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(l_input, torch.tensor([7])).ab, reloaded(l_input, torch.tensor([7])).ab)


def test_missing_file_names_file_place_and_source(tmp_path):
    config = ColorizerConfig.tiny()
    write_authors_files(tmp_path, config)
    (tmp_path / AUTHORS_FILES["encoder"]).unlink()
    with pytest.raises(MissingWeightsError) as info:
        load_authors_model(tmp_path, config)
    message = str(info.value)
    assert "biggan_E.pth" in message and str(tmp_path) in message and "GCP-Colorization" in message
    assert "\n" not in message


def test_deformator_is_optional_unless_required(tmp_path):
    config = ColorizerConfig.tiny()
    write_authors_files(tmp_path, config, deformator=False)
    assert load_authors_model(tmp_path, config).deformator is None
    with pytest.raises(MissingWeightsError, match="deformator_for_biggan.pt"):
        load_authors_model(tmp_path, config, require_deformator=True)


def test_nested_deformator_checkpoint(tmp_path):
    path = tmp_path / "deformator.pt"
    torch.save({"deformator": {"log_mat_half": torch.eye(119)}, "shift_predictor": {}}, path)
    assert torch.equal(load_deformator(path).log_mat_half, torch.eye(119))


def test_mismatched_or_corrupt_files_give_one_line_errors(tmp_path):
    config = ColorizerConfig.tiny()
    wrong = dataclasses.replace(config.biggan, g_ch=16)
    path = tmp_path / "g.pth"
    torch.save(random_state_dict(generator_spec(wrong)), path)
    with pytest.raises(WeightsFormatError, match="wrong shape") as info:
        load_biggan_generator(path, config.biggan)
    assert "\n" not in str(info.value)

    state = random_state_dict(generator_spec(config.biggan))
    state.pop("linear.u0")
    torch.save(state, path)
    with pytest.raises(WeightsFormatError, match="missing.*linear.u0"):
        load_biggan_generator(path, config.biggan)

    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsFormatError, match="not a readable PyTorch checkpoint"):
        load_biggan_generator(path, config.biggan)


def test_ddp_prefixed_state_dict_is_accepted(tmp_path):
    config = ColorizerConfig.tiny()
    state = random_state_dict(generator_spec(config.biggan))
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "g.pth")
    generator = load_biggan_generator(tmp_path / "g.pth", config.biggan)
    assert torch.equal(generator.linear.weight, state["linear.weight"])
