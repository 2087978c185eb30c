"""Reading, strict loading and writing of state_dicts: the one place every checkpoint format
goes through.

Our own format (`config.json` + `model.safetensors`), training checkpoints, our prior folders,
the authors' `.pth` files (`legacy.py`) and the pretrained ImageNet networks all use these
helpers, so a corrupt or mismatched file always gives the same one-line error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import WeightsFormatError
from .weights import write_atomically

PathLike = str | os.PathLike


def read_checkpoint(path: PathLike) -> dict[str, Any]:
    try:
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsFormatError(f"{path}: file not found") from None
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsFormatError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    if not isinstance(data, dict):
        raise WeightsFormatError(f"{path}: expected a state_dict, found {type(data).__name__}")
    return data


def read_safetensors(path: PathLike) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise WeightsFormatError(f"{path}: file not found") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise WeightsFormatError(f"{path}: not a readable safetensors file ({exc})") from None


def write_safetensors(
    path: PathLike,
    state_dict: dict[str, torch.Tensor],
    dtype: torch.dtype | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write `state_dict` atomically (readers never see half a file), on the CPU and contiguous.

    With `dtype`, floating-point tensors are stored in it (integer buffers keep theirs).
    """
    state = {
        key: (value.to(dtype) if dtype is not None and value.is_floating_point() else value)
        .detach()
        .cpu()
        .contiguous()
        for key, value in state_dict.items()
    }
    write_atomically(Path(path), lambda temporary: save_file(state, str(temporary), metadata=metadata))


def _strip_ddp_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return {key[len("module.") :]: value for key, value in state_dict.items()}
    return state_dict


def load_state_dict_strict(module: nn.Module, state_dict: dict[str, Any], source: PathLike) -> None:
    """`load_state_dict(strict=True)` with a one-line, readable error on mismatch."""
    state_dict = _strip_ddp_prefix(state_dict)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        key
        for key in set(expected) & set(state_dict)
        if tuple(expected[key].shape) != tuple(state_dict[key].shape)
    )
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise WeightsFormatError(
            f"{source}: does not match {type(module).__name__} of this configuration: {'; '.join(parts)}"
        )
    module.load_state_dict(state_dict, strict=True)
