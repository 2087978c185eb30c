from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from gcpcolor.config import config_from_dict, config_to_dict
from gcpcolor.losses import (
    ContextualLoss,
    LossWeights,
    contextual_loss,
    domain_alignment_loss,
    encoder_feature_loss,
    latent_regularizer,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    perceptual_loss,
)
from gcpcolor.models.vgg import VGG19Features

CONTEXT_LAYERS = ("relu3_2", "relu4_2", "relu5_2")


@pytest.fixture(scope="module")
def random_vgg(tmp_path_factory: pytest.TempPathFactory) -> VGG19Features:
    absent = tmp_path_factory.mktemp("no_weights") / "absent.pth"
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="randomly initialised"):
        return VGG19Features(weights_path=absent, layers=CONTEXT_LAYERS, allow_random=True)


def reference_contextual_loss(
    x: torch.Tensor, y: torch.Tensor, band_width: float, eps: float = 1e-5
) -> float:
    """Mechrez et al. 2018 written out element by element: x is the output, y the target."""
    total = 0.0
    for n in range(x.shape[0]):
        y_mean = y[n].mean(dim=(1, 2))
        xs = [v - y_mean for v in x[n].flatten(1).T]
        ys = [v - y_mean for v in y[n].flatten(1).T]
        xs = [v / v.norm() for v in xs]
        ys = [v / v.norm() for v in ys]
        d = [[1.0 - float(xi @ yj) for yj in ys] for xi in xs]
        cx = []
        for row in d:
            nearest = min(row)
            w = [math.exp((1.0 - dij / (nearest + eps)) / band_width) for dij in row]
            cx.append([wij / sum(w) for wij in w])
        cx_mean = sum(max(cx[i][j] for i in range(len(xs))) for j in range(len(ys))) / len(ys)
        total += -math.log(cx_mean)
    return total / x.shape[0]


def test_encoder_feature_loss_is_mean_of_l1_over_layers() -> None:
    inversion = [torch.ones(2, 3, 4, 4), torch.full((2, 5, 2, 2), 2.0), torch.full((2, 7, 1, 1), -3.0)]
    real = [torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 2, 2), torch.zeros(2, 7, 1, 1)]
    assert encoder_feature_loss(inversion, real).item() == pytest.approx((1 + 2 + 3) / 3)
    with pytest.raises(ValueError, match="equally long"):
        encoder_feature_loss(inversion, real[:2])


def test_latent_regularizer_hand_values() -> None:
    assert latent_regularizer(torch.ones(4, 120)).item() == pytest.approx(60.0)
    z = torch.tensor([[3.0, 4.0], [0.0, 0.0]], requires_grad=True)
    loss = latent_regularizer(z)
    assert loss.item() == pytest.approx(0.5 * 25 / 2)
    loss.backward()
    torch.testing.assert_close(z.grad, z.detach() / 2)  # d/dz of ½‖z‖² averaged over N = 2


def test_perceptual_loss_is_mse_on_the_chosen_layer() -> None:
    out = {"relu5_2": torch.full((1, 4, 2, 2), 3.0), "relu4_2": torch.zeros(1, 4, 4, 4)}
    target = {"relu5_2": torch.ones(1, 4, 2, 2), "relu4_2": torch.full((1, 4, 4, 4), 0.5)}
    assert perceptual_loss(out, target).item() == pytest.approx(4.0)
    assert perceptual_loss(out, target, layer="relu4_2").item() == pytest.approx(0.25)


def test_domain_alignment_loss_is_l1() -> None:
    assert domain_alignment_loss(torch.ones(2, 128, 8, 8), torch.full((2, 128, 8, 8), 3.0)).item() == 2.0


def test_lsgan_hand_values() -> None:
    ones = [torch.ones(2, 1, 5, 5), torch.ones(2, 1, 3, 3)]
    zeros = [torch.zeros(2, 1, 5, 5), torch.zeros(2, 1, 3, 3)]
    assert lsgan_discriminator_loss(ones, zeros).item() == 0.0  # a perfect discriminator
    assert lsgan_discriminator_loss(zeros, ones).item() == pytest.approx(1.0)  # ½·1 + ½·1
    assert lsgan_generator_loss(zeros).item() == pytest.approx(0.5)
    assert lsgan_generator_loss(ones).item() == 0.0
    # Mean over scales: one fooled scale (0) and one not (0.5).
    assert lsgan_generator_loss([ones[0], zeros[1]]).item() == pytest.approx(0.25)
    # A single tensor is one scale.
    assert lsgan_generator_loss(torch.full((1, 1, 4, 4), 3.0)).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="scales"):
        lsgan_discriminator_loss(ones, zeros[:1])


@pytest.mark.parametrize("band_width", [0.1, 0.5])
def test_contextual_loss_matches_explicit_loop(band_width: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64)
    y = torch.randn(2, 4, 3, 2, dtype=torch.float64) + 0.3
    expected = reference_contextual_loss(x, y, band_width)
    assert contextual_loss(x, y, band_width=band_width).item() == pytest.approx(expected, rel=1e-9)
    # Output and target play different roles: swapping them changes the value.
    swapped = contextual_loss(y, x, band_width=band_width).item()
    assert swapped == pytest.approx(reference_contextual_loss(y, x, band_width), rel=1e-9)
    assert swapped != pytest.approx(expected, rel=1e-3)


