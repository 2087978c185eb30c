"""The alignment network: dense correspondence between the gray photo and the GAN exemplar.

Both images are described by frozen BigGAN-discriminator features at 64² (576 channels at full
size). A private residual block per side maps them into a shared domain, coordinates are
appended, two shared residual blocks and 1x1 projections (θ for the gray side, φ for the
reference side) follow, and the correspondence matrix is a low-temperature softmax over cosine
similarity: M[i, j] = how much gray position i takes from reference position j.

Parameter names and shapes follow the authors' `CorrespondenceNet`, so the `net_corr` entry of
their `colorization_model.pth` loads unchanged.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from gcpcolor.config import CorrespondenceConfig

# The authors divide by (norm + machine epsilon of a Python float); keep it for identical numerics.
NORM_EPSILON = sys.float_info.epsilon

#: Coordinate channels appended before the shared layers: x, y and radius.
COORDINATE_CHANNELS = 3


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 tensors as float32; float32 and float64 unchanged."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def l2_normalize_channels(features: torch.Tensor) -> torch.Tensor:
    """Divide every position's channel vector by its L2 norm (dim 1)."""
    return features / (features.norm(p=2, dim=1, keepdim=True) + NORM_EPSILON)


def coordinate_channels(
    batch: int, height: int, width: int, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """(B, 3, H, W): x in [-1, 1] along width, y in [-1, 1] along height, r = sqrt(x² + y²)."""
    xs = torch.linspace(-1.0, 1.0, width, dtype=dtype, device=device)
    ys = torch.linspace(-1.0, 1.0, height, dtype=dtype, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    radius = torch.sqrt(grid_x**2 + grid_y**2)
    coords = torch.stack((grid_x, grid_y, radius))
    return coords.unsqueeze(0).expand(batch, -1, -1, -1)


def append_coordinates(features: torch.Tensor) -> torch.Tensor:
    batch, _, height, width = features.shape
    coords = coordinate_channels(batch, height, width, dtype=features.dtype, device=features.device)
    return torch.cat((features, coords), dim=1)


class ResidualBlock(nn.Module):
    """Two reflection-padded 3x3 convs with InstanceNorm; one PReLU shared by both activations."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=0)
        self.norm1 = nn.InstanceNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=0)
        self.norm2 = nn.InstanceNorm2d(channels)
        self.prelu = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelu(self.norm1(self.conv1(self.pad(x))))
        out = self.norm2(self.conv2(self.pad(out)))
        return self.prelu(out + x)


def _centred_unit_vectors(projection: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, HW), each position centred over channels and L2-normalised."""
    flat = projection.flatten(2)
    flat = flat - flat.mean(dim=1, keepdim=True)
    return l2_normalize_channels(flat)


class CorrespondenceNet(nn.Module):
    """Predicts the (B, HW, HW) correspondence matrix from gray and reference features."""

    def __init__(self, config: CorrespondenceConfig, feature_channels: int) -> None:
        super().__init__()
        if config.temperature <= 0:
            raise ValueError(
                f"correspondence temperature must be positive, got {config.temperature}"
            )
        self.config = config
        self.feature_channels = feature_channels
        shared_channels = feature_channels + COORDINATE_CHANNELS
        # [0] adapts the gray photo's features, [1] the reference's: the two come from
        # different domains (gray vs colour) before they are compared.
        self.private_layer = nn.ModuleList(
            [ResidualBlock(feature_channels), ResidualBlock(feature_channels)]
        )
        self.share_layer = nn.Sequential(
            ResidualBlock(shared_channels), ResidualBlock(shared_channels)
        )
        self.theta = nn.Conv2d(shared_channels, config.nonlocal_channels, kernel_size=1)
        self.phi = nn.Conv2d(shared_channels, config.nonlocal_channels, kernel_size=1)

    def _check_features(self, features: torch.Tensor, side: str) -> None:
        if features.ndim != 4 or features.shape[1] != self.feature_channels:
            raise ValueError(
                f"{side} features must be (B, {self.feature_channels}, H, W), "
                f"got {tuple(features.shape)}"
            )

    def embed_gray(self, features: torch.Tensor) -> torch.Tensor:
        """Gray-side embedding (unit vector per position); the domain-alignment loss compares it."""
        self._check_features(features, "gray")
        return l2_normalize_channels(self.private_layer[0](features))

    def embed_reference(self, features: torch.Tensor) -> torch.Tensor:
        """Reference-side embedding (unit vectors per position)."""
        self._check_features(features, "reference")
        return l2_normalize_channels(self.private_layer[1](features))

    def correspondence(
        self, gray_embedding: torch.Tensor, reference_embedding: torch.Tensor
    ) -> torch.Tensor:
        """(B, HW_gray, HW_ref) softmax weights; each row sums to one over reference positions."""
        if gray_embedding.shape[0] != reference_embedding.shape[0]:
            raise ValueError(
                f"batch sizes differ: gray {gray_embedding.shape[0]}, "
                f"reference {reference_embedding.shape[0]}"
            )
        gray = self.share_layer(append_coordinates(gray_embedding))
        reference = self.share_layer(append_coordinates(reference_embedding))
        # At temperature 0.01 a cosine error of 0.004 (bfloat16's precision) moves a weight by
        # half: the projections, similarities and softmax stay in float32 under autocast.
        with torch.autocast(gray.device.type, enabled=False):
            theta = _centred_unit_vectors(self.theta(at_least_float32(gray)))
            phi = _centred_unit_vectors(self.phi(at_least_float32(reference)))
            cosine = torch.bmm(theta.transpose(1, 2), phi)
            weights = F.softmax(cosine / self.config.temperature, dim=-1)
        # A sharp softmax leaves many weights below the smallest normal float (1e-38): they
        # change no digit of a warped value, but as subnormal numbers they slow the warp's
        # matrix products about 25x on x86 CPUs. Zero them.
        return weights.masked_fill(weights < torch.finfo(weights.dtype).tiny, 0.0)

    def forward(
        self, gray_features: torch.Tensor, reference_features: torch.Tensor
    ) -> torch.Tensor:
        return self.correspondence(
            self.embed_gray(gray_features), self.embed_reference(reference_features)
        )


def warp(
    correspondence: torch.Tensor, reference: torch.Tensor, grid_size: int = 64
) -> torch.Tensor:
    """Warp `reference` (B, C, k·grid, k·grid) with `correspondence` (B, grid², grid²).

    The reference is cut into non-overlapping k×k patches, one per correspondence position;
    each output patch is the M-weighted mix of reference patches, so finer maps (F128, F256,
    the 256² exemplar) keep their sub-grid detail.
    """
    positions = grid_size * grid_size
    if correspondence.ndim != 3 or correspondence.shape[1:] != (positions, positions):
        raise ValueError(
            f"correspondence must be (B, {positions}, {positions}) for grid {grid_size}, "
            f"got {tuple(correspondence.shape)}"
        )
    if reference.ndim != 4:
        raise ValueError(f"reference must be (B, C, H, W), got {tuple(reference.shape)}")
    # Python ints: under ONNX tracing sizes are tensors, which unfold's kernel size cannot take.
    height, width = (int(side) for side in reference.shape[-2:])
    if height != width or height % grid_size != 0:
        raise ValueError(
            f"reference must be square with a side that is a multiple of {grid_size}, "
            f"got {height}x{width}"
        )
    if reference.shape[0] != correspondence.shape[0]:
        raise ValueError(
            f"batch sizes differ: correspondence {correspondence.shape[0]}, "
            f"reference {reference.shape[0]}"
        )
    patch = height // grid_size
    patches = F.unfold(reference, kernel_size=patch, stride=patch)  # (B, C·k², grid²)
    mixed = torch.bmm(correspondence, patches.transpose(1, 2))
    return F.fold(mixed.transpose(1, 2), output_size=height, kernel_size=patch, stride=patch)
