"""The "imagenet_probe" class predictor: a linear classifier that picks our prior's class.

Input: the ImageNet backbone's pooled features of the gray photo (what is in it) beside the
standardised lightness thumbnail that the prior's pseudo-classes were clustered on (how it is
lit). Fitted by `gcpcolor.class_probe.fit_class_probe`; on held-out training photos the pair
predicts the pseudo-class better than either part alone (docs/training-log.md).
"""

from __future__ import annotations

import torch
from torch import nn

from .lightness_centroids import LightnessCentroidClassifier


class SemanticClassProbe(nn.Module):
    def __init__(self, num_classes: int, embedding_channels: int, thumbnail_size: int) -> None:
        super().__init__()
        self.lightness = LightnessCentroidClassifier(num_classes, thumbnail_size)
        self.linear = nn.Linear(embedding_channels + thumbnail_size * thumbnail_size, num_classes)

    def inputs(self, embedding: torch.Tensor, l_input: torch.Tensor) -> torch.Tensor:
        """(B, D) probe inputs from the pooled backbone features and the network input."""
        return torch.cat([embedding.float(), self.lightness.descriptor(l_input)], dim=1)

    def forward(self, embedding: torch.Tensor, l_input: torch.Tensor) -> torch.Tensor:
        return self.linear(self.inputs(embedding, l_input))
