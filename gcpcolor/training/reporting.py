"""What a run reports besides its losses: TensorBoard's writer and image grids, and the
unreadable data files the loader skipped."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.utils import make_grid

from ..errors import TrainingSetupError
from ..model import resample_square

#: Rows of the TensorBoard image grid (one per sample of the current batch).
IMAGE_GRID_SAMPLES = 4


class ReportSkippedFiles(Dataset):
    """Passes items through, adding `skipped`: the unreadable files passed over to make each.

    DataLoader workers are separate processes, each with its own copy of the dataset's
    `skipped_files`; carrying the paths in the batches is how they reach the trainer.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        before = len(self.dataset.skipped_files)
        item = self.dataset[key]
        item["skipped"] = "\n".join(self.dataset.skipped_files[before:])
        return item


def summary_writer_class() -> type:
    """TensorBoard's SummaryWriter class, or a one-line error when the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainingSetupError(
            "TensorBoard logging needs the tensorboard package (pip install 'gcpcolor[train]'); "
            "or set logging.tensorboard: false"
        ) from None
    return SummaryWriter


def image_grid(visuals: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rows = samples; columns in the order of `visuals` (e.g. gray | exemplar | ... | truth)."""
    columns = [image[:IMAGE_GRID_SAMPLES].detach().float().cpu().clamp(0, 1) for image in visuals.values()]
    side = columns[0].shape[-1]  # exemplars are at the work size, training crops may be smaller
    columns = [resample_square(column, side) for column in columns]
    tiles = torch.stack(columns, dim=1).flatten(0, 1)
    return make_grid(tiles, nrow=len(columns), padding=2)
