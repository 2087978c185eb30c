"""Fitting the "imagenet_probe" class predictor: which class of our own prior suits a gray photo.

Our prior is conditioned on pseudo-classes (k-means clusters of colour thumbnails). The probe is
a linear softmax classifier on the frozen ImageNet backbone's pooled features of the gray photo
and its lightness thumbnail, fitted to the pseudo-class labels of the prior's training photos: the backbone knows what is in
the photo, the probe learns which palette such content had.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .model import GCPColorizationModel

logger = logging.getLogger(__name__)


@torch.no_grad()
def gray_embeddings(model: GCPColorizationModel, dataset: Dataset, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) probe inputs (pooled backbone features and lightness thumbnail) of the photos'
    gray versions and their (N,) labels.

    Uses the dataset's fixed (seed 0) crops; photos without a class (-1) are left out."""
    embeddings, labels = [], []
    device = next(model.parameters()).device
    for start in range(0, len(dataset), batch_size):
        items = [dataset[(index, 0)] for index in range(start, min(len(dataset), start + batch_size))]
        l_input = torch.stack([item["l_input"] for item in items]).to(device)
        embeddings.append(model.class_predictor.inputs(model.semantic_embedding(l_input), l_input).cpu())
        labels.append(torch.tensor([int(item["class_id"]) for item in items]))
    features, classes = torch.cat(embeddings), torch.cat(labels)
    keep = classes >= 0
    return features[keep], classes[keep]


def fit_linear_probe(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float = 0.1, steps: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by L-BFGS: (weight (K, D), bias (K,)).

    Features are standardised inside (the scale is folded back into the returned weights), and
    classes are weighted by inverse frequency so a dominant cluster does not absorb the rest."""
    mean, std = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
    x = (features - mean) / std
    counts = torch.bincount(labels, minlength=num_classes).float()
    class_weights = counts.sum() / (num_classes * counts.clamp_min(1))
    weight = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, labels, weight=class_weights)
        loss = loss + weight_decay * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        folded_weight = weight / std
        folded_bias = bias - folded_weight @ mean
    return folded_weight.detach(), folded_bias.detach()


def fit_class_probe(model: GCPColorizationModel, dataset: Dataset) -> float:
    """Fit `model.class_predictor` (an imagenet_probe) on labelled photos; returns its top-1 on
    them (training accuracy: an optimistic figure, logged for orientation)."""
    if model.config.class_predictor != "imagenet_probe":
        raise ValueError("fit_class_probe needs a model with class_predictor imagenet_probe")
    features, labels = gray_embeddings(model, dataset)
    if len(labels) == 0:
        raise ValueError("no labelled photos to fit the class probe on")
    weight, bias = fit_linear_probe(features, labels, model.config.biggan.n_classes)
    probe = model.class_predictor.linear
    with torch.no_grad():
        probe.weight.copy_(weight)
        probe.bias.copy_(bias)
    accuracy = float(((features @ weight.T + bias).argmax(dim=1) == labels).float().mean())
    logger.info("class probe fitted on %d gray photos: top-1 %.3f (on its own training photos)", len(labels), accuracy)
    return accuracy
