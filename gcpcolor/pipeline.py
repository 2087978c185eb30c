"""The user-facing colorization pipeline and its Python API.

    from gcpcolor import Colorizer
    colorizer = Colorizer.from_pretrained("~/.cache/gcpcolor")      # or Colorizer.load()
    result = colorizer.colorize("grandma_1932.jpg", class_id="golden retriever")
    result.save("grandma_1932_color.png")

A photo that already has colour is recoloured all the same, with a ColorInputWarning (once per
photo) and `result.input_is_color` set; toned prints (sepia...) count as black-and-white
(gcpcolor/color_detection.py).

The networks work at 256²; the predicted ab is upsampled bicubically to the photo's own size and
joined with its ORIGINAL full-resolution L, so no detail of the scan is lost. The conversions on
both sides of the networks are `image_processor.ImageProcessor`'s (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .classes import NUM_IMAGENET_CLASSES, ClassNotFoundError, parse_class_number, resolve_class
from .color_detection import COLOR_THRESHOLD, ColorInputWarning, color_input_note, off_tone_chroma
from .colorize_result import ColorizeResult
from .config import ColorizerConfig
from .devices import resolve_device
from .errors import MissingWeightsError
from . import image_io
from .image_io import load_pixels, pixels_to_float_rgb
from .image_writing import save_animation
from .image_processor import ImageProcessor, PreparedPhoto, check_pixels
from .model import BackboneFeatures, GCPColorizationModel, resample_square
from .photo_metadata import PhotoMetadata
from .weights import AUTHORS_FILES, BUNDLED_MODEL_DIR, CONFIG_NAME, WEIGHTS_NAME, find_pretrained_dir, search_dirs

logger = logging.getLogger(__name__)

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
ClassSpec = int | str | None
#: Arithmetic of the networks: float32, or bfloat16 autocast (fast on CPUs with AMX/AVX-512
#: BF16 and on GPUs; the correspondence's similarities and softmax stay in float32).
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class _PhotoSource:
    """What every result of one photo shares besides its pixels: the input's off-tone chroma as
    a measure, and what the photo's file passes on (none for arrays and PIL images)."""

    measure_input_chroma: Callable[[], float]
    metadata: PhotoMetadata | None = None
    alpha: np.ndarray | None = None


