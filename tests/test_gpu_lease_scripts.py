"""The helpers that take a training run to a leased GPU and back: packing photos small enough to
travel (scripts/pack_training_photos.py) and returning a trained model as its difference from the
bundled one (scripts/model_delta.py)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_pack_shrinks_crops_to_4_by_3_and_carries_the_classes(tmp_path):
    rng = np.random.default_rng(0)
    train, extra = tmp_path / "train", tmp_path / "extra" / "sub"
    train.mkdir()
    extra.mkdir(parents=True)
    sizes = {"wide.jpg": (300, 900), "tall.png": (800, 600), "small.jpg": (100, 120)}
    for name, (height, width) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(train / name)
    Image.fromarray(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(extra / "square.jpg")
    (tmp_path / "classes.csv").write_text("file,class\nwide.jpg,3\ntall.png,7\nsmall.jpg,0\n")

    out = tmp_path / "packed"
    run_script("pack_training_photos.py", str(out), "--folder", f"train={train}", "--folder",
               f"extra={tmp_path / 'extra'}", "--labels", f"train={tmp_path / 'classes.csv'}", "--workers", "1")

    expected = {"wide.webp": (256, 192), "tall.webp": (192, 256), "small.webp": (120, 100)}
    for name, size in expected.items():
        with Image.open(out / "train" / name) as packed:
            assert (packed.format, packed.size) == ("WEBP", size)
    with Image.open(out / "extra" / "sub__square.webp") as packed:
        assert packed.size == (192, 192)
    manifest = list(csv.DictReader(open(out / "manifest.csv")))
    assert sorted(row["file"] for row in manifest) == sorted(
        ["train/wide.webp", "train/tall.webp", "train/small.webp", "extra/sub__square.webp"])
    assert {row["class"] for row in manifest} == {"-1"}
    classes = {row["file"]: row["class"] for row in csv.DictReader(open(out / "train_classes.csv"))}
    assert classes == {"wide.webp": "3", "tall.webp": "7", "small.webp": "0"}


def test_pack_every_keeps_a_sorted_subset_and_only_its_classes(tmp_path):
    rng = np.random.default_rng(1)
    train = tmp_path / "train"
    train.mkdir()
    for name in ("c.jpg", "a.jpg", "d.jpg", "b.jpg", "e.jpg"):
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(train / name)
    (tmp_path / "classes.csv").write_text("file,class\na.jpg,1\nb.jpg,2\nc.jpg,3\nd.jpg,4\ne.jpg,5\n")

    out = tmp_path / "packed"
    stdout = run_script("pack_training_photos.py", str(out), "--folder", f"train={train}", "--labels",
                        f"train={tmp_path / 'classes.csv'}", "--every", "2", "--workers", "1")

    assert stdout.startswith("3 photos")
    assert sorted(path.name for path in (out / "train").iterdir()) == ["a.webp", "c.webp", "e.webp"]
    manifest = [row["file"] for row in csv.DictReader(open(out / "manifest.csv"))]
    assert manifest == ["train/a.webp", "train/c.webp", "train/e.webp"]
    classes = {row["file"]: row["class"] for row in csv.DictReader(open(out / "train_classes.csv"))}
    assert classes == {"a.webp": "1", "c.webp": "3", "e.webp": "5"}


def test_pack_leaves_out_copies_of_benchmark_photos_before_taking_every_nth(tmp_path):
    rng = np.random.default_rng(2)
    train, benchmark = tmp_path / "train", tmp_path / "benchmark"
    train.mkdir()
    benchmark.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"):  # smooth scenes, not noise
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        coarse.resize((160, 120), Image.BICUBIC).save(train / name)
    with Image.open(train / "b.jpg") as photo:  # the benchmark holds b, larger
        photo.resize((320, 240), Image.BICUBIC).save(benchmark / "b_original.png")

    out = tmp_path / "packed"
    stdout = run_script("pack_training_photos.py", str(out), "--folder", f"train={train}", "--every", "2",
                        "--exclude-near-duplicates-of", str(benchmark), "--workers", "1")

    assert "train: 1 copies of benchmark photos left out" in stdout
    assert sorted(path.name for path in (out / "train").iterdir()) == ["a.webp", "d.webp"]


def test_model_delta_rebuilds_the_trained_model_exactly(tmp_path):
    base, trained = tmp_path / "base", tmp_path / "trained"
    base.mkdir()
    trained.mkdir()
    frozen = torch.randn(64, 64, dtype=torch.float16)
    save_file({"backbone.w": frozen, "head.w": torch.zeros(4, dtype=torch.float16),
               "old.only": torch.ones(2)}, str(base / "model.safetensors"))
    (base / "config.json").write_text('{"temperature": 0.3}')
    trained_weights = {"backbone.w": frozen.clone(), "head.w": torch.arange(4, dtype=torch.float16),
                       "new.w": torch.full((3,), 2.0)}
    save_file(trained_weights, str(trained / "model.safetensors"))
    (trained / "config.json").write_text('{"temperature": 0.38}')

    delta = tmp_path / "delta.safetensors"
    assert "2 of 3 tensors differ" in run_script("model_delta.py", "make", str(trained), str(base), str(delta))
    assert set(load_file(str(delta))) == {"head.w", "new.w"}  # the unchanged backbone stays behind
    run_script("model_delta.py", "apply", str(delta), str(base), str(tmp_path / "rebuilt"))
    rebuilt = load_file(str(tmp_path / "rebuilt" / "model.safetensors"))
    assert rebuilt.keys() == trained_weights.keys()  # "old.only" is not carried over
    assert all(torch.equal(rebuilt[key], value) for key, value in trained_weights.items())
    assert (tmp_path / "rebuilt" / "config.json").read_text() == '{"temperature": 0.38}'
