from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from skimage.color import rgb2lab
from torch.utils.data.distributed import DistributedSampler

from gcpcolor.color import rgb_to_lab
from gcpcolor.config import ConfigError, config_from_dict, config_to_dict
from gcpcolor.data import (
    ClassFolderDataset,
    DataConfig,
    DatasetError,
    LabeledFolderDataset,
    _random_crop_box,
    make_dataloader,
    make_dataset,
)

SHARED_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
TENCH, GOLDFISH = "n01440764", "n01443537"
SIZE = 32


def _save_photo(path: Path, width: int, height: int, seed: int) -> None:
    """A smooth random colour image (so that crops and flips change it)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _save_corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an image")


@pytest.fixture
def class_root(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    _save_photo(root / TENCH / "a.JPEG", 48, 40, 0)
    _save_photo(root / TENCH / "b.png", 40, 64, 1)
    _save_corrupt(root / TENCH / "c_broken.JPEG")
    _save_photo(root / GOLDFISH / "deeper" / "d.jpg", 50, 50, 2)
    (root / GOLDFISH / "notes.txt").write_text("not an image, ignored")
    _save_corrupt(root / GOLDFISH / "._d.jpg")  # macOS metadata: hidden, ignored
    _save_photo(root / GOLDFISH / ".thumbnails" / "d.jpg", 8, 8, 2)
    return root


@pytest.fixture
def flat_root(tmp_path: Path) -> Path:
    root = tmp_path / "flat"
    rows = [
        ("p0.jpg", "imagenet-sample", TENCH, 0),
        ("p1.png", "bsds500", "", -1),
        ("p2.jpg", "imagenet-sample", GOLDFISH, 1),
        ("p3.jpg", "hymenoptera", "n02219486", 310),
    ]
    for i, (name, *_) in enumerate(rows):
        _save_photo(root / name, 36 + 8 * i, 44, 10 + i)
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "source", "imagenet_wnid", "imagenet_index"])
        writer.writerows(rows)
    return root


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _is_flipped_pair(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b.flip(-1), atol=1e-6)


# --- items -------------------------------------------------------------------------------


def test_item_keys_shapes_dtypes_and_ranges(flat_root: Path) -> None:
    dataset = LabeledFolderDataset(flat_root, "labels.csv", image_size=SIZE)
    item = dataset[(0, 123)]
    assert set(item) == {"rgb", "lab", "l_input", "ab", "class_id", "path"}
    assert item["rgb"].shape == (3, SIZE, SIZE) and item["rgb"].dtype == torch.float32
    assert item["lab"].shape == (3, SIZE, SIZE) and item["lab"].dtype == torch.float32
    assert item["l_input"].shape == (1, SIZE, SIZE)
    assert item["ab"].shape == (2, SIZE, SIZE)
    assert item["class_id"].dtype == torch.long and item["class_id"].shape == ()
    assert item["path"] == str(flat_root / "p0.jpg")
    assert 0.0 <= item["rgb"].min() and item["rgb"].max() <= 1.0
    assert -1.0 <= item["l_input"].min() and item["l_input"].max() <= 1.0
    assert item["ab"].abs().max() <= 128.0 / 110.0
    # The photo is colourful, so the targets are not all zero.
    assert item["ab"].abs().max() > 0.1


def test_lab_is_consistent_with_rgb(flat_root: Path) -> None:
    item = LabeledFolderDataset(flat_root, "labels.csv", image_size=SIZE)[(2, 7)]
    expected = rgb_to_lab(item["rgb"][None])[0]
    torch.testing.assert_close(item["lab"], expected)
    torch.testing.assert_close(item["l_input"], expected[0:1] / 50.0 - 1.0)
    torch.testing.assert_close(item["ab"], expected[1:3] / 110.0)
    # and with scikit-image, the trusted reference
    reference = rgb2lab(item["rgb"].permute(1, 2, 0).double().numpy())
    np.testing.assert_allclose(item["lab"].permute(1, 2, 0).numpy(), reference, atol=2e-3)


def test_eval_resizes_short_side_and_centre_crops(tmp_path: Path) -> None:
    # 64x32 photo: red left quarter, green middle half, blue right quarter.
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :16] = (255, 0, 0)
    pixels[:, 16:48] = (0, 255, 0)
    pixels[:, 48:] = (0, 0, 255)
    Image.fromarray(pixels).save(tmp_path / "bars.png")
    labels = _write_csv(tmp_path / "l.csv", ["file", "class"], [["bars.png", 5]])
    dataset = LabeledFolderDataset(tmp_path, labels, image_size=16, train=False)
    item = dataset[0]
    assert item["rgb"].shape == (3, 16, 16)
    # The centre crop keeps only the green half (borders blend at most one source pixel).
    green = item["rgb"][:, :, 1:-1]
    torch.testing.assert_close(green[1], torch.ones_like(green[1]))
    assert green[0].max() < 1e-6 and green[2].max() < 1e-6
    # Deterministic: the seed is ignored and no flip ever happens.
    for seed in range(5):
        torch.testing.assert_close(dataset[(0, seed)]["rgb"], item["rgb"])


def test_train_crops_depend_on_seed_only(flat_root: Path) -> None:
    dataset = LabeledFolderDataset(flat_root, "labels.csv", image_size=SIZE)
    first = dataset[(1, 42)]["rgb"]
    torch.testing.assert_close(dataset[(1, 42)]["rgb"], first)
    assert not torch.allclose(dataset[(1, 43)]["rgb"], first)


def test_flip_happens_sometimes_in_training_only_when_enabled(tmp_path: Path) -> None:
    _save_photo(tmp_path / "x.png", 40, 40, 3)
    labels = _write_csv(tmp_path / "l.csv", ["file", "class"], [["x.png", 0]])
    # A square photo with crop_scale_min=1 is always taken whole: the flip is the only choice.
    flipping = LabeledFolderDataset(tmp_path, labels, image_size=SIZE, crop_scale_min=1.0)
    plain = LabeledFolderDataset(
        tmp_path, labels, image_size=SIZE, crop_scale_min=1.0, horizontal_flip=False
    )
    unflipped = plain[(0, 0)]["rgb"]
    flipped = 0
    for seed in range(24):
        torch.testing.assert_close(plain[(0, seed)]["rgb"], unflipped)
        with_flip = flipping[(0, seed)]["rgb"]
        if _is_flipped_pair(with_flip, unflipped):
            flipped += 1
        else:
            torch.testing.assert_close(with_flip, unflipped)
    assert 3 <= flipped <= 21


@pytest.mark.parametrize(("height", "width", "scale_min"), [(40, 60, 0.5), (288, 384, 0.08)])
def test_random_crop_box_respects_scale_and_aspect(
    height: int, width: int, scale_min: float
) -> None:
    generator = torch.Generator().manual_seed(0)
    areas = []
    for _ in range(200):
        top, left, h, w = _random_crop_box(height, width, scale_min, generator)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        # rounding to whole pixels moves the ratio and the area a little
        assert 0.7 <= w / h <= 1.4
        areas.append(h * w / (height * width))
    assert min(areas) >= scale_min * 0.9 and max(areas) <= 1.0
    assert max(areas) - min(areas) > 0.3  # the scale really varies


def test_elongated_photo_falls_back_to_centred_crop(tmp_path: Path) -> None:
    # A photo whose colour encodes the x position, far wider than 4:3.
    ramp = np.zeros((40, 200, 3), np.uint8)
    ramp[..., 0] = np.linspace(0, 255, 200).astype(np.uint8)[None, :]
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    labels = _write_csv(tmp_path / "l.csv", ["file", "class"], [["ramp.png", 0]])
    dataset = LabeledFolderDataset(
        tmp_path, labels, image_size=SIZE, crop_scale_min=0.9, horizontal_flip=False
    )
    crop = dataset[(0, 0)]["rgb"]
    # the widest 4:3 box (53x40), centred: x from 73 to 126 of 200
    assert crop[0, :, 0].mean() == pytest.approx(74 / 199, abs=0.02)
    assert crop[0, :, -1].mean() == pytest.approx(125 / 199, abs=0.02)
    for seed in range(1, 5):
        torch.testing.assert_close(dataset[(0, seed)]["rgb"], crop)


# --- class folders --------------------------------------------------------------------------


def test_class_folder_classes_from_wnids_nested_files_no_hidden_ones(class_root: Path) -> None:
    dataset = ClassFolderDataset(class_root, image_size=SIZE)
    found = {Path(path).name: class_id for path, class_id in dataset.samples}
    assert found == {"a.JPEG": 0, "b.png": 0, "c_broken.JPEG": 0, "d.jpg": 1}
    item = dataset[(3, 0)]
    assert item["class_id"].item() == 1 and item["path"].endswith("d.jpg")


def test_class_folder_rejects_non_imagenet_folders(class_root: Path) -> None:
    _save_photo(class_root / "holiday_photos" / "x.jpg", 30, 30, 4)
    with pytest.raises(DatasetError, match="holiday_photos"):
        ClassFolderDataset(class_root, image_size=SIZE)
    custom = ClassFolderDataset(class_root, image_size=SIZE, class_from_folder_index=True)
    by_folder = {Path(path).parent.name: class_id for path, class_id in custom.samples}
    # sorted folder names: holiday_photos, n01440764, n01443537 (d.jpg sits in deeper/)
    assert by_folder == {"holiday_photos": 0, TENCH: 1, "deeper": 2}


def test_class_folder_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        ClassFolderDataset(tmp_path / "missing")
    _save_photo(tmp_path / "flat.jpg", 20, 20, 0)
    with pytest.raises(DatasetError, match="no class folders"):
        ClassFolderDataset(tmp_path)
    (tmp_path / TENCH).mkdir()
    with pytest.raises(DatasetError, match="no images"):
        ClassFolderDataset(tmp_path)


# --- unreadable files ---------------------------------------------------------------------


def test_corrupt_file_is_skipped_reported_and_logged_once(
    class_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dataset = ClassFolderDataset(class_root, image_size=SIZE)
    broken = str(class_root / TENCH / "c_broken.JPEG")
    broken_index = [str(path) for path, _ in dataset.samples].index(broken)
    with caplog.at_level(logging.WARNING, logger="gcpcolor.data"):
        first = dataset[(broken_index, 5)]
        second = dataset[(broken_index, 5)]
    # the next sample stands in, the same one every time
    assert first["path"] == str(dataset.samples[broken_index + 1][0])
    torch.testing.assert_close(first["rgb"], second["rgb"])
    assert dataset.skipped_files == [broken]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "c_broken.JPEG" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    # every index still yields an item
    assert len([dataset[(i, 0)] for i in range(len(dataset))]) == len(dataset)


def test_too_many_consecutive_failures_raise(tmp_path: Path) -> None:
    for i in range(3):
        _save_corrupt(tmp_path / TENCH / f"bad{i}.jpg")
    _save_photo(tmp_path / TENCH / "good.jpg", 20, 20, 0)
    dataset = ClassFolderDataset(tmp_path, image_size=SIZE, max_consecutive_failures=2)
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path))):
        dataset[(0, 0)]
    # one failure fewer is tolerated
    tolerant = ClassFolderDataset(tmp_path, image_size=SIZE, max_consecutive_failures=3)
    assert tolerant[(0, 0)]["path"].endswith("good.jpg")


def test_folder_of_only_corrupt_files_raises(tmp_path: Path) -> None:
    for i in range(2):
        _save_corrupt(tmp_path / TENCH / f"bad{i}.jpg")
    dataset = ClassFolderDataset(tmp_path, image_size=SIZE)
    with pytest.raises(DatasetError, match="could not be read"):
        dataset[0]


# --- labels files -------------------------------------------------------------------------


def test_labeled_folder_drops_unlabeled_rows_unless_allowed(flat_root: Path) -> None:
    labelled = LabeledFolderDataset(flat_root, flat_root / "labels.csv", image_size=SIZE)
    assert [(Path(p).name, c) for p, c in labelled.samples] == [
        ("p0.jpg", 0),
        ("p2.jpg", 1),
        ("p3.jpg", 310),
    ]
    assert labelled.num_unlabeled_dropped == 1
    everything = LabeledFolderDataset(flat_root, "labels.csv", allow_unlabeled=True)
    assert [c for _, c in everything.samples] == [0, -1, 1, 310]
    assert everything[(1, 0)]["class_id"].item() == -1


@pytest.mark.parametrize(
    ("header", "rows", "expected"),
    [
        (["file", "class"], [["p0.jpg", 7], ["p2.jpg", -1]], [7]),
        (["file", "imagenet_wnid"], [["p0.jpg", GOLDFISH], ["p2.jpg", ""]], [1]),
        (["class", "file"], [[3, "p0.jpg"]], [3]),
    ],
)
def test_labeled_folder_accepts_each_class_column(
    flat_root: Path, header: list[str], rows: list[list[object]], expected: list[int]
) -> None:
    labels = _write_csv(flat_root / "other.csv", header, rows)
    dataset = LabeledFolderDataset(flat_root, labels, image_size=SIZE)
    assert [c for _, c in dataset.samples] == expected


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["path", "class"], [["p0.jpg", 1]], "needs a header"),
        (["file", "source"], [["p0.jpg", "x"]], "needs a header"),
        (["file", "class"], [["p0.jpg", "seven"]], "line 2: class 'seven' is not an integer"),
        (["file", "imagenet_index"], [["p0.jpg", 1000]], "out of range"),
        (["file", "imagenet_wnid"], [["p0.jpg", "n99999999"]], "not an ImageNet-1k wnid"),
        (["file", "class"], [["p0.jpg", 1], ["", 2]], "line 3: empty file name"),
    ],
)
def test_labeled_folder_rejects_bad_csv(
    flat_root: Path, header: list[str], rows: list[list[object]], message: str
) -> None:
    labels = _write_csv(flat_root / "bad.csv", header, rows)
    with pytest.raises(DatasetError, match=message):
        LabeledFolderDataset(flat_root, labels)


def test_labeled_folder_missing_labels_file(flat_root: Path) -> None:
    with pytest.raises(DatasetError, match="labels file not found"):
        LabeledFolderDataset(flat_root, "nope.csv")


# --- config -------------------------------------------------------------------------------


def test_make_dataset_chooses_layout_and_applies_config(
    flat_root: Path, class_root: Path
) -> None:
    flat = make_dataset(
        config_from_dict(
            DataConfig,
            {"root": str(flat_root), "labels_file": "labels.csv", "image_size": 24, "train": False},
        )
    )
    assert isinstance(flat, LabeledFolderDataset) and len(flat) == 3
    assert flat[0]["rgb"].shape == (3, 24, 24) and not flat.train
    folders = make_dataset(DataConfig(root=str(class_root), crop_scale_min=0.7))
    assert isinstance(folders, ClassFolderDataset) and folders.crop_scale_min == 0.7
    assert folders.image_size == 256 and folders.train and folders.horizontal_flip


@dataclass(frozen=True)
class _TrainingConfig:
    data: DataConfig = field(default_factory=DataConfig)


def test_data_config_nests_in_other_configs() -> None:
    parsed = config_from_dict(_TrainingConfig, {"data": {"root": "x", "labels_file": "l.csv"}})
    assert parsed.data == DataConfig(root="x", labels_file="l.csv")
    assert config_from_dict(_TrainingConfig, config_to_dict(parsed)) == parsed


def test_data_config_validation() -> None:
    with pytest.raises(ConfigError, match="crop_scale_min"):
        DataConfig(root="x", crop_scale_min=0.0)
    with pytest.raises(ConfigError, match="image_size"):
        DataConfig(root="x", image_size=0)
    with pytest.raises(ConfigError, match="unknown option"):
        config_from_dict(DataConfig, {"root": "x", "imagesize": 3})
    with pytest.raises(ConfigError, match="root"):
        make_dataset(DataConfig())


# --- loaders ------------------------------------------------------------------------------


def _first_batch(dataset, seed: int, num_workers: int = 0) -> dict:
    loader, _ = make_dataloader(
        dataset, batch_size=2, num_workers=num_workers, shuffle=True, seed=seed, distributed=False
    )
    return next(iter(loader))


def test_loader_is_reproducible_from_its_seed(flat_root: Path) -> None:
    dataset = LabeledFolderDataset(flat_root, "labels.csv", image_size=SIZE, allow_unlabeled=True)
    torch.manual_seed(0)
    first = _first_batch(dataset, seed=11)
    torch.manual_seed(1)  # the global RNG plays no part
    second = _first_batch(dataset, seed=11)
    assert first["path"] == second["path"]
    torch.testing.assert_close(first["rgb"], second["rgb"])
    torch.testing.assert_close(first["class_id"], second["class_id"])
    assert first["rgb"].shape == (2, 3, SIZE, SIZE) and first["class_id"].shape == (2,)
    # worker processes give the same batches as the main process
    with_workers = _first_batch(dataset, seed=11, num_workers=1)
    torch.testing.assert_close(with_workers["rgb"], first["rgb"])
    # another seed, another order or other crops
    other = _first_batch(dataset, seed=-12)
    assert other["path"] != first["path"] or not torch.allclose(other["rgb"], first["rgb"])


def test_loader_epochs_differ_and_set_epoch_replays(flat_root: Path) -> None:
    dataset = LabeledFolderDataset(flat_root, "labels.csv", image_size=SIZE, allow_unlabeled=True)
    loader, sampler = make_dataloader(dataset, 2, 0, shuffle=True, seed=3, distributed=False)
    assert len(loader) == 2  # 4 photos, drop_last
    epoch0 = [batch["rgb"] for batch in loader]
    epoch1 = [batch["rgb"] for batch in loader]
    assert not torch.allclose(torch.cat(epoch0), torch.cat(epoch1))
    sampler.set_epoch(0)
    torch.testing.assert_close(torch.cat([batch["rgb"] for batch in loader]), torch.cat(epoch0))


def test_eval_loader_keeps_order_and_last_batch(flat_root: Path) -> None:
    dataset = LabeledFolderDataset(
        flat_root, "labels.csv", image_size=SIZE, train=False, allow_unlabeled=True
    )
    loader, _ = make_dataloader(dataset, 3, 0, shuffle=False, seed=0, distributed=False)
    paths = [path for batch in loader for path in batch["path"]]
    assert paths == [str(p) for p, _ in dataset.samples]


def test_distributed_sampler_is_used_when_asked(flat_root: Path, tmp_path: Path) -> None:
    dataset = LabeledFolderDataset(flat_root, "labels.csv", image_size=SIZE)
    with pytest.raises(RuntimeError, match="torch.distributed"):
        make_dataloader(dataset, 2, 0, shuffle=True, seed=0, distributed=True)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        loader, sampler = make_dataloader(dataset, 2, 0, shuffle=True, seed=0, distributed=True)
        assert isinstance(sampler.indices, DistributedSampler)
        sampler.set_epoch(4)
        batch = next(iter(loader))
        assert sampler.indices.epoch == 4
        assert batch["rgb"].shape == (2, 3, SIZE, SIZE)
    finally:
        dist.destroy_process_group()


# --- the shared photo set -----------------------------------------------------------------


def test_shared_training_photos_with_labels_csv() -> None:
    labels = SHARED_TRAIN / "labels.csv"
    if not labels.is_file():
        pytest.skip("shared/data/train is not available")
    with labels.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    labelled = [row for row in rows if int(row["imagenet_index"]) >= 0]
    dataset = LabeledFolderDataset(SHARED_TRAIN, labels, image_size=64)
    assert len(dataset) == len(labelled)
    item = dataset[(0, 0)]
    assert item["path"] == str(SHARED_TRAIN / labelled[0]["file"])
    assert item["class_id"].item() == int(labelled[0]["imagenet_index"])
    assert item["rgb"].shape == (3, 64, 64) and item["ab"].abs().max() > 0.05
    assert dataset.skipped_files == []
