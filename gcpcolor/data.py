"""Training and evaluation datasets: colour photos cut to a square and split into L and ab.

Two layouts are read:

* ImageNet-style class folders, `root/<wnid>/**/*.JPEG` (`ClassFolderDataset`);
* a flat folder of photos plus a CSV of labels (`LabeledFolderDataset`), the layout of
  `shared/data/train` (`file,source,imagenet_wnid,imagenet_index`).

Every item is a dict of tensors ready for the networks: the RGB crop, its CIELAB version, the
network input `L/50 - 1`, the target `ab / AB_SCALE`, the ImageNet class and the file path.

Random crops and flips are drawn from a seed that `make_dataloader` pairs with every index, so
a run is reproducible from its seed alone, whatever the number of worker processes.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler
from torchvision.transforms.v2 import functional as TF

from .classes import NUM_IMAGENET_CLASSES, ClassNotFoundError, wnid_to_index
from .color import AB_SCALE, l_to_network, rgb_to_lab
from .config import ConfigError
from .degradation import OldPhotoDegradation
from .image_io import ImageInputError, load_image
from .photo_files import IMAGE_EXTENSIONS, find_images
from .near_duplicates import find_near_duplicates

logger = logging.getLogger(__name__)

UNLABELED = -1

#: Aspect-ratio range of the random crops (the usual RandomResizedCrop one).
_CROP_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)

#: Accepted class columns of a labels CSV, in order of preference.
_CLASS_COLUMNS = ("imagenet_index", "class", "imagenet_wnid")


class DatasetError(ValueError):
    """A dataset folder or labels file cannot be used as given."""


@dataclass(frozen=True)
class DataConfig:
    """Where the photos are and how they are cut to training/evaluation squares."""

    root: str = ""
    labels_file: str | None = None  # CSV for a flat folder; class folders when None
    image_size: int = 256
    # Classification training uses crops down to 8% of the image, but here every crop must still
    # look like a photo of its labelled class: the encoder inverts it into BigGAN, whose samples
    # frame the whole object, and the exemplar is warped onto it. Crops of at least half the
    # image keep the object in view and, on photos stored at ~288 px, are upsampled by about
    # 1.3x at most instead of 3x, so the ab targets are not blurred.
    crop_scale_min: float = 0.5
    horizontal_flip: bool = True
    num_workers: int = 4
    train: bool = True  # False: resize the short side and centre-crop, no flip
    allow_unlabeled: bool = False  # keep CSV rows without an ImageNet class (class_id -1)
    # Chance that a training crop's gray input is damaged like an old print (fading, blur,
    # grain, scratches, dust: gcpcolor/degradation.py); its colour target stays clean.
    degrade_input: float = 0.0
    class_from_folder_index: bool = False  # class folders that are not wnids: sorted -> 0..K-1
    # A folder of benchmark photos: training photos that are copies of one of them (resized,
    # recompressed: gcpcolor/near_duplicates.py) are left out, so the benchmark stays unseen.
    exclude_near_duplicates_of: str | None = None

    def __post_init__(self) -> None:
        if self.image_size <= 0:
            raise ConfigError(f"DataConfig: image_size must be positive, got {self.image_size}")
        if not 0.0 < self.crop_scale_min <= 1.0:
            raise ConfigError(
                f"DataConfig: crop_scale_min must be in (0, 1], got {self.crop_scale_min}"
            )
        if self.num_workers < 0:
            raise ConfigError(f"DataConfig: num_workers must be >= 0, got {self.num_workers}")
        if not 0.0 <= self.degrade_input <= 1.0:
            raise ConfigError(f"DataConfig: degrade_input must be in [0, 1], got {self.degrade_input}")


class ColorImageDataset(Dataset):
    """Photos with a class id each, cut to `image_size` squares and converted to Lab.

    `dataset[i]` draws a fresh random crop in training mode; `dataset[(i, seed)]` (what the
    loader of `make_dataloader` asks for) makes the crop and flip a function of the seed.
    With `degrade_input` > 0, that share of training crops get old-photo damage on their gray
    input `l_input` (also a function of the seed); `lab`, `ab` and `rgb` stay clean.

    Unreadable files are skipped: the next readable sample is returned instead, the path is
    added to `skipped_files` and logged once. DataLoader workers are separate processes, so
    each keeps its own `skipped_files`; the log warnings come from all of them.
    """

    def __init__(
        self,
        root: str | Path,
        samples: list[tuple[str, int]],
        *,
        image_size: int = 256,
        train: bool = True,
        crop_scale_min: float = 0.5,
        horizontal_flip: bool = True,
        degrade_input: float = 0.0,
        max_consecutive_failures: int = 50,
    ) -> None:
        self.root = Path(root)
        if not samples:
            raise DatasetError(f"{self.root}: no images found")
        self.samples = samples
        self.image_size = image_size
        self.train = train
        self.crop_scale_min = crop_scale_min
        self.horizontal_flip = horizontal_flip
        # evaluation crops (train=False) are never damaged
        self.degradation = OldPhotoDegradation(degrade_input) if train and degrade_input > 0 else None
        self.max_consecutive_failures = max_consecutive_failures
        self.skipped_files: list[str] = []
        self._unreadable: set[str] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | str]:
        if isinstance(key, tuple):
            index, seed = key
        else:
            index = key
            seed = int(torch.randint(0, 2**62, ()).item())
        return self._load_with_fallback(index, seed)

    def _load_with_fallback(self, index: int, seed: int) -> dict[str, torch.Tensor | str]:
        # Deterministic fallback (the next index), so a skipped file does not break the
        # reproducibility of a seeded run.
        attempts = min(self.max_consecutive_failures + 1, len(self.samples))
        for offset in range(attempts):
            path, class_id = self.samples[(index + offset) % len(self.samples)]
            if path in self._unreadable:
                continue
            try:
                rgb = load_image(path)
            except ImageInputError as exc:
                self._unreadable.add(path)
                self.skipped_files.append(path)
                logger.warning("skipping unreadable image: %s", exc)
                continue
            return self._make_item(rgb, class_id, path, seed)
        raise DatasetError(
            f"{self.root}: {attempts} consecutive images could not be read "
            f"(first: {self.samples[index % len(self.samples)][0]}); check the folder"
        )

    def _make_item(
        self, rgb_array: np.ndarray, class_id: int, path: str, seed: int
    ) -> dict[str, torch.Tensor | str]:
        rgb = torch.from_numpy(np.ascontiguousarray(rgb_array, dtype=np.float32)).permute(2, 0, 1)
        generator = torch.Generator().manual_seed(seed)
        if self.train:
            rgb = self._random_crop_and_flip(rgb, generator)
        else:
            rgb = TF.resize(rgb, [self.image_size], antialias=True)
            rgb = TF.center_crop(rgb, [self.image_size, self.image_size])
        # Bilinear weights are non-negative, so this only removes rounding noise.
        rgb = rgb.clamp(0.0, 1.0).contiguous()
        lab = rgb_to_lab(rgb[None])[0]
        lightness = lab[0:1]
        if self.degradation is not None:
            lightness = self.degradation(lightness, generator)
        return {
            "rgb": rgb,
            "lab": lab,
            "l_input": l_to_network(lightness),
            "ab": lab[1:3] / AB_SCALE,
            "class_id": torch.tensor(class_id, dtype=torch.long),
            "path": path,
        }

    def _random_crop_and_flip(self, rgb: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        top, left, height, width = _random_crop_box(
            rgb.shape[1], rgb.shape[2], self.crop_scale_min, generator
        )
        size = [self.image_size, self.image_size]
        rgb = TF.resized_crop(rgb, top, left, height, width, size, antialias=True)
        if self.horizontal_flip and torch.rand((), generator=generator) < 0.5:
            rgb = rgb.flip(-1)
        return rgb


def _random_crop_box(
    height: int, width: int, scale_min: float, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering `scale_min..1` of the area, aspect 3/4..4/3."""
    area = height * width
    log_ratio_low, log_ratio_high = (math.log(r) for r in _CROP_RATIO_RANGE)
    for _ in range(10):
        draws = torch.rand(2, generator=generator).tolist()
        target_area = area * (scale_min + (1.0 - scale_min) * draws[0])
        ratio = math.exp(log_ratio_low + (log_ratio_high - log_ratio_low) * draws[1])
        crop_w = round(math.sqrt(target_area * ratio))
        crop_h = round(math.sqrt(target_area / ratio))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
            left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
            return top, left, crop_h, crop_w
    # No draw fitted (elongated photos): the largest centred crop with an allowed aspect ratio.
    ratio = width / height
    if ratio < _CROP_RATIO_RANGE[0]:
        crop_w, crop_h = width, round(width / _CROP_RATIO_RANGE[0])
    elif ratio > _CROP_RATIO_RANGE[1]:
        crop_w, crop_h = round(height * _CROP_RATIO_RANGE[1]), height
    else:
        crop_w, crop_h = width, height
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def _images_under(folder: Path) -> list[str]:
    """Image files below `folder`, sorted, leaving out hidden files and folders."""
    found = []
    # os.walk rather than rglob: no stat per file, which matters for ImageNet's 1.28M files.
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found.extend(
            os.path.join(directory, name)
            for name in files
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        )
    return sorted(found)


