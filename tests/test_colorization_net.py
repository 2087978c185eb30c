import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gcpcolor.config import ColorizerConfig
from gcpcolor.models.colorization_net import (
    SPADE,
    ColorizationNet,
    ModulatedDeformConv2d,
    SPADEResBlock,
    positional_norm,
)

TINY = ColorizerConfig.tiny()
TINY_REFERENCE_CHANNELS = TINY.biggan.feature_channels


def tiny_net() -> ColorizationNet:
    return ColorizationNet(TINY.colorization, TINY_REFERENCE_CHANNELS)


def warped_features(batch: int, side: int, generator: torch.Generator) -> dict[int, torch.Tensor]:
    """Fake warped features for a `side`² input: F64 at side/4, F128 at side/2, F256 at side."""
    features = {}
    for resolution, channels in TINY_REFERENCE_CHANNELS.items():
        size = side * resolution // 256
        features[resolution] = torch.randn(batch, channels, size, size, generator=generator)
    return features


def test_output_shape_and_range_at_working_size():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    net = tiny_net().eval()
    l_input = torch.rand(1, 1, 256, 256, generator=generator) * 2 - 1
    with torch.no_grad():
        ab = net(l_input, warped_features(1, 256, generator))
    assert ab.shape == (1, 2, 256, 256)
    assert torch.isfinite(ab).all()
    assert ab.abs().max() <= 1.0
    assert ab.std() > 0  # not a constant image


def test_positional_norm_hand_computed():
    # One pixel with channels (1, 2, 3): mean 2, unbiased variance 1.
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    expected = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1) / np.sqrt(1.0 + 1e-5)
    torch.testing.assert_close(positional_norm(x), expected)


def test_positional_norm_matches_numpy_per_pixel():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 4, 5, generator=generator, dtype=torch.float64) * 3 + 1
    array = x.numpy()
    mean = array.mean(axis=1, keepdims=True)
    var = array.var(axis=1, ddof=1, keepdims=True)
    expected = (array - mean) / np.sqrt(var + 0.5)
    np.testing.assert_allclose(positional_norm(x, eps=0.5).numpy(), expected, rtol=1e-12)


def test_fresh_deformable_conv_is_half_a_regular_conv_plus_bias():
    generator = torch.Generator().manual_seed(2)
    layer = ModulatedDeformConv2d(4, 6, cond_channels=5)
    assert layer.conv_offset.weight.abs().sum() == 0 and layer.conv_offset.bias.abs().sum() == 0
    with torch.no_grad():
        layer.bias.copy_(torch.randn(6, generator=generator))
    x = torch.randn(2, 4, 9, 7, generator=generator)
    cond = torch.randn(2, 5, 9, 7, generator=generator)
    # Zero offsets sample the regular grid; zero mask logits give sigmoid(0) = 0.5 on every tap.
    expected = 0.5 * F.conv2d(x, layer.weight, padding=1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x, cond), expected, atol=1e-5, rtol=1e-5)


def test_deformable_conv_offset_channel_layout():
    """Offsets of +1 row on every tap with an open mask equal a conv one row further down."""
    generator = torch.Generator().manual_seed(3)
    layer = ModulatedDeformConv2d(3, 4, cond_channels=2)
    with torch.no_grad():
        bias = torch.zeros(27)
        bias[0:18:2] = 1.0  # torchvision reads the 18 offset channels as (dy, dx) pairs per tap
        bias[18:] = 40.0  # mask logits: sigmoid -> 1
        layer.conv_offset.bias.copy_(bias)
    x = torch.randn(1, 3, 6, 5, generator=generator)
    cond = torch.randn(1, 2, 6, 5, generator=generator)
    # Output row y, tap ky reads input row y + ky (rows past the bottom are zero).
    shifted = F.pad(x, (1, 1, 0, 2))
    expected = F.conv2d(shifted, layer.weight, layer.bias)
    torch.testing.assert_close(layer(x, cond), expected, atol=1e-5, rtol=1e-5)


