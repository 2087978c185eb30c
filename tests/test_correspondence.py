import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from gcpcolor.config import ColorizerConfig
from gcpcolor.models.correspondence import (
    CorrespondenceNet,
    ResidualBlock,
    append_coordinates,
    coordinate_channels,
    warp,
)

TINY = ColorizerConfig.tiny()
TINY_FEATURES = TINY.biggan.correspondence_channels
GRID = 8


def tiny_net(**overrides) -> CorrespondenceNet:
    config = dataclasses.replace(TINY.correspondence, **overrides)
    return CorrespondenceNet(config, TINY_FEATURES)


def random_correspondence(batch: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    logits = torch.randn(batch, grid * grid, grid * grid, generator=generator, dtype=torch.float64)
    return logits.softmax(dim=-1)


def slow_patch_warp(matrix: torch.Tensor, reference: torch.Tensor, grid: int) -> torch.Tensor:
    """Output patch i = sum_j M[i, j] · reference patch j, with explicit loops."""
    k = reference.shape[-1] // grid
    out = torch.zeros_like(reference)
    for b in range(reference.shape[0]):
        for i in range(grid * grid):
            oy, ox = divmod(i, grid)
            for j in range(grid * grid):
                ry, rx = divmod(j, grid)
                patch = reference[b, :, ry * k : (ry + 1) * k, rx * k : (rx + 1) * k]
                out[b, :, oy * k : (oy + 1) * k, ox * k : (ox + 1) * k] += matrix[b, i, j] * patch
    return out


def test_correspondence_rows_are_probability_distributions():
    torch.manual_seed(0)
    net = tiny_net()
    gray = torch.randn(2, TINY_FEATURES, GRID, GRID)
    reference = torch.randn(2, TINY_FEATURES, GRID, GRID)
    matrix = net(gray, reference)
    assert matrix.shape == (2, GRID * GRID, GRID * GRID)
    assert (matrix >= 0).all()
    torch.testing.assert_close(matrix.sum(dim=-1), torch.ones(2, GRID * GRID))


def test_identical_embeddings_at_low_temperature_give_identity_warp():
    torch.manual_seed(1)
    net = tiny_net(temperature=1e-4).double()
    # Same projection on both sides, so position i is most similar to itself (cosine 1).
    net.theta.load_state_dict(net.phi.state_dict())
    embedding = net.embed_gray(torch.randn(1, TINY_FEATURES, GRID, GRID, dtype=torch.float64))
    matrix = net.correspondence(embedding, embedding)
    identity = torch.eye(GRID * GRID, dtype=torch.float64)
    torch.testing.assert_close(matrix[0], identity, atol=1e-6, rtol=0)
    image = torch.randn(1, 3, 4 * GRID, 4 * GRID, dtype=torch.float64)
    torch.testing.assert_close(warp(matrix, image, GRID), image, atol=1e-5, rtol=0)


def test_warp_single_pixel_patches_is_matrix_product():
    generator = torch.Generator().manual_seed(2)
    matrix = random_correspondence(2, GRID, generator)
    reference = torch.randn(2, 5, GRID, GRID, generator=generator, dtype=torch.float64)
    expected = matrix @ reference.flatten(2).transpose(1, 2)  # (B, HW, C)
    out = warp(matrix, reference, GRID)
    assert out.shape == reference.shape
    torch.testing.assert_close(out.flatten(2), expected.transpose(1, 2))


@pytest.mark.parametrize("patch", [2, 4])
def test_patch_warp_matches_explicit_loops(patch):
    grid = 4
    generator = torch.Generator().manual_seed(3 + patch)
    matrix = random_correspondence(2, grid, generator)
    side = grid * patch
    reference = torch.randn(2, 3, side, side, generator=generator, dtype=torch.float64)
    expected = slow_patch_warp(matrix, reference, grid)
    torch.testing.assert_close(warp(matrix, reference, grid), expected)


def test_warp_rejects_mismatched_sizes():
    matrix = torch.full((1, 16, 16), 1 / 16)
    with pytest.raises(ValueError, match="multiple of 4"):
        warp(matrix, torch.zeros(1, 3, 10, 10), grid_size=4)
    with pytest.raises(ValueError, match="correspondence must be"):
        warp(matrix, torch.zeros(1, 3, 16, 16), grid_size=8)
    with pytest.raises(ValueError, match="batch sizes differ"):
        warp(matrix, torch.zeros(2, 3, 8, 8), grid_size=4)


def test_coordinate_channels_corners_and_orientation():
    height, width = 5, 7
    coords = coordinate_channels(2, height, width, dtype=torch.float32, device=torch.device("cpu"))
    assert coords.shape == (2, 3, height, width)
    root2 = math.sqrt(2.0)
    corners = {
        (0, 0): (-1.0, -1.0, root2),
        (0, width - 1): (1.0, -1.0, root2),
        (height - 1, 0): (-1.0, 1.0, root2),
        (height - 1, width - 1): (1.0, 1.0, root2),
        (height // 2, width // 2): (0.0, 0.0, 0.0),
    }
    for (row, col), values in corners.items():
        torch.testing.assert_close(coords[1, :, row, col], torch.tensor(values))
    # x grows along the width in equal steps 2 / (W - 1); y along the height.
    torch.testing.assert_close(coords[0, 0, 3], torch.arange(width) * 2.0 / (width - 1) - 1)
    torch.testing.assert_close(coords[0, 1, :, 2], torch.arange(height) * 2.0 / (height - 1) - 1)

    features = torch.randn(2, 4, height, width)
    appended = append_coordinates(features)
    assert appended.shape == (2, 7, height, width)
    torch.testing.assert_close(appended[:, :4], features)
    torch.testing.assert_close(appended[:, 4:], coords)


def test_embeddings_are_unit_vectors_per_position():
    torch.manual_seed(4)
    net = tiny_net()
    features = torch.randn(2, TINY_FEATURES, GRID, GRID)
    for embedding in (net.embed_gray(features), net.embed_reference(features)):
        assert embedding.shape == features.shape
        torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2, GRID, GRID))
    # The two sides have their own private blocks.
    assert not torch.allclose(net.embed_gray(features), net.embed_reference(features))
    with pytest.raises(ValueError, match=f"\\(B, {TINY_FEATURES}, H, W\\)"):
        net.embed_gray(torch.randn(1, TINY_FEATURES + 1, GRID, GRID))