def test_contextual_loss_of_identical_features_is_zero_and_otherwise_larger() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 16, 6, 6)
    same = contextual_loss(x, x).item()
    assert same == pytest.approx(0.0, abs=1e-5)
    channel_shuffled = x[:, torch.randperm(16)]
    assert contextual_loss(channel_shuffled, x).item() > same + 0.1
    assert contextual_loss(torch.randn(2, 16, 6, 6), x).item() > same + 0.1


def test_contextual_loss_ignores_spatial_alignment() -> None:
    torch.manual_seed(2)
    x, y = torch.randn(1, 8, 5, 5), torch.randn(1, 8, 5, 5)
    permutation = torch.randperm(25)
    y_permuted = y.flatten(2)[:, :, permutation].view_as(y)
    x_permuted = x.flatten(2)[:, :, permutation].view_as(x)
    torch.testing.assert_close(contextual_loss(x, y_permuted), contextual_loss(x, y))
    torch.testing.assert_close(contextual_loss(x_permuted, y), contextual_loss(x, y))
    # Permuted copies are still a perfect match.
    assert contextual_loss(x, x_permuted).item() == pytest.approx(0.0, abs=1e-5)


def test_contextual_loss_bounds_and_stability_at_small_band_width() -> None:
    # CX ≤ 1, and every output's best target has CX_ij ≥ 1/|Y|, so 0 ≤ loss ≤ 2·log|Y|.
    torch.manual_seed(3)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    y = torch.randn(2, 8, 4, 4)
    loss = contextual_loss(x, y, band_width=1e-3)
    assert 0.0 <= loss.item() <= 2 * math.log(16)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_contextual_loss_rejects_mismatched_channels() -> None:
    with pytest.raises(ValueError, match="equal N and C"):
        contextual_loss(torch.randn(1, 4, 3, 3), torch.randn(1, 5, 3, 3))


def test_contextual_module_weights_layers_2_4_8(random_vgg: VGG19Features) -> None:
    torch.manual_seed(4)
    output, exemplar = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    module = ContextualLoss(random_vgg)
    assert module.layer_weights == {"relu3_2": 2.0, "relu4_2": 4.0, "relu5_2": 8.0}
    out_features, ex_features = random_vgg(output), random_vgg(exemplar)
    expected = sum(
        weight * contextual_loss(out_features[layer], ex_features[layer])
        for layer, weight in module.layer_weights.items()
    )
    torch.testing.assert_close(module(output, exemplar), expected)
    assert module(exemplar, exemplar).item() == pytest.approx(0.0, abs=1e-4)


def test_contextual_module_pools_large_maps(random_vgg: VGG19Features) -> None:
    torch.manual_seed(5)
    output, exemplar = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    module = ContextualLoss(random_vgg, max_positions=16)
    out_features, ex_features = random_vgg(output), random_vgg(exemplar)
    # relu3_2 is 8x8 = 64 positions > 16: pooled by 2 to 4x4; the deeper maps are small enough.
    expected = (
        2.0
        * contextual_loss(F.avg_pool2d(out_features["relu3_2"], 2), F.avg_pool2d(ex_features["relu3_2"], 2))
        + 4.0 * contextual_loss(out_features["relu4_2"], ex_features["relu4_2"])
        + 8.0 * contextual_loss(out_features["relu5_2"], ex_features["relu5_2"])
    )
    torch.testing.assert_close(module(output, exemplar), expected)


def test_contextual_module_needs_its_layers(random_vgg: VGG19Features) -> None:
    with pytest.raises(ValueError, match="relu1_1"):
        ContextualLoss(random_vgg, {"relu1_1": 1.0})


def test_vgg_losses_backpropagate_into_image_only(random_vgg: VGG19Features) -> None:
    output = torch.rand(1, 3, 32, 32, requires_grad=True)
    exemplar = torch.rand(1, 3, 32, 32, requires_grad=True)
    ground_truth = torch.rand(1, 3, 32, 32)
    loss = perceptual_loss(random_vgg(output), random_vgg(ground_truth)) + ContextualLoss(random_vgg)(
        output, exemplar
    )
    loss.backward()
    assert output.grad is not None and output.grad.abs().sum() > 0
    assert exemplar.grad is None  # the exemplar is a fixed target
    assert all(parameter.grad is None for parameter in random_vgg.parameters())


def test_loss_weights_paper_values_and_round_trip() -> None:
    weights = LossWeights()
    assert (weights.feature, weights.latent, weights.perceptual) == (1.0, 0.0125, 1e-3)
    assert (weights.adversarial, weights.domain, weights.contextual) == (1.0, 10.0, 0.1)
    assert weights.contextual_layer_weights == {"relu3_2": 2.0, "relu4_2": 4.0, "relu5_2": 8.0}
    hash(weights)
    data = json.loads(json.dumps(config_to_dict(weights)))
    assert config_from_dict(LossWeights, data) == weights
    changed = config_from_dict(LossWeights, {"contextual_relu5_2": 1.0})
    assert changed.contextual_layer_weights["relu5_2"] == 1.0

