"""The authors' checkpoint layout, written out independently of gcpcolor's modules.

Each function lists tensor name -> shape as BigGAN-PyTorch / GCP-Colorization name them, derived
from the architecture tables (the paper, docs/architecture.md and the authors' code), NOT from our nn.Modules. Tests
build random tensors from these specs, save them as the authors' files would be, and check that
our loaders accept them with strict=True.
"""

from __future__ import annotations

import torch

from gcpcolor.config import BigGANConfig, ColorizationConfig, CorrespondenceConfig, EncoderConfig

Spec = dict[str, tuple[int, ...]]


def _sn(prefix: str, weight: tuple[int, ...], bias: bool = True) -> Spec:
    spec = {f"{prefix}.weight": weight, f"{prefix}.u0": (1, weight[0]), f"{prefix}.sv0": (1,)}
    if bias:
        spec[f"{prefix}.bias"] = (weight[0],)
    return spec


def _plain(prefix: str, weight: tuple[int, ...], bias: bool = True) -> Spec:
    spec = {f"{prefix}.weight": weight}
    if bias:
        spec[f"{prefix}.bias"] = (weight[0],)
    return spec


def _attention(prefix: str, ch: int, spectral: bool) -> Spec:
    layer = _sn if spectral else _plain
    spec: Spec = {}
    spec |= layer(f"{prefix}.theta", (ch // 8, ch, 1, 1), bias=False)
    spec |= layer(f"{prefix}.phi", (ch // 8, ch, 1, 1), bias=False)
    spec |= layer(f"{prefix}.g", (ch // 2, ch, 1, 1), bias=False)
    spec |= layer(f"{prefix}.o", (ch, ch // 2, 1, 1), bias=False)
    spec[f"{prefix}.gamma"] = ()
    return spec


def _ccbn(prefix: str, channels: int, cond: int, spectral: bool) -> Spec:
    layer = _sn if spectral else _plain
    spec: Spec = {}
    spec |= layer(f"{prefix}.gain", (channels, cond), bias=False)
    spec |= layer(f"{prefix}.bias", (channels, cond), bias=False)
    spec[f"{prefix}.stored_mean"] = (channels,)
    spec[f"{prefix}.stored_var"] = (channels,)
    return spec


def generator_spec(cfg: BigGANConfig) -> Spec:
    ch, chunk = cfg.g_ch, cfg.dim_z // 7
    ins = [ch * m for m in (16, 16, 8, 8, 4, 2)]
    outs = [ch * m for m in (16, 8, 8, 4, 2, 1)]
    cond = cfg.shared_dim + chunk
    spec: Spec = {"shared.weight": (cfg.n_classes, cfg.shared_dim)}
    spec |= _sn("linear", (ins[0] * cfg.bottom_width**2, chunk))
    for i, (cin, cout) in enumerate(zip(ins, outs)):
        p = f"blocks.{i}.0"
        spec |= _sn(f"{p}.conv1", (cout, cin, 3, 3))
        spec |= _sn(f"{p}.conv2", (cout, cout, 3, 3))
        spec |= _sn(f"{p}.conv_sc", (cout, cin, 1, 1))
        spec |= _ccbn(f"{p}.bn1", cin, cond, spectral=True)
        spec |= _ccbn(f"{p}.bn2", cout, cond, spectral=True)
    spec |= _attention("blocks.3.1", outs[3], spectral=True)
    spec |= {
        "output_layer.0.gain": (ch,),
        "output_layer.0.bias": (ch,),
        "output_layer.0.stored_mean": (ch,),
        "output_layer.0.stored_var": (ch,),
    }
    spec |= _sn("output_layer.2", (3, ch, 3, 3))
    return spec


def discriminator_spec(cfg: BigGANConfig) -> Spec:
    ch = cfg.d_ch
    ins = [3] + [ch * m for m in (1, 2, 4, 8, 8, 16)]
    outs = [ch * m for m in (1, 2, 4, 8, 8, 16, 16)]
    spec: Spec = {}
    for i, (cin, cout) in enumerate(zip(ins, outs)):
        p = f"blocks.{i}.0"
        spec |= _sn(f"{p}.conv1", (cout, cin, 3, 3))
        spec |= _sn(f"{p}.conv2", (cout, cout, 3, 3))
        if cin != cout or i < 6:
            spec |= _sn(f"{p}.conv_sc", (cout, cin, 1, 1))
    spec |= _attention("blocks.1.1", outs[1], spectral=True)
    spec |= _sn("linear", (1, outs[-1]))
    spec |= {"embed.weight": (cfg.n_classes, outs[-1]), "embed.u0": (1, cfg.n_classes), "embed.sv0": (1,)}
    return spec


def encoder_spec(cfg: EncoderConfig) -> Spec:
    ch = cfg.e_ch
    ins = [1] + [ch * m for m in (1, 2, 4, 8, 8, 16)]
    outs = [ch * m for m in (1, 2, 4, 8, 8, 16, 16)]
    spec: Spec = {"shared.weight": (cfg.n_classes, cfg.shared_dim)}
    for i, (cin, cout) in enumerate(zip(ins, outs)):
        p = f"blocks.{i}.0"
        spec |= _plain(f"{p}.conv1", (cout, cin, 3, 3))
        spec |= _plain(f"{p}.conv2", (cout, cout, 3, 3))
        if cin != cout or i < 6:
            spec |= _plain(f"{p}.conv_sc", (cout, cin, 1, 1))
        spec |= _ccbn(f"{p}.bn1", cin, cfg.shared_dim, spectral=False)
        spec |= _ccbn(f"{p}.bn2", cout, cfg.shared_dim, spectral=False)
    spec |= _attention("blocks.1.1", outs[1], spectral=False)
    spec |= _plain("linear", (cfg.z_dim, outs[-1]))
    return spec


def _residual_block(prefix: str, ch: int) -> Spec:
    spec = _plain(f"{prefix}.conv1", (ch, ch, 3, 3)) | _plain(f"{prefix}.conv2", (ch, ch, 3, 3))
    spec[f"{prefix}.prelu.weight"] = (1,)
    return spec


def correspondence_spec(cfg: CorrespondenceConfig, feature_channels: int) -> Spec:
    c = feature_channels
    spec: Spec = {}
    for i in range(2):
        spec |= _residual_block(f"private_layer.{i}", c)
        spec |= _residual_block(f"share_layer.{i}", c + 3)
    spec |= _plain("theta", (cfg.nonlocal_channels, c + 3, 1, 1))
    spec |= _plain("phi", (cfg.nonlocal_channels, c + 3, 1, 1))
    return spec


def _spade(prefix: str, norm: int, ref: int) -> Spec:
    hidden = (norm + ref) // 8
    spec = _plain(f"{prefix}.conv_cond.0", (hidden, norm + ref, 3, 3))
    spec |= _plain(f"{prefix}.conv_cond.2", (ref, hidden, 3, 3))
    spec |= _plain(f"{prefix}.dcn", (ref, ref, 3, 3))
    spec |= _plain(f"{prefix}.dcn.conv_offset", (27, ref, 3, 3))
    spec |= _plain(f"{prefix}.mlp_gamma", (norm, ref, 3, 3))
    spec |= _plain(f"{prefix}.mlp_beta", (norm, ref, 3, 3))
    return spec


def colorization_spec(cfg: ColorizationConfig, ref: dict[int, int]) -> Spec:
    n = cfg.base_channels
    spec = _plain("encoder.1", (n, cfg.in_channels, 7, 7))
    spec |= _plain("encoder.4", (2 * n, n, 3, 3))
    spec |= _plain("encoder.7", (4 * n, 2 * n, 3, 3))
    for i in range(cfg.n_res_blocks):
        p = f"res_blks.{i}"
        spec |= _plain(f"{p}.conv_0", (4 * n, 4 * n, 3, 3)) | _plain(f"{p}.conv_1", (4 * n, 4 * n, 3, 3))
        spec |= _spade(f"{p}.norm_0", 4 * n, ref[64]) | _spade(f"{p}.norm_1", 4 * n, ref[64])
    # ConvTranspose2d weights are (in, out, k, k)
    spec |= {"up_conv1.weight": (4 * n, 2 * n, 3, 3), "up_conv1.bias": (2 * n,)}
    spec |= {"up_conv2.weight": (2 * n, n, 3, 3), "up_conv2.bias": (n,)}
    spec |= _spade("up_norm1", 4 * n, ref[64]) | _spade("up_norm2", 2 * n, ref[128]) | _spade("up_norm3", n, ref[256])
    spec |= _plain("head.0", (cfg.out_channels, n, 3, 3))
    return spec


def random_state_dict(spec: Spec, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the spec's shapes, with valid values for statistics and SN vectors."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in spec.items():
        tensor = torch.randn(shape, generator=generator) * 0.05
        if name.endswith("stored_var"):
            tensor = tensor.abs() + 1.0
        elif name.endswith(".u0"):
            tensor = torch.nn.functional.normalize(torch.randn(shape, generator=generator), dim=1)
        elif name.endswith(".sv0"):
            tensor = torch.ones(shape)
        state[name] = tensor
    return state
