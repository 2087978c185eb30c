"""BigGAN prior: layer numerics, tiny-model behaviour, full-size checkpoint layout."""

from __future__ import annotations

import pytest
import torch

from gcpcolor.config import BigGANConfig, ColorizerConfig, EncoderConfig
from gcpcolor.models.biggan_discriminator import BigGANDiscriminator
from gcpcolor.models.biggan_encoder import BigGANEncoder
from gcpcolor.models.biggan_generator import BigGANGenerator
from gcpcolor.models.biggan_layers import (
    ConditionalBatchNorm,
    GBlock,
    SelfAttention,
    SNConv2d,
    SNEmbedding,
    SNLinear,
    average_pool_2x,
)

TINY = ColorizerConfig.tiny()


def _buffers(module: torch.nn.Module, suffix: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if k.endswith(suffix)}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------------------------------------
# Spectral norm
# ---------------------------------------------------------------------------------------------


def test_spectral_norm_one_step_matches_hand_computation():
    torch.manual_seed(0)
    layer = SNLinear(4, 3, eps=1e-12).eval()
    u = layer.u0.clone()
    w = layer.weight.detach()
    v = u @ w
    v = v / v.norm()
    u_next = v @ w.t()
    u_next = u_next / u_next.norm()
    sigma = (v @ w.t() @ u_next.t()).item()

    x = torch.randn(5, 4)
    expected = x @ (w / sigma).t() + layer.bias.detach()
    torch.testing.assert_close(layer(x), expected)
    # Evaluation neither advances the estimate nor logs the singular value.
    assert torch.equal(layer.u0, u)
    assert torch.equal(layer.sv0, torch.ones(1))


@pytest.mark.parametrize(
    "make_layer, matrix_shape",
    [
        (lambda: SNLinear(20, 30), (30, 20)),
        (lambda: SNConv2d(6, 10, 3, padding=1), (10, 54)),
        (lambda: SNEmbedding(12, 7), (12, 7)),
    ],
    ids=["linear", "conv", "embedding"],
)
def test_spectral_norm_converges_to_unit_spectral_norm(make_layer, matrix_shape):
    torch.manual_seed(1)
    layer = make_layer()
    assert layer.u0.shape == (1, matrix_shape[0])
    assert layer.sv0.shape == (1,)
    layer.train()
    u_before = layer.u0.clone()
    for _ in range(300):
        effective = layer.normalized_weight()
    assert not torch.equal(layer.u0, u_before)
    weight_matrix = layer.weight.detach().reshape(matrix_shape)
    top_singular_value = torch.linalg.matrix_norm(weight_matrix, ord=2)
    torch.testing.assert_close(layer.sv0[0], top_singular_value, rtol=1e-4, atol=0)
    effective_norm = torch.linalg.matrix_norm(effective.detach().reshape(matrix_shape), ord=2)
    assert effective_norm.item() == pytest.approx(1.0, abs=1e-4)


def test_spectral_norm_gradient_flows_through_sigma():
    torch.manual_seed(2)
    layer = SNLinear(5, 4).eval()
    layer(torch.randn(3, 5)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Batch norms, attention, blocks
# ---------------------------------------------------------------------------------------------


def test_conditional_batch_norm_formula_and_running_stats():
    torch.manual_seed(3)
    bn = ConditionalBatchNorm(4, 6, eps=1e-5, sn_eps=None)
    assert isinstance(bn.gain, torch.nn.Linear) and bn.gain.bias is None
    x = torch.randn(3, 4, 5, 5) * 2 + 1
    y = torch.randn(3, 6)
    out = bn.train()(x, y)

    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    gain = 1 + y @ bn.gain.weight.detach().t()
    bias = y @ bn.bias.weight.detach().t()
    expected = (x - mean) / torch.sqrt(var + 1e-5) * gain[:, :, None, None] + bias[:, :, None, None]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.stored_mean, 0.1 * mean.flatten())
    unbiased = x.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.stored_var, 0.9 + 0.1 * unbiased)

    # Evaluation normalises with the stored statistics.
    out_eval = bn.eval()(x, y)
    stored = (x - bn.stored_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.stored_var.view(1, -1, 1, 1) + 1e-5)
    torch.testing.assert_close(
        out_eval, stored * gain[:, :, None, None] + bias[:, :, None, None], rtol=1e-5, atol=1e-5
    )