def test_residual_block_matches_its_formula():
    torch.manual_seed(5)
    block = ResidualBlock(6)
    with torch.no_grad():
        block.prelu.weight.fill_(0.1)
    x = torch.randn(2, 6, 5, 5)

    def conv(layer, inp):
        return F.conv2d(F.pad(inp, (1, 1, 1, 1), mode="reflect"), layer.weight, layer.bias)

    def prelu(inp):
        return torch.where(inp > 0, inp, 0.1 * inp)

    hidden = prelu(F.instance_norm(conv(block.conv1, x)))
    expected = prelu(F.instance_norm(conv(block.conv2, hidden)) + x)
    torch.testing.assert_close(block(x), expected)
    assert sum(p.numel() for p in block.norm1.parameters()) == 0


def test_gradient_reaches_every_layer():
    torch.manual_seed(6)
    net = tiny_net(temperature=0.1)
    gray = torch.randn(1, TINY_FEATURES, GRID, GRID)
    reference = torch.randn(1, TINY_FEATURES, GRID, GRID)
    image = torch.randn(1, 3, 2 * GRID, 2 * GRID)
    warp(net(gray, reference), image, GRID).square().mean().backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name
    groups = {name.split(".")[0] for name, _ in net.named_parameters()}
    assert groups == {"private_layer", "share_layer", "theta", "phi"}


def test_full_size_state_dict_matches_authors_layout():
    full = ColorizerConfig()
    net = CorrespondenceNet(full.correspondence, full.biggan.correspondence_channels)
    state = net.state_dict()
    expected_shapes = {
        "private_layer.0.conv1.weight": (576, 576, 3, 3),
        "private_layer.1.conv2.bias": (576,),
        "private_layer.0.prelu.weight": (1,),
        "share_layer.1.conv2.weight": (579, 579, 3, 3),
        "share_layer.0.prelu.weight": (1,),
        "theta.weight": (128, 579, 1, 1),
        "phi.weight": (128, 579, 1, 1),
        "phi.bias": (128,),
    }
    for name, shape in expected_shapes.items():
        assert tuple(state[name].shape) == shape, name
    # 2 private + 2 shared blocks x (conv1, conv2 weight/bias + prelu) + theta/phi weight/bias;
    # no InstanceNorm buffers, exactly like the authors' `net_corr`.
    assert len(state) == 4 * 5 + 4
    total = sum(p.numel() for p in net.parameters())
    print(f"CorrespondenceNet full-size parameters: {total}")
    private = 2 * (576 * 576 * 9 + 576) + 1
    shared = 2 * (579 * 579 * 9 + 579) + 1
    assert total == 2 * private + 2 * shared + 2 * (128 * 579 + 128)


@pytest.mark.slow
def test_full_size_forward_and_warps():
    torch.manual_seed(8)
    full = ColorizerConfig()
    net = CorrespondenceNet(full.correspondence, full.biggan.correspondence_channels).eval()
    gray = torch.randn(1, 576, 64, 64)
    reference = torch.randn(1, 576, 64, 64)
    with torch.no_grad():
        matrix = net(gray, reference)
        assert matrix.shape == (1, 4096, 4096)
        torch.testing.assert_close(matrix.sum(dim=-1), torch.ones(1, 4096))
        for side, channels in ((64, 384), (128, 192), (256, 96), (256, 3)):
            warped = warp(matrix, torch.randn(1, channels, side, side))
            assert warped.shape == (1, channels, side, side)


def test_correspondence_weights_have_no_subnormal_numbers():
    # Subnormal weights slow the warp's matrix products many times over on x86 CPUs.
    torch.manual_seed(0)
    net = tiny_net(temperature=1e-3)
    gray = net.embed_gray(torch.randn(1, TINY_FEATURES, GRID, GRID))
    reference = net.embed_reference(torch.randn(1, TINY_FEATURES, GRID, GRID))
    matrix = net.correspondence(gray, reference)
    positive = matrix[matrix > 0]
    assert positive.min() >= torch.finfo(matrix.dtype).tiny
    torch.testing.assert_close(matrix.sum(dim=-1), torch.ones(1, GRID * GRID))
