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


# ----------------------------------------------------------------------------- hostile inputs


def _one_line_error(result) -> str:
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "Error" in line or line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_an_input_photo_is_never_overwritten(tmp_path, tiny_weights, overwrite):
    album = tmp_path / "album"
    photo = _photo(album / "p.png")
    original = photo.read_bytes()
    for args in (
        [str(album), "-o", str(album), "--suffix", ""],  # the output folder is the input folder
        [str(photo), "-o", str(photo)],  # the output file is the input
    ):
        result = run("colorize", *args, "--weights", str(tiny_weights), *overwrite)
        assert result.exit_code == 1, result.output
        line = _one_line_error(result)
        assert "input" in line and "--overwrite" not in line
        assert photo.read_bytes() == original


@pytest.mark.parametrize("link", [os.link, os.symlink], ids=["hard-link", "symlink"])
def test_an_output_that_is_a_link_to_the_input_is_refused(tmp_path, tiny_weights, link):
    photo = _photo(tmp_path / "p.png")
    original = photo.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    link(photo, out / "p_color.png")
    result = run("colorize", str(photo), "-o", str(out), "--weights", str(tiny_weights), "--overwrite")
    assert result.exit_code == 1
    line = _one_line_error(result)
    assert "input" in line and "--overwrite" not in line
    assert photo.read_bytes() == original and (out / "p_color.png").read_bytes() == original


def test_link_loops_and_broken_links_in_a_folder_are_skipped(tmp_path, tiny_weights):
    album = tmp_path / "album"
    for name in ["a.png", "sub/b.png"]:
        _photo(album / name)
    (album / "sub" / "loop").symlink_to("..")
    (album / "sub" / "loop2").symlink_to(".")
    (album / "self.jpg").symlink_to("self.jpg")
    (album / "gone.png").symlink_to("deleted.png")
    result = run("colorize", str(album), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights))
    assert result.exit_code == 1 and "Traceback" not in result.output
    skipped = sorted(line.split(":")[0] for line in result.output.splitlines() if line.startswith("skipped"))
    assert skipped == [f"skipped {album / name}" for name in ["gone.png", "self.jpg", "sub/loop", "sub/loop2"]]
    assert (tmp_path / "out" / "a_color.png").is_file() and (tmp_path / "out" / "sub" / "b_color.png").is_file()


def _failing_for_wide_photos(monkeypatch, error: BaseException) -> None:
    """The model raises `error` for any batch holding a photo 33 pixels wide (in the step that
    colorize, colorize_batch, diverse and transition all go through)."""
    real = Colorizer._colorize_prepared

    def colorize_prepared(self, prepared, *args, **kwargs):
        if any(photo.pixels.shape[1] == 33 for photo in prepared):
            raise error
        return real(self, prepared, *args, **kwargs)

    monkeypatch.setattr(Colorizer, "_colorize_prepared", colorize_prepared)


@pytest.mark.parametrize("error, expected, mode", [
    (MemoryError(), "out of memory", []),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"), "out of memory", []),
    (ZeroDivisionError("float division by zero"), "ZeroDivisionError: float division by zero", []),
    (MemoryError(), "out of memory", ["--samples", "2"]),
], ids=["MemoryError", "torch-oom", "unexpected", "MemoryError-samples"])
def test_a_failing_photo_is_reported_and_the_batch_goes_on(tmp_path, tiny_weights, monkeypatch, error, expected, mode):
    album = tmp_path / "album"
    for name in ["a.png", "b.png", "c.png"]:
        _photo(album / name)
    _photo(album / "wide.png", size=(33, 20))
    _failing_for_wide_photos(monkeypatch, error)
    out = tmp_path / "out"
    result = run("colorize", str(album), "-o", str(out), "--weights", str(tiny_weights), *mode)
    assert result.exit_code == 1
    line = _one_line_error(result)
    assert line.startswith(f"error: {album / 'wide.png'}: ") and expected in line
    written = sorted(path.name for path in out.iterdir())
    suffixes = ["_color_s0.png", "_color_s1.png"] if mode else ["_color.png"]
    assert written == sorted(f"{stem}{suffix}" for stem in "abc" for suffix in suffixes)


