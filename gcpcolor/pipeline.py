"""The user-facing colorization pipeline and its Python API.

    from gcpcolor import Colorizer
    colorizer = Colorizer.from_pretrained("~/.cache/gcpcolor")      # or Colorizer.load()
    result = colorizer.colorize("grandma_1932.jpg", class_id="golden retriever")
    result.save("grandma_1932_color.png")

A photo that already has colour is recoloured all the same, with a ColorInputWarning (once per
photo) and `result.input_is_color` set; toned prints (sepia...) count as black-and-white
(gcpcolor/color_detection.py).

The networks work at 256²; the predicted ab is upsampled bicubically to the photo's own size and
joined with its ORIGINAL full-resolution L, so no detail of the scan is lost (docs/architecture.md).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from .classes import NUM_IMAGENET_CLASSES, ClassNotFoundError, class_name, parse_class_number, resolve_class
from .color import lab_to_rgb, l_to_network, rgb_to_lab
from .color_detection import COLOR_THRESHOLD, ColorInputWarning, color_input_note, off_tone_chroma
from .config import ColorizerConfig
from .errors import MissingWeightsError, WeightsFormatError
from . import image_io
from .image_io import load_image, save_image
from .model import GCPColorizationModel
from .weights import (
    AUTHORS_FILES,
    BUNDLED_MODEL_DIR,
    CONFIG_NAME,
    WEIGHTS_NAME,
    find_pretrained_dir,
    search_dirs,
    write_atomically,
)

logger = logging.getLogger(__name__)

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
ClassSpec = int | str | None
RESIZE_MODES = ("pad", "stretch")


@dataclass
class ColorizeResult:
    image: np.ndarray  # (H, W, 3) float32 RGB in [0, 1] at the input's full resolution
    class_id: int
    exemplar: np.ndarray  # BigGAN inversion, (256, 256, 3) RGB in [0, 1]
    warped_exemplar: np.ndarray  # the exemplar warped onto the photo, (256, 256, 3)
    z: torch.Tensor  # latent used, (dim_z,)

    num_classes: int = NUM_IMAGENET_CLASSES  # of the prior that made it
    #: How far the input's colours depart from one tone per lightness (see color_detection).
    input_off_tone_chroma: float = 0.0

    @property
    def input_is_color(self) -> bool:
        """Whether the input already had colour (toned prints such as sepia do not count)."""
        return self.input_off_tone_chroma > COLOR_THRESHOLD

    @property
    def class_name(self) -> str:
        if self.num_classes != NUM_IMAGENET_CLASSES:
            return f"pseudo-class {self.class_id}"
        return class_name(self.class_id)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        save_image(self.image, path, overwrite=overwrite)


@dataclass
class _Prepared:
    lightness: torch.Tensor  # (1, 1, H, W) full-resolution L in 0..100
    work_input: torch.Tensor  # (1, 1, S, S) network input L/50 - 1
    crop: tuple[int, int, int, int]  # top, left, height, width of the photo inside the S² canvas


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no CUDA device is available (use --device cpu)")
    return device


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """Any supported image input as a float32 (H, W, 3) RGB array in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return image_io.pil_to_rgb_array(image)
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if isinstance(image, torch.Tensor) and array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.transpose(1, 2, 0)  # CHW tensors -> HWC
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3) or min(array.shape[:2]) < 1:
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.clip(array, 0.0, 1.0)


