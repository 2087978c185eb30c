"""The default model's frozen ImageNet backbone runs once per photo at inference: the class probe
and the colorization network share its feature maps, with the same results as two passes."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from gcpcolor.config import ColorizationConfig, ColorizerConfig
from gcpcolor.model import GCPColorizationModel
from gcpcolor.pipeline import Colorizer


def tiny_semantic_model() -> GCPColorizationModel:
    torch.manual_seed(0)
    config = dataclasses.replace(
        ColorizerConfig.tiny(),
        colorization=ColorizationConfig(type="semantic", base_channels=8),
        class_predictor="imagenet_probe",
    )
    return GCPColorizationModel(config).eval()


def count_backbone_passes(model: GCPColorizationModel) -> list[int]:
    calls = [0]
    backbone = model.colorization_net.backbone
    original = backbone.features

    def counted(rgb):
        calls[0] += 1
        return original(rgb)

    backbone.features = counted
    return calls


def test_forward_and_class_logits_are_identical_with_precomputed_backbone_features():
    model = tiny_semantic_model()
    l_input = torch.rand(2, 1, 32, 32) * 2 - 1
    classes = torch.tensor([0, 1])
    features = model.backbone_features(l_input)
    with torch.no_grad():
        alone, shared = model(l_input, classes), model(l_input, classes, backbone_features=features)
    assert torch.equal(alone.ab, shared.ab)
    assert torch.equal(alone.ab_logits, shared.ab_logits)
    assert torch.equal(model.class_logits(l_input), model.class_logits(l_input, features))


def test_colorize_batch_runs_the_backbone_once_with_the_same_result():
    model = tiny_semantic_model()
    colorizer = Colorizer(model, is_demo=True)
    photos = [np.random.default_rng(seed).random((40, 30), dtype=np.float32) for seed in (1, 2)]
    calls = count_backbone_passes(model)
    shared = colorizer.colorize_batch(photos, class_ids=[None, 3])
    assert calls[0] == 1

    calls[0] = 0
    model.backbone_features = lambda l_input: None  # the former path: each consumer runs it
    separate = colorizer.colorize_batch(photos, class_ids=[None, 3])
    assert calls[0] == 2
    for a, b in zip(shared, separate):
        assert a.class_id == b.class_id
        np.testing.assert_array_equal(a.image, b.image)


def test_networks_without_a_backbone_have_no_backbone_features():
    model = GCPColorizationModel(ColorizerConfig.tiny())
    assert model.backbone_features(torch.zeros(1, 1, 32, 32)) is None