def test_running_out_of_memory_while_composing_a_result_costs_that_photo_only(tmp_path, tiny_weights, monkeypatch):
    # The full-resolution result is composed after the networks, when it is written: a failure
    # there (the likeliest place to run out of memory for a huge scan) is one line too.
    from gcpcolor.image_processor import ImageProcessor

    real = ImageProcessor.postprocess

    def postprocess(self, prepared, ab):
        if prepared.pixels.shape[1] == 33:
            raise MemoryError()
        return real(self, prepared, ab)

    monkeypatch.setattr(ImageProcessor, "postprocess", postprocess)
    album = tmp_path / "album"
    for name in ["a.png", "b.png"]:
        _photo(album / name)
    _photo(album / "wide.png", size=(33, 20))
    result = run("colorize", str(album), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights))
    assert result.exit_code == 1
    line = _one_line_error(result)
    assert line.startswith(f"error: {album / 'wide.png'}: ") and "out of memory" in line
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a_color.png", "b_color.png"]


def _png_depth(path: Path) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's header chunk."""
    header = path.read_bytes()[:26]
    assert header[12:16] == b"IHDR"
    return header[24], header[25]


def test_16_bit_scans_give_16_bit_results_and_8_bit_photos_8_bit(tmp_path, tiny_weights):
    ramp = np.linspace(2000, 63000, 40 * 30).reshape(30, 40).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "scan16.png")
    _photo(tmp_path / "photo8.png", size=(40, 30))
    result = run("colorize", str(tmp_path / "scan16.png"), str(tmp_path / "photo8.png"), "-o", str(tmp_path / "out"),
                 "--weights", str(tiny_weights))
    assert result.exit_code == 0, result.output
    assert _png_depth(tmp_path / "out" / "scan16_color.png") == (16, 2)  # 16-bit RGB
    assert _png_depth(tmp_path / "out" / "photo8_color.png") == (8, 2)


def test_nan_pixels_give_a_real_result(tmp_path, tiny_weights):
    values = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    values[::3, ::4] = np.nan
    Image.fromarray(values).save(tmp_path / "gaps.tif")
    result = run("colorize", str(tmp_path / "gaps.tif"), "-o", str(tmp_path / "out.png"), "--weights",
                 str(tiny_weights))
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(tmp_path / "out.png")).max() > 0


def test_an_all_black_result_is_a_failure(tmp_path, tiny_weights, monkeypatch):
    real = Colorizer.colorize_batch

    def black(self, images, *args, **kwargs):
        results = real(self, images, *args, **kwargs)
        for result in results:
            result.pixels = np.zeros_like(result.pixels)
        return results

    monkeypatch.setattr(Colorizer, "colorize_batch", black)
    photo = _photo(tmp_path / "p.png")
    result = run("colorize", str(photo), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights))
    assert result.exit_code == 1
    assert "all black" in _one_line_error(result)
    assert not (tmp_path / "out" / "p_color.png").exists()


@pytest.mark.parametrize("args", [
    ["--sigma", "inf"], ["--sigma", "nan"], ["--sigma", "-1"], ["--sigma", "1000"], ["--shift", "nan"],
    ["--shift", "-inf"], ["--shift", "1e6"],
    ["--seed", str(2**64)], ["--seed", "-1"], ["--samples", "0"], ["--samples", "-3"], ["--steps", "1"],
    ["--steps", "0"], ["--batch-size", "0"], ["--direction", "-1"], ["--suffix", "../escaped"], ["--class", "9" * 5000],
])
def test_out_of_range_options_are_one_line_errors(tmp_path, args):
    photo = _photo(tmp_path / "p.png")
    result = CliRunner().invoke(main, ["colorize", str(photo), "-o", str(tmp_path / "out"), "--demo", *args])
    assert result.exit_code == 2, result.output
    assert args[0] in _one_line_error(result)
    assert not (tmp_path / "out").exists()


def test_direction_beyond_the_models_directions_is_a_one_line_error(tmp_path, demo_colorizer):
    photo = _photo(tmp_path / "p.png")
    result = CliRunner().invoke(main, ["colorize", str(photo), "-o", str(tmp_path / "out"), "--demo",
                                       "--direction", "999"])
    assert result.exit_code == 2
    count = demo_colorizer.model.deformator.dim
    assert f"--direction must be 0..{count - 1}" in _one_line_error(result)


