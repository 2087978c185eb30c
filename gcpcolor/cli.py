"""The `gcpcolor` command line.

Expected problems (missing weights, unreadable inputs, existing outputs) print one line on stderr
and give a non-zero exit code; a failing photo never stops the rest of a batch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from .classes import ClassNotFoundError, IMAGENET_CLASSES, resolve_class
from .config import ConfigError
from .errors import MissingWeightsError, WeightsFormatError
from .evaluate_cli import evaluate_command
from .train_cli import train_command, train_encoder_command, train_prior_command
from .image_io import IMAGE_EXTENSIONS, ImageInputError, ImageOutputError, find_images, load_image, output_path, save_image

EXIT_INPUT_ERRORS = 1
EXIT_USAGE = 2

DEMO_NOTICE = (
    "DEMO MODE: no trained weights are used; a tiny randomly initialised model colours the photo, "
    "so the colours are meaningless. Put the authors' weights in $GCPCOLOR_HOME (see README) for real results."
)


class CommandError(click.ClickException):
    """A one-line error with exit code 2 (click prints 'Error: ...', no traceback)."""

    exit_code = EXIT_USAGE


@dataclass
class _Job:
    source: Path
    relative: Path
    target: Path
    rgb: np.ndarray | None = None
    extra: list[Path] = field(default_factory=list)


def _echo_err(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)  # keeps the message on its own line under a progress bar


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gcpcolor")
def main() -> None:
    """Bring black-and-white photos to natural colour with a generative colour prior."""


def _load_colorizer(weights: str | None, demo: bool, device: str, classifier: str | None, classifier_weights: str | None):
    from .pipeline import Colorizer

    external = None
    if classifier or classifier_weights:
        if not (classifier and classifier_weights):
            raise CommandError("--classifier and --classifier-weights go together")
        from .classify import ExternalClassifier

        external = ExternalClassifier(classifier, classifier_weights)
    try:
        if demo:
            return Colorizer.demo(device=device, classifier=external)
        return Colorizer.load(weights, device=device, classifier=external)
    except (MissingWeightsError, WeightsFormatError, ConfigError) as exc:
        raise CommandError(f"{exc} (or run with --demo to try the pipeline with untrained weights)") from None
    except RuntimeError as exc:
        raise CommandError(str(exc)) from None


def _resolve_output(inputs: tuple[str, ...], output: str, suffix: str, extension: str | None, recursive: bool) -> list[_Job]:
    try:
        found = find_images(list(inputs), recursive=recursive)
    except ImageInputError as exc:
        raise CommandError(str(exc)) from None
    out = Path(output)
    single_file_target = len(found) == 1 and out.suffix.lower() in IMAGE_EXTENSIONS and not out.is_dir()
    if single_file_target:
        return [_Job(found[0][0], found[0][1], out)]
    return [_Job(src, rel, output_path(rel, out, suffix=suffix, extension=extension)) for src, rel in found]


def _with_suffix(path: Path, tag: str, extension: str = ".png") -> Path:
    return path.with_name(f"{path.stem}_{tag}{extension}")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Output folder (or a file name for a single input).")
@click.option("--weights", type=click.Path(file_okay=False), help="Weights folder (default: $GCPCOLOR_HOME or ~/.cache/gcpcolor).")
@click.option("--demo", is_flag=True, help="Use a tiny untrained model (tries the pipeline; colours are meaningless).")
@click.option("--class", "class_specs", multiple=True,
              help="ImageNet class id, name or wnid (default: automatic). Repeat for one result per class.")
@click.option("--classifier", help="torchvision/timm architecture for automatic classes, e.g. resnet50.")
@click.option("--classifier-weights", type=click.Path(dir_okay=False), help="Local weights file of --classifier.")
@click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True, help="Diverse results per photo.")
@click.option("--sigma", type=click.FloatRange(min=0), default=0.5, show_default=True, help="Latent noise for --samples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--direction", type=click.IntRange(min=0), help="Latent direction to walk (controllable transition).")
@click.option("--shift", type=click.FloatRange(min=0), default=16.0, show_default=True, help="Walk over [-shift, shift].")
@click.option("--steps", type=click.IntRange(min=2), default=9, show_default=True, help="Frames of the walk.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--resize", "resize_mode", type=click.Choice(["pad", "stretch"]), default="pad", show_default=True,
              help="How the photo is fit to the 256² working size (the output keeps its own size either way).")
@click.option("--save-exemplar", is_flag=True, help="Also save the GAN exemplar and its warped version.")
@click.option("--suffix", default="_color", show_default=True, help="Added to output file names.")
@click.option("--format", "extension", type=click.Choice(["png", "jpg", "tif", "webp"]), help="Output format (default: input's).")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Descend into sub-folders.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--skip-existing", is_flag=True, help="Silently skip photos whose output exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def colorize(
    inputs, output, weights, demo, class_specs, classifier, classifier_weights, samples, sigma, seed, direction,
    shift, steps, device, batch_size, resize_mode, save_exemplar, suffix, extension, recursive, overwrite,
    skip_existing, quiet,
):
    """Colorize photos: files, folders (recursively) and glob patterns."""
    from tqdm import tqdm

    from .pipeline import save_animation

    try:
        class_ids = [resolve_class(spec) for spec in class_specs]
    except ClassNotFoundError as exc:
        raise CommandError(str(exc)) from None
    class_spec = class_ids[0] if len(class_ids) == 1 else None
    jobs = _resolve_output(inputs, output, suffix, f".{extension}" if extension else None, recursive)
    colorizer = _load_colorizer(weights, demo, device, classifier, classifier_weights)
    if colorizer.is_demo:
        _echo_err(DEMO_NOTICE)
    try:
        for spec in class_specs:
            colorizer.class_index(spec)
    except ClassNotFoundError as exc:
        raise CommandError(str(exc)) from None

    pending: list[_Job] = []
    blocked = 0  # existing outputs the user did not allow us to replace
    for job in jobs:
        if job.target.exists() and not overwrite:
            if not skip_existing:
                _echo_err(f"skipped {job.source}: output {job.target} exists (use --overwrite or --skip-existing)")
                blocked += 1
            continue
        pending.append(job)
    failures = 0

    progress = tqdm(total=len(pending), unit="photo", disable=quiet or not pending, file=sys.stderr)

    def write(job: _Job, image: np.ndarray, target: Path) -> bool:
        try:
            save_image(image, target, overwrite=overwrite)
            return True
        except ImageOutputError as exc:
            _echo_err(f"error: {exc}")
            return False

    def finish(job: _Job, result, index: int | None = None) -> bool:
        target = job.target if index is None else _with_suffix(job.target, f"s{index}", job.target.suffix)
        ok = write(job, result.image, target)
        if ok and save_exemplar:
            ok &= write(job, result.exemplar, _with_suffix(target, "exemplar"))
            ok &= write(job, result.warped_exemplar, _with_suffix(target, "warped"))
        return ok

    for start in range(0, len(pending), batch_size):
        batch = []
        for job in pending[start : start + batch_size]:
            try:
                job.rgb = load_image(job.source)
                batch.append(job)
            except ImageInputError as exc:
                _echo_err(f"error: {exc}")
                failures += 1
                progress.update(1)
        if not batch:
            continue
        if direction is not None:
            for job in batch:
                failures += not _run_transition(colorizer, job, direction, shift, steps, class_spec, resize_mode,
                                                batch_size, overwrite, save_animation, write)
                progress.update(1)
        elif samples > 1 or len(class_ids) > 1:
            for job in batch:
                results = colorizer.diverse(job.rgb, samples=samples, sigma=sigma, seed=seed,
                                            class_ids=class_ids or None, resize_mode=resize_mode)
                ok = all([finish(job, result, i) for i, result in enumerate(results)])
                failures += not ok
                progress.update(1)
        else:
            results = colorizer.colorize_batch([job.rgb for job in batch], class_spec, resize_mode=resize_mode)
            for job, result in zip(batch, results):
                failures += not finish(job, result)
                progress.update(1)
        for job in batch:
            job.rgb = None
    progress.close()
    if not quiet:
        _echo_err(f"colorized {len(pending) - failures} of {len(jobs)} photo(s) into {output}")
    if failures or blocked:
        sys.exit(EXIT_INPUT_ERRORS)


def _run_transition(colorizer, job, direction, shift, steps, class_spec, resize_mode, batch_size, overwrite,
                    save_animation, write) -> bool:
    try:
        frames = colorizer.transition(job.rgb, direction, shift=shift, steps=steps, class_id=class_spec,
                                      resize_mode=resize_mode, batch_size=batch_size)
    except ValueError as exc:
        _echo_err(f"error: {job.source}: {exc}")
        return False
    frame_dir = job.target.with_name(f"{job.target.stem}_dir{direction}")
    ok = all([write(job, frame.image, frame_dir / f"frame_{i:03d}.png") for i, frame in enumerate(frames)])
    gif = job.target.with_name(f"{job.target.stem}_dir{direction}.gif")
    try:
        save_animation([frame.image for frame in frames], gif, overwrite=overwrite)
    except (OSError, FileExistsError) as exc:
        _echo_err(f"error: {exc}")
        ok = False
    return ok


@main.command("classes")
@click.argument("query", required=False)
def classes_command(query: str | None) -> None:
    """List the 1000 ImageNet classes (optionally those matching QUERY)."""
    needle = (query or "").lower().replace("_", " ")
    for entry in IMAGENET_CLASSES:
        if needle in entry.name.lower() or needle == entry.wnid:
            click.echo(f"{entry.index}\t{entry.wnid}\t{entry.name}")


@main.command("convert")
@click.option("--authors-dir", required=True, type=click.Path(file_okay=False), help="Folder with the authors' .pth files.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Destination folder.")
def convert(authors_dir: str, output: str) -> None:
    """Convert the authors' released checkpoints to gcpcolor's safetensors format."""
    from .pipeline import Colorizer

    try:
        colorizer = Colorizer.from_authors_checkpoints(authors_dir)
    except (MissingWeightsError, WeightsFormatError) as exc:
        raise CommandError(str(exc)) from None
    colorizer.save_pretrained(output)
    click.echo(f"wrote {output}/config.json and model.safetensors")


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=7860, show_default=True)
@click.option("--weights", type=click.Path(file_okay=False), help="Weights folder (default: $GCPCOLOR_HOME or ~/.cache/gcpcolor).")
@click.option("--demo", is_flag=True, help="Use a tiny untrained model.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def serve(host: str, port: int, weights: str | None, demo: bool, device: str) -> None:
    """A local web page to try colorization in the browser."""
    from .web import make_server

    colorizer = _load_colorizer(weights, demo, device, None, None)
    if colorizer.is_demo:
        _echo_err(DEMO_NOTICE)
    try:
        server = make_server(colorizer, host, port)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo(f"gcpcolor: open http://{host}:{server.server_address[1]} (Ctrl+C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


main.add_command(train_prior_command, "train-prior")
main.add_command(train_encoder_command, "train-encoder")
main.add_command(train_command, "train")
main.add_command(evaluate_command, "evaluate")


if __name__ == "__main__":
    main()
