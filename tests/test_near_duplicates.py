from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gcpcolor.data import DataConfig, DatasetError, make_dataset
from gcpcolor.near_duplicates import MIN_CORRELATION, find_near_duplicates, thumbnail_signature

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _photo(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A smooth random scene: blobs of colour, like a photo's large structures."""
    generator = np.random.default_rng(seed)
    coarse = generator.uniform(0, 255, size=(6, 9, 3)).astype(np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)


def _benchmark_and_training_photos(root: Path) -> tuple[Path, Path]:
    benchmark, training = root / "benchmark", root / "training"
    benchmark.mkdir()
    training.mkdir()
    _photo(0).save(benchmark / "scene0.png")
    _photo(1).save(benchmark / "scene1.png")
    # a copy of scene0 as a training set would hold it: smaller, recompressed, warmer
    copy = _photo(0).resize((72, 48), Image.Resampling.LANCZOS)
    warmer = np.clip(np.asarray(copy, dtype=np.int16) + np.array([12, 4, -10]), 0, 255).astype(np.uint8)
    Image.fromarray(warmer).save(training / "copy_of_scene0.jpg", quality=70)
    for seed in (2, 3, 4):
        _photo(seed).save(training / f"other{seed}.jpg", quality=90)
    (training / "broken.jpg").write_bytes(b"not an image")
    Image.new("RGB", (40, 40), (128, 128, 128)).save(training / "blank.png")
    return benchmark, training


def test_signature_is_normalised_and_none_for_unreadable_or_blank(tmp_path: Path) -> None:
    benchmark, training = _benchmark_and_training_photos(tmp_path)
    signature = thumbnail_signature(benchmark / "scene0.png")
    assert signature is not None
    assert abs(float(signature.mean())) < 1e-5 and abs(float(np.linalg.norm(signature)) - 1) < 1e-4
    assert thumbnail_signature(training / "broken.jpg") is None
    assert thumbnail_signature(training / "blank.png") is None


def test_finds_the_resized_recompressed_copy_and_nothing_else(tmp_path: Path) -> None:
    benchmark, training = _benchmark_and_training_photos(tmp_path)
    copies = find_near_duplicates(sorted(training.iterdir()), sorted(benchmark.iterdir()))
    assert copies == {training / "copy_of_scene0.jpg": benchmark / "scene0.png"}
    assert find_near_duplicates([training / "broken.jpg"], sorted(benchmark.iterdir())) == {}


def test_a_rotated_copy_is_found_through_its_exif_orientation(tmp_path: Path) -> None:
    benchmark, _ = _benchmark_and_training_photos(tmp_path)
    rotated = _photo(1).transpose(Image.Transpose.ROTATE_90)  # stored on its side ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... with the orientation that turns it back (a quarter turn clockwise)
    rotated.save(tmp_path / "rotated.jpg", quality=90, exif=exif)
    assert find_near_duplicates([tmp_path / "rotated.jpg"], [benchmark / "scene1.png"]) == {
        tmp_path / "rotated.jpg": benchmark / "scene1.png"
    }


def test_training_data_leaves_out_copies_of_the_benchmark(tmp_path: Path) -> None:
    benchmark, training = _benchmark_and_training_photos(tmp_path)
    (training / "broken.jpg").unlink()
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "class"])
        writer.writerows([path.name, -1] for path in sorted(training.iterdir()))
    config = DataConfig(root=str(training), labels_file=str(labels), allow_unlabeled=True, image_size=32)
    assert len(make_dataset(config).samples) == 5
    kept = make_dataset(DataConfig(**{**config.__dict__, "exclude_near_duplicates_of": str(benchmark)}))
    assert sorted(Path(path).name for path, _ in kept.samples) == ["blank.png", "other2.jpg", "other3.jpg", "other4.jpg"]
    with pytest.raises(DatasetError, match="not found"):
        make_dataset(DataConfig(**{**config.__dict__, "exclude_near_duplicates_of": str(tmp_path / "missing")}))


@pytest.mark.skipif(not (SHARED_DATA / "val").is_dir(), reason="../shared/data is not on this machine")
def test_the_validation_sets_cbsd68_photos_are_found_among_the_bsds500_training_photos() -> None:
    training = sorted((SHARED_DATA / "train").glob("bsds500_*"))
    benchmark = sorted((SHARED_DATA / "val").iterdir())
    copies = find_near_duplicates(training, benchmark)
    cbsd68 = [path for path in benchmark if path.name.startswith("cbsd68_")]
    assert len(copies) == len(cbsd68) == 68
    for training_photo, benchmark_photo in copies.items():  # each with its own photo: same BSDS id
        assert training_photo.stem.split("_")[1] == benchmark_photo.stem.split("_")[1]
    assert MIN_CORRELATION > 0.9


def test_the_default_models_training_config_keeps_the_validation_set_unseen() -> None:
    from gcpcolor.training.config import load_train_config

    config_file = Path(__file__).resolve().parents[1] / "configs" / "default_model" / "default_v2_stage2.yaml"
    assert load_train_config(2, config_file).data.exclude_near_duplicates_of == "../shared/data/val"
    overridden = load_train_config(2, config_file, ["data.exclude_near_duplicates_of=null"])
    assert overridden.data.exclude_near_duplicates_of is None
