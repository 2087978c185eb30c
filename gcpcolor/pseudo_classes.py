"""Pseudo-classes for a small photo collection: k-means over tiny Lab thumbnails.

A class-conditional prior needs several photos per class. The shared training set has one to
five photos for most of its ImageNet classes (and none for a sixth of the photos), far too few
for a GAN to learn a class from, so `gcpcolor train-prior` conditions on clusters instead:
photos whose coarse layout of lightness and colour is alike share a class. At inference the
prior's discriminator picks the cluster of a gray photo, exactly as it picks an ImageNet class
for the paper's prior.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .color import rgb_to_lab
from .image_io import ImageInputError, load_image
from .model import PSEUDO_CLASS_THUMBNAIL
from .weights import write_atomically

logger = logging.getLogger(__name__)

#: Thumbnail side: coarse enough to ignore content details, fine enough to see a sky on top.
THUMBNAIL_SIZE = PSEUDO_CLASS_THUMBNAIL


@dataclass
class Clustering:
    files: list[str]  # as given, in order
    labels: np.ndarray  # (N,) cluster of each file
    centres: np.ndarray  # (K, D) in the standardised descriptor space
    skipped: list[str]  # unreadable files, left out
    mean: np.ndarray  # (3,) per Lab channel, subtracted before clustering
    scale: np.ndarray  # (3,) per Lab channel, divided by before clustering

    def lightness_centroids(self) -> dict[str, object]:
        """What `LightnessCentroidClassifier` needs: the L part of every centroid and L's
        standardisation, as plain lists (JSON)."""
        centres = self.centres.reshape(len(self.centres), 3, -1)[:, 0]
        return {
            "thumbnail_size": THUMBNAIL_SIZE,
            "mean": float(self.mean[0]),
            "scale": float(self.scale[0]),
            "centres": centres.tolist(),
        }

    def sizes(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.centres)).tolist()


def thumbnail_descriptor(rgb: np.ndarray) -> np.ndarray:
    """(3·S²,) Lab values of an S x S area-averaged thumbnail of an (H, W, 3) RGB [0, 1] photo."""
    image = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    small = F.adaptive_avg_pool2d(image, THUMBNAIL_SIZE)
    return rgb_to_lab(small.double()).flatten().numpy()


def kmeans(points: np.ndarray, k: int, seed: int = 0, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding: (labels (N,), centres (K, D)).

    An empty cluster is re-seeded with the point farthest from its centre, so K stays K.
    """
    if not 1 <= k <= len(points):
        raise ValueError(f"k must be between 1 and the number of points ({len(points)}), got {k}")
    rng = np.random.default_rng(seed)
    x = np.asarray(points, dtype=np.float64)
    centres = [x[rng.integers(len(x))]]
    closest = ((x - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        probabilities = closest / closest.sum() if closest.sum() > 0 else None
        centres.append(x[rng.choice(len(x), p=probabilities)])
        closest = np.minimum(closest, ((x - centres[-1]) ** 2).sum(axis=1))
    centre_array = np.stack(centres)
    labels = np.full(len(x), -1)
    for _ in range(iterations):
        distances = ((x[:, None, :] - centre_array[None]) ** 2).sum(axis=2)
        new_labels = distances.argmin(axis=1)
        for cluster in range(k):
            members = new_labels == cluster
            if members.any():
                centre_array[cluster] = x[members].mean(axis=0)
            else:
                farthest = distances[np.arange(len(x)), new_labels].argmax()
                centre_array[cluster] = x[farthest]
                new_labels[farthest] = cluster
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    return labels, centre_array


def cluster_photos(files: Sequence[str | os.PathLike], k: int, seed: int = 0) -> Clustering:
    """Cluster photos by their standardised Lab thumbnails (L, a and b weighted alike)."""
    descriptors, kept, skipped = [], [], []
    for path in files:
        try:
            descriptors.append(thumbnail_descriptor(load_image(path)))
            kept.append(str(path))
        except ImageInputError as error:
            logger.warning("pseudo-classes: skipping %s", error)
            skipped.append(str(path))
    if len(kept) < k:
        raise ValueError(f"{len(kept)} readable photos are too few for {k} pseudo-classes")
    data = np.stack(descriptors).reshape(len(kept), 3, -1)
    # One scale per Lab channel, so lightness layout and colour count equally whatever their units.
    mean = data.mean(axis=(0, 2), keepdims=True)
    scale = data.std(axis=(0, 2), keepdims=True) + 1e-8
    standardised = ((data - mean) / scale).reshape(len(kept), -1)
    labels, centres = kmeans(standardised, k, seed=seed)
    return Clustering(kept, labels, centres, skipped, mean.ravel(), scale.ravel())


def write_centroids_json(path: str | os.PathLike, clustering: Clustering) -> None:
    """The lightness centroids beside the labels, for picking classes of gray photos."""
    document = json.dumps(clustering.lightness_centroids()) + "\n"
    write_atomically(Path(path), lambda temporary: temporary.write_text(document))


def write_labels_csv(path: str | os.PathLike, root: str | os.PathLike, clustering: Clustering) -> None:
    """A labels file (`file,class`) that `DataConfig(labels_file=...)` reads, written atomically."""
    root = Path(root)

    def write(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "class"])
            for file_name, label in zip(clustering.files, clustering.labels):
                writer.writerow([os.path.relpath(file_name, root), int(label)])

    write_atomically(Path(path), write)