@pytest.mark.parametrize("args", [["--port", "99999"], ["--port", "-1"], ["--host", "ä" * 70]])
def test_serve_options_out_of_range_are_one_line_errors(args):
    result = CliRunner().invoke(main, ["serve", "--demo", *args])
    assert result.exit_code == 2 and args[0] in _one_line_error(result)


def test_stale_temporaries_of_a_killed_run_are_removed_on_start(tmp_path, tiny_weights):
    photo = _photo(tmp_path / "p.png")
    out = tmp_path / "out"
    out.mkdir()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait(timeout=120)
    stale = [out / f".p_color.png.tmp-{finished.pid}-0123abcd", out / f".model.safetensors.tmp-{finished.pid}"]
    # The CLI runs in this process, so a writer still at work is the parent process.
    kept = [out / f".q_color.png.tmp-{os.getppid()}-0123abcd", out / "notes.tmp-1", out / ".p_color.png.0123abcd.tmp"]
    for path in stale + kept:
        path.write_bytes(b"")
    result = run("colorize", str(photo), "-o", str(out), "--weights", str(tiny_weights))
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == sorted(["p_color.png"] + [path.name for path in kept])


def test_samples_and_direction_ignore_the_plain_output_but_not_their_own(tmp_path, tiny_weights):
    photo = _photo(tmp_path / "p.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "p_color.png").write_bytes(b"an earlier plain result")
    weights = ["--weights", str(tiny_weights)]
    assert run("colorize", str(photo), "-o", str(out), *weights, "--samples", "2").exit_code == 0
    assert run("colorize", str(photo), "-o", str(out), *weights, "--direction", "1", "--steps", "2").exit_code == 0
    assert (out / "p_color.png").read_bytes() == b"an earlier plain result"
    assert (out / "p_color_s1.png").is_file() and (out / "p_color_dir1.gif").is_file()

    result = run("colorize", str(photo), "-o", str(out), *weights, "--samples", "2")
    assert result.exit_code == 1 and "p_color_s0.png exists" in result.output
    assert run("colorize", str(photo), "-o", str(out), *weights, "--samples", "2", "--skip-existing").exit_code == 0


def test_a_file_name_output_with_several_photos_is_a_one_line_error(tmp_path):
    for name in ["a.png", "b.png"]:
        _photo(tmp_path / "album" / name)
    result = CliRunner().invoke(main, ["colorize", str(tmp_path / "album"), "-o", str(tmp_path / "out.jpg"), "--demo"])
    assert result.exit_code == 2
    assert "out.jpg" in _one_line_error(result)
    assert not (tmp_path / "out.jpg").exists()


# ----------------------------------------------------------------------------- colour photos


def _colour_photo(path: Path, size=(48, 32)) -> Path:
    """Smooth colours that change across the picture: clearly a colour photo."""
    x, y = np.meshgrid(np.linspace(0, 1, size[0]), np.linspace(0, 1, size[1]))
    rgb = np.stack([x, 1 - x, y], axis=2) * 200 + 30
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path


def _sepia_photo(path: Path) -> Path:
    gray = np.asarray(Image.open(_photo(path)).convert("L"), dtype=np.float32)
    sepia = np.clip(np.stack([gray * 1.0 + 20, gray * 0.85 + 10, gray * 0.6], axis=2), 0, 255)
    Image.fromarray(sepia.astype(np.uint8)).save(path)
    return path


def _lines(result, start: str) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith(start)]


def test_a_colour_photo_is_recoloured_with_a_one_line_note(tmp_path, tiny_weights):
    album = tmp_path / "album"
    _colour_photo(album / "holiday.png")
    _sepia_photo(album / "grandma.png")
    result = run("colorize", str(album), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights))
    assert result.exit_code == 0, result.output
    notes = _lines(result, "note:")
    assert len(notes) == 1 and str(album / "holiday.png") in notes[0] and "colour photo" in notes[0]
    assert "--keep-color" in notes[0] and "Warning" not in result.output
    for name in ["holiday_color.png", "grandma_color.png"]:
        assert (tmp_path / "out" / name).is_file()
    assert (tmp_path / "out" / "holiday_color.png").read_bytes() != (album / "holiday.png").read_bytes()


