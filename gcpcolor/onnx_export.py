"""ONNX export of the network part of a model, and running it with onnxruntime.

The exported graph is what `GCPColorizationModel` computes between the pipeline's numpy/torch
pre-processing (`ImageProcessor.preprocess`: L from the photo, resized to the working size) and its
post-processing (`ImageProcessor.postprocess`: ab cropped, upsampled and joined with the full-resolution
L): inputs `l_input` (B, 1, S, S) = L/50 - 1 and `class_ids` (B,) int64, outputs `ab`
(B, 2, S, S) in Lab units, `exemplar` and `warped_exemplar` (B, 3, R, R) / (B, 3, S, S) RGB in
[-1, 1], the classes used and the latent `z`. A negative class id asks for the automatic class
when the model predicts its own (class predictor "lightness_centroids" or "imagenet_probe");
models that pick classes with the discriminator's projection take class ids from the caller.

Deformable convolution (the paper's SPADE network) is written as ONNX DeformConv, an operator
of opset 19; torchvision registers no ONNX translation of `deform_conv2d`, so this module
provides one (`_deform_conv2d_symbolic`).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .model import GCPColorizationModel
from .version import __version__
from .weights import write_atomically

#: DeformConv entered ONNX in opset 19.
OPSET = 19
INPUT_NAMES = ["l_input", "class_ids"]
OUTPUT_NAMES = ["ab", "exemplar", "warped_exemplar", "class_ids_used", "z"]
ONNXRUNTIME_MISSING = "onnxruntime is not installed: pip install onnxruntime (or pip install 'gcpcolor[onnx]')"
ONNX_MISSING = "onnx is not installed: pip install onnx (or pip install 'gcpcolor[onnx]')"


class OnnxExportError(RuntimeError):
    """The model cannot be exported (a one-line reason)."""


def predicts_own_class(model: GCPColorizationModel) -> bool:
    """Whether the model's automatic class comes from a predictor of its own, which then
    travels inside the exported graph (the discriminator's projection is not exported: for the
    ImageNet prior the pipeline uses a separate classifier)."""
    return model.class_predictor is not None


class ExportedNetwork(nn.Module):
    """The exported computation: network input and class ids → ab, exemplars, classes, z."""

    def __init__(self, model: GCPColorizationModel) -> None:
        super().__init__()
        self.model = model
        self.automatic_class = predicts_own_class(model)

    def forward(self, l_input: torch.Tensor, class_ids: torch.Tensor):
        backbone_features = self.model.backbone_features(l_input)
        if self.automatic_class:
            predicted = self.model.class_logits(l_input, backbone_features).argmax(dim=1)
            class_ids = torch.where(class_ids < 0, predicted, class_ids)
        output = self.model(l_input, class_ids, backbone_features=backbone_features)
        return output.ab, output.exemplar, output.warped_exemplar, class_ids, output.z


def _deform_conv2d_symbolic(
    g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    groups, offset_groups, use_mask,
):
    """torchvision::deform_conv2d as ONNX DeformConv (same offset layout: (y, x) per tap)."""
    from torch.onnx import symbolic_helper

    stride = [symbolic_helper._get_const(v, "i", name) for v, name in ((stride_h, "stride_h"), (stride_w, "stride_w"))]
    padding = [symbolic_helper._get_const(v, "i", name) for v, name in ((pad_h, "pad_h"), (pad_w, "pad_w"))]
    dilation = [symbolic_helper._get_const(v, "i", n) for v, n in ((dilation_h, "dilation_h"), (dilation_w, "dilation_w"))]
    kernel = symbolic_helper._get_tensor_sizes(weight)[-2:]
    inputs = [input, weight, offset, bias]
    if symbolic_helper._get_const(use_mask, "b", "use_mask"):
        inputs.append(mask)
    return g.op(
        "DeformConv",
        *inputs,
        dilations_i=dilation,
        group_i=symbolic_helper._get_const(groups, "i", "groups"),
        kernel_shape_i=kernel,
        offset_group_i=symbolic_helper._get_const(offset_groups, "i", "offset_groups"),
        pads_i=padding + padding,
        strides_i=stride,
    )


def export_onnx(model: GCPColorizationModel, path: str | os.PathLike, batch_size: int = 1) -> Path:
    """Write the network part of `model` to `path` (atomically); the batch size stays dynamic."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise OnnxExportError(ONNX_MISSING) from None
    import torchvision  # noqa: F401  (registers torchvision::deform_conv2d)

    path = Path(path)
    size = model.config.work_size
    example = (torch.zeros(batch_size, 1, size, size), torch.full((batch_size,), -1 if predicts_own_class(model) else 0))
    torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv2d_symbolic, OPSET)
    dynamic = {name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES}

    # In eval mode, and the wrapper too: the exporter puts the module it is given back into
    # that module's mode afterwards, and a fresh wrapper is in training mode, which would leave
    # batch norms on batch statistics and spectral norms updating their estimates.
    network = ExportedNetwork(model).eval()
    was_training = model.training

    def write(temporary: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns at every shape check; the spatial size is fixed at the working
            # size by design, and the batch size (the one dynamic axis) is checked by the tests.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                network, example, str(temporary), dynamo=False, opset_version=OPSET,
                input_names=INPUT_NAMES, output_names=OUTPUT_NAMES, dynamic_axes=dynamic,
            )

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomically(path, write)
    finally:
        model.train(was_training)
    return path


def cached_onnx_path(model: GCPColorizationModel) -> Path:
    """Where the export of `model` is kept between runs: the cache folder ($GCPCOLOR_HOME or
    ~/.cache/gcpcolor) under onnx/, named by a digest of the configuration, the weights and
    the gcpcolor version (whose code defines the graph)."""
    from .weights import search_dirs

    digest = hashlib.sha256(f"{__version__} opset {OPSET} {model.config}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return search_dirs()[0] / "onnx" / f"network-{digest.hexdigest()[:16]}.onnx"


@dataclass
class OnnxOutput:
    """The fields of `ForwardOutput` the pipeline reads, as torch tensors."""

    ab: torch.Tensor
    exemplar: torch.Tensor
    warped_exemplar: torch.Tensor
    class_ids: torch.Tensor
    z: torch.Tensor


class OnnxNetwork:
    """An exported network run by onnxruntime on CPU, called like the exported module."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise OnnxExportError(ONNXRUNTIME_MISSING) from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, l_input: torch.Tensor, class_ids: torch.Tensor) -> OnnxOutput:
        feeds = {
            "l_input": np.ascontiguousarray(l_input.detach().cpu().numpy(), dtype=np.float32),
            "class_ids": class_ids.detach().cpu().numpy().astype(np.int64),
        }
        results = self.session.run(OUTPUT_NAMES, feeds)
        return OnnxOutput(*(torch.from_numpy(array) for array in results))
