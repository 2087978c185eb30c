"""Training losses of GCP-Colorization, with the paper's weights in `LossWeights`.

Stage 1 (encoder):  λ_ftr·encoder_feature_loss + λ_reg·latent_regularizer.
Stage 2 (colorization, correspondence, PatchGAN):
    λ_perc·perceptual_loss + λ_ctx·ContextualLoss + λ_adv·lsgan_generator_loss
    + λ_dom·domain_alignment_loss.

Every function returns an unweighted scalar; the trainer multiplies by the weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gcpcolor.model import resample_square
from gcpcolor.models.vgg import VGG19Features


@dataclass(frozen=True)
class LossWeights:
    """Loss weights λ of the paper. The contextual per-layer weights are separate fields so the
    config stays flat, hashable and JSON round-trippable."""

    feature: float = 1.0  # λ_ftr, stage 1
    latent: float = 0.0125  # λ_reg, stage 1
    perceptual: float = 1e-3  # λ_perc, stage 2
    adversarial: float = 1.0  # λ_adv, stage 2
    domain: float = 10.0  # λ_dom, stage 2
    contextual: float = 0.1  # λ_ctx, stage 2
    contextual_relu3_2: float = 2.0
    contextual_relu4_2: float = 4.0
    contextual_relu5_2: float = 8.0
    #: stage 2 with a "semantic" colorization network: cross-entropy of the ab-bin
    #: distribution against soft-encoded, rebalanced true colours (Zhang et al. 2016)
    ab_classification: float = 0.0
    #: rebalancing: weights ∝ ((1 - mix) · p̃ + mix / Q)^-1 with p̃ the smoothed ab prior
    rebalance_mix: float = 0.5

    @property
    def contextual_layer_weights(self) -> dict[str, float]:
        return {
            "relu3_2": self.contextual_relu3_2,
            "relu4_2": self.contextual_relu4_2,
            "relu5_2": self.contextual_relu5_2,
        }


class DiscriminatorFeatures(nn.Module):
    """Loss features from the frozen prior discriminator: its first three block outputs.

    Takes RGB in [0, 1] at any size (resized to the prior's resolution, as the discriminator
    was trained), returns a dict like `VGG19Features` does, finest layer first.
    """

    LAYERS = ("block1", "block2", "block3")

    def __init__(self, discriminator: nn.Module, resolution: int) -> None:
        super().__init__()
        self.layers = self.LAYERS
        self.discriminator = discriminator
        self.resolution = resolution

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        prior_input = resample_square(rgb, self.resolution) * 2 - 1
        outputs = self.discriminator.block_outputs(prior_input, depth=len(self.LAYERS))
        return dict(zip(self.LAYERS, outputs))


def encoder_feature_loss(
    features_inversion: Sequence[torch.Tensor], features_real: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Stage-1 feature matching: (1/K) Σ_k mean|D_k(x_inv) − D_k(x)| (λ_ftr = 1.0).

    The lists hold the last three BigGAN-discriminator block outputs for the inversion G(E(L), y)
    and for the real colour image, in the same order.
    """
    if len(features_inversion) != len(features_real) or not features_real:
        raise ValueError(
            f"encoder_feature_loss: need equally long, non-empty feature lists, "
            f"got {len(features_inversion)} and {len(features_real)}"
        )
    losses = [F.l1_loss(inv, real) for inv, real in zip(features_inversion, features_real)]
    return torch.stack(losses).mean()


def latent_regularizer(z: torch.Tensor) -> torch.Tensor:
    """Gaussian prior on the predicted latent: mean over the batch of ½‖z‖₂² (λ_reg = 0.0125).

    The paper writes ½‖z‖₂; we use the squared norm, the negative log-density of the N(0, I)
    prior BigGAN was trained with (up to a constant), whose gradient z is smooth at z = 0.
    z is (N, dim) or any (N, ...) shape; all non-batch dimensions count.
    """
    return 0.5 * z.flatten(1).pow(2).sum(dim=1).mean()


def perceptual_loss(
    vgg_out: Mapping[str, torch.Tensor], vgg_target: Mapping[str, torch.Tensor], layer: str = "relu5_2"
) -> torch.Tensor:
    """Mean squared error between VGG19 features of output and ground truth (λ_perc = 1e-3).

    Takes the dicts returned by `VGG19Features`, so one VGG pass can feed several losses.
    """
    return F.mse_loss(vgg_out[layer], vgg_target[layer])


