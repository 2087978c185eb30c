"""The one place a device name ("auto", "cpu", "cuda", "cuda:1") becomes a torch device."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` is the GPU when there is one; asking for CUDA without one raises RuntimeError."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no CUDA device is available (use --device cpu)")
    return device
