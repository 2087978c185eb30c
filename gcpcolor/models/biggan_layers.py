"""Building blocks of the BigGAN prior, numerically identical to BigGAN-PyTorch.

The released BigGAN checkpoints (and the GCP-Colorization encoder trained against them) were
made with BigGAN-PyTorch's own layers, so parameter and buffer names, shapes and arithmetic
follow that code:

- spectral norm keeps its singular-vector estimate in a buffer `u0` (1, num_outputs) and logs
  the estimated singular value in `sv0` (1,); it is *not* `torch.nn.utils.spectral_norm`, whose
  buffers are named and shaped differently;
- batch norms keep their running statistics in `stored_mean` / `stored_var`;
- conditional batch norm predicts per-channel gain and bias with linear layers `gain`, `bias`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Resample = Callable[[torch.Tensor], torch.Tensor]

#: BigGAN-PyTorch's running-statistics momentum, fixed for every batch norm.
BATCH_NORM_MOMENTUM = 0.1


def upsample_nearest_2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def average_pool_2x(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


# --------------------------------------------------------------------------------------------
# Spectral normalisation
# --------------------------------------------------------------------------------------------


def power_iteration_step(
    weight_matrix: torch.Tensor, u: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One power-iteration step on `weight_matrix` (out, in) from the left vector `u` (1, out).

    Returns (sigma, new_u). The singular vectors are treated as constants (no gradient), but
    sigma = v Wᵀ u'ᵀ stays differentiable in W, as in BigGAN-PyTorch.
    """
    with torch.no_grad():
        v = F.normalize(u @ weight_matrix, eps=eps)
        new_u = F.normalize(v @ weight_matrix.t(), eps=eps)
    sigma = (v @ weight_matrix.t() @ new_u.t()).squeeze()
    return sigma, new_u


class SpectralNormMixin:
    """Adds BigGAN-PyTorch spectral normalisation to a layer that has a `weight` parameter.

    Call `_init_spectral_norm` after the layer's own `__init__`; use `normalized_weight()` in
    `forward`. The estimate `u0` only advances in training mode, so evaluation is deterministic.
    """

    weight: torch.Tensor
    u0: torch.Tensor
    sv0: torch.Tensor
    training: bool

    def _init_spectral_norm(self, num_outputs: int, eps: float) -> None:
        self.sn_eps = eps
        self.register_buffer("u0", torch.randn(1, num_outputs))  # type: ignore[attr-defined]
        # sv0 is a log of the last estimate only; it never enters the computation.
        self.register_buffer("sv0", torch.ones(1))  # type: ignore[attr-defined]

    def normalized_weight(self) -> torch.Tensor:
        weight_matrix = self.weight.view(self.weight.shape[0], -1)
        sigma, new_u = power_iteration_step(weight_matrix, self.u0, self.sn_eps)
        if self.training:
            with torch.no_grad():
                self.u0.copy_(new_u)
                self.sv0.copy_(sigma)
        return self.weight / sigma


class SNConv2d(SpectralNormMixin, nn.Conv2d):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        bias: bool = True,
        eps: float = 1e-12,
    ) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self._init_spectral_norm(out_channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x, self.normalized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class SNLinear(SpectralNormMixin, nn.Linear):
    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, eps: float = 1e-12
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._init_spectral_norm(out_features, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


class SNEmbedding(SpectralNormMixin, nn.Embedding):
    """Embedding whose table (num_embeddings, dim) is normalised as an (out=num_embeddings) matrix."""

    def __init__(self, num_embeddings: int, embedding_dim: int, eps: float = 1e-12) -> None:
        nn.Embedding.__init__(self, num_embeddings, embedding_dim)
        self._init_spectral_norm(num_embeddings, eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.normalized_weight())


def make_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    bias: bool = True,
    sn_eps: float | None,
) -> nn.Conv2d:
    """A 'same'-padded conv; spectrally normalised when `sn_eps` is given, plain otherwise."""
    padding = kernel_size // 2
    if sn_eps is None:
        return nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
    return SNConv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias, eps=sn_eps)


def make_linear(
    in_features: int, out_features: int, *, bias: bool = True, sn_eps: float | None
) -> nn.Linear:
    if sn_eps is None:
        return nn.Linear(in_features, out_features, bias=bias)
    return SNLinear(in_features, out_features, bias=bias, eps=sn_eps)


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------


class ConditionalBatchNorm(nn.Module):
    """Batch norm without affine parameters, modulated per sample: bn(x)·(1 + gain(y)) + bias(y)."""

    def __init__(
        self, num_channels: int, condition_size: int, *, eps: float, sn_eps: float | None
    ) -> None:
        super().__init__()
        self.eps = eps
        self.gain = make_linear(condition_size, num_channels, bias=False, sn_eps=sn_eps)
        self.bias = make_linear(condition_size, num_channels, bias=False, sn_eps=sn_eps)
        self.register_buffer("stored_mean", torch.zeros(num_channels))
        self.register_buffer("stored_var", torch.ones(num_channels))

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        gain = (1 + self.gain(condition)).view(condition.shape[0], -1, 1, 1)
        bias = self.bias(condition).view(condition.shape[0], -1, 1, 1)
        normalized = F.batch_norm(
            x,
            self.stored_mean,
            self.stored_var,
            None,
            None,
            self.training,
            BATCH_NORM_MOMENTUM,
            self.eps,
        )
        return normalized * gain + bias


