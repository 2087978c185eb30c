"""gcpcolor.evaluation and `gcpcolor evaluate` end to end on small generated folders."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gcpcolor.cli import main
from gcpcolor.color import rgb_to_lab
from gcpcolor.evaluation import (
    REPORT_FILES,
    EvaluationError,
    Preprocessing,
    evaluate_folders,
    gray_version,
    pair_folders,
)

STEMS = [f"photo{i}" for i in range(6)]


@pytest.fixture(autouse=True)
def _no_inception_env(monkeypatch):
    """No Inception unless a test brings one: neither $GCPCOLOR_INCEPTION nor the installed
    TF-FID package (test_tf_fid_network uses that one explicitly)."""
    import gcpcolor.models.inception

    monkeypatch.delenv("GCPCOLOR_INCEPTION", raising=False)
    monkeypatch.setattr(gcpcolor.models.inception, "find_tf_fid_network", lambda: None)


def _save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path)
    return path


def _colour_photo(index: int, size=(40, 30)) -> np.ndarray:
    """A smooth colour picture (gradients plus noise) that differs per index."""
    rng = np.random.default_rng(index)
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    rgb = np.stack([255 * x, 128 + 100 * np.sin(3 * y + index), 255 * (1 - y)], axis=-1)
    return np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255)


@pytest.fixture()
def folders(tmp_path) -> dict[str, Path]:
    """truth/: 6 colour photos; near/: perturbed copies named like `gcpcolor colorize` names them;
    dull/: desaturated copies named <stem>.png, plus one stray result that pairs with nothing."""
    rng = np.random.default_rng(42)
    for index, stem in enumerate(STEMS):
        photo = _colour_photo(index)
        _save(photo, tmp_path / "truth" / f"{stem}.png")
        _save(photo + rng.normal(0, 4, photo.shape), tmp_path / "near" / f"{stem}_color.png")
        mean = photo.mean(axis=-1, keepdims=True)
        _save(mean + 0.4 * (photo - mean), tmp_path / "dull" / f"{stem}.png")
    _save(_colour_photo(9), tmp_path / "dull" / "stranger.png")
    return {name: tmp_path / name for name in ("truth", "near", "dull")}


# --------------------------------------------------------------------------- pairing
def test_pairing_by_stem_with_and_without_suffix(tmp_path, folders):
    _save(_colour_photo(0), folders["truth"] / "sub" / "deep.png")
    _save(_colour_photo(0), folders["near"] / "sub" / "deep_color.jpg")
    _save(_colour_photo(1), folders["near"] / "photo0.png")  # an exact name wins over photo0_color.png
    pairing = pair_folders(folders["truth"], {"near": folders["near"], "dull": folders["dull"]})
    assert pairing.methods["near"]["sub/deep"].name == "deep_color.jpg"
    assert pairing.methods["near"]["photo0"].name == "photo0.png"
    assert pairing.keys == sorted(STEMS)  # dull has no sub/deep: only what every method has
    joined = "\n".join(pairing.notes)
    assert "dull: 1 result file(s) match no ground-truth file: stranger.png" in joined
    assert "dull: 1 ground-truth image(s) have no result: sub/deep" in joined
    assert "evaluating the 6 image(s) that every method has" in joined


def test_nothing_pairs_and_missing_folders(tmp_path, folders):
    _save(_colour_photo(0), tmp_path / "other" / "unrelated.png")
    with pytest.raises(EvaluationError, match="nothing pairs"):
        pair_folders(folders["truth"], {"other": tmp_path / "other"})
    with pytest.raises(EvaluationError, match="no such folder"):
        pair_folders(tmp_path / "absent", {"near": folders["near"]})
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="no image files"):
        pair_folders(folders["truth"], {"empty": tmp_path / "empty"})


# --------------------------------------------------------------------------- preprocessing
def test_preprocessing_modes():
    rgb = np.random.default_rng(0).random((50, 100, 3)).astype(np.float32)
    assert Preprocessing(64, "resize").apply(rgb).shape == (64, 64, 3)
    cropped = Preprocessing(32, "center-crop").apply(rgb)
    assert cropped.shape == (32, 32, 3) and cropped.dtype == np.uint8
    exact = Preprocessing(64, "none").apply(rgb)
    np.testing.assert_array_equal(exact, np.rint(rgb * 255).astype(np.uint8))
    with pytest.raises(ValueError):
        Preprocessing(64, "stretch")


def test_gray_version_keeps_lightness_and_drops_colour():
    pixels = np.rint(_colour_photo(3)).astype(np.uint8)
    gray = gray_version(pixels)
    assert gray.dtype == np.uint8 and gray.shape == pixels.shape  # an 8-bit photo gives an 8-bit gray
    rgb, gray = pixels.astype(np.float32) / 255, gray.astype(np.float32) / 255
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 1 / 255 + 1e-6
    assert np.abs(gray[..., 1] - gray[..., 2]).max() <= 1 / 255 + 1e-6
    lab_in = rgb_to_lab(torch.from_numpy(rgb.transpose(2, 0, 1))[None])
    lab_out = rgb_to_lab(torch.from_numpy(np.ascontiguousarray(gray.transpose(2, 0, 1)))[None])
    # Rounding to 8 bits moves L by at most about a third of a unit and leaves a trace of chroma.
    assert torch.allclose(lab_in[:, 0], lab_out[:, 0], atol=0.4)
    assert lab_out[:, 1:].abs().max() < 1.0


# --------------------------------------------------------------------------- metrics over folders
def test_delta_colorfulness_on_uniform_colours(tmp_path):
    # Uniform images: CF = 0.3·hypot(R - G, (R + G)/2 - B) in both variants; mode none keeps them exact.
    truth_colours = [(200, 40, 40), (30, 160, 60), (90, 90, 90)]
    result_colours = [(120, 80, 80), (60, 100, 70), (90, 90, 90)]
    for i, (t, r) in enumerate(zip(truth_colours, result_colours)):
        _save(np.full((16, 16, 3), t), tmp_path / "truth" / f"u{i}.png")
        _save(np.full((16, 16, 3), r), tmp_path / "res" / f"u{i}_color.png")

    def cf(c):
        return 0.3 * math.hypot(c[0] - c[1], (c[0] + c[1]) / 2 - c[2])

    report = evaluate_folders(tmp_path / "truth", {"res": tmp_path / "res"}, mode="none", fid=False, lpips=False)
    expected_truth = np.mean([cf(c) for c in truth_colours])
    expected_result = np.mean([cf(c) for c in result_colours])
    summary = report.method("res")
    for variant in ("absolute", "signed"):
        assert report.truth_colorfulness[variant] == pytest.approx(expected_truth)
        assert summary.colorfulness[variant] == pytest.approx(expected_result)
        assert summary.delta_colorfulness[variant] == pytest.approx(abs(expected_result - expected_truth))
    # u2 is identical to its truth: PSNR = inf is left out of the mean and said so.
    assert summary.identical_images == 1
    assert math.isfinite(summary.psnr)
    assert any("PSNR = inf" in note for note in report.notes)


def test_evaluate_folders_ranks_methods_and_reports_gray(folders):
    report = evaluate_folders(folders["truth"], {"near": folders["near"], "dull": folders["dull"]},
                              include_gray=True, size=64, fid=None, lpips=False)
    near, dull, gray = (report.method(name) for name in ("near", "dull", "gray"))
    assert near.images == dull.images == gray.images == 6
    assert near.psnr > dull.psnr > gray.psnr
    assert near.ssim > gray.ssim
    assert near.delta_colorfulness["absolute"] < dull.delta_colorfulness["absolute"] < gray.delta_colorfulness["absolute"]
    assert gray.colorfulness["absolute"] < 1.0
    assert near.fid is None and report.settings.inception_variant is None
    assert any(note.startswith("FID skipped: no Inception weights") for note in report.notes)
    assert set(report.per_image) == {"truth", "near", "dull", "gray"}
    assert set(report.per_image["near"]["photo0"]) >= {"psnr", "ssim", "cf_absolute", "cf_signed"}
    assert report.grid_columns == ["gray input", "ground truth", "near", "dull"]


def test_mode_none_requires_equal_sizes(folders):
    _save(_colour_photo(0, size=(20, 20)), folders["near"] / "photo0_color.png")
    with pytest.raises(EvaluationError, match="use --mode resize"):
        evaluate_folders(folders["truth"], {"near": folders["near"]}, mode="none", fid=False, lpips=False)


def test_fid_path_with_a_random_inception(tmp_path, folders, monkeypatch):
    """Inception features of truth and results reach the Fréchet distance as 2048-d statistics.

    The distance itself is tested in test_metrics; here it is replaced by a recorder because
    scipy's sqrtm of a 2048² matrix takes minutes on a busy CPU.
    """
    from torchvision.models import inception_v3

    import gcpcolor.metrics

    weights = tmp_path / "inception_v3_google-0cc3c7bd.pth"
    torch.manual_seed(0)
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), weights)
    truth = tmp_path / "truth3"
    truth.mkdir()
    for stem in STEMS[:2]:  # the fewest images with a covariance; each set is one Inception batch
        (truth / f"{stem}.png").write_bytes((folders["truth"] / f"{stem}.png").read_bytes())
    calls = []

    def recorder(mu1, sigma1, mu2, sigma2, eps=1e-6):
        calls.append((mu1, sigma1, mu2, sigma2))
        return float(np.sum((mu1 - mu2) ** 2))

    monkeypatch.setattr(gcpcolor.metrics, "frechet_distance", recorder)
    report = evaluate_folders(truth, {"copy": truth, "dull": folders["dull"]}, fid=True,
                              inception_weights=weights, size=32, batch_size=8, lpips=False)
    assert report.settings.inception_variant == "torchvision"
    assert report.settings.inception_file == str(weights)
    assert "torchvision" in report.settings.fid and str(weights) in report.settings.fid
    assert len(calls) == 2
    (mu_copy, sigma_copy, mu_truth, sigma_truth), (mu_dull, _, _, _) = calls
    assert mu_copy.shape == (2048,) and sigma_copy.shape == (2048, 2048)
    np.testing.assert_allclose(mu_copy, mu_truth, rtol=1e-6, atol=1e-12)  # same pictures, same features
    np.testing.assert_allclose(sigma_copy, sigma_truth, rtol=1e-5, atol=1e-20)
    assert not np.allclose(mu_dull, mu_truth, rtol=1e-3, atol=0)
    assert report.method("copy").fid == pytest.approx(0.0, abs=1e-12)
    assert report.method("dull").fid > 0
    assert any("biased upwards" in note for note in report.notes)
    # how much the two photos' FIDs could move with other photos, and whether the order holds
    assert report.method("copy").fid_interval == (0.0, 0.0)
    assert report.method("dull").fid_interval[1] > 0
    assert [note.split(":")[-1].strip() for note in report.notes if note.startswith("FID copy − dull")] == ["lower"]
    assert report.to_dict()["methods"]["dull"]["fid_interval_95"] == list(report.method("dull").fid_interval)
    with pytest.raises(EvaluationError, match="FID was requested"):
        evaluate_folders(truth, {"copy": truth}, fid=True, lpips=False)


# --------------------------------------------------------------------------- the command
def _run(*args: str):
    return CliRunner().invoke(main, ["evaluate", *args], catch_exceptions=False)


def test_cli_end_to_end(tmp_path, folders):
    out = tmp_path / "report"
    result = _run(str(folders["near"]), "--compare", f"washed={folders['dull']}", "--truth", str(folders["truth"]),
                  "-o", str(out), "--include-gray", "--size", "64", "-q")
    assert result.exit_code == 0, result.output
    result_near = _run(str(folders["near"]), "--truth", str(folders["truth"]), "-o", str(tmp_path / "r2"), "-q")
    assert result_near.exit_code == 0, result_near.output
    for name in ("metrics.md", "metrics.csv", "metrics.json", "grid.png", "colorfulness_hist.png"):
        assert (out / name).is_file(), name
    assert "FID skipped" in result.stderr and "absolute" in result.stdout

    markdown = (out / "metrics.md").read_text()
    for row in ("| washed | 6 |", "| gray | 6 |", "| ground truth | 6 |"):
        assert row in markdown
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [row["method"] for row in rows] == ["near", "washed", "gray", "ground truth"]
    data = json.loads((out / "metrics.json").read_text())
    assert data["settings"]["size"] == 64 and data["settings"]["mode"] == "resize"
    assert data["settings"]["colorfulness_variant"] == "absolute"
    assert data["settings"]["inception_variant"] is None
    assert data["counts"]["evaluated"] == 6
    assert set(data["methods"]["washed"]) >= {"colorfulness_absolute", "colorfulness_signed", "delta_colorfulness", "fid"}
    assert data["per_image"]["washed"]["photo3"]["psnr"] > 0
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (4 * 128, 20 + 6 * 128)  # gray input | truth | near | washed; 6 rows
    with Image.open(out / "colorfulness_hist.png") as histogram:
        assert histogram.mode == "RGB" and histogram.width > 300


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_cli_errors_are_one_line(tmp_path, folders):
    truth = str(folders["truth"])
    assert "no such folder" in _one_line_error(_run(str(tmp_path / "nope"), "--truth", truth, "-o", str(tmp_path / "o1"), "-q"))
    _save(_colour_photo(0), tmp_path / "other" / "unrelated.png")
    assert "nothing pairs" in _one_line_error(_run(str(tmp_path / "other"), "--truth", truth, "-o", str(tmp_path / "o2"), "-q"))
    assert "FID was requested" in _one_line_error(
        _run(str(folders["near"]), "--truth", truth, "-o", str(tmp_path / "o3"), "--fid", "-q"))
    assert "no such file" in _one_line_error(_run(str(folders["near"]), "--truth", truth, "-o", str(tmp_path / "o4"),
                                                  "--inception-weights", str(tmp_path / "none.pth"), "-q"))

    out = tmp_path / "existing"
    assert _run(str(folders["near"]), "--truth", truth, "-o", str(out), "--no-fid", "-q").exit_code == 0
    before = (out / "metrics.md").read_text()
    assert "already exists" in _one_line_error(_run(str(folders["dull"]), "--truth", truth, "-o", str(out), "-q"))
    assert (out / "metrics.md").read_text() == before
    replaced = _run(str(folders["dull"]), "--truth", truth, "-o", str(out), "--no-fid", "--overwrite", "-q")
    assert replaced.exit_code == 0, replaced.output
    assert "| dull |" in (out / "metrics.md").read_text()


def test_cli_leaves_out_ground_truth_that_is_a_copy_of_a_training_photo(tmp_path, folders):
    training = tmp_path / "training"
    training.mkdir()
    with Image.open(folders["truth"] / f"{STEMS[3]}.png") as photo:  # smaller and recompressed, as a training set holds it
        photo.resize((32, 24), Image.LANCZOS).save(training / "copy.jpg", quality=80)
    blobs = np.random.default_rng(5).uniform(0, 255, (4, 5, 3)).astype(np.uint8)
    Image.fromarray(blobs).resize((50, 40), Image.BICUBIC).save(training / "unrelated.png")
    out = tmp_path / "unseen"
    result = _run(str(folders["near"]), "--truth", str(folders["truth"]), "-o", str(out), "--no-fid", "-q",
                  "--leave-out-copies-of", str(training))
    assert result.exit_code == 0, result.output
    assert f"1 ground-truth image(s) left out as copies of training photos: {STEMS[3]}" in result.stderr
    data = json.loads((out / "metrics.json").read_text())
    assert data["counts"]["evaluated"] == 5 and data["counts"]["left_out_as_copies_of_training_photos"] == 1
    assert STEMS[3] not in data["per_image"]["near"]

    every = _run(str(folders["near"]), "--truth", str(folders["truth"]), "-o", str(tmp_path / "none_left"), "-q",
                 "--leave-out-copies-of", str(folders["near"]))
    assert "every ground-truth image is a copy" in _one_line_error(every)
    missing = _run(str(folders["near"]), "--truth", str(folders["truth"]), "-o", str(tmp_path / "o"), "-q",
                   "--leave-out-copies-of", str(tmp_path / "missing"))
    assert "no such folder" in _one_line_error(missing)


def test_cli_colorize_and_evaluate_demo(tmp_path):
    truth = tmp_path / "truth"
    for index in range(3):
        _save(_colour_photo(index, size=(36, 28)), truth / f"tiny{index}.jpg")
    out = tmp_path / "eval"
    result = _run("--truth", str(truth), "--demo", "--include-gray", "-o", str(out), "--size", "32", "-q")
    assert result.exit_code == 0, result.output
    assert "DEMO MODE" in result.stderr
    for index in range(3):
        with Image.open(out / "results" / "demo" / f"tiny{index}_color.png") as image:
            assert image.size == (36, 28)
    data = json.loads((out / "metrics.json").read_text())
    assert set(data["methods"]) == {"demo", "gray"} and data["counts"]["evaluated"] == 3
    # The colorized results are outputs too: a later run does not silently replace them.
    for report_file in REPORT_FILES:
        (out / report_file).unlink()
    message = _one_line_error(_run("--truth", str(truth), "--demo", "-o", str(out), "--size", "32", "-q"))
    assert "results folder is not empty" in message


def test_cli_colorize_with_a_named_model_folder(tmp_path):
    """--colorize-with NAME=DIR names the results after NAME and loads the model from DIR."""
    from gcpcolor.pipeline import Colorizer

    Colorizer.demo().save_pretrained(tmp_path / "model")
    truth = tmp_path / "truth"
    for index in range(2):
        _save(_colour_photo(index, size=(36, 28)), truth / f"tiny{index}.jpg")
    out = tmp_path / "eval"
    result = _run("--truth", str(truth), "--colorize-with", f"mine={tmp_path / 'model'}", "-o", str(out),
                  "--size", "32", "-q", "--no-fid")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "results" / "mine").iterdir()) == ["tiny0_color.png", "tiny1_color.png"]
    assert set(json.loads((out / "metrics.json").read_text())["methods"]) == {"mine"}


def test_cli_colorize_with_a_temperature_scores_a_bolder_decoding(tmp_path, semantic_colorizer):
    """--temperature decodes a semantic model at another temperature; the report's colourfulness
    follows it, and misuse is a one-line error."""
    semantic_colorizer.save_pretrained(tmp_path / "model")
    truth = tmp_path / "truth"
    for index in range(2):
        _save(_colour_photo(index, size=(36, 28)), truth / f"tiny{index}.jpg")
    colourfulness = {}
    for temperature in ("0.05", "5"):
        out = tmp_path / f"eval{temperature}"
        result = _run("--truth", str(truth), "--colorize-with", f"m={tmp_path / 'model'}", "--temperature", temperature,
                      "-o", str(out), "--size", "32", "-q", "--no-fid")
        assert result.exit_code == 0, result.output
        colourfulness[temperature] = json.loads((out / "metrics.json").read_text())["methods"]["m"]["colorfulness"]
        # the report says which decoding its figures belong to
        assert f"- m: colorized here, decoding temperature {float(temperature):g}, a* tilt 0" in (out / "metrics.md").read_text()
    assert colourfulness["0.05"] > colourfulness["5"]
    assert "--colorize-with" in _one_line_error(_run("--truth", str(truth), str(truth), "--temperature", "0.5",
                                                     "-o", str(tmp_path / "x")))
    assert "no temperature" in _one_line_error(_run("--truth", str(truth), "--demo", "--temperature", "0.5",
                                                    "-o", str(tmp_path / "y")))


def test_tf_fid_network_and_kid_on_real_features(folders):
    """The pinned TF-FID TorchScript network, when installed: 2048-d non-negative pool3
    features, FID and KID of a set against itself are ~0, and a dulled set scores worse."""
    from gcpcolor.models import inception

    path = inception.find_tf_fid_network()
    if path is None:
        pytest.skip(f"{inception.TF_FID_PACKAGE} is not installed")
    network = inception.load_tf_fid_inception(path)
    assert network.variant == "tf-fid"
    features = network(torch.rand(2, 3, 64, 64))
    assert features.shape == (2, 2048) and bool((features >= 0).all()) and bool(torch.isfinite(features).all())
    inception.find_tf_fid_network = lambda: path  # the autouse fixture restores the stub after the test
    report = evaluate_folders(folders["truth"], {"copy": folders["truth"], "dull": folders["dull"]},
                              fid=True, size=64, lpips=False)
    assert report.settings.inception_variant == "tf-fid"
    copy, dull = report.method("copy"), report.method("dull")
    assert copy.fid == pytest.approx(0.0, abs=1e-6)
    assert dull.fid > 1.0 and dull.kid > copy.kid
    assert "KID" in report.to_markdown()
