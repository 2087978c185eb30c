"""`gcpcolor evaluate`: the paper's metrics on result folders vs ground truth (docs/evaluation.md).

Expected problems (missing folders, nothing pairs, an existing report, FID requested without
Inception weights) print one line and exit with code 2, without a traceback.
"""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import DEMO_NOTICE, CommandError, echo_err
from .config import MAX_TEMPERATURE, ConfigError
from .errors import MissingWeightsError, WeightsFormatError
from .evaluation import (
    DEFAULT_SIZE,
    GRAY_METHOD,
    PREPROCESS_MODES,
    RESULT_SUFFIX,
    EvaluationError,
    check_report_target,
    check_results_target,
    colorize_folder,
    evaluate_folders,
)
from .image_io import ImageInputError, ImageOutputError
from .metrics import COLORFULNESS_VARIANTS, DEFAULT_COLORFULNESS_VARIANT

EXPECTED_ERRORS = (EvaluationError, MissingWeightsError, WeightsFormatError, ConfigError, ImageInputError,
                   ImageOutputError)


def parse_method(spec: str) -> tuple[str, Path]:
    """`NAME=DIR` or `DIR` (named after the folder) -> (name, folder)."""
    name, separator, folder = spec.partition("=")
    if separator and name and "/" not in name and "\\" not in name:
        return name, Path(folder)
    path = Path(spec)
    return (path.name or path.resolve().name), path


def _methods(specs: list[str]) -> dict[str, Path]:
    methods: dict[str, Path] = {}
    for spec in specs:
        name, folder = parse_method(spec)
        if name in methods:
            raise CommandError(f"two result folders are named '{name}'; name them with NAME=DIR")
        methods[name] = folder
    return methods


@click.command("evaluate")
@click.argument("results", nargs=-1, metavar="[[NAME=]RESULTS_DIR]...")
@click.option("--truth", "truth_dir", required=True, metavar="DIR", help="Folder of ground-truth colour images.")
@click.option("-o", "--output", required=True, metavar="OUT", help="Report folder (metrics.md/csv/json, grid.png, colorfulness_hist.png).")
@click.option("--compare", multiple=True, metavar="[NAME=]DIR", help="Another method's results (repeatable); NAME defaults to the folder name.")
@click.option("--colorize-with", "model_dir", type=click.Path(file_okay=False), metavar="MODEL_DIR",
              help="Colorize the gray versions of --truth with this gcpcolor model first (into OUT/results/<name>/).")
@click.option("--temperature", type=click.FloatRange(min=0.0, min_open=True, max=MAX_TEMPERATURE),
              help="With --colorize-with: decode at this temperature instead of the model's own (see gcpcolor colorize).")
@click.option("--demo", is_flag=True, help="Colorize with the tiny untrained demo model first (checks the protocol; scores are meaningless).")
@click.option("--include-gray", is_flag=True, help="Also evaluate the gray input itself (the floor).")
@click.option("--size", type=click.IntRange(min=11), default=DEFAULT_SIZE, show_default=True, help="Evaluation size for --mode resize/center-crop.")
@click.option("--mode", type=click.Choice(PREPROCESS_MODES), default="resize", show_default=True,
              help="resize: squash to SIZE²; center-crop: short side to SIZE, centre crop; none: original sizes (must match).")
@click.option("--cf-variant", type=click.Choice(COLORFULNESS_VARIANTS), default=DEFAULT_COLORFULNESS_VARIANT, show_default=True,
              help="Colourfulness shown in the table (the JSON has both).")
@click.option("--fid/--no-fid", default=None, help="Require FID (error without Inception weights) / skip it. Default: FID when weights are found.")
@click.option("--inception-weights", type=click.Path(dir_okay=False), metavar="FILE",
              help="pt_inception-2015-12-05-6726825d.pth or inception_v3_google-0cc3c7bd.pth (default: $GCPCOLOR_INCEPTION, then the weights folder).")