class StoredStatsBatchNorm(nn.Module):
    """Plain affine batch norm under BigGAN-PyTorch's names (`gain`, `bias`, `stored_*`)."""

    def __init__(self, num_channels: int, *, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("stored_mean", torch.zeros(num_channels))
        self.register_buffer("stored_var", torch.ones(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x,
            self.stored_mean,
            self.stored_var,
            self.gain,
            self.bias,
            self.training,
            BATCH_NORM_MOMENTUM,
            self.eps,
        )


# --------------------------------------------------------------------------------------------
# Self-attention and residual blocks
# --------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """SA-GAN non-local block as released (keys and values max-pooled 2x2), out = x + γ·o(...).

    γ starts at 0, so a freshly built block is the identity.
    """

    def __init__(self, channels: int, *, sn_eps: float | None) -> None:
        super().__init__()
        if channels % 8 or channels < 8:
            raise ValueError(f"self-attention needs a channel count divisible by 8, got {channels}")
        self.channels = channels
        self.theta = make_conv(channels, channels // 8, 1, bias=False, sn_eps=sn_eps)
        self.phi = make_conv(channels, channels // 8, 1, bias=False, sn_eps=sn_eps)
        self.g = make_conv(channels, channels // 2, 1, bias=False, sn_eps=sn_eps)
        self.o = make_conv(channels // 2, channels, 1, bias=False, sn_eps=sn_eps)
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        # `condition` is accepted (and ignored) so attention sits in the same block lists as
        # conditional residual blocks.
        batch, _, height, width = x.shape
        queries = self.theta(x).flatten(2)  # (B, C/8, HW)
        keys = F.max_pool2d(self.phi(x), 2).flatten(2)  # (B, C/8, HW/4)
        values = F.max_pool2d(self.g(x), 2).flatten(2)  # (B, C/2, HW/4)
        attention = F.softmax(queries.transpose(1, 2) @ keys, dim=-1)  # (B, HW, HW/4)
        attended = (values @ attention.transpose(1, 2)).view(batch, -1, height, width)
        return self.gamma * self.o(attended) + x


class GBlock(nn.Module):
    """Residual block with conditional batch norm, resampling between the two convs.

    The generator resamples by nearest x2 upsampling, the encoder by 2x2 average pooling.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        condition_size: int,
        *,
        resample: Resample | None,
        bn_eps: float,
        sn_eps: float | None,
    ) -> None:
        super().__init__()
        self.resample = resample
        self.conv1 = make_conv(in_channels, out_channels, 3, sn_eps=sn_eps)
        self.conv2 = make_conv(out_channels, out_channels, 3, sn_eps=sn_eps)
        self.conv_sc = (
            make_conv(in_channels, out_channels, 1, sn_eps=sn_eps)
            if in_channels != out_channels or resample is not None
            else None
        )
        self.bn1 = ConditionalBatchNorm(in_channels, condition_size, eps=bn_eps, sn_eps=sn_eps)
        self.bn2 = ConditionalBatchNorm(out_channels, condition_size, eps=bn_eps, sn_eps=sn_eps)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(x, condition))
        if self.resample is not None:
            h = self.resample(h)
            x = self.resample(x)
        h = self.conv1(h)
        h = F.relu(self.bn2(h, condition))
        h = self.conv2(h)
        if self.conv_sc is not None:
            x = self.conv_sc(x)
        return h + x


class DBlock(nn.Module):
    """Wide discriminator residual block (hidden width = output width), always spectral-normed.

    Pre-activation blocks apply ReLU to their input and their shortcut convolves before
    pooling; the first block (raw image input) pools before its shortcut conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        preactivation: bool,
        downsample: bool,
        sn_eps: float,
    ) -> None:
        super().__init__()
        self.preactivation = preactivation
        self.downsample = downsample
        self.conv1 = make_conv(in_channels, out_channels, 3, sn_eps=sn_eps)
        self.conv2 = make_conv(out_channels, out_channels, 3, sn_eps=sn_eps)
        self.conv_sc = (
            make_conv(in_channels, out_channels, 1, sn_eps=sn_eps)
            if in_channels != out_channels or downsample
            else None
        )

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.preactivation:
            if self.conv_sc is not None:
                x = self.conv_sc(x)
            if self.downsample:
                x = average_pool_2x(x)
        else:
            if self.downsample:
                x = average_pool_2x(x)
            if self.conv_sc is not None:
                x = self.conv_sc(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Out of place: the shortcut needs the un-rectified input.
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = average_pool_2x(h)
        return h + self._shortcut(x)
