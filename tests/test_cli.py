"""The `gcpcolor` command end to end (tiny demo model, real subprocess for the entry point)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gcpcolor.cli import main
from gcpcolor.pipeline import Colorizer


def _photo(path: Path, size=(48, 32), mode="L") -> Path:
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    array = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    image = Image.fromarray(array).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture()
def tiny_weights(tmp_path_factory, demo_colorizer):
    directory = tmp_path_factory.mktemp("weights")
    demo_colorizer.save_pretrained(directory)
    return directory


def test_single_file_with_weights(tmp_path, tiny_weights):
    source = _photo(tmp_path / "in" / "old.jpg", size=(64, 40))
    result = run("colorize", str(source), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights), "--class", "1")
    assert result.exit_code == 0, result.output
    written = tmp_path / "out" / "old_color.jpg"
    with Image.open(written) as image:
        assert image.size == (64, 40) and image.mode == "RGB"
    assert "DEMO MODE" not in result.output


def test_folder_recursive_glob_and_exemplars(tmp_path, tiny_weights):
    for name in ["a.png", "sub/b.png", "sub/deeper/c.jpg"]:
        _photo(tmp_path / "album" / name)
    out = tmp_path / "out"
    result = run("colorize", str(tmp_path / "album"), "-o", str(out), "--weights", str(tiny_weights),
                 "--batch-size", "2", "--save-exemplar", "--format", "png")
    assert result.exit_code == 0, result.output
    for name in ["a_color.png", "sub/b_color.png", "sub/deeper/c_color.png", "a_color_exemplar.png", "a_color_warped.png"]:
        assert (out / name).is_file(), name
    glob_out = tmp_path / "glob"
    result = run("colorize", str(tmp_path / "album" / "**" / "*.jpg"), "-o", str(glob_out), "--weights", str(tiny_weights))
    assert result.exit_code == 0, result.output
    assert [p.name for p in glob_out.rglob("*.jpg")] == ["c_color.jpg"]


def test_never_overwrites_without_flag(tmp_path, tiny_weights):
    source = _photo(tmp_path / "p.png")
    target = tmp_path / "out" / "p_color.png"
    target.parent.mkdir()
    target.write_bytes(b"precious")
    result = run("colorize", str(source), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights))
    assert result.exit_code == 1 and "exists" in result.output
    assert target.read_bytes() == b"precious"
    assert run("colorize", str(source), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights),
               "--skip-existing").exit_code == 0
    assert target.read_bytes() == b"precious"
    result = run("colorize", str(source), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights), "--overwrite")
    assert result.exit_code == 0 and target.read_bytes() != b"precious"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]


def test_bad_inputs_are_reported_and_the_rest_still_done(tmp_path, tiny_weights):
    folder = tmp_path / "mixed"
    _photo(folder / "good.png")
    (folder / "text.jpg").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    _photo(folder / "cmyk.jpg", mode="CMYK")
    Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)).save(folder / "deep.png")
    rgba = Image.new("RGBA", (30, 20), (10, 20, 30, 0))
    rgba.save(folder / "alpha.png")
    Image.new("P", (30, 20)).save(folder / "palette.png")
    result = run("colorize", str(folder), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights))
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and any("text.jpg" in e for e in errors) and any("empty.png" in e for e in errors)
    assert "Traceback" not in result.output
    for name in ["good_color.png", "cmyk_color.jpg", "deep_color.png", "alpha_color.png", "palette_color.png"]:
        assert (tmp_path / "out" / name).is_file(), name


def test_exif_rotation_is_applied(tmp_path, tiny_weights):
    image = Image.fromarray((np.random.default_rng(0).random((20, 40)) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    image.save(tmp_path / "rot.jpg", exif=exif)
    result = run("colorize", str(tmp_path / "rot.jpg"), "-o", str(tmp_path / "o.png"), "--weights", str(tiny_weights))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "o.png") as out:
        assert out.size == (20, 40)


def test_missing_weights_one_line_error(tmp_path):
    source = _photo(tmp_path / "p.png")
    result = CliRunner().invoke(main, ["colorize", str(source), "-o", str(tmp_path / "o"), "--weights", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "biggan_G_ema_256.pth" in result.output and "--demo" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_missing_input_and_unknown_class(tmp_path, tiny_weights):
    result = CliRunner().invoke(main, ["colorize", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "nope.jpg" in result.output
    source = _photo(tmp_path / "p.png")
    result = CliRunner().invoke(main, ["colorize", str(source), "-o", str(tmp_path / "o"), "--class", "zzzzqq"])
    assert result.exit_code == 2 and "zzzzqq" in result.output


def test_unwritable_output(tmp_path, tiny_weights):
    source = _photo(tmp_path / "p.png")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("colorize", str(source), "-o", str(blocker / "sub"), "--weights", str(tiny_weights))
    assert result.exit_code == 1 and "error:" in result.output and "Traceback" not in result.output


def test_diverse_samples_and_transition(tmp_path, tiny_weights):
    source = _photo(tmp_path / "p.png")
    out = tmp_path / "out"
    result = run("colorize", str(source), "-o", str(out), "--weights", str(tiny_weights), "--samples", "3",
                 "--seed", "4", "--sigma", "1.0")
    assert result.exit_code == 0, result.output
    samples = sorted(p.name for p in out.glob("p_color_s*.png"))
    assert samples == ["p_color_s0.png", "p_color_s1.png", "p_color_s2.png"]
    assert np.asarray(Image.open(out / samples[0])).tolist() != np.asarray(Image.open(out / samples[1])).tolist()

    result = run("colorize", str(source), "-o", str(out), "--weights", str(tiny_weights), "--direction", "2",
                 "--steps", "5", "--shift", "8")
    assert result.exit_code == 0, result.output
    assert len(list((out / "p_color_dir2").glob("frame_*.png"))) == 5
    with Image.open(out / "p_color_dir2.gif") as gif:
        assert gif.n_frames == 8  # forth and back


def test_demo_mode_says_so(tmp_path):
    source = _photo(tmp_path / "p.png")
    result = run("colorize", str(source), "-o", str(tmp_path / "out"), "--demo")
    assert result.exit_code == 0
    assert "DEMO MODE" in result.output and (tmp_path / "out" / "p_color.png").is_file()


def test_convert_authors_files(tmp_path):
    from gcpcolor.config import ColorizerConfig
    import test_legacy

    test_legacy.write_authors_files(tmp_path, ColorizerConfig())
    result = run("convert", "--authors-dir", str(tmp_path), "-o", str(tmp_path / "converted"))
    assert result.exit_code == 0, result.output
    assert Colorizer.from_pretrained(tmp_path / "converted").config == ColorizerConfig()


def test_classes_listing():
    result = run("classes", "retriever")
    assert "207\tn02099601\tgolden retriever" in result.output


def test_console_script_on_bundled_sample(tmp_path):
    sample = Path(__file__).resolve().parents[1] / "gcpcolor" / "assets" / "sample_bw.png"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    completed = subprocess.run(
        [sys.executable, "-m", "gcpcolor.cli", "colorize", str(sample), "-o", str(tmp_path), "--demo", "-q"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    with Image.open(tmp_path / "sample_bw_color.png") as out, Image.open(sample) as original:
        assert out.size == original.size
