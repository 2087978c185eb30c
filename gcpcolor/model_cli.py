"""`gcpcolor convert` and `gcpcolor export`: model files in, model files out (the authors'
checkpoints to our format, a model's networks to ONNX)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .cli_common import CommandError, load_colorizer
from .errors import MissingWeightsError, WeightsFormatError


@click.command("convert")
@click.option("--authors-dir", required=True, type=click.Path(file_okay=False), help="Folder with the authors' .pth files.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Destination folder.")
def convert_command(authors_dir: str, output: str) -> None:
    """Convert the authors' released checkpoints to gcpcolor's safetensors format."""
    from .pipeline import Colorizer

    try:
        colorizer = Colorizer.from_authors_checkpoints(authors_dir)
    except (MissingWeightsError, WeightsFormatError) as exc:
        raise CommandError(str(exc)) from None
    colorizer.save_pretrained(output)
    click.echo(f"wrote {output}/config.json and model.safetensors")


@click.command("export")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(dir_okay=False),
              help="Where to write the ONNX file (opset 19).")
@click.option("--model", "model_dir", type=click.Path(file_okay=False),
              help="Model folder in our format (default: the model `colorize` loads: $GCPCOLOR_HOME, "
                   "~/.cache/gcpcolor, else the bundled default model).")
@click.option("--overwrite", is_flag=True, help="Replace an existing ONNX file.")
def export_command(onnx_path: str, model_dir: str | None, overwrite: bool) -> None:
    """Write the network part of a model to ONNX (inputs: the 256² network input L/50 - 1 and
    class ids, -1 for automatic where the model predicts its own; outputs: ab, exemplars,
    classes, z). Reading photos, resizing, Lab conversion and saving stay outside the graph."""
    from .onnx_export import OnnxExportError, export_onnx

    target = Path(onnx_path)
    if os.path.lexists(target) and not overwrite:
        raise CommandError(f"{target} exists (use --overwrite to replace it)")
    colorizer = load_colorizer(model_dir, False, "cpu")
    try:
        export_onnx(colorizer.model, target)
    except OnnxExportError as exc:
        raise CommandError(str(exc)) from None
    click.echo(f"wrote {target}")
