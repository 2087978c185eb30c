"""Faster CPU inference keeps the results: deformable conv by sampling, bfloat16 autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import deform_conv2d

from gcpcolor.config import ColorizerConfig
from gcpcolor.model import GCPColorizationModel
from gcpcolor.models.colorization_net import ModulatedDeformConv2d, deform_conv2d_by_sampling
from gcpcolor.pipeline import Colorizer


def test_deform_conv_by_sampling_equals_torchvision_including_samples_outside_the_map():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 9, 7, generator=generator)
    offset = 4 * torch.randn(2, 18, 9, 7, generator=generator)  # many taps land outside
    weight, bias = torch.randn(3, 5, 3, 3, generator=generator), torch.randn(3, generator=generator)
    mask = torch.rand(2, 9, 9, 7, generator=generator)
    expected = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    torch.testing.assert_close(deform_conv2d_by_sampling(x, offset, weight, bias, mask), expected, atol=1e-4, rtol=1e-4)


def test_modulated_deform_conv_on_cpu_matches_the_torchvision_operator():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(4, 6, cond_channels=3)
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.5)  # non-zero offsets and masks
    x, cond = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 8, 8)
    offset_a, offset_b, mask_logits = torch.chunk(layer.conv_offset(cond), 3, dim=1)
    expected = deform_conv2d(x, torch.cat((offset_a, offset_b), 1), layer.weight, layer.bias, padding=1,
                             mask=torch.sigmoid(mask_logits))
    torch.testing.assert_close(layer(x, cond), expected, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny_model() -> GCPColorizationModel:
    torch.manual_seed(0)
    return GCPColorizationModel(ColorizerConfig.tiny())


def test_bfloat16_colorizes_close_to_float32(tiny_model):
    photo = np.random.default_rng(0).random((64, 48), dtype=np.float32)
    exact = Colorizer(tiny_model, is_demo=True).colorize(photo, class_id=1)
    fast = Colorizer(tiny_model, is_demo=True, precision="bfloat16").colorize(photo, class_id=1)
    assert fast.image.dtype == np.float32 and fast.z.dtype == torch.float32
    assert np.abs(fast.image - exact.image).mean() < 2 / 255


def test_unknown_precision_is_refused(tiny_model):
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        Colorizer(tiny_model, is_demo=True, precision="float16")