def test_keep_color_copies_colour_photos_unchanged_and_colorizes_the_rest(tmp_path, tiny_weights):
    album = tmp_path / "album"
    holiday = _colour_photo(album / "holiday.png")
    _sepia_photo(album / "grandma.png")
    _photo(album / "grandpa.jpg")
    out = tmp_path / "out"
    result = run("colorize", str(album), "-o", str(out), "--weights", str(tiny_weights), "--keep-color")
    assert result.exit_code == 0, result.output
    kept = _lines(result, "kept")
    assert len(kept) == 1 and str(holiday) in kept[0] and "copied unchanged" in kept[0]
    assert (out / "holiday_color.png").read_bytes() == holiday.read_bytes()
    assert (out / "grandma_color.png").is_file() and (out / "grandpa_color.jpg").is_file()
    assert "colorized 2 of 3" in result.output and "kept 1 colour photo" in result.output
    assert not _lines(result, "note:")

    # A second run leaves the copy alone: refused without a flag, passed over with --skip-existing.
    again = run("colorize", str(holiday), "-o", str(out), "--weights", str(tiny_weights), "--keep-color")
    assert again.exit_code == 1 and "holiday_color.png exists" in again.output
    (out / "holiday_color.png").write_bytes(b"edited by the user")
    again = run("colorize", str(album), "-o", str(out), "--weights", str(tiny_weights), "--keep-color",
                "--skip-existing", "--samples", "2")
    assert (out / "holiday_color.png").read_bytes() == b"edited by the user"
    assert again.exit_code == 0, again.output


def test_keep_color_converts_when_another_format_is_asked_for(tmp_path, tiny_weights):
    holiday = _colour_photo(tmp_path / "holiday.png")
    result = run("colorize", str(holiday), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights),
                 "--keep-color", "--format", "jpg")
    assert result.exit_code == 0, result.output
    assert "converted to JPG" in _lines(result, "kept")[0]
    with Image.open(tmp_path / "out" / "holiday_color.jpg") as copy:
        assert copy.format == "JPEG" and copy.size == (48, 32)


def test_keep_color_never_writes_over_the_input(tmp_path, tiny_weights):
    album = tmp_path / "album"
    holiday = _colour_photo(album / "holiday.png")
    original = holiday.read_bytes()
    # --samples writes holiday_s0.png..., but the kept copy would be holiday.png itself.
    result = run("colorize", str(album), "-o", str(album), "--suffix", "", "--weights", str(tiny_weights),
                 "--keep-color", "--samples", "2", "--overwrite")
    assert result.exit_code == 1
    assert "input" in _one_line_error(result)
    assert holiday.read_bytes() == original


def test_help_documents_keep_color():
    text = " ".join(run("colorize", "--help").output.split())
    assert "--keep-color" in text and "Sepia and other toned prints count as black" in text
    assert "with a one-line note" in text


def test_temperature_makes_a_semantic_models_colours_bolder_or_more_muted(tmp_path, semantic_colorizer):
    from gcpcolor.metrics import colorfulness

    semantic_colorizer.save_pretrained(tmp_path / "model")
    source = _photo(tmp_path / "p.png", size=(64, 64))
    vividness = {}
    for temperature in ("0.05", "5"):
        out = tmp_path / f"t{temperature}.png"
        result = run("colorize", str(source), "-o", str(out), "--weights", str(tmp_path / "model"), "--class", "1",
                     "--temperature", temperature, "-q")
        assert result.exit_code == 0, result.output
        vividness[temperature] = colorfulness(np.asarray(Image.open(out).convert("RGB"), dtype=np.float64))
    assert vividness["0.05"] > vividness["5"]
    assert Colorizer.from_pretrained(tmp_path / "model").config.colorization.temperature == 0.38  # file untouched


def test_temperature_errors_are_one_line(tmp_path):
    source = _photo(tmp_path / "p.png")
    for extra, expected in ((["--demo"], "no temperature"), (["--temperature", "0"], "0.0<x<=10.0"),
                            (["--backend", "onnxruntime", "--onnx", str(source)], "--onnx")):
        args = ["colorize", str(source), "-o", str(tmp_path / "o.png"), "--temperature", "0.5", *extra]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and expected in result.output, result.output
        assert "Traceback" not in result.output
