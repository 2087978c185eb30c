"""`gcpcolor export --onnx`: the exported network gives PyTorch's results under onnxruntime,
for the default model's layout (backbone, class probe) and the paper's (deformable conv)."""

from __future__ import annotations

import builtins
import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gcpcolor.cli import main
from gcpcolor.config import ColorizationConfig, ColorizerConfig
from gcpcolor.model import GCPColorizationModel
from gcpcolor.pipeline import save_model_pretrained

onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install 'gcpcolor[test]')", exc_type=ImportError)
onnxruntime = pytest.importorskip(
    "onnxruntime", reason="onnxruntime not installed (pip install 'gcpcolor[test]')", exc_type=ImportError
)

from gcpcolor.onnx_export import ExportedNetwork, OnnxExportError, OnnxNetwork, export_onnx  # noqa: E402

#: ab is in Lab units (|ab| up to ~110); float32 graphs of different kernels agree far closer.
AB_TOLERANCE = 1e-2


def tiny_model(semantic: bool) -> GCPColorizationModel:
    torch.manual_seed(0)
    config = ColorizerConfig.tiny()
    if semantic:
        config = dataclasses.replace(
            config, colorization=ColorizationConfig(type="semantic", base_channels=8), class_predictor="imagenet_probe"
        )
    model = GCPColorizationModel(config).eval()
    if not semantic:  # non-zero offsets, so the deformable conv really samples off the grid
        for module in model.colorization_net.modules():
            if hasattr(module, "conv_offset"):
                torch.nn.init.normal_(module.conv_offset.weight, std=0.05)
    return model


def inputs(batch: int) -> torch.Tensor:
    return torch.rand(batch, 1, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_cli_exports_the_default_model_layout_and_onnxruntime_matches_pytorch(tmp_path):
    model = tiny_model(semantic=True)
    save_model_pretrained(model, tmp_path / "model")
    target = tmp_path / "net.onnx"
    result = CliRunner().invoke(main, ["export", "--onnx", str(target), "--model", str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    assert "DeformConv" not in {node.op_type for node in onnx.load(str(target)).graph.node}

    l_input, classes = inputs(2), torch.tensor([-1, 5])  # automatic class, then a given one
    with torch.no_grad():
        expected = ExportedNetwork(model)(l_input, classes)
    got = OnnxNetwork(target)(l_input, classes)  # exported at batch 1: the batch is dynamic
    assert torch.equal(got.class_ids, expected[3]) and got.class_ids[1] == 5
    torch.testing.assert_close(got.ab, expected[0], atol=AB_TOLERANCE, rtol=0)
    torch.testing.assert_close(got.exemplar, expected[1], atol=1e-4, rtol=0)

    again = CliRunner().invoke(main, ["export", "--onnx", str(target), "--model", str(tmp_path / "model")])
    assert again.exit_code == 2 and "exists (use --overwrite" in again.output


def test_deformable_conv_exports_as_onnx_deformconv_and_matches_pytorch(tmp_path):
    model = tiny_model(semantic=False)
    target = export_onnx(model, tmp_path / "paper.onnx")
    assert not model.training  # the export leaves the model in the mode it found it in
    assert "DeformConv" in {node.op_type for node in onnx.load(str(target)).graph.node}
    l_input, classes = inputs(1), torch.tensor([207])
    with torch.no_grad():
        expected = ExportedNetwork(model)(l_input, classes)
    got = OnnxNetwork(target)(l_input, classes)
    torch.testing.assert_close(got.ab, expected[0], atol=AB_TOLERANCE, rtol=0)
    torch.testing.assert_close(got.warped_exemplar, expected[2], atol=1e-4, rtol=0)


def test_missing_onnxruntime_names_the_package(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def without_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnxruntime)
    with pytest.raises(OnnxExportError, match=r"pip install onnxruntime"):
        OnnxNetwork(tmp_path / "any.onnx")


def test_adaptive_average_by_matrices_equals_adaptive_pooling():
    from gcpcolor.models.lightness_centroids import adaptive_average_by_matrices

    images = torch.rand(2, 3, 37, 50)
    torch.testing.assert_close(adaptive_average_by_matrices(images, 6), torch.nn.functional.adaptive_avg_pool2d(images, 6))


@pytest.mark.parametrize("length, size", [(256, 64), (100, 7), (37, 36)])
def test_antialiased_shrink_weights_reproduce_torch_antialiased_resize(length, size):
    from gcpcolor.model import antialiased_shrink_weights

    images = torch.rand(2, 3, length, length)
    weights = torch.from_numpy(antialiased_shrink_weights(length, size))
    expected = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                                               antialias=True)
    torch.testing.assert_close(weights @ images @ weights.T, expected, atol=1e-5, rtol=1e-5)


def test_colorize_with_the_onnxruntime_backend_matches_pytorch(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("GCPCOLOR_HOME", str(tmp_path / "cache"))
    save_model_pretrained(tiny_model(semantic=True), tmp_path / "model")
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((48, 40)) * 255).astype(np.uint8)).save(photo)
    results = {}
    for exports, temperature in ((1, []), (2, ["--temperature", "0.05"])):
        for backend in ("onnxruntime", "pytorch"):
            output = tmp_path / f"{backend}{temperature}.png"
            result = CliRunner().invoke(main, ["colorize", str(photo), "-o", str(output), "--weights",
                                               str(tmp_path / "model"), "--backend", backend, "-q", *temperature])
            assert result.exit_code == 0, result.output
            results[backend, exports] = np.asarray(Image.open(output), dtype=int)
        # exported on first use, once for each temperature (the graph holds it)
        assert len(list((tmp_path / "cache" / "onnx").glob("network-*.onnx"))) == exports
        # 8-bit outputs: at most one step of rounding apart
        assert np.abs(results["onnxruntime", exports] - results["pytorch", exports]).max() <= 1
    assert np.abs(results["onnxruntime", 1] - results["onnxruntime", 2]).max() > 1

    refused = CliRunner().invoke(main, ["colorize", str(photo), "-o", str(tmp_path / "s"), "--weights",
                                        str(tmp_path / "model"), "--backend", "onnxruntime", "--samples", "2"])
    assert refused.exit_code == 2 and "--backend pytorch" in refused.output
