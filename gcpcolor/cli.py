"""The `gcpcolor` command line.

Expected problems (missing weights, unreadable inputs, existing outputs) print one line on stderr
and give a non-zero exit code; a failing photo never stops the rest of a batch. A photo that
already has colour is noted on one line, and recoloured unless --keep-color is given.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from .classes import ClassNotFoundError, IMAGENET_CLASSES, resolve_class
from .cli_common import DEMO_NOTICE, EXIT_INPUT_ERRORS, CommandError, load_colorizer
from .cli_common import echo_err as _echo_err
from .color_detection import COLOR_THRESHOLD, color_input_note, off_tone_chroma
from .config import MAX_TEMPERATURE
from .evaluate_cli import evaluate_command
from .model_cli import convert_command, export_command
from .train_cli import train_command, train_encoder_command, train_prior_command
from .image_io import ImageInputError, ImageOutputError, is_out_of_memory, load_photo, one_line_message
from .image_writing import SAVE_FORMATS, copy_image_file, save_animation, save_image
from .photo_files import IMAGE_EXTENSIONS, SkipReporter, find_images, output_path
from .photo_metadata import PhotoMetadata
from .web import MAX_SEED, MAX_SIGMA
from .weights import remove_stale_temporaries

if TYPE_CHECKING:
    from .colorize_result import ColorizeResult

class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan, which passes every comparison with a bound, and
    inf where no upper bound catches it."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


#: Photos are loaded into a batch until they hold this many bytes: a batch of small photos runs in
#: one forward pass, a huge scan runs alone, so memory does not grow with --batch-size times its size.
BATCH_BYTES = 256 * 2**20
#: More results than this per photo is a typing mistake, not a plan (and each is a forward pass).
MAX_RESULTS_PER_PHOTO = 1000
#: The longest walk along a latent direction; see MAX_SIGMA for why huge latents are refused.
MAX_SHIFT = 100.0


def _file_name_suffix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if any(character in value for character in ("/", "\\", "\0")):
        raise click.BadParameter("must be part of a file name: no '/', '\\' or NUL", ctx, param)
    return value


def _host_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        value.encode("idna")  # how the socket library encodes it; its failure there is a TypeError
    except UnicodeError:
        raise click.BadParameter("not a valid host name or address", ctx, param) from None
    return value


@dataclass
class _Job:
    source: Path
    relative: Path
    target: Path
    outputs: list[Path] = field(default_factory=list)  # every file this photo's run writes
    rgb: np.ndarray | None = None
    metadata: PhotoMetadata | None = None  # the original's DPI, EXIF and XMP, for its results
    alpha: np.ndarray | None = None  # the original's transparency, for its results


@dataclass(frozen=True)
class _OutputNames:
    """The names of the files one photo's run writes, both for writing them and for checking
    beforehand whether any already exists or is an input."""

    direction: int | None
    steps: int
    results: int  # per photo: samples x classes; a single result takes the plain target name
    save_exemplar: bool

    def result(self, target: Path, index: int) -> Path:
        return target if self.results == 1 else _with_suffix(target, f"s{index}", target.suffix)

    def frame(self, target: Path, index: int) -> Path:
        return target.with_name(f"{target.stem}_dir{self.direction}") / f"frame_{index:03d}.png"

    def animation(self, target: Path) -> Path:
        return target.with_name(f"{target.stem}_dir{self.direction}.gif")

    def all(self, target: Path) -> list[Path]:
        if self.direction is not None:
            return [self.frame(target, index) for index in range(self.steps)] + [self.animation(target)]
        paths = []
        for index in range(self.results):
            result = self.result(target, index)
            paths.append(result)
            if self.save_exemplar:
                paths += [_with_suffix(result, "exemplar"), _with_suffix(result, "warped")]
        return paths


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gcpcolor")
def main() -> None:
    """Bring black-and-white photos to natural colour with a generative colour prior."""


def _resolve_output(inputs: tuple[str, ...], output: str, suffix: str, extension: str | None, recursive: bool,
                    on_skip: SkipReporter) -> list[_Job]:
    try:
        found = find_images(list(inputs), recursive=recursive, on_skip=on_skip)
    except ImageInputError as exc:
        raise CommandError(str(exc)) from None
    out = Path(output)
    names_a_file = not out.is_dir() and (out.suffix.lower() in IMAGE_EXTENSIONS or out.exists())
    if names_a_file:
        if len(found) != 1:
            raise CommandError(f"-o {output} names a file, but {len(found)} photos were found: give a folder")
        return [_Job(found[0][0], found[0][1], out)]
    return [_Job(src, rel, output_path(rel, out, suffix=suffix, extension=extension)) for src, rel in found]


def _with_suffix(path: Path, tag: str, extension: str = ".png") -> Path:
    return path.with_name(f"{path.stem}_{tag}{extension}")


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file `path` leads to: the same for hard links and symbolic links."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _input_identities(jobs: list[_Job]) -> set[tuple[int, int]]:
    return {identity for job in jobs if (identity := _file_identity(job.source)) is not None}


def _report_input_clash(job: _Job, clash: Path) -> None:
    _echo_err(f"error: {job.source}: not writing {clash}: it is one of the input photos "
              f"(choose another -o folder or --suffix)")


def _output_verdict(job: _Job, outputs: list[Path], input_files: set[tuple[int, int]], overwrite: bool,
                    skip_existing: bool) -> str:
    """"write", or why `job` must not write `outputs`: "clash" (one is an input photo, the same
    path or a link to it: refused whatever the flags, replacing it would destroy the user's
    original), "exists" (an output exists and --overwrite is not given), "skip" (--skip-existing
    and every output exists). "clash" and "exists" are reported here."""
    clash = next((path for path in outputs if _file_identity(path) in input_files), None)
    if clash is not None:
        _report_input_clash(job, clash)
        return "clash"
    existing = [path for path in outputs if os.path.lexists(path)]
    if not existing or overwrite:
        return "write"
    complete = len(existing) == len(outputs)
    if complete and skip_existing:
        return "skip"
    advice = "use --overwrite or --skip-existing" if complete else "use --overwrite to redo the photo"
    _echo_err(f"skipped {job.source}: output {existing[0]} exists ({advice})")
    return "exists"


def _jobs_to_run(jobs: list[_Job], input_files: set[tuple[int, int]], overwrite: bool,
                 skip_existing: bool) -> tuple[list[_Job], int]:
    """The jobs allowed to write all their outputs, and how many were refused (each reported)."""
    pending, refused = [], 0
    for job in jobs:
        verdict = _output_verdict(job, job.outputs, input_files, overwrite, skip_existing)
        if verdict == "write":
            pending.append(job)
        refused += verdict in ("clash", "exists")
    return pending, refused


def _failure_message(error: Exception, activity: str = "colorizing") -> str:
    if is_out_of_memory(error):
        return f"out of memory while {activity} (try a smaller --batch-size or photo)"
    return f"failed while {activity}: {type(error).__name__}: {one_line_message(error)}"


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Output folder (or a file name for a single input).")
@click.option("--weights", type=click.Path(file_okay=False), help="Weights folder (default: $GCPCOLOR_HOME or ~/.cache/gcpcolor).")
@click.option("--demo", is_flag=True, help="Use a tiny untrained model (tries the pipeline; colours are meaningless).")
@click.option("--class", "class_specs", multiple=True,
              help="The prior's class (default: automatic). With the authors' ImageNet BigGAN: an ImageNet id, "
                   "name or wnid (see `gcpcolor classes`); with the bundled default model: a pseudo-class "
                   "index 0-15 (colour palettes). Repeat for one result per class.")
@click.option("--classifier", help="torchvision/timm architecture for automatic classes, e.g. resnet50.")
@click.option("--classifier-weights", type=click.Path(dir_okay=False), help="Local weights file of --classifier.")
@click.option("--samples", type=click.IntRange(1, MAX_RESULTS_PER_PHOTO), default=1, show_default=True,
              help="Diverse results per photo.")
@click.option("--sigma", type=FiniteFloatRange(0, MAX_SIGMA), default=0.5, show_default=True,
              help="Latent noise for --samples.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option("--direction", type=click.IntRange(min=0),
              help="Latent direction to walk (controllable transition); below the model's direction count.")
@click.option("--shift", type=FiniteFloatRange(0, MAX_SHIFT), default=16.0, show_default=True,
              help="Walk over [-shift, shift].")
@click.option("--steps", type=click.IntRange(2, MAX_RESULTS_PER_PHOTO), default=9, show_default=True, help="Frames of the walk.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--backend", type=click.Choice(["pytorch", "onnxruntime"]), default="pytorch", show_default=True,
              help="onnxruntime: the networks run from an ONNX export on the CPU (1.4x faster for the default "
                   "model; one result per photo). Needs pip install onnxruntime onnx.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, exists=True),
              help="The exported network for --backend onnxruntime (default: exported once into the cache folder).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--resize", "resize_mode", type=click.Choice(["pad", "stretch"]), default="pad", show_default=True,
              help="How the photo is fit to the 256² working size: pad keeps its shape (reflection padding); "
                   "stretch squashes it exactly as the authors' code does, with their Lab constants. "
                   "The output keeps its own size either way.")
@click.option("--reference", "reference_path", type=click.Path(dir_okay=False),
              help="A colour photo whose colours the results follow in place of the GAN's exemplar: the "
                   "correspondence network matches its content to each photo's (models trained with image "
                   "guidance only). One result per photo.")
@click.option("--temperature", type=click.FloatRange(min=0.0, min_open=True, max=MAX_TEMPERATURE),
              help="How bold the colours are, for models that predict a colour distribution (the default "
                   "model): lower is bolder (0.4), higher more muted (0.65). Default: the model's own, chosen so "
                   "its results are as colourful as photos (0.50 for the default model).")
@click.option("--save-exemplar", is_flag=True, help="Also save the GAN exemplar and its warped version.")
@click.option("--suffix", default="_color", show_default=True, callback=_file_name_suffix,
              help="Added to output file names.")
@click.option("--format", "extension", type=click.Choice(["png", "jpg", "tif", "webp"]), help="Output format (default: input's).")
@click.option("--recursive/--no-recursive", default=True, show_default=True, help="Descend into sub-folders.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (never an input photo).")
@click.option("--skip-existing", is_flag=True, help="Silently skip photos whose outputs all exist.")
@click.option("--keep-color", is_flag=True,
              help="Leave photos that already have colour as they are: copy each unchanged to its plain "
                   "output name (converted only when --format asks for another format) instead of "
                   "recolouring it. Sepia and other toned prints count as black-and-white.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def colorize(
    inputs, output, weights, demo, class_specs, classifier, classifier_weights, samples, sigma, seed, direction,
    shift, steps, device, backend, onnx_path, batch_size, resize_mode, reference_path, temperature, save_exemplar, suffix,
    extension, recursive, overwrite, skip_existing, keep_color, quiet,
):
    """Colorize photos: files, folders (recursively) and glob patterns.

    Every problem (an unreadable photo, a skipped folder entry, an existing output, a failed
    colorization) is reported on one line and the rest of the photos are still done; the exit
    code is then 1.

    A photo that already has colour is recoloured from its lightness like any other, with a
    one-line note; with --keep-color it is copied to the output unchanged instead.
    """
    from tqdm import tqdm

    try:
        class_ids = [resolve_class(spec) for spec in class_specs]
    except ClassNotFoundError as exc:
        raise CommandError(f"--class: {exc}") from None
    class_spec = class_ids[0] if len(class_ids) == 1 else None
    problems = 0  # reported on their own line; any makes the exit code 1

    def report_skipped_entry(path: Path, reason: str) -> None:
        nonlocal problems
        _echo_err(f"skipped {path}: {reason}")
        problems += 1

    jobs = _resolve_output(inputs, output, suffix, f".{extension}" if extension else None, recursive,
                           report_skipped_entry)
    if backend == "onnxruntime":
        if direction is not None or samples > 1 or len(class_ids) > 1:
            raise CommandError("--backend onnxruntime makes one result per photo: --samples, --direction and "
                               "several --class need --backend pytorch")
        if device == "cuda":
            raise CommandError("--backend onnxruntime runs on the CPU: leave out --device cuda")
        device = "cpu"
    elif onnx_path:
        raise CommandError("--onnx goes with --backend onnxruntime")
    if reference_path and (direction is not None or samples > 1 or len(class_ids) > 1 or backend == "onnxruntime"):
        raise CommandError("--reference makes one result per photo with --backend pytorch: it does not combine "
                           "with --samples, --direction, several --class or --backend onnxruntime")
    if temperature is not None and onnx_path:
        raise CommandError("--temperature does not change an exported --onnx file: leave out --onnx (the network is "
                           "then exported once for this temperature) or export one with it")
    colorizer = load_colorizer(weights, demo, device, classifier, classifier_weights)
    if temperature is not None:
        try:
            colorizer.model.set_temperature(temperature)
        except ValueError as exc:
            raise CommandError(f"--temperature: {exc}") from None
    colorizer.warn_on_color_input = False  # reported here, on one line, before colorizing
    if colorizer.is_demo:
        _echo_err(DEMO_NOTICE)
    if backend == "onnxruntime":
        from .onnx_export import OnnxExportError

        try:
            colorizer.use_onnxruntime(onnx_path)
        except OnnxExportError as exc:
            raise CommandError(str(exc)) from None
    try:
        for spec in class_specs:
            colorizer.class_index(spec)
    except ClassNotFoundError as exc:
        raise CommandError(f"--class: {exc}") from None
    reference = None
    if reference_path:
        try:  # says first whether the model can take a reference, then reads the file
            reference = colorizer.prepare_reference(reference_path)
        except (ImageInputError, ValueError) as exc:
            raise CommandError(f"--reference: {exc}") from None
    if direction is not None:
        deformator = colorizer.model.deformator
        if deformator is None:
            raise CommandError("this model has no latent deformator, so --direction is unavailable")
        if direction >= deformator.dim:
            raise CommandError(f"--direction must be 0..{deformator.dim - 1} for this model, got {direction}")

    names = _OutputNames(direction, steps, samples * max(1, len(class_ids)), save_exemplar)
    for job in jobs:
        job.outputs = names.all(job.target)
    stale = [path for folder in sorted({path.parent for job in jobs for path in job.outputs})
             for path in remove_stale_temporaries(folder)]
    if stale and not quiet:
        _echo_err(f"removed {len(stale)} temporary file(s) left by an interrupted run")

    input_files = _input_identities(jobs)
    pending, refused = _jobs_to_run(jobs, input_files, overwrite, skip_existing)
    problems += refused
    failures = 0
    kept = 0  # colour photos copied unchanged (--keep-color)

    progress = tqdm(total=len(pending), unit="photo", disable=quiet or not pending, file=sys.stderr)

    def write(image: np.ndarray, target: Path, job: _Job | None = None) -> bool:
        """Save `image`; a photo's own results (`job`) get its metadata and transparency."""
        try:
            save_image(image, target, overwrite=overwrite, metadata=job.metadata if job else None,
                       alpha=job.alpha if job else None)
            return True
        except ImageOutputError as exc:
            _echo_err(f"error: {exc}")
            return False

    def usable(job: _Job, result: ColorizeResult) -> bool:
        reason = result.problem(job.rgb)
        if reason is not None:
            _echo_err(f"error: {job.source}: {reason}")
        return reason is None

    def write_results(job: _Job, results) -> bool:
        ok = True
        for index, result in enumerate(results):
            # Each full-resolution result is composed, checked, written and freed in turn.
            if not usable(job, result):
                ok = False
                continue
            target = names.result(job.target, index)
            ok &= write(result.pixels, target, job)
            result.release()
            if save_exemplar:
                ok &= write(result.exemplar, _with_suffix(target, "exemplar"))
                ok &= write(result.warped_exemplar, _with_suffix(target, "warped"))
        return ok

    def write_transition(job: _Job) -> bool:
        frames = colorizer.transition(job.rgb, direction, shift=shift, steps=steps, class_id=class_spec,
                                      resize_mode=resize_mode, batch_size=batch_size)
        if not all([usable(job, frame) for frame in frames]):
            return False
        ok = all([write(frame.pixels, names.frame(job.target, index), job) for index, frame in enumerate(frames)])
        try:
            save_animation([frame.pixels for frame in frames], names.animation(job.target), overwrite=overwrite)
        except OSError as exc:
            _echo_err(f"error: {exc}")
            ok = False
        return ok

    def attempt(job: _Job, work) -> None:
        """Run one photo's `work`; whatever it raises costs that photo only."""
        nonlocal failures
        try:
            ok = work()
        except Exception as exc:  # MemoryError included: the next photo may well fit
            _echo_err(f"error: {job.source}: {_failure_message(exc)}")
            ok = False
        failures += not ok
        progress.update(1)

    def load(job: _Job) -> bool:
        nonlocal failures
        try:
            job.rgb, job.metadata, job.alpha = load_photo(job.source)
            return True
        except ImageInputError as exc:
            _echo_err(f"error: {exc}")
        except Exception as exc:
            _echo_err(f"error: {job.source}: {_failure_message(exc, 'reading it')}")
        failures += 1
        progress.update(1)
        return False

    def keep_unchanged(job: _Job, note: str) -> None:
        """--keep-color: the photo itself, under the name a single result would have."""
        nonlocal failures, kept, problems
        target = job.target
        progress.update(1)
        # checked again: with several results or a transition, `target` is not among job.outputs
        verdict = _output_verdict(job, [target], input_files, overwrite, skip_existing)
        if verdict == "clash":
            failures += 1
            return
        if verdict != "write":
            problems += verdict == "exists"
            kept += 1
            return
        same_format = SAVE_FORMATS.get(job.source.suffix.lower()) == SAVE_FORMATS.get(target.suffix.lower())
        try:
            if same_format:
                copy_image_file(job.source, target, overwrite=overwrite)
            else:
                save_image(job.rgb, target, overwrite=overwrite, metadata=job.metadata, alpha=job.alpha)
        except ImageOutputError as exc:
            _echo_err(f"error: {exc}")
            failures += 1
            return
        how = "copied unchanged" if same_format else f"copied (converted to {target.suffix.lstrip('.').upper()})"
        _echo_err(f"kept {job.source}: {note}; {how} to {target}")
        kept += 1

    def needs_colorizing(job: _Job) -> bool:
        """False for a colour photo that --keep-color leaves alone (handled here); every colour
        photo is noted on one line."""
        chroma = off_tone_chroma(job.rgb)
        if chroma <= COLOR_THRESHOLD:
            return True
        note = color_input_note(chroma)
        if keep_color:
            keep_unchanged(job, note)
            job.rgb = job.alpha = None
            return False
        _echo_err(f"note: {job.source} {note}: recolouring it from its lightness "
                  f"(--keep-color leaves colour photos as they are)")
        return True

    next_job = 0
    while next_job < len(pending):
        batch: list[_Job] = []
        loaded_bytes = 0
        while next_job < len(pending) and len(batch) < batch_size and loaded_bytes < BATCH_BYTES:
            job = pending[next_job]
            next_job += 1
            if load(job) and needs_colorizing(job):
                batch.append(job)
                loaded_bytes += job.rgb.nbytes
        if direction is not None:
            for job in batch:
                attempt(job, lambda job=job: write_transition(job))
        elif names.results > 1:
            for job in batch:
                attempt(job, lambda job=job: write_results(job, colorizer.diverse(
                    job.rgb, samples=samples, sigma=sigma, seed=seed, class_ids=class_ids or None,
                    resize_mode=resize_mode)))
        elif batch:
            results = None
            if len(batch) > 1:
                try:
                    results = colorizer.colorize_batch([job.rgb for job in batch], class_spec, resize_mode=resize_mode,
                                                       reference=reference)
                except Exception:
                    pass  # one photo may be at fault, or the batch may not fit in memory: see below
            if results is None:
                # One by one, so that only a photo that fails on its own is reported.
                for job in batch:
                    attempt(job, lambda job=job: write_results(
                        job, [colorizer.colorize(job.rgb, class_spec, resize_mode=resize_mode, reference=reference)]))
            else:
                for job, result in zip(batch, results):
                    attempt(job, lambda job=job, result=result: write_results(job, [result]))
        for job in batch:
            job.rgb = job.alpha = None
    progress.close()
    if not quiet:
        kept_note = f"; kept {kept} colour photo(s) as they were" if kept else ""
        _echo_err(f"colorized {len(pending) - failures - kept} of {len(jobs)} photo(s) into {output}{kept_note}")
    if failures or problems:
        sys.exit(EXIT_INPUT_ERRORS)


@main.command("classes")
@click.argument("query", required=False)
def classes_command(query: str | None) -> None:
    """List the 1000 ImageNet classes of the authors' BigGAN prior (optionally those matching QUERY).

    The bundled default model's prior has 16 pseudo-classes instead: give --class 0..15."""
    needle = (query or "").lower().replace("_", " ")
    for entry in IMAGENET_CLASSES:
        if needle in entry.name.lower() or needle == entry.wnid:
            click.echo(f"{entry.index}\t{entry.wnid}\t{entry.name}")


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, callback=_host_name)
@click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True,
              help="TCP port (0: any free one).")
@click.option("--weights", type=click.Path(file_okay=False), help="Weights folder (default: $GCPCOLOR_HOME or ~/.cache/gcpcolor).")
@click.option("--demo", is_flag=True, help="Use a tiny untrained model.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def serve(host: str, port: int, weights: str | None, demo: bool, device: str) -> None:
    """A local web page to try colorization in the browser."""
    from .web import make_server

    colorizer = load_colorizer(weights, demo, device, None, None)
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
main.add_command(convert_command, "convert")
main.add_command(export_command, "export")


if __name__ == "__main__":
    main()
