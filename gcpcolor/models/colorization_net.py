"""The SPADE colorization network C: gray L plus warped BigGAN features -> ab.

An encoder downsamples L to 64², residual blocks and a two-step decoder are modulated by SPADE
layers whose γ/β come from the warped generator features (F64, F128, F256), refined by a
modulated deformable conv to absorb small misalignments left by the correspondence.

Parameter names and shapes follow the authors' `Generator` / `SPADE` / `DCNv2Pack`, so the
`net_gen` entry of their `colorization_model.pth` loads unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from gcpcolor.config import ColorizationConfig
from gcpcolor.models.correspondence import at_least_float32

#: Resolutions (at a 256² working size) of the warped features the network is conditioned on.
REFERENCE_RESOLUTIONS = (64, 128, 256)

_LEAKY_SLOPE = 0.2


def positional_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise every pixel over channels: (x - mean_c) / sqrt(var_c + eps), var unbiased.

    Computed in float32 at least: a variance over hundreds of channels loses too many digits
    in bfloat16."""
    x = at_least_float32(x)
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def deform_conv2d_by_sampling(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    mask: torch.Tensor,
    conv_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Modulated deformable conv (stride 1, 'same' padding, dilation 1) as one bilinear
    sampling of all taps followed by a 1x1 convolution over (channels x taps).

    The result equals torchvision's `deform_conv2d(x, offset, weight, bias, padding=k // 2,
    mask=mask)`: offsets are (dy, dx) per tap in `offset`'s channel pairs, a sample outside
    the map reads zeros. Only standard operators are used, so it runs wherever grid sampling
    and convolution run (ONNX GridSample, oneDNN on CPU) with their gradients. `conv_dtype`
    runs the final convolution in another precision (bfloat16), returning that dtype.
    """
    batch, channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    taps = kernel_h * kernel_w
    tap_y = torch.arange(kernel_h, dtype=x.dtype, device=x.device).repeat_interleave(kernel_w) - kernel_h // 2
    tap_x = torch.arange(kernel_w, dtype=x.dtype, device=x.device).repeat(kernel_h) - kernel_w // 2
    rows = torch.arange(height, dtype=x.dtype, device=x.device).view(1, 1, height, 1)
    cols = torch.arange(width, dtype=x.dtype, device=x.device).view(1, 1, 1, width)
    sample_y = rows + tap_y.view(1, taps, 1, 1) + offset[:, 0::2]  # (B, taps, H, W) in pixels
    sample_x = cols + tap_x.view(1, taps, 1, 1) + offset[:, 1::2]
    # grid_sample with align_corners=True maps -1 and 1 to the centres of the first and last pixel.
    grid = torch.stack((sample_x * (2 / max(width - 1, 1)) - 1, sample_y * (2 / max(height - 1, 1)) - 1), dim=-1)
    sampled = F.grid_sample(
        x, grid.view(batch, taps * height, width, 2), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    modulated = sampled.view(batch, channels, taps, height, width) * mask.view(batch, 1, taps, height, width)
    modulated = modulated.view(batch, channels * taps, height, width)
    kernel = weight.reshape(out_channels, -1, 1, 1)
    if conv_dtype is not None:
        modulated, kernel, bias = modulated.to(conv_dtype), kernel.to(conv_dtype), bias.to(conv_dtype)
    return F.conv2d(modulated, kernel, bias)


class ModulatedDeformConv2d(nn.Module):
    """3x3 modulated deformable conv (DCNv2) whose offsets and mask come from a separate input.

    `conv_offset` predicts 27 channels from `cond`: x/y offset halves and mask logits for the 9
    taps. It starts at zero, so a fresh layer samples the regular grid with mask 0.5.
    """

    kernel_size = 3

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int) -> None:
        super().__init__()
        taps = self.kernel_size * self.kernel_size
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels, self.kernel_size, self.kernel_size)
        )
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.conv_offset = nn.Conv2d(cond_channels, 3 * taps, kernel_size=3, padding=1)
        bound = 1.0 / math.sqrt(in_channels * taps)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        offset_a, offset_b, mask_logits = torch.chunk(self.conv_offset(cond), 3, dim=1)
        offset = torch.cat((offset_a, offset_b), dim=1)
        if torch.onnx.is_in_onnx_export():
            # the exported graph keeps the plain operator (ONNX DeformConv); the guard below is
            # for torchvision's kernel
            return deform_conv2d(x, offset, self.weight, self.bias, padding=1, mask=torch.sigmoid(mask_logits))
        offset = _safe_offsets(offset, x.shape[-2:], self.kernel_size)
        # A NaN mask logit falls back to a fresh layer's mask (0.5), like a NaN offset to 0.
        mask = torch.sigmoid(torch.nan_to_num(mask_logits, nan=0.0))
        if x.device.type == "cpu":
            # torchvision's CPU kernel samples element by element, 1.7x slower than this
            # (384 channels at 64²).
            return self._forward_by_sampling(x, offset, mask)
        return deform_conv2d(x, offset, self.weight, self.bias, padding=1, mask=mask)

    def _forward_by_sampling(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            # Bilinear sampling runs faster and exactly in float32; the 1x1 conv over
            # channels x taps, the bulk of the arithmetic, in the autocast precision.
            with torch.autocast(x.device.type, enabled=False):
                return deform_conv2d_by_sampling(
                    x.float(), offset.float(), self.weight, self.bias, mask.float(),
                    conv_dtype=torch.get_autocast_dtype(x.device.type),
                )
        return deform_conv2d_by_sampling(x, offset, self.weight, self.bias, mask)


def _safe_offsets(offset: torch.Tensor, size: torch.Size, kernel_size: int) -> torch.Tensor:
    """Offsets that torchvision's deform_conv2d can take without crashing the process.

    Its CPU kernel turns a sampling position into an integer index unchecked: a NaN offset
    ends the whole process with a segmentation fault and an infinite or huge one (1e10) makes
    it hang or corrupt memory. No exception is raised that a caller could catch. The offsets
    come from the network, so extreme latents (a large --sigma) or a broken checkpoint produce
    them. A tap moved by more than the feature map's side plus the kernel's reach samples only
    the zero padding, so clamping to that bound leaves every result unchanged; NaN, for which
    no position is right, becomes 0: the regular grid, as in a freshly initialised layer.
    """
    bound = float(max(size) + kernel_size)
    return torch.nan_to_num(offset, nan=0.0, posinf=bound, neginf=-bound).clamp(-bound, bound)


class GatedConv2d(nn.Module):
    """The CPU-friendly stand-in for `ModulatedDeformConv2d`: offsets fixed at zero and one
    mask per position, conv(x) · sigmoid(gate(cond)). torchvision's deform_conv2d backward runs
    about ten times slower than a plain conv on CPU; small models trained there use this.
    The gate starts at zero, so a fresh layer scales by 0.5 like a fresh DCN's mask."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.gate = nn.Conv2d(cond_channels, 1, kernel_size=3, padding=1)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.sigmoid(self.gate(cond))


class SPADE(nn.Module):
    """Positional norm of x, then per-pixel γ/β from the deformably refined reference."""

    def __init__(self, norm_channels: int, ref_channels: int, deformable: bool = True) -> None:
        super().__init__()
        joint = norm_channels + ref_channels
        self.conv_cond = nn.Sequential(
            nn.Conv2d(joint, joint // 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(joint // 8, ref_channels, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        refinement = ModulatedDeformConv2d if deformable else GatedConv2d
        self.dcn = refinement(ref_channels, ref_channels, cond_channels=ref_channels)
        self.mlp_gamma = nn.Conv2d(ref_channels, norm_channels, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(ref_channels, norm_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if ref.shape[-2:] != x.shape[-2:]:
            ref = F.interpolate(ref, size=x.shape[-2:], mode="bilinear", align_corners=False)
        normalized = positional_norm(x)
        cond = self.conv_cond(torch.cat((normalized, ref), dim=1))
        refined = self.dcn(ref, cond)
        return normalized * (1 + self.mlp_gamma(refined)) + self.mlp_beta(refined)


class SPADEResBlock(nn.Module):
    """Pre-activation residual block, both convs preceded by SPADE and LeakyReLU(0.2)."""

    def __init__(self, fin: int, fout: int, ref_channels: int, deformable: bool = True) -> None:
        super().__init__()
        fmiddle = min(fin, fout)
        self.pad = nn.ReflectionPad2d(1)
        self.conv_0 = nn.Conv2d(fin, fmiddle, kernel_size=3, padding=0)
        self.conv_1 = nn.Conv2d(fmiddle, fout, kernel_size=3, padding=0)
        self.norm_0 = SPADE(fin, ref_channels, deformable)
        self.norm_1 = SPADE(fmiddle, ref_channels, deformable)
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, kernel_size=1, bias=False)
            self.norm_s = SPADE(fin, ref_channels, deformable)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, ref)) if self.learned_shortcut else x
        dx = self.conv_0(self.pad(F.leaky_relu(self.norm_0(x, ref), _LEAKY_SLOPE)))
        dx = self.conv_1(self.pad(F.leaky_relu(self.norm_1(dx, ref), _LEAKY_SLOPE)))
        return shortcut + dx


def _upsample(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(
        in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1
    )


class ColorizationNet(nn.Module):
    """C(L, warped features) -> ab / 110 in [-1, 1].

    `reference_channels` maps each resolution in REFERENCE_RESOLUTIONS to the channel count of
    the warped generator features at that resolution (full size: {64: 384, 128: 192, 256: 96}).
    """

    def __init__(self, config: ColorizationConfig, reference_channels: Mapping[int, int]) -> None:
        super().__init__()
        if config.n_downsampling != 2:
            raise ValueError(
                f"ColorizationNet supports n_downsampling=2 only (its decoder has two "
                f"up-convolutions), got {config.n_downsampling}"
            )
        missing = [r for r in REFERENCE_RESOLUTIONS if r not in reference_channels]
        if missing:
            raise ValueError(f"reference_channels lacks resolution(s) {missing}")
        self.config = config
        ngf = config.base_channels
        ref64, ref128, ref256 = (reference_channels[r] for r in REFERENCE_RESOLUTIONS)

        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(config.in_channels, ngf, kernel_size=7, padding=0),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(inplace=True),
            nn.Conv2d(ngf, 2 * ngf, kernel_size=3, stride=2, padding=1),
            nn.InstanceNorm2d(2 * ngf),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * ngf, 4 * ngf, kernel_size=3, stride=2, padding=1),
            nn.InstanceNorm2d(4 * ngf),
            nn.ReLU(inplace=True),
        )
        self.res_blks = nn.ModuleList(
            SPADEResBlock(4 * ngf, 4 * ngf, ref64, config.deformable) for _ in range(config.n_res_blocks)
        )
        self.up_norm1 = SPADE(4 * ngf, ref64, config.deformable)
        self.up_conv1 = _upsample(4 * ngf, 2 * ngf)
        self.up_norm2 = SPADE(2 * ngf, ref128, config.deformable)
        self.up_conv2 = _upsample(2 * ngf, ngf)
        self.up_norm3 = SPADE(ngf, ref256, config.deformable)
        self.head = nn.Sequential(
            nn.Conv2d(ngf, config.out_channels, kernel_size=3, padding=1), nn.Tanh()
        )

    def forward(self, l_input: torch.Tensor, warped: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """l_input: (B, 1, H, W) = L/50 - 1; warped: {64, 128, 256: warped features}."""
        missing = [r for r in REFERENCE_RESOLUTIONS if r not in warped]
        if missing:
            raise ValueError(f"warped features lack resolution(s) {missing}")
        if l_input.ndim != 4 or l_input.shape[1] != self.config.in_channels:
            raise ValueError(
                f"l_input must be (B, {self.config.in_channels}, H, W), got {tuple(l_input.shape)}"
            )
        x = self.encoder(l_input)
        for block in self.res_blks:
            x = block(x, warped[64])
        x = self.up_conv1(F.leaky_relu(self.up_norm1(x, warped[64]), _LEAKY_SLOPE))
        x = self.up_conv2(F.leaky_relu(self.up_norm2(x, warped[128]), _LEAKY_SLOPE))
        return self.head(F.leaky_relu(self.up_norm3(x, warped[256]), _LEAKY_SLOPE))