def test_spade_matches_its_formula_and_resizes_the_reference():
    torch.manual_seed(4)
    spade = SPADE(norm_channels=8, ref_channels=16)
    x = torch.randn(2, 8, 6, 6)
    ref = torch.randn(2, 16, 6, 6)
    normalized = positional_norm(x)
    cond = spade.conv_cond(torch.cat((normalized, ref), dim=1))
    refined = spade.dcn(ref, cond)
    expected = normalized * (1 + spade.mlp_gamma(refined)) + spade.mlp_beta(refined)
    torch.testing.assert_close(spade(x, ref), expected)
    assert spade.conv_cond[0].out_channels == (8 + 16) // 8

    small_ref = torch.randn(2, 16, 3, 3)
    resized = F.interpolate(small_ref, size=(6, 6), mode="bilinear", align_corners=False)
    torch.testing.assert_close(spade(x, small_ref), spade(x, resized))


def test_spade_res_block_shortcut():
    torch.manual_seed(5)
    same = SPADEResBlock(8, 8, ref_channels=4)
    assert not hasattr(same, "conv_s") and not hasattr(same, "norm_s")
    changing = SPADEResBlock(8, 6, ref_channels=4)
    assert changing.conv_s.weight.shape == (6, 8, 1, 1) and changing.conv_s.bias is None
    assert changing.conv_0.out_channels == 6
    x, ref = torch.randn(1, 8, 5, 5), torch.randn(1, 4, 5, 5)
    assert changing(x, ref).shape == (1, 6, 5, 5)
    # With a zeroed residual branch the block is the identity.
    with torch.no_grad():
        same.conv_1.weight.zero_()
        same.conv_1.bias.zero_()
    torch.testing.assert_close(same(x, ref), x)


def test_gradients_reach_every_parameter_after_one_step():
    torch.manual_seed(6)
    generator = torch.Generator().manual_seed(6)
    net = tiny_net()
    l_input = torch.rand(2, 1, 64, 64, generator=generator) * 2 - 1
    warped = warped_features(2, 64, generator)
    target = torch.rand(2, 2, 64, 64, generator=generator) - 0.5
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

    offsets_before = net.res_blks[0].norm_0.dcn.conv_offset.weight.detach().clone()
    for _ in range(2):
        optimizer.zero_grad()
        F.mse_loss(net(l_input, warped), target).backward()
        optimizer.step()
    # The zero-initialised offset convs learn, and through them the condition nets get gradient.
    assert not torch.equal(net.res_blks[0].norm_0.dcn.conv_offset.weight, offsets_before)
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_rejects_unsupported_downsampling_and_missing_references():
    config = dataclasses.replace(TINY.colorization, n_downsampling=3)
    with pytest.raises(ValueError, match="n_downsampling=2"):
        ColorizationNet(config, TINY_REFERENCE_CHANNELS)
    with pytest.raises(ValueError, match=r"lacks resolution\(s\) \[256\]"):
        ColorizationNet(TINY.colorization, {64: 32, 128: 16})
    net = tiny_net()
    generator = torch.Generator().manual_seed(7)
    warped = warped_features(1, 32, generator)
    del warped[128]
    with pytest.raises(ValueError, match=r"lack resolution\(s\) \[128\]"):
        net(torch.zeros(1, 1, 32, 32), warped)


def test_full_size_state_dict_matches_authors_layout():
    full = ColorizerConfig()
    assert full.biggan.feature_channels == {64: 384, 128: 192, 256: 96}
    net = ColorizationNet(full.colorization, full.biggan.feature_channels)
    state = net.state_dict()
    expected_shapes = {
        "encoder.1.weight": (64, 1, 7, 7),
        "encoder.4.weight": (128, 64, 3, 3),
        "encoder.7.weight": (256, 128, 3, 3),
        "res_blks.0.norm_0.conv_cond.0.weight": (80, 640, 3, 3),
        "res_blks.0.norm_0.conv_cond.2.weight": (384, 80, 3, 3),
        "res_blks.0.norm_0.dcn.weight": (384, 384, 3, 3),
        "res_blks.0.norm_0.dcn.bias": (384,),
        "res_blks.5.norm_1.dcn.conv_offset.weight": (27, 384, 3, 3),
        "res_blks.5.norm_1.dcn.conv_offset.bias": (27,),
        "res_blks.5.conv_1.weight": (256, 256, 3, 3),
        "up_norm1.mlp_beta.weight": (256, 384, 3, 3),
        "up_conv1.weight": (256, 128, 3, 3),  # ConvTranspose2d stores (in, out, k, k)
        "up_norm2.conv_cond.0.weight": (40, 320, 3, 3),
        "up_conv2.weight": (128, 64, 3, 3),
        "up_norm3.mlp_gamma.weight": (64, 96, 3, 3),
        "head.0.weight": (2, 64, 3, 3),
        "head.0.bias": (2,),
    }
    for name, shape in expected_shapes.items():
        assert tuple(state[name].shape) == shape, name
    # encoder 3 convs + 6 blocks x (2 convs + 2 SPADEs of 12) + 3 SPADEs + 2 up-convs + head
    assert len(state) == 3 * 2 + 6 * (2 * 2 + 2 * 12) + 3 * 12 + 2 * 2 + 2
    assert not any("conv_s" in name or "norm_s" in name for name in state)
    total = sum(p.numel() for p in net.parameters())
    print(f"ColorizationNet full-size parameters: {total}")


