"""BigGAN projection discriminator in the BigGAN-PyTorch layout (`biggan_D_256.pth` at 256²).

Besides its real/fake projection score, the frozen discriminator serves GCP-Colorization as a
feature extractor: its second and third block outputs (64² and 32² at 256²) describe both the
gray photo and the GAN exemplar for the correspondence network, its last three block outputs
give the encoder's feature loss, and its class embedding picks a class for a gray photo.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gcpcolor.config import DISCRIMINATOR_ARCHITECTURES, BigGANConfig

from .biggan_layers import DBlock, SelfAttention, SNEmbedding, SNLinear


def block_output_resolutions(input_resolution: int) -> list[int]:
    """[128, 64, 32, 16, 8, 4, 4] for 256² inputs: all blocks but the last halve the size.

    Shared with the encoder, which is shaped like this discriminator.
    """
    num_blocks = len(DISCRIMINATOR_ARCHITECTURES[input_resolution])
    halved = [input_resolution // 2 ** (i + 1) for i in range(num_blocks - 1)]
    return halved + [halved[-1]]


class BigGANDiscriminator(nn.Module):
    #: Blocks run for the correspondence features (outputs at 128², 64², 32² at 256²).
    CORRESPONDENCE_DEPTH = 3

    def __init__(self, config: BigGANConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.d_ch
        out_channels = [m * ch for m in config.discriminator_widths]
        in_channels = [3] + out_channels[:-1]
        resolutions = block_output_resolutions(config.resolution)
        blocks = []
        for index, (c_in, c_out, resolution) in enumerate(zip(in_channels, out_channels, resolutions)):
            layers: list[nn.Module] = [
                DBlock(
                    c_in,
                    c_out,
                    preactivation=index > 0,
                    downsample=index < len(out_channels) - 1,
                    sn_eps=config.sn_eps,
                )
            ]
            if resolution == config.attention_resolution:
                layers.append(SelfAttention(c_out, sn_eps=config.sn_eps))
            blocks.append(nn.ModuleList(layers))
        self.blocks = nn.ModuleList(blocks)
        self.linear = SNLinear(out_channels[-1], 1, eps=config.sn_eps)
        self.embed = SNEmbedding(config.n_classes, out_channels[-1], eps=config.sn_eps)

    def block_outputs(self, x: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """Output of each block (after its attention), for the first `depth` blocks (all if None).

        `x` is RGB in [-1, 1] (B, 3, H, W), or gray L/50 - 1 (B, 1, H, W), repeated to 3 channels.
        """
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images of shape (B, 1 or 3, H, W), got {tuple(x.shape)}")
        if depth is not None and not 1 <= depth <= len(self.blocks):
            raise ValueError(f"depth must be between 1 and {len(self.blocks)}, got {depth}")
        h = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        outputs = []
        for layers in self.blocks[:depth]:
            for layer in layers:
                h = layer(h)
            outputs.append(h)
        return outputs

    def _pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over space of the rectified last block output: (B, 16·ch)."""
        return F.relu(self.block_outputs(x)[-1]).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """Projection score (B,): linear(h) + <embed(y), h>."""
        pooled = self._pooled_features(x)
        return self.linear(pooled).squeeze(1) + (self.embed(class_ids) * pooled).sum(dim=1)

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_classes): the class-dependent projection term for every class.

        The unconditional term linear(h) is the same for all classes, so the argmax over
        classes of these logits is the argmax of `forward` over classes.
        """
        return self._pooled_features(x) @ self.embed.normalized_weight().t()

    def correspondence_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 6·ch, R/4, R/4): block-2 output (64² at 256²) and block-3 output upsampled x2."""
        _, quarter, eighth = self.block_outputs(x, depth=self.CORRESPONDENCE_DEPTH)
        return torch.cat([quarter, F.interpolate(eighth, scale_factor=2, mode="nearest")], dim=1)

    def encoder_loss_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the last three blocks, compared between inversion and photo in stage 1."""
        return self.block_outputs(x)[-3:]