def to_pixels(image: ImageLike) -> np.ndarray:
    """Any supported image input as the image processor's pixels: (H, W) or (H, W, 3); uint8 and
    uint16 kept as they are (no copy), other integers scaled by their type's range and floats
    clipped to [0, 1], both as float32."""
    if isinstance(image, (str, os.PathLike)):
        return load_pixels(image)
    if isinstance(image, Image.Image):
        return image_io.pil_to_pixels(image)
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if isinstance(image, torch.Tensor) and array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.transpose(1, 2, 0)  # CHW tensors -> HWC
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(array.dtype, np.integer):
            array = array.astype(np.float32) / image_io.full_scale(array.dtype)
        array = np.asarray(array, dtype=np.float32)
        if array.size and not (np.isfinite(array).all() and 0.0 <= array.min() and array.max() <= 1.0):
            array = np.clip(np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    if array.ndim not in (2, 3) or min(array.shape[:2], default=0) < 1:
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {array.shape}")
    return check_pixels(array)


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """Any supported image input as a float32 (H, W, 3) RGB array in [0, 1]."""
    return pixels_to_float_rgb(to_pixels(image))


@dataclass(frozen=True)
class ReferencePhoto:
    """A reference photo prepared by `Colorizer.prepare_reference`: (1, 3, R, R) RGB in [-1, 1]."""

    network_input: torch.Tensor


class Colorizer:
    """Colorize photos with GCP-Colorization. Holds the model on one device, in eval mode.

    `warn_on_color_input` (default True): a ColorInputWarning for each photo that already has
    colour; callers that report it themselves (the command line) turn it off. `temperature`
    overrides the model's decoding temperature (`GCPColorizationModel.set_temperature`: lower is
    bolder, higher more muted; models that predict a colour distribution only).
    """

    warn_on_color_input: bool = True

    def __init__(
        self,
        model: GCPColorizationModel,
        device: str | torch.device = "cpu",
        classifier: "torch.nn.Module | None" = None,
        is_demo: bool = False,
        precision: str = "float32",
        temperature: float | None = None,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if temperature is not None:
            model.set_temperature(temperature)
        self.precision = precision
        self.onnx_network = None  # set by use_onnxruntime: runs the networks instead of PyTorch
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        if classifier is None and not is_demo:
            from .classify import default_imagenet_classifier

            classifier = default_imagenet_classifier(model.config)
        self.classifier = classifier.to(self.device).eval() if classifier is not None else None
        self.is_demo = is_demo
        self.processor = ImageProcessor(model.config.work_size)

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
        return cls(GCPColorizationModel.from_pretrained(path), device=device, **kwargs)

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Write `config.json` + `model.safetensors`; reload with `from_pretrained(path)`.

        `dtype=torch.float16` halves the file; loading casts back to float32.
        """
        self.model.save_pretrained(path, dtype)

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

    # ----------------------------------------------------------------- pre- and post-processing
    def _input_chroma(self, pixels: np.ndarray, source: ImageLike) -> Callable[[], float]:
        """The photo's off-tone chroma as a measure taken at most once; taken now, with a warning
        for a colour photo, when `warn_on_color_input` is on."""
        measure = functools.cache(functools.partial(off_tone_chroma, pixels))
        if self.warn_on_color_input and measure() > COLOR_THRESHOLD:
            name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "the photo"
            warnings.warn(f"{name} {color_input_note(measure())}: it is recoloured from its lightness alone",
                          ColorInputWarning, stacklevel=_stacklevel_outside_package())
        return measure

    def _prepare(self, image: ImageLike, resize_mode: str) -> PreparedPhoto:
        return self.processor.preprocess(to_pixels(image), resize_mode)

    def _prepare_to_colorize(self, image: ImageLike, resize_mode: str) -> tuple[PreparedPhoto, _PhotoSource]:
        """The photo brought to the network's input, and what its results share: its off-tone
        chroma as a measure (with the colour-input warning, `_input_chroma`) and, for a file, its
        metadata and transparency."""
        if isinstance(image, (str, os.PathLike)):
            pixels, metadata, alpha = image_io.load_photo(image)
            source = _PhotoSource(self._input_chroma(pixels, image), metadata, alpha)
        else:
            pixels = to_pixels(image)
            source = _PhotoSource(self._input_chroma(pixels, image))
        return self.processor.preprocess(pixels, resize_mode), source

    # ----------------------------------------------------------------- classes
    def resolve_classes(
        self, specs: Sequence[ClassSpec], work_inputs: torch.Tensor, backbone_features: BackboneFeatures | None = None
    ) -> torch.Tensor:
        """Class index per photo: the given spec, or the automatic class where it is None.

        `backbone_features`: the model's `backbone_features(work_inputs)` when already computed."""
        ids = [None if spec is None else self.class_index(spec) for spec in specs]
        unknown = [i for i, value in enumerate(ids) if value is None]
        if unknown:
            subset = None if backbone_features is None else {k: f[unknown] for k, f in backbone_features.items()}
            predicted = self.predict_classes(work_inputs[unknown], subset)
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
    def class_scores(self, work_inputs: torch.Tensor, backbone_features: BackboneFeatures | None = None) -> torch.Tensor:
        """Scores (B, classes) of the prior's classes for network inputs: the ImageNet classifier
        when there is one, else the model's own class predictor (which reuses
        `backbone_features` when given)."""
        work_inputs = work_inputs.to(self.device)
        if self.classifier is not None:
            return self.classifier(work_inputs)
        return self.model.class_logits(work_inputs, backbone_features)

    def predict_classes(self, work_inputs: torch.Tensor, backbone_features: BackboneFeatures | None = None) -> torch.Tensor:
        """Automatic class (see `class_scores`)."""
        return self.class_scores(work_inputs, backbone_features).argmax(dim=1)

    @torch.no_grad()
    def top_classes(self, image: ImageLike, k: int = 5, resize_mode: str = "pad") -> list[tuple[int, float]]:
        """The k most likely classes of the prior for a photo, as (class id, probability)."""
        prepared = self._prepare(image, resize_mode)
        probabilities = torch.softmax(self.class_scores(prepared.work_input).float(), dim=1)[0]
        values, indices = probabilities.topk(min(k, probabilities.numel()))
        return [(int(i), float(v)) for i, v in zip(indices, values)]

    def network_precision(self) -> contextlib.AbstractContextManager:
        """The context the networks run in: autocast for bfloat16, nothing for float32."""
        if self.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # ----------------------------------------------------------------- colorization
    @torch.no_grad()
    def colorize_batch(
        self,
        images: Sequence[ImageLike],
        class_ids: Sequence[ClassSpec] | ClassSpec = None,
        resize_mode: str = "pad",
        latents: torch.Tensor | None = None,
        reference: "ImageLike | ReferencePhoto | None" = None,
    ) -> list[ColorizeResult]:
        """Colorize several photos in one forward pass (any sizes; each keeps its own).

        `reference`: a colour photo whose colours every result should follow, in place of the
        prior's exemplar (models with `takes_reference` only), or the `prepare_reference` of one."""
        photos = [self._prepare_to_colorize(image, resize_mode) for image in images]
        if reference is not None and not isinstance(reference, ReferencePhoto):
            reference = self.prepare_reference(reference)
        return self._colorize_prepared([prepared for prepared, _ in photos], class_ids, latents,
                                       [source for _, source in photos],
                                       None if reference is None else reference.network_input.to(self.device))

    @property
    def takes_reference(self) -> bool:
        """Whether this model can follow a reference photo of the user's (image guidance)."""
        return self.model.takes_reference

    def prepare_reference(self, reference: ImageLike) -> "ReferencePhoto":
        """A colour photo brought to the model's reference input once, for any number of photos:
        RGB at the prior's resolution, where it is matched to each gray photo and warped as an
        exemplar is."""
        if not self.takes_reference:
            raise ValueError(
                f"this model cannot follow a reference photo (its guidance is {self.model.guidance.value!r}; "
                "a model trained with guidance 'image' can)"
            )
        pixels = to_pixels(reference)
        # a scan is shrunk by whole boxes before its float copy: only its colours at R² count
        factor = max(pixels.shape[:2]) // (4 * self.model.prior_resolution)
        if factor > 1 and pixels.dtype == np.uint8:
            pixels = np.asarray(Image.fromarray(pixels).reduce(factor))
        rgb = torch.from_numpy(pixels_to_float_rgb(pixels)).permute(2, 0, 1)[None]
        return ReferencePhoto(resample_square(rgb * 2 - 1, self.model.prior_resolution))

    def _colorize_prepared(
        self,
        prepared: Sequence[PreparedPhoto],
        class_ids: Sequence[ClassSpec] | ClassSpec,
        latents: torch.Tensor | None,
        sources: Sequence[_PhotoSource],
        reference: torch.Tensor | None = None,
    ) -> list[ColorizeResult]:
        """colorize_batch for photos already brought to the network's input (once per photo, however
        many results are made of it)."""
        if len(prepared) == 0:
            return []
        if class_ids is None or isinstance(class_ids, (int, str)):
            class_ids = [class_ids] * len(prepared)
        if len(class_ids) != len(prepared):
            raise ValueError(f"{len(prepared)} images but {len(class_ids)} class ids")
        work = torch.cat([p.work_input for p in prepared]).to(self.device)
        if self.onnx_network is not None:
            if reference is not None:
                raise ValueError("a reference photo needs the PyTorch backend")
            output, classes = self._run_onnx(work, list(class_ids), latents)
        else:
            output, classes = self._run_torch(work, list(class_ids), latents, reference)
        exemplars = _to_images(output.exemplar)
        warped = _to_images(output.warped_exemplar)
        ab = output.ab.detach().float().cpu()  # one transfer for the batch, not one per photo
        return [
            ColorizeResult(
                class_id=int(classes[i]),
                exemplar=exemplars[i],
                warped_exemplar=warped[i],
                z=output.z[i].float().cpu(),
                num_classes=self.config.biggan.n_classes,
                compose=functools.partial(self.processor.postprocess, p, ab[i : i + 1]),
                measure_input_chroma=sources[i].measure_input_chroma,
                metadata=sources[i].metadata,
                alpha=sources[i].alpha,
            )
            for i, p in enumerate(prepared)
        ]

    def _run_torch(self, work: torch.Tensor, class_ids: list[ClassSpec], latents: torch.Tensor | None,
                   reference: torch.Tensor | None = None):
        with self.network_precision():
            # One backbone pass serves both the class probe and the colorization network.
            backbone_features = self.model.backbone_features(work)
            classes = self.resolve_classes(class_ids, work, backbone_features)
            z = None if latents is None else latents.to(self.device)
            if reference is not None:
                reference = reference.expand(len(work), -1, -1, -1)
            output = self.model(work, classes, z=z, backbone_features=backbone_features, reference=reference)
            return output, classes

    def _run_onnx(self, work: torch.Tensor, class_ids: list[ClassSpec], latents: torch.Tensor | None):
        if latents is not None:
            raise ValueError("given latents (diverse results, transitions) need the PyTorch backend")
        from .onnx_export import predicts_own_class

        if self.classifier is None and predicts_own_class(self.model):
            # -1: the graph picks the class with the model's own predictor.
            requested = torch.tensor([-1 if spec is None else self.class_index(spec) for spec in class_ids])
        else:
            requested = self.resolve_classes(class_ids, work).cpu()
        output = self.onnx_network(work.cpu(), requested)
        return output, output.class_ids

    def use_onnxruntime(self, onnx_path: str | os.PathLike | None = None, threads: int | None = None) -> Path:
        """Run the networks with onnxruntime on the CPU from now on (one result per photo:
        `diverse` and `transition` keep needing PyTorch). `onnx_path`: an exported network of
        this model (`gcpcolor export --onnx`); by default one is exported on first use into the
        cache folder, keyed by the model's weights and configuration. Returns the file used."""
        from .onnx_export import OnnxNetwork, cached_onnx_path, export_onnx

        if self.device.type != "cpu":
            raise ValueError("the onnxruntime backend runs on the CPU (use device cpu)")
        if onnx_path is None:
            onnx_path = cached_onnx_path(self.model)
            if not onnx_path.is_file():
                logger.info("exporting the networks to %s (once for this model)", onnx_path)
                export_onnx(self.model, onnx_path)
        self.onnx_network = OnnxNetwork(onnx_path, threads=threads)
        return Path(onnx_path)

    def colorize(
        self, image: ImageLike, class_id: ClassSpec = None, resize_mode: str = "pad",
        reference: "ImageLike | ReferencePhoto | None" = None,
    ) -> ColorizeResult:
        """Colorize one photo at its full resolution (`reference`: see `colorize_batch`)."""
        return self.colorize_batch([image], [class_id], resize_mode=resize_mode, reference=reference)[0]

    @torch.no_grad()
    def invert(self, image: ImageLike, class_id: ClassSpec = None, resize_mode: str = "pad") -> tuple[torch.Tensor, int]:
        """The encoder's latent z (1, dim_z) and the class used, for a photo."""
        return self._invert_prepared(self._prepare(image, resize_mode), class_id)

    def _invert_prepared(self, prepared: PreparedPhoto, class_id: ClassSpec) -> tuple[torch.Tensor, int]:
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
        prepared, source = self._prepare_to_colorize(image, resize_mode)
        generator = torch.Generator().manual_seed(seed)
        results = []
        for spec in list(class_ids) if class_ids else [None]:
            z, class_id = self._invert_prepared(prepared, spec)
            noise = torch.randn((samples, z.shape[1]), generator=generator).to(z)
            latents = z + sigma * noise
            results.extend(self._colorize_prepared([prepared] * samples, [class_id] * samples, latents,
                                                   [source] * samples))
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
        prepared, source = self._prepare_to_colorize(image, resize_mode)
        z, resolved = self._invert_prepared(prepared, class_id)
        shifts = torch.linspace(-shift, shift, steps)
        walked = self.model.shift_latent(z, direction, shifts)
        frames: list[ColorizeResult] = []
        for start in range(0, steps, max(1, batch_size)):
            chunk = walked[start : start + batch_size]
            frames.extend(self._colorize_prepared([prepared] * len(chunk), [resolved] * len(chunk), chunk,
                                                  [source] * len(chunk)))
        return frames


def _stacklevel_outside_package() -> int:
    """The `stacklevel` of a warning issued by this function's caller that names the user's line:
    the first frame outside gcpcolor and torch (colorize, diverse and transition reach the check
    at different depths, through torch.no_grad's wrappers)."""
    packages = tuple(
        os.path.dirname(os.path.abspath(module.__file__)) + os.sep for module in (sys.modules[__package__], torch)
    )
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(packages):
        frame, level = frame.f_back, level + 1
    return level


def _to_images(batch: torch.Tensor) -> list[np.ndarray]:
    """Network RGB in [-1, 1] (B, 3, H, W) -> list of (H, W, 3) arrays in [0, 1]."""
    images = ((batch.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    return list(images)


def save_model_pretrained(
    model: GCPColorizationModel, path: str | os.PathLike, dtype: torch.dtype | None = None
) -> None:
    """`model.save_pretrained(path, dtype)`, kept for code written before the model saved itself."""
    model.save_pretrained(path, dtype)


__all__ = [
    "ColorInputWarning",
    "ColorizeResult",
    "Colorizer",
    "ReferencePhoto",
    "resolve_device",
    "save_animation",
    "save_model_pretrained",
    "to_pixels",
    "to_rgb_array",
]