def _imagenet_index(wnid: str) -> int | None:
    try:
        return wnid_to_index(wnid)
    except ClassNotFoundError:
        return None


class ClassFolderDataset(ColorImageDataset):
    """ImageNet layout: `root/<wnid>/*.JPEG` (images may sit deeper); class from the wnid.

    With `class_from_folder_index=True` any folder names are accepted and numbered in sorted
    order (0..K-1), for custom data that has no ImageNet classes.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        class_from_folder_index: bool = False,
        **options: Any,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder not found")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise DatasetError(
                f"{root}: no class folders (expected root/<wnid>/*.JPEG; "
                "for a flat folder of photos give a labels file)"
            )
        if class_from_folder_index:
            class_ids = {folder.name: i for i, folder in enumerate(folders)}
        else:
            class_ids = {folder.name: _imagenet_index(folder.name) for folder in folders}
            unknown = [name for name, index in class_ids.items() if index is None]
            if unknown:
                raise DatasetError(
                    f"{root}: folder(s) not named by an ImageNet-1k wnid: {', '.join(unknown)} "
                    "(use class_from_folder_index for custom classes)"
                )
        samples = [
            (path, class_ids[folder.name]) for folder in folders for path in _images_under(folder)
        ]
        super().__init__(root, samples, **options)  # crop and damage options: ColorImageDataset


class LabeledFolderDataset(ColorImageDataset):
    """A folder of photos listed in a CSV with a header row.

    Columns: `file` (relative to `root`) and one class column, `imagenet_index` or `class`
    (an integer, -1 for none) or `imagenet_wnid` (empty for none). Rows without a class are
    dropped, since the BigGAN prior needs one, unless `allow_unlabeled` (class_id -1).
    """

    def __init__(
        self,
        root: str | Path,
        labels_file: str | Path,
        *,
        allow_unlabeled: bool = False,
        **options: Any,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder not found")
        labels_path = _find_labels_file(root, labels_file)
        samples: list[tuple[str, int]] = []
        self.num_unlabeled_dropped = 0
        for file_name, class_id in _read_labels(labels_path):
            if class_id == UNLABELED and not allow_unlabeled:
                self.num_unlabeled_dropped += 1
                continue
            samples.append((os.path.join(root, file_name), class_id))
        if self.num_unlabeled_dropped:
            logger.info(
                "%s: %d rows without an ImageNet class left out",
                labels_path,
                self.num_unlabeled_dropped,
            )
        super().__init__(root, samples, **options)  # crop and damage options: ColorImageDataset


def _find_labels_file(root: Path, labels_file: str | Path) -> Path:
    """A relative labels path is looked up from the current directory, then inside `root`."""
    path = Path(labels_file)
    for candidate in (path, root / path):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{labels_file}: labels file not found (also looked in {root})")


def _read_labels(path: Path) -> Iterator[tuple[str, int]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        class_column = next((c for c in _CLASS_COLUMNS if c in columns), None)
        if "file" not in columns or class_column is None:
            raise DatasetError(
                f"{path}: needs a header with 'file' and one of {', '.join(_CLASS_COLUMNS)} "
                f"(found: {', '.join(columns) or 'nothing'})"
            )
        for row in reader:
            file_name = (row["file"] or "").strip()
            if not file_name:
                raise DatasetError(f"{path}, line {reader.line_num}: empty file name")
            yield file_name, _parse_class(row[class_column], class_column, path, reader.line_num)


def _parse_class(value: str | None, column: str, path: Path, line: int) -> int:
    value = (value or "").strip()
    if column == "imagenet_wnid":
        if not value:
            return UNLABELED
        index = _imagenet_index(value)
        if index is None:
            raise DatasetError(f"{path}, line {line}: '{value}' is not an ImageNet-1k wnid")
        return index
    try:
        index = int(value)
    except ValueError:
        raise DatasetError(f"{path}, line {line}: {column} '{value}' is not an integer") from None
    upper = NUM_IMAGENET_CLASSES if column == "imagenet_index" else None
    if index < UNLABELED or (upper is not None and index >= upper):
        raise DatasetError(f"{path}, line {line}: {column} {index} is out of range")
    return index


def make_dataset(config: DataConfig) -> ColorImageDataset:
    """Class folders, or a flat folder with a labels CSV when `config.labels_file` is set."""
    if not config.root:
        raise ConfigError("DataConfig: root (the dataset folder) is not set")
    common = {
        "image_size": config.image_size,
        "train": config.train,
        "crop_scale_min": config.crop_scale_min,
        "horizontal_flip": config.horizontal_flip,
        "degrade_input": config.degrade_input,
    }
    if config.labels_file:
        dataset: ColorImageDataset = LabeledFolderDataset(
            config.root, config.labels_file, allow_unlabeled=config.allow_unlabeled, **common
        )
    else:
        dataset = ClassFolderDataset(config.root, class_from_folder_index=config.class_from_folder_index, **common)
    if config.exclude_near_duplicates_of:
        _exclude_near_duplicates(dataset, Path(config.exclude_near_duplicates_of))
    return dataset


def _exclude_near_duplicates(dataset: ColorImageDataset, benchmark: Path) -> None:
    if not benchmark.is_dir():
        raise DatasetError(f"{benchmark}: folder of benchmark photos (data.exclude_near_duplicates_of) not found")
    references = [path for path, _ in find_images([benchmark])]
    copies = find_near_duplicates([path for path, _ in dataset.samples], references)
    dataset.samples = [sample for sample in dataset.samples if Path(sample[0]) not in copies]
    logger.info("%s: %d training photo(s) left out as copies of its photos", benchmark, len(copies))
    if not dataset.samples:
        raise DatasetError(f"{dataset.root}: every photo is a copy of one in {benchmark}")


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields `(index, seed)`: the order of an index sampler, plus a seed for each crop.

    Order and seeds are functions of (seed, epoch) only. `set_epoch` sets the epoch (and is
    passed on to a `DistributedSampler`); without it, each pass moves on to the next epoch.
    """

    def __init__(
        self,
        indices: Sampler[int],
        seed: int,
        shuffle_generator: torch.Generator | None = None,
    ) -> None:
        self.indices = indices
        self.seed = seed
        self.epoch = 0
        self._shuffle_generator = shuffle_generator  # the one `indices` shuffles with

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        if isinstance(self.indices, DistributedSampler):
            self.indices.set_epoch(epoch)
        elif self._shuffle_generator is not None:
            self._shuffle_generator.manual_seed(_mix_seed(self.seed, epoch))
        for index in self.indices:
            yield index, _mix_seed(self.seed, epoch, index)