def contextual_loss(
    x_features: torch.Tensor, y_features: torch.Tensor, band_width: float = 0.1, eps: float = 1e-5
) -> torch.Tensor:
    """Contextual loss of Mechrez et al. 2018, −log CX(X, Y), averaged over the batch.

    X = `x_features` is the OUTPUT (generated image), with positions x_i; Y = `y_features` is the
    TARGET (exemplar), with positions y_j; both (N, C, H, W) (H, W may differ between them).
    Per sample, following the paper:
      both centred by μ_y, the mean of y over its spatial positions (per channel);
      d_ij = 1 − cos(x_i, y_j);
      d̃_ij = d_ij / (min_k d_ik + eps)        (relative to x_i's nearest target);
      w_ij = exp((1 − d̃_ij) / h),  h = band_width;
      CX_ij = w_ij / Σ_k w_ik                  (normalised over the targets);
      CX = (1/|Y|) Σ_j max_i CX_ij              (each target finds its best output match);
      loss = −log CX.
    Spatial arrangement is ignored: permuting the positions of either map leaves it unchanged.
    Computed in the log domain (log-softmax, logsumexp) so small CX does not underflow.
    """
    if x_features.dim() != 4 or y_features.dim() != 4 or x_features.shape[:2] != y_features.shape[:2]:
        raise ValueError(
            f"contextual_loss: expected (N, C, H, W) maps with equal N and C, "
            f"got {tuple(x_features.shape)} and {tuple(y_features.shape)}"
        )
    y_mean = y_features.mean(dim=(2, 3), keepdim=True)
    x_vectors = F.normalize((x_features - y_mean).flatten(2), dim=1)  # (N, C, |X|)
    y_vectors = F.normalize((y_features - y_mean).flatten(2), dim=1)  # (N, C, |Y|)
    cosine = torch.bmm(x_vectors.transpose(1, 2), y_vectors)  # (N, |X|, |Y|)
    distance = (1.0 - cosine).clamp_min(0.0)
    relative = distance / (distance.min(dim=2, keepdim=True).values + eps)
    log_cx = F.log_softmax((1.0 - relative) / band_width, dim=2)
    best_log_cx = log_cx.max(dim=1).values  # (N, |Y|)
    log_mean_cx = torch.logsumexp(best_log_cx, dim=1) - math.log(best_log_cx.shape[1])
    return -log_mean_cx.mean()


def _pool_to_max_positions(features: torch.Tensor, max_positions: int | None) -> torch.Tensor:
    height, width = features.shape[-2:]
    if max_positions is None or height * width <= max_positions:
        return features
    factor = math.ceil(math.sqrt(height * width / max_positions))
    return F.avg_pool2d(features, factor, ceil_mode=True)


