"""Orthogonal latent deformator (Voynov & Babenko 2020) for controllable colour transitions.

The directions are the columns of an orthogonal matrix expm(A - Aᵀ); walking the BigGAN latent
along one of them changes one attribute of the exemplar (background, object colour, saturation,
lighting) and hence of the colorization. The single parameter `log_mat_half` matches the
authors' `deformator_for_biggan.pt`, which loads unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gcpcolor.config import DeformatorConfig


class LatentDeformator(nn.Module):
    """Directions over the `dim` used z dims (119 of BigGAN's 120); callers pad the last one."""

    def __init__(self, config: DeformatorConfig) -> None:
        super().__init__()
        self.dim = config.dim
        self.log_mat_half = nn.Parameter(0.001 * torch.randn(config.dim, config.dim))

    def matrix(self) -> torch.Tensor:
        """The (dim, dim) orthogonal matrix; the exponential of a skew-symmetric one has det +1."""
        return torch.linalg.matrix_exp(self.log_mat_half - self.log_mat_half.T)

    def forward(self, shift: torch.Tensor) -> torch.Tensor:
        """Map direction coordinates (B, dim) to latent offsets (B, dim)."""
        if shift.shape[-1] != self.dim:
            raise ValueError(f"shift must have {self.dim} values per row, got {shift.shape[-1]}")
        return F.linear(shift, self.matrix())

    def direction_shift(self, index: int, shifts: torch.Tensor | Sequence[float]) -> torch.Tensor:
        """(S, dim) latent offsets for walking along direction `index` by each of `shifts`."""
        if not 0 <= index < self.dim:
            raise IndexError(f"direction index must be in [0, {self.dim - 1}], got {index}")
        weight = self.log_mat_half
        shifts = torch.as_tensor(shifts, dtype=weight.dtype, device=weight.device)
        if shifts.ndim != 1:
            raise ValueError(f"shifts must be one-dimensional, got shape {tuple(shifts.shape)}")
        coordinates = shifts.new_zeros(shifts.shape[0], self.dim)
        coordinates[:, index] = shifts
        return self(coordinates)
