"""One colouring of a photo, as `Colorizer` returns it: its full-resolution image (composed on
first use), the GAN exemplar and latent it came from, and what it passes on to its file."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .classes import NUM_IMAGENET_CLASSES, class_name
from .color_detection import COLOR_THRESHOLD
from .errors import InvalidResultError
from .image_io import broken_result_reason, pixels_to_float_rgb
from .image_writing import save_image
from .photo_metadata import PhotoMetadata


@dataclass
class ColorizeResult:
    """One colouring of a photo.

    The full-resolution image is composed the first time `pixels` (or `image`, or `save`) asks
    for it and kept until `release()`: many results of one huge photo (samples, transition
    frames) hold only their small ab map until then.
    """

    class_id: int
    exemplar: np.ndarray  # BigGAN inversion, (256, 256, 3) RGB in [0, 1]
    warped_exemplar: np.ndarray  # the exemplar warped onto the photo, (256, 256, 3)
    z: torch.Tensor  # latent used, (dim_z,)

    num_classes: int = NUM_IMAGENET_CLASSES  # of the prior that made it

    compose: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    #: The input's off-tone chroma, measured on first use and shared by all results of a photo:
    #: callers that decide about colour inputs themselves (the command line) never pay for it.
    measure_input_chroma: Callable[[], float] | None = field(default=None, repr=False)
    #: The original file's DPI, EXIF and XMP, which `save` writes (photos given as a file path).
    metadata: PhotoMetadata | None = field(default=None, repr=False)
    #: The original file's transparency (H, W) uint8, which `save` puts back in PNG, TIFF and
    #: WebP files (`pixels` are the photo composited over white, colorized); None when opaque.
    alpha: np.ndarray | None = field(default=None, repr=False)
    _pixels: np.ndarray | None = field(default=None, repr=False)

    @property
    def pixels(self) -> np.ndarray:
        """(H, W, 3) RGB at the input's full resolution: uint8 for 8-bit photos, else uint16."""
        if self._pixels is None:
            if self.compose is None:
                raise ValueError("this result has no image")
            self._pixels = self.compose()
        return self._pixels

    @pixels.setter
    def pixels(self, value: np.ndarray) -> None:
        self._pixels = value

    @property
    def input_off_tone_chroma(self) -> float:
        """How far the input's colours depart from one tone per lightness (see color_detection)."""
        return self.measure_input_chroma() if self.measure_input_chroma is not None else 0.0

    @property
    def input_is_color(self) -> bool:
        """Whether the input already had colour (toned prints such as sepia do not count)."""
        return self.input_off_tone_chroma > COLOR_THRESHOLD

    @property
    def image(self) -> np.ndarray:
        """(H, W, 3) float32 RGB in [0, 1] at full resolution (a new array on each call)."""
        return pixels_to_float_rgb(self.pixels)

    def problem(self, photo: np.ndarray) -> str | None:
        """Why this is not a usable colorization of `photo` (its input pixels); None if it is.
        Composes the image: a model's NaN or infinity surfaces there, as InvalidResultError."""
        try:
            return broken_result_reason(photo, self.pixels)
        except InvalidResultError as exc:
            return str(exc)

    def release(self) -> None:
        """Free the full-resolution image; it is composed again if asked for."""
        if self.compose is not None:
            self._pixels = None

    @property
    def class_name(self) -> str:
        if self.num_classes != NUM_IMAGENET_CLASSES:
            return f"pseudo-class {self.class_id}"
        return class_name(self.class_id)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the full-resolution result; 16-bit photos give 16-bit PNG and TIFF files. A photo
        read from a file passes on its DPI, EXIF and XMP (`photo_metadata`) and its transparency."""
        save_image(self.pixels, path, overwrite=overwrite, metadata=self.metadata, alpha=self.alpha)