@click.option("--suffix", default=RESULT_SUFFIX, show_default=True, help="Result-name suffix to strip when pairing (and to write with --colorize-with).")
@click.option("--leave-out-copies-of", "training_dirs", multiple=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder of training photos (repeatable): ground-truth images that are copies of one are not evaluated.")
@click.option("--grid-rows", type=click.IntRange(min=0), default=8, show_default=True, help="Sample images in grid.png.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Images per Inception batch.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing report (and colorized results).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def evaluate_command(
    results: tuple[str, ...], truth_dir: str, output: str, compare: tuple[str, ...], model_dir: str | None,
    temperature: float | None, demo: bool,
    include_gray: bool, size: int, mode: str, cf_variant: str, fid: bool | None, inception_weights: str | None,
    suffix: str, training_dirs: tuple[str, ...], grid_rows: int, batch_size: int, device: str, overwrite: bool,
    quiet: bool,
) -> None:
    """Score colorization results against ground truth: FID, colourfulness, ΔColorful, PSNR, SSIM (LPIPS if installed)."""
    methods = _methods([*results, *compare])
    out = Path(output)
    try:
        check_report_target(out, overwrite)  # before any slow work
        if temperature is not None and model_dir is None and not demo:
            raise CommandError("--temperature goes with --colorize-with")
        decoding = ""  # how --colorize-with's model decoded its colours, for the report
        if model_dir is not None or demo:
            if model_dir is not None and demo:
                raise CommandError("--colorize-with and --demo exclude each other")
            name, model_path = ("demo", None) if demo else parse_method(model_dir)
            if name in methods or (include_gray and name == GRAY_METHOD):
                raise CommandError(f"a results folder is already named '{name}'; name it with NAME=DIR")
            model_path = None if model_path is None else str(model_path)
            methods[name], decoding = _colorize(truth_dir, out / "results" / name, model_path, temperature, device,
                                                suffix, overwrite, quiet)
        report = evaluate_folders(
            truth_dir, methods, include_gray=include_gray, size=size, mode=mode, colorfulness_variant=cf_variant,
            fid=fid, inception_weights=inception_weights, result_suffix=suffix, batch_size=batch_size,
            device=device, grid_rows=grid_rows, progress=not quiet, leave_out_copies_of=training_dirs,
        )
        if decoding:
            report.notes.insert(0, decoding)
        for note in report.notes:
            echo_err(note)
        written = report.save(out, overwrite=overwrite)
    except EXPECTED_ERRORS as exc:
        raise CommandError(" ".join(str(exc).split())) from None
    click.echo(report.to_markdown(), nl=False)
    click.echo(f"wrote {', '.join(path.name for path in written)} to {out}")


def _colorize(truth_dir: str, target: Path, model_dir: str | None, temperature: float | None, device: str,
              suffix: str, overwrite: bool, quiet: bool) -> tuple[Path, str]:
    """Colorize the gray versions of the truth photos into `target`; also returns how the model
    decoded its colours (temperature and a* tilt, for models that predict a distribution; else "")
    so the report says which decoding its figures belong to."""
    from .devices import resolve_device
    from .pipeline import Colorizer

    check_results_target(target, overwrite)  # before the model is built
    try:
        resolved = resolve_device(device)
    except RuntimeError as exc:
        raise CommandError(str(exc)) from None
    # load() reads our format (config.json + model.safetensors) and also the authors' files.
    colorizer = Colorizer.demo(device=resolved) if model_dir is None else Colorizer.load(model_dir, device=resolved)
    if temperature is not None:
        try:
            colorizer.model.set_temperature(temperature)
        except ValueError as exc:
            raise CommandError(f"--temperature: {exc}") from None
    if model_dir is None:
        echo_err(DEMO_NOTICE)
    for problem in colorize_folder(truth_dir, target, colorizer, suffix=suffix,
                                   overwrite=overwrite, progress=not quiet):
        echo_err(f"error: {problem}")
    if not quiet:
        echo_err(f"colorized the gray versions of {truth_dir} into {target}")
    if not colorizer.model.predicts_distribution:
        return target, ""
    colorization = colorizer.config.colorization
    return target, (f"{target.name}: colorized here, decoding temperature {colorization.temperature:g}, "
                    f"a* tilt {colorization.a_tilt:g}")
