"""The stage-1 encoder E: gray photo + class → BigGAN latent z (the authors' `biggan_E.pth`).

Shaped like the BigGAN discriminator but built from generator-style residual blocks: class-
conditional batch norm (its own class embedding, plain linear gain/bias), plain convolutions,
2x2 average pooling in all blocks but the last and self-attention at 64². A ReLU, a spatial
mean and a linear layer give z. It reads the gray photo at the prior's resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gcpcolor.config import DISCRIMINATOR_ARCHITECTURES, EncoderConfig

from .biggan_discriminator import block_output_resolutions
from .biggan_layers import GBlock, SelfAttention, average_pool_2x


class BigGANEncoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.e_ch
        out_channels = [m * ch for m in DISCRIMINATOR_ARCHITECTURES[config.resolution]]
        in_channels = [1] + out_channels[:-1]
        resolutions = block_output_resolutions(config.resolution)
        self.shared = nn.Embedding(config.n_classes, config.shared_dim)
        blocks = []
        for index, (c_in, c_out, resolution) in enumerate(zip(in_channels, out_channels, resolutions)):
            layers: list[nn.Module] = [
                GBlock(
                    c_in,
                    c_out,
                    config.shared_dim,
                    resample=average_pool_2x if index < len(out_channels) - 1 else None,
                    bn_eps=config.bn_eps,
                    sn_eps=None,
                )
            ]
            if resolution == config.attention_resolution:
                layers.append(SelfAttention(c_out, sn_eps=None))
            blocks.append(nn.ModuleList(layers))
        self.blocks = nn.ModuleList(blocks)
        self.linear = nn.Linear(out_channels[-1], config.z_dim)

    def forward(self, l_input: torch.Tensor, class_embedding: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim) from gray input L/50 - 1 (B, 1, R, R) and `shared(class_ids)`."""
        if l_input.ndim != 4 or l_input.shape[1] != 1:
            raise ValueError(f"expected gray input of shape (B, 1, H, W), got {tuple(l_input.shape)}")
        h = l_input
        for layers in self.blocks:
            for layer in layers:
                h = layer(h, class_embedding)
        return self.linear(F.relu(h).mean(dim=(2, 3)))

    def encode(self, l_input: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        return self(l_input, self.shared(class_ids))