class ContextualLoss(nn.Module):
    """Σ_l w_l · contextual_loss(VGG_l(output), VGG_l(exemplar)) over VGG19 layers (λ_ctx = 0.1).

    Stage 2 compares the colorized output with the exemplar x_inv on relu3_2/4_2/5_2 weighted
    2/4/8. The exemplar is a fixed target: no gradient flows into it. At 256² input relu3_2 has
    64² = 4096 positions, a 4096 x 4096 similarity per sample; `max_positions` average-pools
    larger maps (both sides alike) to bound that memory.
    """

    def __init__(
        self,
        vgg: VGG19Features | DiscriminatorFeatures,
        layer_weights: Mapping[str, float] | None = None,
        band_width: float = 0.1,
        max_positions: int | None = None,
    ) -> None:
        super().__init__()
        self.layer_weights = dict(layer_weights or LossWeights().contextual_layer_weights)
        missing = [layer for layer in self.layer_weights if layer not in vgg.layers]
        if missing:
            raise ValueError(f"ContextualLoss: the feature extractor does not compute layer(s) {missing}")
        self.vgg = vgg
        self.band_width = band_width
        self.max_positions = max_positions

    def feature_loss(
        self, output_features: Mapping[str, torch.Tensor], exemplar_features: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """The loss from precomputed VGG feature dicts (to share one VGG pass with other losses)."""
        total = 0.0
        for layer, weight in self.layer_weights.items():
            output = _pool_to_max_positions(output_features[layer], self.max_positions)
            exemplar = _pool_to_max_positions(exemplar_features[layer].detach(), self.max_positions)
            total = total + weight * contextual_loss(output, exemplar, band_width=self.band_width)
        return total

    def forward(self, output_rgb: torch.Tensor, exemplar_rgb: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], (N, 3, H, W), for the colorized output and the exemplar."""
        with torch.no_grad():
            exemplar_features = self.vgg(exemplar_rgb)
        return self.feature_loss(self.vgg(output_rgb), exemplar_features)


def _as_list(outputs: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)


def lsgan_discriminator_loss(
    real_outputs: torch.Tensor | Sequence[torch.Tensor], fake_outputs: torch.Tensor | Sequence[torch.Tensor]
) -> torch.Tensor:
    """LSGAN (Mao et al. 2017) discriminator loss ½E[(D(x) − 1)²] + ½E[D(G(z))²], mean over scales.

    Takes the per-scale score lists of `MultiScalePatchGAN` (or one tensor); detach the fake
    images before the discriminator step.
    """
    real, fake = _as_list(real_outputs), _as_list(fake_outputs)
    if len(real) != len(fake) or not real:
        raise ValueError(f"lsgan_discriminator_loss: got {len(real)} real and {len(fake)} fake scales")
    per_scale = [0.5 * (r - 1.0).pow(2).mean() + 0.5 * f.pow(2).mean() for r, f in zip(real, fake)]
    return torch.stack(per_scale).mean()


def lsgan_generator_loss(fake_outputs: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """LSGAN generator loss ½E[(D(G(z)) − 1)²], mean over scales (λ_adv = 1.0)."""
    fake = _as_list(fake_outputs)
    if not fake:
        raise ValueError("lsgan_generator_loss: no discriminator outputs")
    return torch.stack([0.5 * (f - 1.0).pow(2).mean() for f in fake]).mean()


def domain_alignment_loss(gray_embedding: torch.Tensor, color_embedding: torch.Tensor) -> torch.Tensor:
    """Mean |e(L) − e(RGB)| between the correspondence embeddings of the gray input and of the
    ground-truth colour image, pulling both into one domain (λ_dom = 10)."""
    return F.l1_loss(gray_embedding, color_embedding)


def soft_encode_ab(ab: torch.Tensor, centers: torch.Tensor, neighbours: int = 5, sigma: float = 5.0) -> torch.Tensor:
    """(B, 2, h, w) ab → (B, Q, h, w) soft one-hot over the bin centres (Q, 2): a Gaussian of
    `sigma` (Lab units) on the `neighbours` nearest bins, normalised to sum to one."""
    batch, _, height, width = ab.shape
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    distances = torch.cdist(flat, centers.to(flat))  # (N, Q)
    nearest, index = distances.topk(neighbours, dim=1, largest=False)
    weights = torch.exp(-nearest.square() / (2 * sigma**2))
    weights = weights / weights.sum(dim=1, keepdim=True)
    encoded = torch.zeros_like(distances).scatter_(1, index, weights)
    return encoded.view(batch, height, width, -1).permute(0, 3, 1, 2)


def rebalancing_weights(bin_counts: torch.Tensor, centers: torch.Tensor, mix: float = 0.5, sigma: float = 5.0) -> torch.Tensor:
    """Per-bin loss weights that undo the dominance of desaturated colours (Zhang et al. 2016):
    w ∝ ((1 - mix) · p̃ + mix / Q)^-1, p̃ the empirical bin distribution smoothed by a Gaussian
    of `sigma` over ab, normalised so that the expected weight under p̃ is 1."""
    probability = bin_counts.to(centers.device).double() / bin_counts.sum().clamp_min(1)
    distances = torch.cdist(centers.double(), centers.double())
    kernel = torch.exp(-distances.square() / (2 * sigma**2))
    smoothed = kernel @ probability
    smoothed = smoothed / smoothed.sum()
    weights = 1.0 / ((1 - mix) * smoothed + mix / len(centers))
    weights = weights / (smoothed * weights).sum()
    return weights.float()


def ab_classification_loss(
    logits: torch.Tensor, target_ab: torch.Tensor, centers: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Rebalanced cross-entropy of ab-bin logits (B, Q, h, w) against true ab (B, 2, H, W),
    which is area-averaged to the logits' grid first. Each pixel is weighted by the weight of
    its nearest bin (the rebalancing of Zhang et al.)."""
    target_ab = F.interpolate(target_ab.float(), size=logits.shape[-2:], mode="area")
    target = soft_encode_ab(target_ab, centers)
    log_probability = F.log_softmax(logits.float(), dim=1)
    per_pixel = -(target * log_probability).sum(dim=1)
    if class_weights is None:
        return per_pixel.mean()
    pixel_weights = class_weights.to(per_pixel)[target.argmax(dim=1)]
    return (per_pixel * pixel_weights).sum() / pixel_weights.numel()