class Colorizer:
    """Colorize photos with GCP-Colorization. Holds the model on one device, in eval mode.

    `warn_on_color_input` (default True): a ColorInputWarning for each photo that already has
    colour; callers that report it themselves (the command line) turn it off.
    """

    warn_on_color_input: bool = True

    def __init__(
        self,
        model: GCPColorizationModel,
        device: str | torch.device = "cpu",
        classifier: "torch.nn.Module | None" = None,
        is_demo: bool = False,
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        if classifier is None and not is_demo:
            classifier = default_imagenet_classifier(model.config)
        self.classifier = classifier.to(self.device).eval() if classifier is not None else None
        self.is_demo = is_demo

    @property
    def config(self) -> ColorizerConfig:
        return self.model.config

    @property
    def work_size(self) -> int:
        return self.config.work_size

    # ----------------------------------------------------------------- loading and saving
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "cpu", **kwargs) -> "Colorizer":
        """Load our format: `config.json` + `model.safetensors` in directory `path`."""
        directory = Path(path).expanduser()
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for needed in (config_path, weights_path):
            if not needed.is_file():
                raise MissingWeightsError(
                    f"missing {needed.name} in {directory} (a directory written by "
                    f"Colorizer.save_pretrained or `gcpcolor convert`)"
                )
        config = ColorizerConfig.load(config_path)
        model = GCPColorizationModel(config)
        try:
            state = load_file(str(weights_path))
        except Exception as exc:
            raise WeightsFormatError(f"{weights_path}: not a readable safetensors file ({exc})") from None
        from .serialization import load_state_dict_strict

        load_state_dict_strict(model, state, weights_path)
        return cls(model, device=device, **kwargs)

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Write `config.json` + `model.safetensors`; reload with `from_pretrained(path)`.

        `dtype=torch.float16` halves the file; loading casts back to float32.
        """
        save_model_pretrained(self.model, path, dtype)

    @classmethod
    def from_authors_checkpoints(
        cls, weights_dir: str | os.PathLike | None = None, device: str = "cpu", **kwargs
    ) -> "Colorizer":
        from .legacy import load_authors_model

        return cls(load_authors_model(weights_dir), device=device, **kwargs)

    @classmethod
    def default(cls, device: str = "cpu", **kwargs) -> "Colorizer":
        """The model shipped inside the package (trained by the project on its own prior)."""
        return cls.from_pretrained(BUNDLED_MODEL_DIR, device=device, **kwargs)

    @classmethod
    def load(cls, weights_dir: str | os.PathLike | None = None, device: str = "cpu", **kwargs) -> "Colorizer":
        """Our format if a search directory has it, else the authors' released files; with no
        `weights_dir` and nothing installed, the bundled default model."""
        pretrained = find_pretrained_dir(weights_dir)
        if pretrained is not None:
            return cls.from_pretrained(pretrained, device=device, **kwargs)
        try:
            return cls.from_authors_checkpoints(weights_dir, device=device, **kwargs)
        except MissingWeightsError as exc:
            if weights_dir is None and (BUNDLED_MODEL_DIR / CONFIG_NAME).is_file():
                return cls.default(device=device, **kwargs)
            looked = ", ".join(str(d) for d in search_dirs(weights_dir))
            raise MissingWeightsError(
                f"no gcpcolor weights found in {looked}: need {CONFIG_NAME} + {WEIGHTS_NAME}, or the "
                f"authors' files ({', '.join(AUTHORS_FILES.values())}); {exc}"
            ) from None

    @classmethod
    def demo(cls, device: str = "cpu", seed: int = 0, **kwargs) -> "Colorizer":
        """A tiny, randomly initialised model: exercises the whole pipeline, colours are meaningless."""
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = GCPColorizationModel(ColorizerConfig.tiny())
        finally:
            torch.random.set_rng_state(generator_state)
        return cls(model, device=device, is_demo=True, **kwargs)

    # ----------------------------------------------------------------- preprocessing
    def _check_color(self, rgb: np.ndarray, source: ImageLike) -> float:
        """The photo's off-tone chroma, warning once when it looks like a colour photo."""
        chroma = off_tone_chroma(rgb)
        if chroma > COLOR_THRESHOLD and self.warn_on_color_input:
            name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "the photo"
            warnings.warn(f"{name} {color_input_note(chroma)}: it is recoloured from its lightness alone",
                          ColorInputWarning, stacklevel=3)
        return chroma

    def _prepare(self, rgb: np.ndarray, resize_mode: str) -> _Prepared:
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        size = self.work_size
        tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
        lightness = rgb_to_lab(tensor)[:, 0:1]
        height, width = lightness.shape[-2:]
        if resize_mode == "stretch":
            new_h, new_w = size, size
        else:
            scale = size / max(height, width)
            new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        small = F.interpolate(lightness, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        padding = (left, size - new_w - left, top, size - new_h - top)
        if any(padding):
            # Reflection keeps image statistics for the GAN inversion; it needs pad < side.
            mode = "reflect" if max(padding) < min(new_h, new_w) else "replicate"
            small = F.pad(small, padding, mode=mode)
        return _Prepared(lightness, l_to_network(small), (top, left, new_h, new_w))

    def _finish(self, prepared: _Prepared, ab: torch.Tensor) -> np.ndarray:
        top, left, height, width = prepared.crop
        ab = ab[:, :, top : top + height, left : left + width].float().cpu()
        full_h, full_w = prepared.lightness.shape[-2:]
        ab = F.interpolate(ab, size=(full_h, full_w), mode="bicubic", align_corners=False)
        rgb = lab_to_rgb(torch.cat([prepared.lightness, ab], dim=1))
        return rgb[0].permute(1, 2, 0).numpy()

    # ----------------------------------------------------------------- classes
    def resolve_classes(self, specs: Sequence[ClassSpec], work_inputs: torch.Tensor) -> torch.Tensor:
        ids = [None if spec is None else self.class_index(spec) for spec in specs]
        unknown = [i for i, value in enumerate(ids) if value is None]
        if unknown:
            predicted = self.predict_classes(work_inputs[unknown])
            for index, value in zip(unknown, predicted.tolist()):
                ids[index] = value
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def class_index(self, spec: ClassSpec) -> int:
        """The prior's class index for `spec`; raises ClassNotFoundError for one it lacks."""
        classes = self.config.biggan.n_classes
        if classes == NUM_IMAGENET_CLASSES:
            return resolve_class(spec)
        # A prior of our own is conditioned on pseudo-classes: only their indices mean anything.
        index = spec if isinstance(spec, int) and not isinstance(spec, bool) else parse_class_number(str(spec))
        if index is None or not 0 <= index < classes:
            raise ClassNotFoundError(
                f"this model's prior has {classes} pseudo-classes: give a class index 0..{classes - 1} "
                f"(ImageNet names apply to the 1000-class BigGAN prior), got {spec!r}"
            )
        return index

    @torch.no_grad()
    def class_scores(self, work_inputs: torch.Tensor) -> torch.Tensor:
        """Scores (B, classes) of the prior's classes for network inputs: the ImageNet classifier
        when there is one, else the model's own class predictor."""
        work_inputs = work_inputs.to(self.device)
        if self.classifier is not None:
            return self.classifier(work_inputs)
        return self.model.class_logits(work_inputs)

    def predict_classes(self, work_inputs: torch.Tensor) -> torch.Tensor:
        """Automatic class (see `class_scores`)."""
        return self.class_scores(work_inputs).argmax(dim=1)

    @torch.no_grad()
    def top_classes(self, image: ImageLike, k: int = 5, resize_mode: str = "pad") -> list[tuple[int, float]]:
        """The k most likely classes of the prior for a photo, as (class id, probability)."""
        prepared = self._prepare(to_rgb_array(image), resize_mode)
        probabilities = torch.softmax(self.class_scores(prepared.work_input).float(), dim=1)[0]
        values, indices = probabilities.topk(min(k, probabilities.numel()))
        return [(int(i), float(v)) for i, v in zip(indices, values)]

    # ----------------------------------------------------------------- colorization
    @torch.no_grad()
    def colorize_batch(
        self,
        images: Sequence[ImageLike],
        class_ids: Sequence[ClassSpec] | ClassSpec = None,
        resize_mode: str = "pad",
        latents: torch.Tensor | None = None,
    ) -> list[ColorizeResult]:
        """Colorize several photos in one forward pass (any sizes; each keeps its own)."""
        rgbs = [to_rgb_array(image) for image in images]
        chromas = [self._check_color(rgb, image) for rgb, image in zip(rgbs, images)]
        return self._colorize_arrays(rgbs, class_ids, resize_mode, latents, chromas)

    def _colorize_arrays(
        self,
        rgbs: Sequence[np.ndarray],
        class_ids: Sequence[ClassSpec] | ClassSpec,
        resize_mode: str,
        latents: torch.Tensor | None,
        chromas: Sequence[float],
    ) -> list[ColorizeResult]:
        """colorize_batch for RGB arrays whose off-tone chroma is known (checked once per photo)."""
        if len(rgbs) == 0:
            return []
        if class_ids is None or isinstance(class_ids, (int, str)):
            class_ids = [class_ids] * len(rgbs)
        if len(class_ids) != len(rgbs):
            raise ValueError(f"{len(rgbs)} images but {len(class_ids)} class ids")
        prepared = [self._prepare(rgb, resize_mode) for rgb in rgbs]
        work = torch.cat([p.work_input for p in prepared]).to(self.device)
        classes = self.resolve_classes(list(class_ids), work)
        z = None if latents is None else latents.to(self.device)
        output = self.model(work, classes, z=z)
        exemplars = _to_images(output.exemplar)
        warped = _to_images(output.warped_exemplar)
        return [
            ColorizeResult(
                image=self._finish(p, output.ab[i : i + 1]),
                class_id=int(classes[i]),
                exemplar=exemplars[i],
                warped_exemplar=warped[i],
                z=output.z[i].cpu(),
                num_classes=self.config.biggan.n_classes,
                input_off_tone_chroma=chromas[i],
            )
            for i, p in enumerate(prepared)
        ]

    def colorize(self, image: ImageLike, class_id: ClassSpec = None, resize_mode: str = "pad") -> ColorizeResult:
        """Colorize one photo at its full resolution."""
        return self.colorize_batch([image], [class_id], resize_mode=resize_mode)[0]

    @torch.no_grad()
    def invert(self, image: ImageLike, class_id: ClassSpec = None, resize_mode: str = "pad") -> tuple[torch.Tensor, int]:
        """The encoder's latent z (1, dim_z) and the class used, for a photo."""
        prepared = self._prepare(to_rgb_array(image), resize_mode)
        work = prepared.work_input.to(self.device)
        classes = self.resolve_classes([class_id], work)
        return self.model.invert(work, classes), int(classes[0])

    @torch.no_grad()
    def diverse(
        self,
        image: ImageLike,
        samples: int = 4,
        sigma: float = 0.5,
        seed: int = 0,
        class_ids: Sequence[ClassSpec] | None = None,
        resize_mode: str = "pad",
    ) -> list[ColorizeResult]:
        """Diverse colourings: for each class (default: the automatic one), `samples` results
        from z + sigma·N(0, I); each is one forward pass. The same seed gives the same results.
        """
        if samples < 1:
            raise ValueError("samples must be >= 1")
        rgb = to_rgb_array(image)
        chroma = self._check_color(rgb, image)
        generator = torch.Generator().manual_seed(seed)
        results = []
        for spec in list(class_ids) if class_ids else [None]:
            z, class_id = self.invert(rgb, spec, resize_mode)
            noise = torch.randn((samples, z.shape[1]), generator=generator).to(z)
            latents = z + sigma * noise
            results.extend(self._colorize_arrays([rgb] * samples, [class_id] * samples, resize_mode, latents,
                                                 [chroma] * samples))
        return results

    @torch.no_grad()
    def transition(
        self,
        image: ImageLike,
        direction: int,
        shift: float = 16.0,
        steps: int = 9,
        class_id: ClassSpec = None,
        resize_mode: str = "pad",
        batch_size: int = 4,
    ) -> list[ColorizeResult]:
        """Walk z along latent-deformator direction `direction` over [-shift, shift] in `steps`."""
        if steps < 2:
            raise ValueError("steps must be >= 2")
        rgb = to_rgb_array(image)
        chroma = self._check_color(rgb, image)
        z, resolved = self.invert(rgb, class_id, resize_mode)
        shifts = torch.linspace(-shift, shift, steps)
        walked = self.model.shift_latent(z, direction, shifts)
        frames: list[ColorizeResult] = []
        for start in range(0, steps, max(1, batch_size)):
            chunk = walked[start : start + batch_size]
            frames.extend(self._colorize_arrays([rgb] * len(chunk), [resolved] * len(chunk), resize_mode, chunk,
                                                [chroma] * len(chunk)))
        return frames


def default_imagenet_classifier(config: ColorizerConfig) -> "torch.nn.Module | None":
    """EfficientNet-Lite0 for priors with the ImageNet classes that pick them with the
    discriminator's projection; None (with a warning) when its weights package is missing."""
    if config.biggan.n_classes != NUM_IMAGENET_CLASSES or config.class_predictor != "discriminator":
        return None
    from .classify import ImageNetClassifier

    try:
        return ImageNetClassifier()
    except MissingWeightsError as exc:
        logger.warning("automatic classes fall back to the BigGAN discriminator's projection: %s", exc)
        return None


def _to_images(batch: torch.Tensor) -> list[np.ndarray]:
    """Network RGB in [-1, 1] (B, 3, H, W) -> list of (H, W, 3) arrays in [0, 1]."""
    images = ((batch.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    return list(images)


def save_model_pretrained(
    model: GCPColorizationModel, path: str | os.PathLike, dtype: torch.dtype | None = None
) -> None:
    """Our checkpoint format: `config.json` beside `model.safetensors`, written atomically.

    With `dtype`, floating-point tensors are stored in it (integer buffers keep theirs).
    """
    directory = Path(path).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        key: (value.to(dtype) if dtype is not None and value.is_floating_point() else value).detach().cpu().contiguous()
        for key, value in model.state_dict().items()
    }
    write_atomically(
        directory / WEIGHTS_NAME,
        lambda p: save_file(state, str(p), metadata={"format": "pt", "library": "gcpcolor"}),
    )
    write_atomically(directory / CONFIG_NAME, model.config.save)


def save_animation(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: float = 6.0, overwrite: bool = False) -> None:
    """An animated GIF that plays the frames forth and back (atomic write)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (use --overwrite to replace it)")
    pictures = [Image.fromarray(np.round(np.clip(f, 0, 1) * 255).astype(np.uint8)) for f in frames]
    sequence = pictures + pictures[-2:0:-1]
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        sequence[0].save(
            temporary, format="GIF", save_all=True, append_images=sequence[1:], duration=int(1000 / fps), loop=0
        )
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


__all__ = [
    "ColorInputWarning",
    "ColorizeResult",
    "Colorizer",
    "resolve_device",
    "save_animation",
    "save_model_pretrained",
    "to_rgb_array",
]
