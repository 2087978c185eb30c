from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from gcpcolor.config import config_from_dict, config_to_dict
from gcpcolor.models.patchgan import MultiScalePatchGAN, PatchGANConfig, lab_to_discriminator_input

TINY = PatchGANConfig(base_channels=4)


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [module for module in model.modules() if isinstance(module, nn.Conv2d)]


def _expected_side(side: int, scale: int, n_layers: int) -> int:
    """Score-map side from conv arithmetic: pool 3/2/1, then 4x4 convs with padding 2."""
    for _ in range(scale):
        side = (side + 2 - 3) // 2 + 1
    for _ in range(n_layers):
        side = (side + 4 - 4) // 2 + 1
    for _ in range(2):
        side = side + 4 - 4 + 1
    return side


@pytest.mark.parametrize(("size", "expected_sides"), [(256, [35, 19, 11]), (64, [11, 7, 5])])
def test_output_shapes(size: int, expected_sides: list[int]) -> None:
    model = MultiScalePatchGAN(TINY)
    scores = model(torch.randn(2, 3, size, size))
    assert [s.shape for s in scores] == [(2, 1, side, side) for side in expected_sides]
    assert expected_sides == [_expected_side(size, scale, 3) for scale in range(3)]


def test_non_square_input_and_other_depths() -> None:
    model = MultiScalePatchGAN(PatchGANConfig(base_channels=4, n_layers=2, num_scales=2))
    scores = model(torch.randn(1, 3, 64, 96))
    assert [s.shape[2:] for s in scores] == [
        (_expected_side(64, k, 2), _expected_side(96, k, 2)) for k in range(2)
    ]


def test_default_widths_follow_pix2pixhd() -> None:
    model = MultiScalePatchGAN()
    assert len(model.scales) == 3
    widths = [(conv.in_channels, conv.out_channels, conv.stride[0]) for conv in _convs(model.scales[0])]
    assert widths == [(3, 64, 2), (64, 128, 2), (128, 256, 2), (256, 512, 1), (512, 1, 1)]
    assert all(conv.kernel_size == (4, 4) for conv in _convs(model))
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in model.modules()) == 12
    assert not any(isinstance(m, (nn.Sigmoid, nn.BatchNorm2d, nn.InstanceNorm2d)) for m in model.modules())


def test_every_conv_is_spectrally_normalised() -> None:
    model = MultiScalePatchGAN(TINY)
    convs = _convs(model)
    assert len(convs) == 3 * (3 + 2)
    assert all(parametrize.is_parametrized(conv, "weight") for conv in convs)

    # In train mode every weight access runs one power iteration; after enough of them the
    # effective weight has spectral norm 1.
    model.train()
    with torch.no_grad():
        for conv in convs:
            for _ in range(100):
                _ = conv.weight
    model.eval()
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=1e-2)


def test_scales_see_average_pooled_input() -> None:
    torch.manual_seed(0)
    model = MultiScalePatchGAN(TINY).eval()
    x = torch.randn(1, 3, 40, 40)
    scores = model(x)
    pooled = x
    for scale, discriminator in enumerate(model.scales):
        if scale:
            pooled = F.avg_pool2d(pooled, 3, stride=2, padding=1, count_include_pad=False)
        torch.testing.assert_close(scores[scale], discriminator(pooled))
    # Borders are averaged over real pixels only, so a constant image stays constant.
    assert torch.equal(model.downsample(torch.ones(1, 3, 9, 9)), torch.ones(1, 3, 5, 5))


def test_gradients_reach_every_scale_and_the_input() -> None:
    model = MultiScalePatchGAN(TINY)
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    sum(score.mean() for score in model(x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for scale in model.scales:
        for conv in _convs(scale):
            original = conv.parametrizations.weight.original
            assert original.grad is not None and original.grad.abs().sum() > 0
            assert conv.bias.grad.abs().sum() > 0


def test_lab_to_discriminator_input() -> None:
    lab = torch.tensor([0.0, 50.0, 100.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3).clone()
    lab[:, 1] = torch.tensor([110.0, -55.0, 0.0])
    lab[:, 2] = torch.tensor([-110.0, 22.0, 55.0])
    expected = torch.tensor([[-1.0, 0.0, 1.0], [1.0, -0.5, 0.0], [-1.0, 0.2, 0.5]]).view(1, 3, 1, 3)
    torch.testing.assert_close(lab_to_discriminator_input(lab), expected)


@dataclass(frozen=True)
class _TrainingConfig:
    discriminator: PatchGANConfig = PatchGANConfig()


def test_config_round_trip_and_nesting() -> None:
    config = PatchGANConfig(base_channels=8, num_scales=2)
    assert config_from_dict(PatchGANConfig, config_to_dict(config)) == config
    # Nested under a string annotation, the type is rebuilt from a plain dict.
    nested = config_from_dict(_TrainingConfig, {"discriminator": {"n_layers": 4, "base_channels": 4}})
    assert nested.discriminator == PatchGANConfig(n_layers=4, base_channels=4)
    assert len(MultiScalePatchGAN(nested.discriminator).scales[0].layers) == 2 * 4 + 2 + 1
