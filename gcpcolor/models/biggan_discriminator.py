"""BigGAN 256² projection discriminator in the BigGAN-PyTorch layout (`biggan_D_256.pth`).

Besides its real/fake projection score, the frozen discriminator serves GCP-Colorization as a
feature extractor: its 64² and 32² block outputs describe both the gray photo and the GAN
exemplar for the correspondence network, its last three block outputs give the encoder's
feature loss, and its class embedding picks an ImageNet class for a gray photo.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gcpcolor.config import BigGANConfig

from .biggan_layers import DBlock, SelfAttention, SNEmbedding, SNLinear

#: Block output widths in units of the channel multiplier; block inputs are the previous
#: outputs. Shared with the encoder, which is shaped like this discriminator.
OUT_CHANNEL_MULTIPLIERS = (1, 2, 4, 8, 8, 16, 16)
#: All blocks but the last halve the resolution.
NUM_DOWNSAMPLING_BLOCKS = 6


def block_output_resolutions(input_resolution: int) -> list[int]:
    """[128, 64, 32, 16, 8, 4, 4] for 256² inputs."""
    halved = [input_resolution // 2 ** (i + 1) for i in range(NUM_DOWNSAMPLING_BLOCKS)]
    return halved + [halved[-1]] * (len(OUT_CHANNEL_MULTIPLIERS) - NUM_DOWNSAMPLING_BLOCKS)


class BigGANDiscriminator(nn.Module):
    #: Blocks run for the correspondence features (outputs at 128², 64², 32²).
    CORRESPONDENCE_DEPTH = 3

    def __init__(self, config: BigGANConfig) -> None:
        super().__init__()
        if config.resolution != 256:
            raise ValueError(
                f"BigGANDiscriminator implements the 256x256 architecture, got {config.resolution}"
            )
        self.config = config
        ch = config.d_ch
        out_channels = [m * ch for m in OUT_CHANNEL_MULTIPLIERS]
        in_channels = [3] + out_channels[:-1]
        resolutions = block_output_resolutions(config.resolution)
        blocks = []
        for index, (c_in, c_out, resolution) in enumerate(zip(in_channels, out_channels, resolutions)):
            layers: list[nn.Module] = [
                DBlock(
                    c_in,
                    c_out,
                    preactivation=index > 0,
                    downsample=index < NUM_DOWNSAMPLING_BLOCKS,
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
        """(B, 6·ch, 64, 64): block-1 output (64²) and block-2 output (32²) upsampled x2."""
        _, at_64, at_32 = self.block_outputs(x, depth=self.CORRESPONDENCE_DEPTH)
        return torch.cat([at_64, F.interpolate(at_32, scale_factor=2, mode="nearest")], dim=1)

    def encoder_loss_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the last three blocks, compared between inversion and photo in stage 1."""
        return self.block_outputs(x)[-3:]