def test_attention_with_zero_gamma_is_identity():
    torch.manual_seed(4)
    attention = SelfAttention(16, sn_eps=1e-12).eval()
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(attention(x), x)


def _reference_attention(x: torch.Tensor, attention: SelfAttention) -> torch.Tensor:
    """SA-GAN as released, written out position by position."""
    w_theta, w_phi, w_g, w_o = (
        getattr(attention, name).weight.detach()[:, :, 0, 0] for name in ("theta", "phi", "g", "o")
    )
    batch, channels, height, width = x.shape

    def project(weight: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oc,bchw->bohw", weight, x)

    def max_pool(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(batch, t.shape[1], height // 2, 2, width // 2, 2).amax(dim=(3, 5))

    theta = project(w_theta).reshape(batch, -1, height * width)
    phi = max_pool(project(w_phi)).reshape(batch, -1, height * width // 4)
    g = max_pool(project(w_g)).reshape(batch, -1, height * width // 4)
    out = torch.empty_like(x).reshape(batch, channels, height * width)
    for b in range(batch):
        for i in range(height * width):
            scores = torch.stack([theta[b, :, i] @ phi[b, :, j] for j in range(phi.shape[2])])
            weights = torch.exp(scores - scores.max())
            weights = weights / weights.sum()
            mixed = (g[b] * weights).sum(dim=1)
            out[b, :, i] = x[b].reshape(channels, -1)[:, i] + attention.gamma.item() * (w_o @ mixed)
    return out.reshape(x.shape)


def test_attention_matches_reference_formula():
    torch.manual_seed(5)
    attention = SelfAttention(16, sn_eps=None)
    with torch.no_grad():
        attention.gamma.fill_(0.7)
    x = torch.randn(2, 16, 4, 6)
    torch.testing.assert_close(attention(x), _reference_attention(x, attention), rtol=1e-5, atol=1e-5)


def test_encoder_gblock_average_pools():
    torch.manual_seed(6)
    block = GBlock(4, 8, 3, resample=average_pool_2x, bn_eps=1e-5, sn_eps=None).eval()
    out = block(torch.randn(2, 4, 8, 8), torch.randn(2, 3))
    assert out.shape == (2, 8, 4, 4)
    assert isinstance(block.conv1, torch.nn.Conv2d) and not isinstance(block.conv1, SNConv2d)
    same_width = GBlock(8, 8, 3, resample=None, bn_eps=1e-5, sn_eps=None)
    assert same_width.conv_sc is None


# ---------------------------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_generator() -> BigGANGenerator:
    torch.manual_seed(10)
    return BigGANGenerator(TINY.biggan).eval()


@pytest.fixture(scope="module")
def tiny_discriminator() -> BigGANDiscriminator:
    torch.manual_seed(11)
    return BigGANDiscriminator(TINY.biggan).eval()


@pytest.fixture(scope="module")
def tiny_encoder() -> BigGANEncoder:
    torch.manual_seed(12)
    return BigGANEncoder(TINY.encoder).eval()


@torch.no_grad()
def test_generator_outputs(tiny_generator):
    ch = TINY.biggan.g_ch
    z = torch.randn(2, TINY.biggan.dim_z)
    class_ids = torch.tensor([3, 917])
    u_before = _buffers(tiny_generator, "u0")
    image, features = tiny_generator.generate(z, class_ids)
    assert image.shape == (2, 3, 256, 256)
    assert image.min() >= -1 and image.max() <= 1 and image.std() > 0
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        64: (2, 4 * ch, 64, 64),
        128: (2, 2 * ch, 128, 128),
        256: (2, ch, 256, 256),
    }
    assert {k: v.shape[1] for k, v in features.items()} == TINY.biggan.feature_channels

    image_again, features_again = tiny_generator(z, tiny_generator.shared(class_ids))
    assert torch.equal(image, image_again)
    assert all(torch.equal(features[k], features_again[k]) for k in features)
    _assert_same(u_before, _buffers(tiny_generator, "u0"))


@torch.no_grad()
def test_generator_hierarchical_latent(tiny_generator):
    z = torch.randn(1, TINY.biggan.dim_z)
    class_ids = torch.tensor([5])
    reference, _ = tiny_generator.generate(z, class_ids)
    # Separate batch-1 passes, so equality can be exact (batched kernels may differ per row).
    for dim, used in ((119, False), (0, True), (17, True), (118, True)):
        shifted = z.clone()
        shifted[0, dim] += 3.0
        image, _ = tiny_generator.generate(shifted, class_ids)
        if used:
            assert (image - reference).abs().max() > 1e-4, dim
        else:
            assert torch.equal(image, reference), dim


def test_generator_rejects_wrong_latent_size(tiny_generator):
    with pytest.raises(ValueError, match="z must have shape"):
        tiny_generator.generate(torch.randn(1, 119), torch.tensor([0]))


@torch.no_grad()
def test_generator_train_mode_advances_spectral_norm():
    torch.manual_seed(13)
    generator = BigGANGenerator(TINY.biggan).train()
    u_before = _buffers(generator, "u0")
    mean_before = _buffers(generator, "stored_mean")
    generator.generate(torch.randn(2, TINY.biggan.dim_z), torch.tensor([1, 2]))
    u_after = _buffers(generator, "u0")
    assert all(not torch.equal(u_before[k], u_after[k]) for k in u_before)
    assert any(not torch.equal(mean_before[k], v) for k, v in _buffers(generator, "stored_mean").items())


@torch.no_grad()
def test_discriminator_block_outputs(tiny_discriminator):
    ch = TINY.biggan.d_ch
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    outputs = tiny_discriminator.block_outputs(x)
    assert [tuple(o.shape[1:]) for o in outputs] == [
        (ch, 128, 128),
        (2 * ch, 64, 64),
        (4 * ch, 32, 32),
        (8 * ch, 16, 16),
        (8 * ch, 8, 8),
        (16 * ch, 4, 4),
        (16 * ch, 4, 4),
    ]
    first_three = tiny_discriminator.block_outputs(x, depth=3)
    assert len(first_three) == 3
    assert all(torch.equal(a, b) for a, b in zip(first_three, outputs))

    correspondence = tiny_discriminator.correspondence_features(x)
    assert correspondence.shape == (2, TINY.biggan.correspondence_channels, 64, 64)
    torch.testing.assert_close(correspondence[:, : 2 * ch], outputs[1], rtol=0, atol=0)
    upsampled = outputs[2].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(correspondence[:, 2 * ch :], upsampled, rtol=0, atol=0)

    loss_features = tiny_discriminator.encoder_loss_features(x)
    assert len(loss_features) == 3
    assert all(torch.equal(a, b) for a, b in zip(loss_features, outputs[-3:]))


@torch.no_grad()
def test_discriminator_gray_input_is_repeated(tiny_discriminator):
    gray = torch.rand(1, 1, 64, 64) * 2 - 1
    as_gray = tiny_discriminator.block_outputs(gray, depth=3)
    as_rgb = tiny_discriminator.block_outputs(gray.repeat(1, 3, 1, 1), depth=3)
    assert all(torch.equal(a, b) for a, b in zip(as_gray, as_rgb))
    with pytest.raises(ValueError, match="1 or 3"):
        tiny_discriminator.block_outputs(torch.zeros(1, 2, 64, 64))


@torch.no_grad()
def test_discriminator_class_logits_agree_with_projection(tiny_discriminator):
    # 64² is the smallest input the six downsampling blocks accept; it keeps 1000 passes cheap.
    n_classes = TINY.biggan.n_classes
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    u_before = _buffers(tiny_discriminator, "u0")
    scores = tiny_discriminator(x.expand(n_classes, -1, -1, -1), torch.arange(n_classes))
    logits = tiny_discriminator.class_logits(x)
    assert scores.shape == (n_classes,) and logits.shape == (1, n_classes)
    # The difference is the class-independent term linear(h).
    offset = scores - logits[0]
    torch.testing.assert_close(offset, offset[:1].expand_as(offset), rtol=0, atol=1e-4)
    assert logits.argmax(dim=1).item() == scores.argmax().item()
    _assert_same(u_before, _buffers(tiny_discriminator, "u0"))


def test_discriminator_train_mode_advances_spectral_norm():
    torch.manual_seed(14)
    discriminator = BigGANDiscriminator(TINY.biggan).train()
    u_before = _buffers(discriminator, "u0")
    with torch.no_grad():
        discriminator(torch.rand(2, 3, 64, 64), torch.tensor([0, 1]))
    u_after = _buffers(discriminator, "u0")
    assert all(not torch.equal(u_before[k], u_after[k]) for k in u_before)


@torch.no_grad()
def test_encoder_outputs(tiny_encoder):
    l_input = torch.rand(2, 1, 256, 256) * 2 - 1
    class_ids = torch.tensor([7, 400])
    mean_before = _buffers(tiny_encoder, "stored_mean")
    z = tiny_encoder.encode(l_input, class_ids)
    assert z.shape == (2, TINY.encoder.z_dim) and torch.isfinite(z).all()
    assert torch.equal(z, tiny_encoder(l_input, tiny_encoder.shared(class_ids)))
    _assert_same(mean_before, _buffers(tiny_encoder, "stored_mean"))
    other_class = tiny_encoder.encode(l_input, torch.tensor([8, 401]))
    assert not torch.equal(z, other_class)
    with pytest.raises(ValueError, match="gray input"):
        tiny_encoder.encode(torch.zeros(1, 3, 256, 256), torch.tensor([0]))


# ---------------------------------------------------------------------------------------------
# Full-size layout (construction only)
# ---------------------------------------------------------------------------------------------


def _gblock_params(c_in: int, c_out: int, condition: int) -> int:
    convs = (c_in * c_out * 9 + c_out) + (c_out * c_out * 9 + c_out) + (c_in * c_out + c_out)
    return convs + 2 * condition * (c_in + c_out)


def _dblock_params(c_in: int, c_out: int, shortcut: bool) -> int:
    convs = (c_in * c_out * 9 + c_out) + (c_out * c_out * 9 + c_out)
    return convs + (c_in * c_out + c_out if shortcut else 0)


def _attention_params(c: int) -> int:
    return 2 * c * (c // 8) + 2 * c * (c // 2) + 1


def _expected_generator_params(ch: int = 96, shared: int = 128, chunk: int = 17) -> int:
    ins, outs = [16, 16, 8, 8, 4, 2], [16, 8, 8, 4, 2, 1]
    total = 1000 * shared + chunk * 16 * ch * 16 + 16 * ch * 16
    total += sum(_gblock_params(i * ch, o * ch, shared + chunk) for i, o in zip(ins, outs))
    return total + _attention_params(4 * ch) + 2 * ch + (ch * 3 * 9 + 3)


def _expected_discriminator_params(ch: int = 96) -> int:
    outs = [m * ch for m in (1, 2, 4, 8, 8, 16, 16)]
    ins = [3] + outs[:-1]
    total = sum(_dblock_params(i, o, n < 6 or i != o) for n, (i, o) in enumerate(zip(ins, outs)))
    return total + _attention_params(2 * ch) + (16 * ch + 1) + 1000 * 16 * ch


def _expected_encoder_params(ch: int = 64, shared: int = 128, z_dim: int = 120) -> int:
    outs = [m * ch for m in (1, 2, 4, 8, 8, 16, 16)]
    ins = [1] + outs[:-1]
    total = 1000 * shared + sum(_gblock_params(i, o, shared) for i, o in zip(ins[:6], outs[:6]))
    total += (outs[6] * outs[6] * 9 + outs[6]) * 2 + 2 * shared * 2 * outs[6]  # last: no conv_sc
    return total + _attention_params(2 * ch) + outs[6] * z_dim + z_dim


def _num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_generator_layout():
    state = BigGANGenerator(BigGANConfig()).state_dict()
    expected_shapes = {
        "linear.weight": (24576, 17),
        "linear.u0": (1, 24576),
        "linear.sv0": (1,),
        "shared.weight": (1000, 128),
        "blocks.0.0.bn1.gain.weight": (1536, 145),
        "blocks.0.0.bn1.stored_mean": (1536,),
        "blocks.0.0.conv_sc.weight": (1536, 1536, 1, 1),
        "blocks.3.1.theta.weight": (48, 384, 1, 1),
        "blocks.3.1.g.weight": (192, 384, 1, 1),
        "blocks.3.1.o.weight": (384, 192, 1, 1),
        "blocks.3.1.gamma": (),
        "blocks.5.0.conv2.weight": (96, 96, 3, 3),
        "output_layer.0.gain": (96,),
        "output_layer.0.stored_var": (96,),
        "output_layer.2.weight": (3, 96, 3, 3),
        "output_layer.2.u0": (1, 3),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(key.startswith("shared.") and key != "shared.weight" for key in state)
    assert [k for k in state if k.startswith("blocks.") and k.split(".")[2] == "1"] == [
        k for k in state if k.startswith("blocks.3.1.")
    ]


def test_full_size_parameter_counts():
    generator = BigGANGenerator(BigGANConfig())
    discriminator = BigGANDiscriminator(BigGANConfig())
    encoder = BigGANEncoder(EncoderConfig())
    counts = {type(m).__name__: _num_params(m) for m in (generator, discriminator, encoder)}
    print("full-size parameter counts:", counts)
    assert counts == {
        "BigGANGenerator": _expected_generator_params(),
        "BigGANDiscriminator": _expected_discriminator_params(),
        "BigGANEncoder": _expected_encoder_params(),
    }
    assert counts == {
        "BigGANGenerator": 82_108_548,
        "BigGANDiscriminator": 99_225_890,
        "BigGANEncoder": 45_210_937,
    }


def test_full_size_discriminator_and_encoder_layout():
    d_state = BigGANDiscriminator(BigGANConfig()).state_dict()
    for key, shape in {
        "blocks.0.0.conv1.weight": (96, 3, 3, 3),
        "blocks.0.0.conv_sc.weight": (96, 3, 1, 1),
        "blocks.1.1.theta.weight": (24, 192, 1, 1),
        "blocks.6.0.conv2.weight": (1536, 1536, 3, 3),
        "linear.weight": (1, 1536),
        "embed.weight": (1000, 1536),
        "embed.u0": (1, 1000),
    }.items():
        assert tuple(d_state[key].shape) == shape, key
    assert "blocks.6.0.conv_sc.weight" not in d_state  # same width, no downsampling

    e_state = BigGANEncoder(EncoderConfig()).state_dict()
    for key, shape in {
        "shared.weight": (1000, 128),
        "blocks.0.0.conv1.weight": (64, 1, 3, 3),
        "blocks.0.0.bn1.gain.weight": (1, 128),
        "blocks.1.1.theta.weight": (16, 128, 1, 1),
        "blocks.5.0.conv2.weight": (1024, 1024, 3, 3),
        "linear.weight": (120, 1024),
    }.items():
        assert tuple(e_state[key].shape) == shape, key
    assert "blocks.6.0.conv_sc.weight" not in e_state
    assert not any(k.endswith(".u0") or k.endswith(".sv0") for k in e_state)  # no spectral norm


@pytest.mark.slow
@torch.no_grad()
def test_full_size_forward_passes():
    torch.manual_seed(20)
    config = BigGANConfig()
    generator = BigGANGenerator(config).eval()
    discriminator = BigGANDiscriminator(config).eval()
    encoder = BigGANEncoder(EncoderConfig()).eval()
    class_ids = torch.tensor([207])
    l_input = torch.rand(1, 1, 256, 256) * 2 - 1

    z = encoder.encode(l_input, class_ids)
    assert z.shape == (1, 120) and torch.isfinite(z).all()
    image, features = generator.generate(z, class_ids)
    assert image.shape == (1, 3, 256, 256) and image.abs().max() <= 1
    assert {k: v.shape[1] for k, v in features.items()} == {64: 384, 128: 192, 256: 96}
    assert discriminator.correspondence_features(image).shape == (1, 576, 64, 64)
    assert discriminator.class_logits(l_input).shape == (1, 1000)
    assert [f.shape[1] for f in discriminator.encoder_loss_features(image)] == [768, 1536, 1536]
