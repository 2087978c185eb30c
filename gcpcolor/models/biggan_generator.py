"""BigGAN generator in the BigGAN-PyTorch layout (loads `biggan_G_ema_256.pth` unchanged).

Hierarchical latent: z is cut into one chunk per block plus one (at 256²: 7 chunks of
120 // 7 = 17). The first chunk feeds the input linear layer; residual block i is conditioned
on [class embedding, chunk i+1] through its conditional batch norms. The remaining dims (one at
256²) are unused, exactly as in BigGAN-PyTorch. The 128² and 64² layouts serve smaller priors.
"""

from __future__ import annotations

import torch
from torch import nn

from gcpcolor.config import BigGANConfig

from .biggan_layers import (
    GBlock,
    SelfAttention,
    SNConv2d,
    SNLinear,
    StoredStatsBatchNorm,
    upsample_nearest_2x,
)

#: BigGAN-PyTorch builds the output batch norm with its default eps, whatever G's BN eps is.
OUTPUT_BN_EPS = 1e-5


class BigGANGenerator(nn.Module):
    def __init__(self, config: BigGANConfig) -> None:
        super().__init__()
        in_multipliers, out_multipliers = config.generator_widths
        if config.z_chunk_size < 1:
            raise ValueError(f"dim_z must be at least {config.num_slots}, got {config.dim_z}")
        self.config = config
        ch = config.g_ch
        condition_size = config.shared_dim + config.z_chunk_size
        self.block_resolutions = config.generator_block_resolutions

        # The class embedding is not spectrally normalised (BigGAN-PyTorch: SN cripples it).
        self.shared = nn.Embedding(config.n_classes, config.shared_dim)
        self.linear = SNLinear(
            config.z_chunk_size,
            in_multipliers[0] * ch * config.bottom_width**2,
            eps=config.sn_eps,
        )
        blocks = []
        for in_mult, out_mult, resolution in zip(
            in_multipliers, out_multipliers, self.block_resolutions
        ):
            layers: list[nn.Module] = [
                GBlock(
                    in_mult * ch,
                    out_mult * ch,
                    condition_size,
                    resample=upsample_nearest_2x,
                    bn_eps=config.bn_eps,
                    sn_eps=config.sn_eps,
                )
            ]
            if resolution == config.attention_resolution:
                layers.append(SelfAttention(out_mult * ch, sn_eps=config.sn_eps))
            blocks.append(nn.ModuleList(layers))
        self.blocks = nn.ModuleList(blocks)
        last_channels = out_multipliers[-1] * ch
        self.output_layer = nn.Sequential(
            StoredStatsBatchNorm(last_channels, eps=OUTPUT_BN_EPS),
            nn.ReLU(),
            SNConv2d(last_channels, 3, 3, padding=1, eps=config.sn_eps),
        )

    def forward(
        self, z: torch.Tensor, class_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Image (B, 3, R, R) in [-1, 1] and the last three block outputs keyed by resolution
        (at R = 256: {64: 4·ch, 128: 2·ch, 256: ch}).

        `class_embedding` is `shared(class_ids)` (B, shared_dim), passed in so callers can
        interpolate between classes.
        """
        config = self.config
        if z.ndim != 2 or z.shape[1] != config.dim_z:
            raise ValueError(f"z must have shape (B, {config.dim_z}), got {tuple(z.shape)}")
        if class_embedding.shape != (z.shape[0], config.shared_dim):
            raise ValueError(
                f"class_embedding must have shape ({z.shape[0]}, {config.shared_dim}), "
                f"got {tuple(class_embedding.shape)}"
            )
        chunks = z[:, : config.used_z_dims].split(config.z_chunk_size, dim=1)
        h = self.linear(chunks[0]).view(z.shape[0], -1, config.bottom_width, config.bottom_width)
        features: dict[int, torch.Tensor] = {}
        for index, (layers, resolution) in enumerate(zip(self.blocks, self.block_resolutions)):
            condition = torch.cat([class_embedding, chunks[index + 1]], dim=1)
            for layer in layers:
                h = layer(h, condition)
            if resolution in config.feature_channels:
                features[resolution] = h
        return torch.tanh(self.output_layer(h)), features

    def generate(
        self, z: torch.Tensor, class_ids: torch.Tensor
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        return self(z, self.shared(class_ids))