def _mix_seed(*values: int) -> int:
    """A well-spread 64-bit seed from several integers (negative ones included)."""
    entropy = [int(value) % 2**64 for value in values]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def _ignore_stop_signals(worker_id: int) -> None:
    """Workers leave SIGINT/SIGTERM to the main process, which stops training after the
    current step; a worker that died of the signal would break that step's batch instead.
    (Workers still end with the main process: DataLoader watches it.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_dataloader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    shuffle: bool,
    seed: int,
    distributed: bool,
) -> tuple[DataLoader, SeededSampler]:
    """A loader of batches of dataset items and its sampler (call `sampler.set_epoch`).

    `shuffle` also means training: the last incomplete batch is dropped. With `distributed`,
    each process of the initialised process group reads its own share of the data.
    """
    shuffle_generator = None
    if distributed:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("distributed data loading needs torch.distributed initialised first")
        indices: Sampler[int] = DistributedSampler(
            dataset, shuffle=shuffle, seed=seed, drop_last=shuffle
        )
    elif shuffle:
        shuffle_generator = torch.Generator()
        indices = RandomSampler(dataset, generator=shuffle_generator)
    else:
        indices = SequentialSampler(dataset)
    sampler = SeededSampler(indices, seed, shuffle_generator)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=shuffle,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        # Crops take their seeds from the sampler; this generator still fixes the per-worker
        # seeds DataLoader gives torch, numpy and random (torch does that itself since 1.9),
        # for any global-RNG transform a caller adds.
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_ignore_stop_signals,
    )
    return loader, sampler