@pytest.mark.slow
def test_full_size_forward():
    torch.manual_seed(8)
    full = ColorizerConfig()
    net = ColorizationNet(full.colorization, full.biggan.feature_channels).eval()
    warped = {
        resolution: torch.randn(1, channels, resolution, resolution)
        for resolution, channels in full.biggan.feature_channels.items()
    }
    with torch.no_grad():
        ab = net(torch.rand(1, 1, 256, 256) * 2 - 1, warped)
    assert ab.shape == (1, 2, 256, 256)
    assert torch.isfinite(ab).all() and ab.abs().max() <= 1.0


# torchvision's CPU deform_conv2d kills the process (segmentation fault) or hangs on a NaN or
# huge offset, so the layer is driven in a child process: a crash fails the test, not pytest.
_EXTREME_OFFSETS_SCRIPT = r"""
import sys
import torch
from gcpcolor.models.colorization_net import ModulatedDeformConv2d

torch.manual_seed(0)
layer = ModulatedDeformConv2d(3, 4, cond_channels=2)
x = torch.randn(1, 3, 8, 8)
for name in sys.argv[1:]:
    with torch.no_grad():
        if name == "nan-features":  # what the network sees after a broken layer upstream
            cond = torch.full((1, 2, 8, 8), float("nan"))
        else:
            layer.conv_offset.bias[:18] = float(name)
            cond = torch.zeros(1, 2, 8, 8)
        output = layer(x, cond)
    print(name, "finite" if torch.isfinite(output).all() else "not finite", flush=True)
"""


def test_nan_and_huge_offsets_give_a_finite_result_instead_of_a_crash():
    import subprocess
    import sys
    from pathlib import Path

    cases = ["nan", "inf", "-inf", "1e30", "-1e10", "nan-features"]
    repository = Path(__file__).resolve().parents[1]
    completed = subprocess.run(
        [sys.executable, "-c", _EXTREME_OFFSETS_SCRIPT, *cases], capture_output=True, text=True, timeout=240,
        cwd=repository, env={**__import__("os").environ, "PYTHONPATH": str(repository), "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, f"exit {completed.returncode}: {completed.stdout}{completed.stderr}"
    assert completed.stdout.split("\n")[:-1] == [f"{case} finite" for case in cases]


def test_clamping_offsets_changes_no_result():
    """Taps pushed any distance past the feature map read only zero padding, so offsets up to
    several times the map's size give what torchvision gives without the clamp."""
    from torchvision.ops import deform_conv2d

    generator = torch.Generator().manual_seed(5)
    layer = ModulatedDeformConv2d(3, 4, cond_channels=2)
    x = torch.randn(1, 3, 6, 9, generator=generator)
    with torch.no_grad():
        layer.conv_offset.bias.copy_(torch.randn(27, generator=generator) * 30)  # up to ~±90 px
        cond = torch.zeros(1, 2, 6, 9)
        offset_a, offset_b, mask_logits = torch.chunk(layer.conv_offset(cond), 3, dim=1)
        unclamped = deform_conv2d(x, torch.cat((offset_a, offset_b), dim=1), layer.weight, layer.bias,
                                  padding=1, mask=torch.sigmoid(mask_logits))
        assert layer.conv_offset.bias[:18].abs().max() > 9 + 3  # some offsets are really clamped
        # On CPU the layer samples bilinearly instead of calling torchvision's kernel: equal up to
        # float rounding of the sums, not bit for bit.
        torch.testing.assert_close(layer(x, cond), unclamped, atol=1e-6, rtol=1e-5)
